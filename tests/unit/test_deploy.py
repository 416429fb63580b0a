"""deploy/install.sh, run for real into a temporary root (--root, --no-systemd): a fresh
virtualenv with cbserver in it, a private config file kept across runs, and systemd units whose
commands exist in the prefix and serve. The machine's /etc and systemd are never touched."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cbserver.asterisk.provision import host_asterisk, root_is_complete
from cbserver.config import Settings

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "deploy" / "install.sh"
UNITS = sorted(path.name for path in (REPO / "deploy" / "systemd").glob("*.service"))
# A fresh virtualenv with every dependency from pip's cache takes 20 to 40 s.
INSTALL_TIMEOUT = 170

pytestmark = pytest.mark.timeout(INSTALL_TIMEOUT * 2 + 60)


@dataclass(frozen=True)
class Installed:
    root: Path
    output: str

    @property
    def prefix(self) -> Path:
        return self.root / "opt" / "cbserver"

    @property
    def config(self) -> Path:
        return self.root / "etc" / "cbserver" / "cbserver.toml"

    @property
    def state_dir(self) -> Path:
        return self.root / "var" / "lib" / "cbserver"

    def unit(self, name: str) -> Path:
        return self.root / "etc" / "systemd" / "system" / name


def _environment() -> dict[str, str]:
    """The machine's environment without its CBSERVER_* settings; an Asterisk root already
    built for the test suite is reused (building one is a minute of debootstrap)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("CBSERVER_")}
    built = Settings.load(environ={}).asterisk_root
    if root_is_complete(built):
        env["CBSERVER_ASTERISK_ROOT"] = str(built)
    return env


def _asterisk_is_at_hand() -> bool:
    return host_asterisk() is not None or root_is_complete(Settings.load(environ={}).asterisk_root)


