"""Find an Asterisk to run: one >= 20 on PATH, or a Debian sid root built once with debootstrap."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cbserver.asterisk.runtime import ChrootRuntime, HostRuntime

MIN_ASTERISK_MAJOR = 20
ROOT_PACKAGES = (
    "asterisk",
    "asterisk-modules",
    "asterisk-core-sounds-en-gsm",
    "asterisk-moh-opsound-gsm",
)
ROOT_MARKER = ".cbserver-root.json"
BUILD_ATTEMPTS = 3
DEBIAN_SUITES = frozenset(
    {"sid", "unstable", "testing", "stable", "oldstable"}
    | {"buster", "bullseye", "bookworm", "trixie", "forky", "duke"}
)

Progress = Callable[[str], None]


class ProvisionError(RuntimeError):
    """Asterisk could not be found or built; the message says what to do."""


_PHASES = {
    "Retrieving": "downloading packages",
    "Extracting": "extracting the base system",
    "Unpacking": "unpacking packages",
    "Configuring": "configuring packages",
}
# One package per line: "I: Retrieving adduser 3.137", "I: Unpacking adduser...". Index files
# ("I: Retrieving InRelease") and summaries ("I: Unpacking required packages...") do not count.
_PACKAGE_LINE = re.compile(r"^I: (\w+) ([a-z0-9][a-z0-9+.\-]*)(?: \S*\d\S*|\.\.\.)$")


@dataclass(frozen=True)
class DebootstrapProgress:
    """Folds debootstrap's ``I: Retrieving foo`` lines into a few phases with a package count."""

    phase: str
    count: int

    @classmethod
    def advance(cls, previous: DebootstrapProgress | None, line: str) -> DebootstrapProgress | None:
        match = _PACKAGE_LINE.match(line.rstrip("\n"))
        if not match or match.group(1) not in _PHASES:
            return previous
        phase = _PHASES[match.group(1)]
        if previous is not None and previous.phase == phase:
            return cls(phase, previous.count + 1)
        return cls(phase, 1)


def asterisk_major_version(version_output: str) -> int | None:
    """``Asterisk 22.10.1+dfsg...`` or ``Asterisk certified/20.7-cert3`` -> the major number."""
    match = re.search(r"Asterisk\s+(?:certified/)?(\d+)", version_output)
    return int(match.group(1)) if match else None


