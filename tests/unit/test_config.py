"""Settings: CBSERVER_* environment over a TOML file over the defaults in code."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from cbserver.config import ConfigError, Settings

SYSTEM_ASTERISK_PORTS = {5060, 5061, 8088, 8089, 5038}


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cbserver.toml"
    path.write_text(text)
    return path


def test_default_ports_stay_clear_of_a_system_asterisk() -> None:
    settings = Settings.load(environ={})

    assert {settings.sip_port, settings.http_port, settings.ami_port}.isdisjoint(
        SYSTEM_ASTERISK_PORTS
    )
    assert len({settings.sip_port, settings.http_port, settings.ami_port}) == 3
    # A stock Asterisk's rtp.conf uses 10000-20000.
    assert settings.rtp_port_start > 20000 or settings.rtp_port_end < 10000
    assert settings.sip_bind == "127.0.0.1"


def test_default_state_dir_follows_xdg_state_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))

    settings = Settings.load(environ={})

    assert settings.state_dir == tmp_path / "state" / "cbserver"


def test_default_database_is_sqlite_under_the_state_dir(tmp_path: Path) -> None:
    settings = Settings.load(environ={"CBSERVER_STATE_DIR": str(tmp_path)})

    assert settings.effective_database_url == f"sqlite:///{tmp_path}/cbserver.sqlite3"


def test_explicit_database_url_wins_over_the_sqlite_default(tmp_path: Path) -> None:
    url = "postgresql+psycopg://cb@db.example.org/cbserver"
    settings = Settings.load(
        environ={"CBSERVER_STATE_DIR": str(tmp_path), "CBSERVER_DATABASE_URL": url}
    )

    assert settings.effective_database_url == url


def test_environment_overrides_file_which_overrides_defaults(tmp_path: Path) -> None:
    config = write_toml(
        tmp_path,
        'sip_port = 6100\nhttp_port = 6101\ntrunk_uri = "sip:gw.example.org:5060"\n'
        "trunk_register = true\n",
    )
    environ = {"CBSERVER_SIP_PORT": "7100", "CBSERVER_TRUNK_REGISTER": "no"}

    settings = Settings.load(environ=environ, config_file=config)

    assert settings.sip_port == 7100  # environment beats the file
    assert settings.http_port == 6101  # the file beats the default
    assert settings.trunk_uri == "sip:gw.example.org:5060"
    assert settings.trunk_register is False
    assert settings.ami_port == Settings().ami_port  # neither: the default


def test_config_file_is_found_through_cbserver_config(tmp_path: Path) -> None:
    config = write_toml(tmp_path, "ami_port = 6200\n")

    settings = Settings.load(environ={"CBSERVER_CONFIG": str(config)})

    assert settings.ami_port == 6200


def test_empty_environment_variable_does_not_override_the_file(tmp_path: Path) -> None:
    config = write_toml(tmp_path, 'trunk_uri = "sip:gw.example.org"\n')

    settings = Settings.load(environ={"CBSERVER_TRUNK_URI": ""}, config_file=config)

    assert settings.trunk_uri == "sip:gw.example.org"


@pytest.mark.parametrize("text", ["yes", "true", "1", "on", "YES"])
def test_truthy_words_enable_a_boolean(text: str) -> None:
    assert Settings.load(environ={"CBSERVER_TRUNK_REGISTER": text}).trunk_register is True


@pytest.mark.parametrize("text", ["no", "false", "0", "off"])
def test_falsy_words_disable_a_boolean(text: str) -> None:
    assert Settings.load(environ={"CBSERVER_TRUNK_REGISTER": text}).trunk_register is False


def test_bad_integer_in_environment_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="CBSERVER_SIP_PORT") as caught:
        Settings.load(environ={"CBSERVER_SIP_PORT": "fifty"})

    assert "fifty" in str(caught.value)


def test_bad_boolean_in_environment_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="CBSERVER_TRUNK_REGISTER") as caught:
        Settings.load(environ={"CBSERVER_TRUNK_REGISTER": "maybe"})

    assert "maybe" in str(caught.value)


def test_bad_integer_in_file_names_the_setting(tmp_path: Path) -> None:
    config = write_toml(tmp_path, 'http_port = "eighty"\n')

    with pytest.raises(ConfigError, match="http_port"):
        Settings.load(environ={}, config_file=config)


def test_boolean_is_not_accepted_as_a_port(tmp_path: Path) -> None:
    config = write_toml(tmp_path, "sip_port = true\n")

    with pytest.raises(ConfigError, match="sip_port"):
        Settings.load(environ={}, config_file=config)


def test_unknown_key_in_file_is_refused(tmp_path: Path) -> None:
    config = write_toml(tmp_path, "sip_prot = 6000\n")

    with pytest.raises(ConfigError, match="sip_prot"):
        Settings.load(environ={}, config_file=config)


def test_missing_config_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.load(environ={}, config_file=tmp_path / "absent.toml")


def test_invalid_toml_is_reported(tmp_path: Path) -> None:
    config = write_toml(tmp_path, "sip_port = = 1\n")

    with pytest.raises(ConfigError, match="not valid TOML"):
        Settings.load(environ={}, config_file=config)


def test_identical_ports_are_refused() -> None:
    with pytest.raises(ConfigError, match="must differ"):
        Settings.load(environ={"CBSERVER_HTTP_PORT": "6000", "CBSERVER_AMI_PORT": "6000"})


def test_out_of_range_port_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="CBSERVER_SIP_PORT=70000"):
        Settings.load(environ={"CBSERVER_SIP_PORT": "70000"})


def test_tiny_rtp_range_is_refused() -> None:
    with pytest.raises(ConfigError, match="RTP port range 40000-40004 is too small"):
        Settings.load(
            environ={"CBSERVER_RTP_PORT_START": "40000", "CBSERVER_RTP_PORT_END": "40004"}
        )


def test_non_positive_start_timeout_is_refused() -> None:
    with pytest.raises(ConfigError, match="CBSERVER_ASTERISK_START_TIMEOUT"):
        Settings.load(environ={"CBSERVER_ASTERISK_START_TIMEOUT": "0"})


def test_media_address_defaults_to_the_sip_bind_address() -> None:
    settings = Settings.load(environ={"CBSERVER_SIP_BIND": "192.0.2.7"})

    assert settings.effective_media_address == "192.0.2.7"


@pytest.mark.parametrize("wildcard", ["0.0.0.0", "::"])
def test_media_address_is_loopback_when_sip_binds_every_interface(wildcard: str) -> None:
    settings = Settings.load(environ={"CBSERVER_SIP_BIND": wildcard})

    assert settings.effective_media_address == "127.0.0.1"


def test_explicit_media_address_wins() -> None:
    settings = Settings.load(
        environ={"CBSERVER_SIP_BIND": "0.0.0.0", "CBSERVER_MEDIA_ADDRESS": "198.51.100.4"}
    )

    assert settings.effective_media_address == "198.51.100.4"


def test_demo_gateway_is_the_trunk_until_a_trunk_uri_is_set() -> None:
    demo = Settings.load(environ={"CBSERVER_DEMO_GATEWAY_PORT": "5390"})
    real = Settings.load(environ={"CBSERVER_TRUNK_URI": "sip:gw.example.org"})

    assert demo.uses_demo_gateway
    assert demo.effective_trunk_uri == "sip:127.0.0.1:5390"
    assert not real.uses_demo_gateway
    assert real.effective_trunk_uri == "sip:gw.example.org"


def test_ring_and_accept_times_reach_the_call_flow() -> None:
    from cbserver.callflow import call_settings

    settings = Settings.load(
        environ={
            "CBSERVER_AGENT_RING_SECONDS": "12",
            "CBSERVER_VISITOR_RING_SECONDS": "50",
            "CBSERVER_ACCEPT_SECONDS": "7.5",
        }
    )
    call = call_settings(settings)
    assert (call.agent_ring_seconds, call.visitor_ring_seconds, call.accept_seconds) == (
        12,
        50,
        7.5,
    )
    assert call.app == settings.ari_app


@pytest.mark.parametrize("value", ["0", "601", "-5"])
def test_a_ring_time_outside_one_to_600_seconds_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match=f"CBSERVER_AGENT_RING_SECONDS={value} must be 1 to 600"):
        Settings.load(environ={"CBSERVER_AGENT_RING_SECONDS": value})


# --- the worker and its Asterisk -----------------------------------------------------------

REMOTE_ARI = {
    "CBSERVER_ARI_URL": "http://10.0.0.5:8088/ari",
    "CBSERVER_ARI_USERNAME": "cbserver",
    "CBSERVER_ARI_PASSWORD": "ari-secret",
}


def test_a_worker_is_named_after_its_host_and_carries_fifty_calls_by_default() -> None:
    settings = Settings.load(environ={})

    assert settings.worker_name == ""
    assert settings.effective_worker_name == socket.gethostname()
    assert settings.worker_max_calls == 50
    assert settings.worker_lease_seconds == 120.0


def test_worker_settings_are_read_from_the_environment() -> None:
    settings = Settings.load(
        environ={
            "CBSERVER_WORKER_NAME": "call-node_2.example.com:b",
            "CBSERVER_WORKER_MAX_CALLS": "2000",
            "CBSERVER_WORKER_LEASE_SECONDS": "2.5",
        }
    )

    assert settings.effective_worker_name == "call-node_2.example.com:b"
    assert settings.worker_max_calls == 2000
    assert settings.worker_lease_seconds == 2.5


def test_a_worker_name_of_64_characters_is_taken() -> None:
    name = "n" * 64

    assert Settings.load(environ={"CBSERVER_WORKER_NAME": name}).effective_worker_name == name


@pytest.mark.parametrize("name", ["n" * 65, "node 2", "node/2", "nöde"])
def test_a_worker_name_that_does_not_fit_is_refused(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.load(environ={"CBSERVER_WORKER_NAME": name})

    assert str(caught.value) == (
        f"CBSERVER_WORKER_NAME={name!r} must be at most 64 letters, digits and . _ : -"
    )


@pytest.mark.parametrize("value", ["0", "2001"])
def test_a_worker_max_calls_outside_one_to_2000_is_refused(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.load(environ={"CBSERVER_WORKER_MAX_CALLS": value})

    assert str(caught.value) == f"CBSERVER_WORKER_MAX_CALLS={value} must be 1 to 2000 calls"


@pytest.mark.parametrize("value", ["1.5", "3601"])
def test_a_lease_outside_two_to_3600_seconds_is_refused(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.load(environ={"CBSERVER_WORKER_LEASE_SECONDS": value})

    assert str(caught.value) == (f"CBSERVER_WORKER_LEASE_SECONDS={value} must be 2 to 3600 seconds")


def test_the_managed_asterisk_is_used_until_an_ari_url_is_set() -> None:
    managed = Settings.load(environ={})
    remote = Settings.load(environ=REMOTE_ARI)

    assert (managed.ari_url, managed.uses_remote_ari) == ("", False)
    assert remote.uses_remote_ari
    assert (remote.ari_url, remote.ari_username, remote.ari_password) == (
        "http://10.0.0.5:8088/ari",
        "cbserver",
        "ari-secret",
    )


@pytest.mark.parametrize(
    "url",
    ["10.0.0.5:8088/ari", "ws://10.0.0.5:8088/ari", "http:///ari", "http://10.0.0.5:99999/ari"],
)
def test_an_ari_url_that_is_no_http_url_is_refused(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.load(environ={**REMOTE_ARI, "CBSERVER_ARI_URL": url})

    assert str(caught.value) == (
        f"CBSERVER_ARI_URL={url!r} is not an ARI URL like http://10.0.0.5:8088/ari"
    )


@pytest.mark.parametrize("missing", ["CBSERVER_ARI_USERNAME", "CBSERVER_ARI_PASSWORD"])
def test_an_ari_url_needs_a_username_and_a_password(missing: str) -> None:
    environ = {name: value for name, value in REMOTE_ARI.items() if name != missing}

    with pytest.raises(ConfigError) as caught:
        Settings.load(environ=environ)

    assert str(caught.value) == (
        f"{missing} is needed with CBSERVER_ARI_URL (a user of that Asterisk's ari.conf)"
    )


def test_an_ari_url_carrying_a_password_is_refused_without_showing_it() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.load(
            environ={**REMOTE_ARI, "CBSERVER_ARI_URL": "http://cb:hunter2@10.0.0.5:8088/ari"}
        )

    assert "hunter2" not in str(caught.value)
    assert str(caught.value) == (
        "CBSERVER_ARI_URL must not carry a user or password: set CBSERVER_ARI_USERNAME and "
        "CBSERVER_ARI_PASSWORD"
    )