def run_install(root: Path) -> str:
    args = [str(INSTALL), "--root", str(root), "--no-systemd", "--no-start"]
    if not _asterisk_is_at_hand():
        # Nothing to find and no time to build: `make test` provisions one before the tests.
        args.append("--no-asterisk")
    result = subprocess.run(
        args,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("install-root")
    return Installed(root, run_install(root))


def unit_settings(path: Path) -> dict[str, list[str]]:
    """Each ``Key=value`` of a unit file, values in order of appearance."""
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def unit_environment(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for value in unit_settings(path).get("Environment", []):
        for assignment in shlex.split(value):
            name, setting = assignment.split("=", 1)
            env[name] = setting
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_the_installed_cbserver_runs_from_its_own_virtualenv(installed: Installed) -> None:
    cbserver = installed.prefix / "venv" / "bin" / "cbserver"

    result = subprocess.run(
        [str(cbserver), "--help"], capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 0, result.stderr
    assert "worker" in result.stdout
    assert (installed.prefix / "src" / "asterisk-conf" / "pjsip.conf").is_file()


def test_the_config_file_is_private_and_holds_a_generated_secret(installed: Installed) -> None:
    mode = stat.S_IMODE(installed.config.stat().st_mode)
    settings = Settings.load(environ={}, config_file=installed.config)

    assert mode == 0o640
    assert settings.state_dir == installed.state_dir
    assert len(settings.secret_key) >= 40


def test_the_worker_can_read_the_ari_password_before_asterisk_first_starts(
    installed: Installed,
) -> None:
    secrets = installed.state_dir / "asterisk" / "default" / "secrets.json"

    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert secrets.stat().st_uid == os.getuid()


@pytest.mark.parametrize("name", UNITS)
def test_every_command_of_a_unit_is_in_the_prefix(installed: Installed, name: str) -> None:
    settings = unit_settings(installed.unit(name))
    commands = [
        shlex.split(line)[0]
        for key in ("ExecStartPre", "ExecStart", "ExecStop")
        for line in settings.get(key, [])
    ]

    assert commands
    for program in commands:
        assert program.startswith(f"{installed.prefix}/venv/bin/"), program
        assert os.access(program, os.X_OK), program
    assert unit_environment(installed.unit(name))["CBSERVER_CONFIG"] == str(installed.config)
    assert settings["ReadWritePaths"] == [str(installed.state_dir)]


def test_the_worker_unit_waits_longer_than_the_worker_drains(installed: Installed) -> None:
    settings = unit_settings(installed.unit("cbserver-worker.service"))

    assert settings["KillSignal"] == ["SIGTERM"]
    assert int(settings["TimeoutStopSec"][0]) > 60


def test_the_web_unit_serves_the_health_check(installed: Installed) -> None:
    unit = installed.unit("cbserver-web.service")
    settings = unit_settings(unit)
    port = free_port()
    env = {
        **_environment(),
        **unit_environment(unit),
        "GUNICORN_CMD_ARGS": f"--bind=127.0.0.1:{port} --workers=1",
    }
    for line in settings["ExecStartPre"]:
        subprocess.run(shlex.split(line), env=env, timeout=60, check=True, capture_output=True)

    web = subprocess.Popen(
        shlex.split(settings["ExecStart"][0]),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        answer = None
        deadline = time.monotonic() + 30
        while answer is None and time.monotonic() < deadline and web.poll() is None:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
            except httpx.TransportError:
                time.sleep(0.1)
    finally:
        web.terminate()
        _, errors = web.communicate(timeout=30)

    assert answer is not None, errors
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "database": "ok"}


@pytest.mark.e2e
@pytest.mark.skipif(
    not _asterisk_is_at_hand() or (host_asterisk() is None and os.geteuid() != 0),
    reason="needs an Asterisk: one on PATH, or the provisioned root (and root to enter it)",
)
def test_the_asterisk_and_worker_units_start_connect_and_stop(
    installed: Installed, tmp_path: Path
) -> None:
    asterisk = unit_settings(installed.unit("cbserver-asterisk.service"))
    worker = unit_settings(installed.unit("cbserver-worker.service"))
    env = {
        **_environment(),
        **unit_environment(installed.unit("cbserver-asterisk.service")),
        # Ports of this test's own, beside any other Asterisk on the machine.
        **{
            f"CBSERVER_{name}_PORT": str(free_port())
            for name in ("SIP", "HTTP", "AMI", "WORKER_WAKE")
        },
    }
    status = [str(installed.prefix / "venv" / "bin" / "cbserver"), "asterisk", "status"]
    subprocess.run(shlex.split(asterisk["ExecStart"][0]), env=env, timeout=150, check=True)
    worker_log = tmp_path / "worker.log"
    try:
        with worker_log.open("w") as log:
            process = subprocess.Popen(
                shlex.split(worker["ExecStart"][0]), env=env, stdout=log, stderr=log
            )
        try:
            deadline = time.monotonic() + 30
            while "registered" not in worker_log.read_text() and time.monotonic() < deadline:
                assert process.poll() is None, worker_log.read_text()
                time.sleep(0.1)
            connected = worker_log.read_text()
        finally:
            process.send_signal(signal.SIGTERM)
            exit_code = process.wait(timeout=int(worker["TimeoutStopSec"][0]))
    finally:
        subprocess.run(shlex.split(asterisk["ExecStop"][0]), env=env, timeout=60, check=True)

    assert "Stasis app cbserver registered" in connected
    assert exit_code == 0, worker_log.read_text()
    stopped = subprocess.run(status, env=env, capture_output=True, timeout=60, check=False)
    assert stopped.returncode == 3


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)
def test_every_unit_passes_systemd_analyze_verify(installed: Installed) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", *(str(installed.unit(name)) for name in UNITS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "cbserver" not in result.stderr, result.stderr


def test_a_second_run_keeps_the_config_and_rewrites_the_units(installed: Installed) -> None:
    edited = installed.config.read_text() + 'trunk_uri = "sip:gateway.example.com:5060"\n'
    installed.config.write_text(edited)
    installed.unit("cbserver-worker.service").write_text("[Service]\n")

    output = run_install(installed.root)

    assert installed.config.read_text() == edited
    assert f"keeping {installed.config}" in output
    assert stat.S_IMODE(installed.config.stat().st_mode) == 0o640
    worker = unit_settings(installed.unit("cbserver-worker.service"))
    assert worker["ExecStart"] == [f"{installed.prefix}/venv/bin/cbserver worker"]
