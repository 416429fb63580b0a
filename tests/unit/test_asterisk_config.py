"""The Asterisk configuration cbserver renders for an instance, read as a PBX admin would."""

from __future__ import annotations

import json
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cbserver.asterisk.instance import AsteriskError, AsteriskInstance, TrunkConfig
from cbserver.asterisk.runtime import HostRuntime
from cbserver.config import Settings

RUNTIME = HostRuntime(binary="/usr/sbin/asterisk", version="Asterisk 22")


@dataclass(frozen=True)
class FakeAgent:
    name: str
    contact: str | None = None
    sip_password: str | None = None
    dtmf_mode: str = "rfc4733"


DESK_PHONE = FakeAgent("alice", contact="sip:alice@127.0.0.1:5070", dtmf_mode="info")
SOFTPHONE = FakeAgent("bob", sip_password="s3cret-Bob-passw0rd", dtmf_mode="rfc4733")


@dataclass(frozen=True)
class Section:
    name: str
    template: str | None
    options: list[tuple[str, str]]

    def get(self, key: str) -> str | None:
        values = [v for k, v in self.options if k == key]
        return values[-1] if values else None


def parse_conf(path: Path) -> list[Section]:
    """Asterisk's config syntax, enough of it: [name](template), key = value / key => value."""
    sections: list[Section] = []
    for raw in path.read_text().splitlines():
        # A ';' starts a comment unless escaped as '\;'.
        line = re.split(r"(?<!\\);", raw, maxsplit=1)[0].replace("\\;", ";").strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            name, _, rest = line[1:].partition("]")
            template = rest.strip("()") or None
            sections.append(Section(name, template, []))
            continue
        key, sep, value = line.partition("=>") if "=>" in line else line.partition("=")
        assert sep, f"not a setting in {path.name}: {raw!r}"
        sections[-1].options.append((key.strip(), value.strip()))
    return sections


def section(path: Path, name: str, type_: str | None = None) -> Section:
    found = [
        s for s in parse_conf(path) if s.name == name and (type_ is None or s.get("type") == type_)
    ]
    assert len(found) == 1, f"expected one [{name}] (type={type_}) in {path.name}, got {found}"
    return found[0]


def has_section(path: Path, name: str) -> bool:
    return any(s.name == name for s in parse_conf(path))


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "state_dir": tmp_path / "state",
        "sip_port": 6060,
        "http_port": 6088,
        "ami_port": 6038,
        "rtp_port_start": 40000,
        "rtp_port_end": 40099,
        **overrides,
    }
    return Settings(**values)


def render(settings: Settings, agents: list[FakeAgent] | None = None) -> Path:
    instance = AsteriskInstance(settings)
    instance.render(RUNTIME, agents if agents is not None else [DESK_PHONE, SOFTPHONE])
    return instance.directory


def test_http_and_manager_listen_on_loopback_only_with_configured_ports(tmp_path: Path) -> None:
    etc = render(make_settings(tmp_path)) / "etc"

    http = section(etc / "http.conf", "general")
    assert (http.get("enabled"), http.get("bindaddr"), http.get("bindport")) == (
        "yes",
        "127.0.0.1",
        "6088",
    )
    manager = section(etc / "manager.conf", "general")
    assert (manager.get("bindaddr"), manager.get("port")) == ("127.0.0.1", "6038")


def test_rtp_range_is_the_configured_one(tmp_path: Path) -> None:
    rtp = section(render(make_settings(tmp_path)) / "etc" / "rtp.conf", "general")

    assert (rtp.get("rtpstart"), rtp.get("rtpend")) == ("40000", "40099")


def test_ari_and_ami_users_are_the_generated_secrets(tmp_path: Path) -> None:
    directory = render(make_settings(tmp_path))
    saved = json.loads((directory / "secrets.json").read_text())

    ari_user = section(directory / "etc" / "ari.conf", saved["ari"]["username"])
    assert ari_user.get("type") == "user"
    assert ari_user.get("password") == saved["ari"]["password"]
    ami_user = section(directory / "etc" / "manager.conf", saved["ami"]["username"])
    assert ami_user.get("secret") == saved["ami"]["password"]
    for credential in (saved["ari"], saved["ami"]):
        assert credential["username"] not in ("asterisk", "admin", "ari", "manager")
        assert credential["password"] not in ("asterisk", "admin", "secret", "amp111")
        assert len(credential["password"]) >= 20