def host_asterisk(binary: str = "asterisk") -> HostRuntime | None:
    """An Asterisk >= 20 already installed on this host, if there is one."""
    path = shutil.which(binary)
    if path is None:
        return None
    try:
        result = subprocess.run(
            [path, "-V"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    major = asterisk_major_version(result.stdout)
    if major is None or major < MIN_ASTERISK_MAJOR:
        return None
    return HostRuntime(binary=path, version=result.stdout.strip())


def debian_mirror_from_apt(sources_dir: Path = Path("/etc/apt")) -> str | None:
    """The Debian archive this machine's apt already uses (one-line and deb822 formats)."""
    candidates: list[Path] = []
    if (sources_dir / "sources.list").is_file():
        candidates.append(sources_dir / "sources.list")
    parts = sources_dir / "sources.list.d"
    if parts.is_dir():
        candidates += sorted(parts.glob("*.list")) + sorted(parts.glob("*.sources"))
    for path in candidates:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        found = _deb822_mirror(text) if path.suffix == ".sources" else _one_line_mirror(text)
        if found:
            return found
    return None


def _is_debian_suite(suite: str) -> bool:
    return suite.split("-")[0] in DEBIAN_SUITES and not suite.endswith("-security")


def _is_debian_archive(uri: str, suites: list[str], components: list[str]) -> bool:
    # Vendor repositories often name the Debian release as their suite (Docker: "bookworm
    # stable"), but only the Debian archive has "main"; a cdrom: source is no network mirror.
    return (
        "main" in components
        and uri.startswith(("http://", "https://", "ftp://", "file:"))
        and any(_is_debian_suite(suite) for suite in suites)
    )


def _one_line_mirror(text: str) -> str | None:
    for line in text.splitlines():
        words = re.sub(r"\[[^\]]*\]", "", line.split("#", 1)[0]).split()
        if (
            len(words) >= 4
            and words[0] == "deb"
            and _is_debian_archive(words[1], [words[2]], words[3:])
        ):
            return words[1]
    return None


def _deb822_mirror(text: str) -> str | None:
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if ":" in line and not line.startswith(("#", " ")):
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled") == "no":
            continue
        uris = fields.get("uris", "").split()
        suites = fields.get("suites", "").split()
        components = fields.get("components", "").split()
        if uris and _is_debian_archive(uris[0], suites, components):
            return uris[0]
    return None


def root_is_complete(root: Path) -> bool:
    return (root / ROOT_MARKER).is_file() and (root / "usr/sbin/asterisk").is_file()


@contextmanager
def _build_lock(root: Path) -> Iterator[None]:
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_root(root: Path, mirror: str, progress: Progress) -> ChrootRuntime:
    """Build the Asterisk root once (about a minute) and reuse it afterwards."""
    with _build_lock(root):
        if not root_is_complete(root):
            _build_root(root, mirror, progress)
    return ChrootRuntime(root=root, version=_root_version(root))


def _root_version(root: Path) -> str:
    marker = json.loads((root / ROOT_MARKER).read_text())
    return str(marker.get("asterisk_version", "Asterisk (version unknown)"))


def _build_root(root: Path, mirror: str, progress: Progress) -> None:
    if os.geteuid() != 0:
        raise ProvisionError(
            "building the Asterisk root needs root (debootstrap and chroot): run this as root, "
            f"or install Asterisk >= {MIN_ASTERISK_MAJOR} so that `asterisk` is on PATH"
        )
    debootstrap = shutil.which("debootstrap") or _install_debootstrap(progress)
    partial = root.with_name(root.name + ".partial")
    for attempt in range(1, BUILD_ATTEMPTS + 1):
        shutil.rmtree(partial, ignore_errors=True)
        progress(
            f"building the Asterisk root in {root} from Debian sid "
            f"(attempt {attempt}/{BUILD_ATTEMPTS}; about a minute)"
        )
        started = time.monotonic()
        error_tail = _run_debootstrap(debootstrap, partial, mirror, progress, started)
        if error_tail is None:
            version = subprocess.run(
                ["chroot", str(partial), "/usr/sbin/asterisk", "-V"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            marker = {
                "packages": list(ROOT_PACKAGES),
                "mirror": mirror,
                "asterisk_version": version,
            }
            (partial / ROOT_MARKER).write_text(json.dumps(marker, indent=2))
            shutil.rmtree(root, ignore_errors=True)
            partial.rename(root)
            progress(f"Asterisk root ready in {time.monotonic() - started:.0f} s: {version}")
            return
        progress(
            "debootstrap failed. Debian sid moves every day and a passing package transition "
            "can break it for a few hours; "
            + ("retrying.\n" if attempt < BUILD_ATTEMPTS else "giving up.\n")
            + error_tail
        )
        if attempt < BUILD_ATTEMPTS:
            time.sleep(5 * attempt)
    shutil.rmtree(partial, ignore_errors=True)
    raise ProvisionError(
        f"could not build the Asterisk root after {BUILD_ATTEMPTS} attempts "
        f"(mirror {mirror}); see the debootstrap output above. If Debian sid is in a "
        "transition, try again later, or install Asterisk >= 20 on PATH."
    )


def _run_debootstrap(
    debootstrap: str, target: Path, mirror: str, progress: Progress, started: float
) -> str | None:
    """Run one debootstrap; None on success, else the tail of its output."""
    command = [
        debootstrap,
        "--variant=minbase",
        f"--include={','.join(ROOT_PACKAGES)}",
        "sid",
        str(target),
        mirror,
    ]
    tail: list[str] = []
    state: DebootstrapProgress | None = None
    reported: DebootstrapProgress | None = None
    last_report = 0.0
    progress("  resolving packages and dependencies")
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail = [*tail[-29:], line.rstrip()]
            new_state = DebootstrapProgress.advance(state, line)
            now = time.monotonic()
            phase_changed = (
                state is not None and new_state is not None and new_state.phase != state.phase
            )
            due = phase_changed or now - last_report >= 5
            if state is not None and state != reported and due:
                progress(f"  [{now - started:4.0f} s] {state.phase}: {state.count} done")
                reported, last_report = state, now
            state = new_state
        code = proc.wait()
    return None if code == 0 else f"debootstrap exited with {code}; last lines:\n" + "\n".join(tail)


def _install_debootstrap(progress: Progress) -> str:
    progress("debootstrap is missing; installing it with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "debootstrap"],
    ):
        result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0:
            raise ProvisionError(f"`{' '.join(command)}` failed:\n{result.stderr[-2000:]}")
    found = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin:/sbin")
    if found is None:
        raise ProvisionError("apt-get installed debootstrap but it is not on PATH")
    return found
