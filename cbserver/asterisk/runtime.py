"""How an Asterisk binary is launched: straight from the host, or inside the provisioned root."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# Where an instance's directory appears inside the provisioned root.
CHROOT_INSTANCE_DIR = "/cbserver"

# Runs inside a private mount namespace (unshare), so every mount vanishes with Asterisk
# itself: a crash never leaves /proc or /dev mounted in the root.
_CHROOT_START = """
set -e
root="$1"; instance="$2"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount --bind "$instance" "$root/cbserver"
mount --bind /etc/hosts "$root/etc/hosts"
if [ -e /etc/resolv.conf ]; then mount --bind /etc/resolv.conf "$root/etc/resolv.conf"; fi
exec chroot "$root" /usr/sbin/asterisk -C /cbserver/etc/asterisk.conf -f
"""


class Runtime(Protocol):
    @property
    def version(self) -> str: ...

    @property
    def description(self) -> str: ...

    def asterisk_dir(self, instance_dir: Path) -> str:
        """The instance directory as Asterisk sees it."""
        ...

    def prepare(self) -> None: ...

    def start_command(self, instance_dir: Path) -> list[str]: ...

    def cli_command(self, pid: int, instance_dir: Path, args: list[str]) -> list[str]: ...

    def to_state(self) -> dict[str, str]:
        """What ``runtime_from_state`` needs to find this runtime again."""
        ...


def runtime_from_state(state: dict[str, str]) -> Runtime:
    if state["kind"] == "chroot":
        return ChrootRuntime(root=Path(state["root"]), version=state["version"])
    return HostRuntime(binary=state["binary"], version=state["version"])


@dataclass(frozen=True)
class HostRuntime:
    binary: str
    version: str

    @property
    def description(self) -> str:
        return f"{self.version} ({self.binary})"

    def asterisk_dir(self, instance_dir: Path) -> str:
        return str(instance_dir)

    def prepare(self) -> None:
        return None

    def start_command(self, instance_dir: Path) -> list[str]:
        return [self.binary, "-C", str(instance_dir / "etc" / "asterisk.conf"), "-f"]

    def cli_command(self, pid: int, instance_dir: Path, args: list[str]) -> list[str]:
        return [self.binary, "-C", str(instance_dir / "etc" / "asterisk.conf"), *args]

    def to_state(self) -> dict[str, str]:
        return {"kind": "host", "binary": self.binary, "version": self.version}


@dataclass(frozen=True)
class ChrootRuntime:
    root: Path
    version: str

    @property
    def description(self) -> str:
        return f"{self.version} (provisioned root {self.root})"

    def asterisk_dir(self, instance_dir: Path) -> str:
        return CHROOT_INSTANCE_DIR

    def prepare(self) -> None:
        (self.root / CHROOT_INSTANCE_DIR.lstrip("/")).mkdir(exist_ok=True)
        for name in ("etc/hosts", "etc/resolv.conf"):
            (self.root / name).touch(exist_ok=True)

    def start_command(self, instance_dir: Path) -> list[str]:
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "/bin/sh",
            "-c",
            _CHROOT_START,
            "cbserver-asterisk",
            str(self.root),
            str(instance_dir),
        ]

    def cli_command(self, pid: int, instance_dir: Path, args: list[str]) -> list[str]:
        # nsenter joins the running Asterisk's mount namespace and root, where its
        # control socket and config are at their in-root paths.
        return [
            "nsenter",
            f"--target={pid}",
            "--mount",
            "--root",
            "--wd=/",
            "/usr/sbin/asterisk",
            "-C",
            f"{CHROOT_INSTANCE_DIR}/etc/asterisk.conf",
            *args,
        ]

    def to_state(self) -> dict[str, str]:
        return {"kind": "chroot", "root": str(self.root), "version": self.version}
