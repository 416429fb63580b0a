"""One Asterisk instance: its rendered config, secrets, process, and what it says about itself."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import httpx
import jinja2

from cbserver.asterisk.provision import (
    Progress,
    ProvisionError,
    debian_mirror_from_apt,
    ensure_root,
    host_asterisk,
)
from cbserver.asterisk.runtime import Runtime, runtime_from_state
from cbserver.config import Settings

# Where a wheel puts asterisk-conf/ (setup.cfg's data_files), under its installation prefix.
INSTALLED_TEMPLATES = Path("share", "cbserver", "asterisk-conf")


def _conf_templates() -> Path:
    """asterisk-conf/ at the top of a checkout (an editable install's too), else the wheel's
    copy in <prefix>/share: the prefix is the nearest directory above the package that holds
    one (a virtualenv or /usr/local: site-packages' grandparent; ``pip install --target``: the
    target itself)."""
    checkout = Path(__file__).resolve().parents[2] / "asterisk-conf"
    if checkout.is_dir():
        return checkout
    for prefix in Path(__file__).resolve().parents[2:]:
        if (prefix / INSTALLED_TEMPLATES).is_dir():
            return prefix / INSTALLED_TEMPLATES
    return checkout


CONF_TEMPLATES = _conf_templates()
KEY_MODULES = (
    "res_ari.so",
    "app_stasis.so",
    "res_pjsip.so",
    "chan_pjsip.so",
    "res_pjsip_transport_websocket.so",
    "res_srtp.so",
    "codec_opus_open_source.so",
    "app_queue.so",
    "res_agi.so",
)
_SIP_URI = re.compile(
    r"^sips?:(?:[A-Za-z0-9._~+\-]+@)?(?P<host>[A-Za-z0-9.\-]+|\[[0-9a-fA-F:]+\])(?::(?P<port>\d{1,5}))?$"
)


class AsteriskError(RuntimeError):
    """Asterisk did not do what was asked; the message says why and shows its log."""


class SipAgent(Protocol):
    """What the PJSIP config needs to know of an agent."""

    @property
    def name(self) -> str: ...
    @property
    def contact(self) -> str | None: ...
    @property
    def sip_password(self) -> str | None: ...
    @property
    def dtmf_mode(self) -> str: ...


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    @classmethod
    def generate(cls, prefix: str) -> Credentials:
        return cls(f"{prefix}-{secrets.token_hex(4)}", secrets.token_urlsafe(24))


@dataclass(frozen=True)
class InstanceSecrets:
    ari: Credentials
    ami: Credentials


@dataclass(frozen=True)
class TrunkConfig:
    uri: str
    host: str
    hostport: str
    username: str
    password: str
    register: bool
    from_domain: str
    qualify_frequency: int

    @classmethod
    def from_settings(cls, settings: Settings) -> TrunkConfig:
        uri = settings.effective_trunk_uri
        match = _SIP_URI.fullmatch(uri)
        if match is None:
            raise AsteriskError(
                f"CBSERVER_TRUNK_URI={uri!r} is not a SIP URI like sip:gateway.example.com:5060"
            )
        if settings.trunk_register and not (settings.trunk_username and settings.trunk_password):
            raise AsteriskError(
                "CBSERVER_TRUNK_REGISTER=yes needs CBSERVER_TRUNK_USERNAME and "
                "CBSERVER_TRUNK_PASSWORD"
            )
        host = match.group("host")
        port = match.group("port")
        return cls(
            uri=uri,
            host=host,
            hostport=f"{host}:{port}" if port else host,
            username=settings.trunk_username,
            password=settings.trunk_password,
            register=settings.trunk_register,
            from_domain=settings.trunk_from_domain,
            qualify_frequency=0 if settings.uses_demo_gateway else settings.trunk_qualify_seconds,
        )


@dataclass(frozen=True)
class InstanceStatus:
    name: str
    running: bool
    pid: int | None
    runtime: str | None
    version: str | None
    started_at: str | None
    uptime_seconds: float | None
    ports: dict[str, Any]
    ari_url: str
    modules: dict[str, str]
    directory: str


def _conf_value(value: object) -> str:
    """Escape a value for an Asterisk config line; a line break would start a new setting."""
    text = str(value)
    if any(c in text for c in "\r\n\0"):
        raise AsteriskError(f"refusing a line break in an Asterisk config value: {text!r}")
    return text.replace(";", r"\;")


def _template_env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(CONF_TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["conf"] = _conf_value
    return env


def _write_private(path: Path, text: str) -> None:
    # A temp name of its own: two writers (CLI and web) must not share one half-written file.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    tmp.replace(path)


def _process_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if stat.rsplit(")", 1)[1].split()[0] == "Z":
        # Our own child that exited; reap it so it does not linger as a zombie.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return b"asterisk" in cmdline


class AsteriskInstance:
    """An Asterisk of cbserver's own, under ``<state_dir>/asterisk/<instance>``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = settings.asterisk_instance
        self.directory = settings.state_dir / "asterisk" / self.name

    # --- files --------------------------------------------------------------------------

    @property
    def ari_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.http_port}/ari"

    @property
    def _state_file(self) -> Path:
        return self.directory / "instance.json"

    def secrets(self) -> InstanceSecrets:
        """This instance's ARI and AMI credentials, generated on first use and kept."""
        path = self.directory / "secrets.json"
        if path.exists():
            data = json.loads(path.read_text())
            return InstanceSecrets(Credentials(**data["ari"]), Credentials(**data["ami"]))
        made = InstanceSecrets(Credentials.generate("ari"), Credentials.generate("ami"))
        self.directory.mkdir(parents=True, exist_ok=True)
        _write_private(path, json.dumps(asdict(made), indent=2))
        return made

    def render(self, runtime: Runtime, agents: Iterable[SipAgent]) -> None:
        """Write every file of asterisk-conf/ into this instance's etc/."""
        # Asterisk creates neither: ARI recordings fail with ENOENT without spool/recording.
        for sub in ("etc", "db", "spool/recording", "spool/outgoing", "run", "log"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        env = _template_env()
        context = self._template_context(runtime, agents)
        for template in sorted(CONF_TEMPLATES.glob("*.conf")):
            text = env.get_template(template.name).render(context)
            _write_private(self.directory / "etc" / template.name, text)
        # cbserver's own prompts, where the dialplan plays them from (its global CBSERVER_SOUNDS).
        shutil.rmtree(self.directory / "sounds", ignore_errors=True)
        shutil.copytree(
            CONF_TEMPLATES / "sounds",
            self.directory / "sounds",
            ignore=shutil.ignore_patterns("make-prompts"),
        )

    def write_agents(self, agents: Iterable[SipAgent]) -> None:
        env = _template_env()
        text = env.get_template("pjsip_agents.conf").render(agents=self._agent_context(agents))
        (self.directory / "etc").mkdir(parents=True, exist_ok=True)
        _write_private(self.directory / "etc" / "pjsip_agents.conf", text)

    def _agent_context(self, agents: Iterable[SipAgent]) -> list[dict[str, Any]]:
        return [
            {
                "name": agent.name,
                "contact": agent.contact,
                "password": agent.sip_password,
                "dtmf_mode": agent.dtmf_mode,
            }
            for agent in agents
        ]

    def _template_context(self, runtime: Runtime, agents: Iterable[SipAgent]) -> dict[str, Any]:
        s = self.settings
        root = runtime.asterisk_dir(self.directory)
        keys = self.secrets()
        bind = f"[{s.sip_bind}]" if ":" in s.sip_bind else s.sip_bind
        return {
            "instance": self.name,
            "system_name": re.sub(r"[^A-Za-z0-9-]", "-", f"cbserver-{self.name}"),
            "dirs": {
                sub: f"{root}/{sub}" for sub in ("etc", "db", "spool", "run", "log", "sounds")
            },
            "ports": {
                "sip": s.sip_port,
                "http": s.http_port,
                "ami": s.ami_port,
                "agi": s.agi_port,
                "rtp_start": s.rtp_port_start,
                "rtp_end": s.rtp_port_end,
            },
            "sip_bind_hostport": f"{bind}:{s.sip_port}",
            "agent_networks": s.agent_network_list,
            "media_address": s.effective_media_address,
            "ari": {**asdict(keys.ari)},
            "ami": {**asdict(keys.ami)},
            "ari_app": s.ari_app,
            "trunk": asdict(TrunkConfig.from_settings(s)),
            "agents": self._agent_context(agents),
        }

    # --- the process -------------------------------------------------------------------

    def resolve_runtime(self, progress: Progress) -> Runtime:
        """The configured binary, else an Asterisk >= 20 on PATH, else the provisioned root."""
        s = self.settings
        if s.asterisk_binary:
            found = host_asterisk(s.asterisk_binary)
            if found is None:
                raise ProvisionError(
                    f"CBSERVER_ASTERISK_BINARY={s.asterisk_binary!r} is not an Asterisk >= 20"
                )
            return found
        on_path = host_asterisk()
        if on_path is not None:
            return on_path
        mirror = s.debian_mirror or debian_mirror_from_apt()
        if not mirror:
            raise ProvisionError(
                "no Debian mirror found in /etc/apt: set CBSERVER_DEBIAN_MIRROR to the Debian "
                "archive URL to build the Asterisk root from"
            )
        return ensure_root(s.asterisk_root, mirror, progress)

    def _saved_state(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self._state_file.read_text())
        except (OSError, ValueError):
            return None
        return data

    def pid(self) -> int | None:
        """The running Asterisk's pid, or None when it is not running."""
        state = self._saved_state()
        if state is None:
            return None
        pid = int(state["pid"])
        return pid if _process_alive(pid) else None

    def _saved_runtime(self) -> Runtime:
        state = self._saved_state()
        if state is None:
            raise AsteriskError(f"Asterisk instance {self.name!r} is not running")
        return runtime_from_state(state["runtime"])

    def start(self, agents: Iterable[SipAgent], progress: Progress) -> bool:
        """Start Asterisk and wait until ARI answers. False when it was already running."""
        running = self.pid()
        if running is not None:
            if self._ari_answers():
                return False
            raise AsteriskError(
                f"Asterisk (pid {running}) is running but ARI does not answer on {self.ari_url}; "
                "stop it with `cbserver asterisk stop` and start again.\n" + self.log_tail()
            )
        runtime = self.resolve_runtime(progress)
        runtime.prepare()
        self.render(runtime, agents)
        for stale in ("asterisk.ctl", "asterisk.pid"):
            (self.directory / "run" / stale).unlink(missing_ok=True)
        console_log = self.directory / "log" / "console.log"
        (self.directory / "log" / "messages").unlink(missing_ok=True)
        with open(console_log, "w") as console:
            process = subprocess.Popen(
                runtime.start_command(self.directory),
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        state = {
            "pid": process.pid,
            "runtime": runtime.to_state(),
            "started_at": datetime.now(UTC).isoformat(),
            "ports": self._ports(),
        }
        _write_private(self._state_file, json.dumps(state, indent=2))
        progress(f"starting {runtime.description}")
        self._wait_until_ready(process)
        return True

    def _ports(self) -> dict[str, Any]:
        s = self.settings
        return {
            "sip_udp": s.sip_port,
            "http_ari": s.http_port,
            "ami": s.ami_port,
            "rtp": f"{s.rtp_port_start}-{s.rtp_port_end}",
        }

    def _ari_answers(self) -> bool:
        try:
            self.ari_get("/asterisk/info", timeout=2.0)
        except (httpx.HTTPError, AsteriskError):
            return False
        return True

    def ari_get(self, path: str, timeout: float = 5.0) -> Any:
        return self._ari("GET", path, timeout).json()

    def ari_put(self, path: str, timeout: float = 10.0) -> None:
        self._ari("PUT", path, timeout)

    def _ari(self, method: str, path: str, timeout: float) -> httpx.Response:
        """A synchronous ARI call for the command line (the worker uses cbserver.ari)."""
        keys = self.secrets().ari
        response = httpx.request(
            method, self.ari_url + path, auth=(keys.username, keys.password), timeout=timeout
        )
        if not response.is_success:
            raise AsteriskError(
                f"ARI {method} {path} answered {response.status_code}: {response.text}"
            )
        return response

    def _wait_until_ready(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self.settings.asterisk_start_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AsteriskError(
                    f"Asterisk exited with code {process.returncode} while starting.\n"
                    + self.log_tail()
                )
            if self._ari_answers():
                remaining = max(1.0, deadline - time.monotonic())
                self.cli(["-rx", "core waitfullybooted"], timeout=remaining)
                return
            time.sleep(0.1)
        self.stop()
        raise AsteriskError(
            f"ARI did not answer on {self.ari_url} within "
            f"{self.settings.asterisk_start_timeout:.0f} s, so Asterisk was stopped "
            f"(is port {self.settings.http_port} taken? see Asterisk's log below).\n"
            + self.log_tail()
        )

    def log_tail(self, lines: int = 15) -> str:
        """Asterisk's errors and warnings, then its last lines: what an admin needs to see first."""
        # "messages" is Asterisk's own log; console.log catches what it printed before logging.
        for name in ("messages", "console.log"):
            path = self.directory / "log" / name
            text = path.read_text(errors="replace").splitlines() if path.exists() else []
            if text:
                problems = [line for line in text if re.search(r"\b(ERROR|WARNING)\[", line)]
                parts = (
                    [f"--- errors and warnings in {path} ---", *problems[-lines:]]
                    if problems
                    else []
                )
                parts += [f"--- last lines of {path} ---", *text[-lines:]]
                return "\n".join(parts)
        return f"(Asterisk wrote no log in {self.directory / 'log'})"

    def stop(self, timeout: float = 15.0) -> bool:
        """Stop Asterisk; False when it was not running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _process_alive(pid):
                return True
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        while _process_alive(pid):
            time.sleep(0.05)
        return True

    def cli(self, args: Sequence[str], timeout: float = 30.0) -> str:
        """Run ``asterisk -rx ...`` against this instance and return what it printed."""
        command = self.cli_command(args)
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise AsteriskError(f"`{' '.join(args)}` failed: {result.stderr or result.stdout}")
        return result.stdout

    def cli_command(self, args: Sequence[str]) -> list[str]:
        pid = self.pid()
        if pid is None:
            raise AsteriskError(f"Asterisk instance {self.name!r} is not running")
        return self._saved_runtime().cli_command(pid, self.directory, list(args))

    def sync_agents(self, agents: Iterable[SipAgent]) -> bool:
        """Rewrite the agents' PJSIP file; reload res_pjsip when Asterisk runs. True if reloaded."""
        self.write_agents(agents)
        if self.pid() is None:
            return False
        self.ari_put("/asterisk/modules/res_pjsip.so")
        return True

    def status(self) -> InstanceStatus:
        pid = self.pid()
        state = self._saved_state() or {}
        version = started = None
        uptime = None
        modules: dict[str, str] = {}
        if pid is not None:
            try:
                info = self.ari_get("/asterisk/info")
                version = info["system"]["version"]
                started = info["status"]["startup_time"]
                uptime = (datetime.now(UTC) - datetime.fromisoformat(started)).total_seconds()
                loaded = {m["name"]: m["status"] for m in self.ari_get("/asterisk/modules")}
                modules = {name: loaded.get(name, "Not loaded") for name in KEY_MODULES}
            except (httpx.HTTPError, AsteriskError, KeyError, ValueError):
                version = None
        runtime = state.get("runtime", {}).get("version") if state else None
        return InstanceStatus(
            name=self.name,
            running=pid is not None,
            pid=pid,
            runtime=runtime,
            version=version,
            started_at=started,
            uptime_seconds=uptime,
            ports=self._ports(),
            ari_url=self.ari_url,
            modules=modules,
            directory=str(self.directory),
        )