def test_ari_secrets_match_what_the_instance_uses(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    directory = render(settings)
    saved = json.loads((directory / "secrets.json").read_text())

    keys = AsteriskInstance(settings).secrets()

    assert (keys.ari.username, keys.ari.password) == (
        saved["ari"]["username"],
        saved["ari"]["password"],
    )


def test_two_instances_get_different_credentials(tmp_path: Path) -> None:
    first = render(make_settings(tmp_path, asterisk_instance="one"))
    second = render(make_settings(tmp_path, asterisk_instance="two"))

    one = json.loads((first / "secrets.json").read_text())
    two = json.loads((second / "secrets.json").read_text())
    assert first != second
    assert one["ari"] != two["ari"]
    assert one["ami"] != two["ami"]


def test_rendering_again_keeps_the_credentials(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    directory = render(settings)
    secrets_before = (directory / "secrets.json").read_text()
    ari_before = (directory / "etc" / "ari.conf").read_text()

    render(settings)

    assert (directory / "secrets.json").read_text() == secrets_before
    assert (directory / "etc" / "ari.conf").read_text() == ari_before


def test_secrets_and_every_config_file_are_private(tmp_path: Path) -> None:
    directory = render(make_settings(tmp_path))

    private = [directory / "secrets.json", *sorted((directory / "etc").glob("*.conf"))]
    assert len(private) > 10
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_asterisk_directories_are_inside_the_instance(tmp_path: Path) -> None:
    directory = render(make_settings(tmp_path))

    dirs = dict(section(directory / "etc" / "asterisk.conf", "directories").options)
    assert dirs == {
        "astetcdir": f"{directory}/etc",
        "astdbdir": f"{directory}/db",
        "astspooldir": f"{directory}/spool",
        "astrundir": f"{directory}/run",
        "astlogdir": f"{directory}/log",
    }
    for path in dirs.values():
        assert Path(path).is_dir()


def test_sip_transport_binds_the_configured_address_and_port(tmp_path: Path) -> None:
    etc = render(make_settings(tmp_path, sip_bind="192.0.2.5")) / "etc"

    transport = section(etc / "pjsip.conf", "transport-udp")
    assert transport.get("bind") == "192.0.2.5:6060"


def test_ipv6_sip_bind_is_bracketed(tmp_path: Path) -> None:
    etc = render(make_settings(tmp_path, sip_bind="::1")) / "etc"

    assert section(etc / "pjsip.conf", "transport-udp").get("bind") == "[::1]:6060"


def test_trunk_contact_is_the_configured_trunk_uri(tmp_path: Path) -> None:
    etc = render(make_settings(tmp_path, trunk_uri="sip:gw.example.org:5080")) / "etc"

    assert section(etc / "pjsip.conf", "trunk", "aor").get("contact") == "sip:gw.example.org:5080"
    assert section(etc / "pjsip.conf", "trunk", "identify").get("match") == "gw.example.org"


def test_trunk_without_credentials_neither_registers_nor_authenticates(tmp_path: Path) -> None:
    pjsip = render(make_settings(tmp_path, trunk_uri="sip:gw.example.org")) / "etc" / "pjsip.conf"

    assert not has_section(pjsip, "trunk-auth")
    assert not has_section(pjsip, "trunk-registration")
    assert section(pjsip, "trunk", "endpoint").get("outbound_auth") is None


def test_trunk_username_adds_auth_but_no_registration(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, trunk_uri="sip:gw.example.org", trunk_username="acct1", trunk_password="pw1"
    )
    pjsip = render(settings) / "etc" / "pjsip.conf"

    auth = section(pjsip, "trunk-auth")
    assert (auth.get("username"), auth.get("password")) == ("acct1", "pw1")
    assert section(pjsip, "trunk", "endpoint").get("outbound_auth") == "trunk-auth"
    assert not has_section(pjsip, "trunk-registration")


def test_registering_trunk_gets_a_registration(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        trunk_uri="sip:gw.example.org:5080",
        trunk_username="acct1",
        trunk_password="pw1",
        trunk_register=True,
    )
    pjsip = render(settings) / "etc" / "pjsip.conf"

    registration = section(pjsip, "trunk-registration")
    assert registration.get("type") == "registration"
    assert registration.get("server_uri") == "sip:gw.example.org:5080"
    assert registration.get("client_uri") == "sip:acct1@gw.example.org"
    assert registration.get("outbound_auth") == "trunk-auth"
    assert has_section(pjsip, "trunk-auth")


def test_registering_trunk_without_a_password_is_refused(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, trunk_uri="sip:gw.example.org", trunk_username="acct1", trunk_register=True
    )

    with pytest.raises(AsteriskError, match="CBSERVER_TRUNK_PASSWORD"):
        render(settings)


def test_semicolon_in_trunk_password_is_escaped_not_a_comment(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        trunk_uri="sip:gw.example.org",
        trunk_username="acct1",
        trunk_password="pa;ss",
    )
    pjsip = render(settings) / "etc" / "pjsip.conf"

    assert "password = pa\\;ss\n" in pjsip.read_text()
    # Read back as Asterisk does, the password is whole again.
    assert section(pjsip, "trunk-auth").get("password") == "pa;ss"


def test_line_break_in_trunk_password_is_refused(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        trunk_uri="sip:gw.example.org",
        trunk_username="acct1",
        trunk_password="pw\n[evil]\ntype=endpoint",
    )

    with pytest.raises(AsteriskError, match="line break"):
        render(settings)


def test_static_contact_agent_has_an_aor_with_its_contact_and_no_auth(tmp_path: Path) -> None:
    agents = render(make_settings(tmp_path)) / "etc" / "pjsip_agents.conf"

    # The endpoint and the aor share the agent's name, told apart by their templates.
    alice = [s for s in parse_conf(agents) if s.name == "alice"]
    assert [s.template for s in alice] == ["agent-endpoint", "agent-aor"]
    endpoint, aor = alice
    assert endpoint.get("aors") == "alice"
    assert endpoint.get("dtmf_mode") == "info"
    assert endpoint.get("auth") is None
    assert endpoint.get("identify_by") == "ip"  # no password: never matched by username
    assert aor.get("contact") == "sip:alice@127.0.0.1:5070"
    assert not has_section(agents, "alice-auth")


def test_registering_agent_has_an_auth_with_its_password(tmp_path: Path) -> None:
    agents = render(make_settings(tmp_path)) / "etc" / "pjsip_agents.conf"

    endpoint, aor = [s for s in parse_conf(agents) if s.name == "bob"]
    assert endpoint.get("auth") == "bob-auth"
    assert endpoint.get("identify_by") is None
    assert endpoint.get("dtmf_mode") == "rfc4733"
    assert aor.get("contact") is None
    auth = section(agents, "bob-auth")
    assert auth.template == "agent-auth"
    assert (auth.get("username"), auth.get("password")) == ("bob", "s3cret-Bob-passw0rd")


def test_agent_templates_exist_in_pjsip_conf(tmp_path: Path) -> None:
    pjsip = render(make_settings(tmp_path)) / "etc" / "pjsip.conf"

    templates = {s.name: s for s in parse_conf(pjsip) if s.template == "!"}
    assert templates["agent-endpoint"].get("type") == "endpoint"
    assert templates["agent-endpoint"].get("direct_media") == "no"
    assert templates["agent-aor"].get("type") == "aor"
    assert templates["agent-auth"].get("type") == "auth"
    assert "#include pjsip_agents.conf" in pjsip.read_text()


def test_write_agents_rewrites_only_the_agents_file(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    directory = render(settings, agents=[])
    agents_file = directory / "etc" / "pjsip_agents.conf"
    assert not any(s.name == "carol" for s in parse_conf(agents_file))

    AsteriskInstance(settings).write_agents([FakeAgent("carol", contact="sip:carol@127.0.0.1")])

    assert [s.name for s in parse_conf(agents_file)] == ["carol", "carol"]
    assert stat.S_IMODE(agents_file.stat().st_mode) == 0o600


def test_agent_password_with_semicolon_is_escaped(tmp_path: Path) -> None:
    agent = FakeAgent("dave", sip_password="a;b")
    agents = render(make_settings(tmp_path), agents=[agent]) / "etc" / "pjsip_agents.conf"

    assert "password = a\\;b\n" in agents.read_text()


@pytest.mark.parametrize(
    "uri", ["http://gw.example.org", "gw.example.org:5060", "tel:+4930123456", "sip:gw example"]
)
def test_trunk_must_be_a_sip_uri(tmp_path: Path, uri: str) -> None:
    with pytest.raises(AsteriskError, match=r"CBSERVER_TRUNK_URI=.* is not a SIP URI"):
        TrunkConfig.from_settings(make_settings(tmp_path, trunk_uri=uri))


def test_trunk_is_qualified_only_when_asked_and_never_the_demo_gateway(tmp_path: Path) -> None:
    demo = TrunkConfig.from_settings(
        make_settings(tmp_path, demo_gateway_port=5390, trunk_qualify_seconds=60)
    )
    real = TrunkConfig.from_settings(make_settings(tmp_path, trunk_uri="sip:gw.example.org"))
    pinged = TrunkConfig.from_settings(
        make_settings(tmp_path, trunk_uri="sip:gw.example.org", trunk_qualify_seconds=60)
    )

    assert demo.uri == "sip:127.0.0.1:5390"
    assert demo.hostport == "127.0.0.1:5390"
    assert demo.qualify_frequency == 0
    # Asterisk will not dial a contact it pinged and found unreachable: off unless asked.
    assert real.qualify_frequency == 0
    assert pinged.qualify_frequency == 60
