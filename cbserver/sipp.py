"""sipp peers: the demo PSTN gateway, and the phones and trunks of the end-to-end tests."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

# sipp's -trace_msg log: a dashed line with a time stamp, a header line, the message.
_BLOCK = re.compile(
    r"^-{10,} (?P<at>[^\n]*)\nUDP message (?P<direction>received|sent)[^\n]*\n\n"
    r"(?P<text>.*?)(?=^-{10,} |\Z)",
    re.MULTILINE | re.DOTALL,
)


class SippError(RuntimeError):
    """A sipp peer could not be started."""


@dataclass(frozen=True)
class SipMessage:
    direction: str
    text: str
    # When sipp logged it, as a Unix time (sipp writes the local wall clock).
    at: float | None = None

    @property
    def start_line(self) -> str:
        return self.text.split("\n", 1)[0].strip()

    @property
    def method(self) -> str | None:
        """The request's method; None for a response."""
        first = self.start_line
        return None if first.startswith("SIP/2.0") else first.split(" ", 1)[0]

    @property
    def status(self) -> int | None:
        first = self.start_line
        return int(first.split()[1]) if first.startswith("SIP/2.0") else None

    @property
    def request_uri(self) -> str:
        return self.start_line.split(" ")[1]

    def header(self, name: str) -> str | None:
        head = self.text.split("\n\n", 1)[0]
        for line in head.splitlines()[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None

    @property
    def body(self) -> str:
        parts = self.text.split("\n\n", 1)
        return parts[1] if len(parts) == 2 else ""


@dataclass
class SippPeer:
    """One sipp process on a loopback UDP port, logging every SIP message it sees."""

    name: str
    port: int
    workdir: Path
    scenario: Path | None = None
    builtin: str | None = None
    media_port: int | None = None
    rtp_echo: bool = False
    host: str = "127.0.0.1"
    extra_args: tuple[str, ...] = ()
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def message_file(self) -> Path:
        return self.workdir / f"{self.name}.messages.log"

    @property
    def output_file(self) -> Path:
        return self.workdir / f"{self.name}.out"

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        binary = shutil.which("sipp")
        if binary is None:
            raise SippError("sipp is not installed (Debian package: sip-tester)")
        if (self.scenario is None) == (self.builtin is None):
            raise SippError("a sipp peer needs exactly one of a scenario file or a built-in one")
        source = ["-sf", str(self.scenario)] if self.scenario else ["-sn", str(self.builtin)]
        media = ["-mi", self.host, "-mp", str(self.media_port)] if self.media_port else []
        return [
            binary,
            *source,
            "-i",
            self.host,
            "-p",
            str(self.port),
            *media,
            *(["-rtp_echo"] if self.rtp_echo else []),
            "-nostdin",
            "-trace_msg",
            "-message_file",
            str(self.message_file),
            "-trace_err",
            "-error_file",
            str(self.workdir / f"{self.name}.errors.log"),
            *self.extra_args,
        ]

    def start(self, timeout: float = 5.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.message_file.unlink(missing_ok=True)
        with open(self.output_file, "wb") as output:
            self._process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise SippError(
                    f"sipp peer {self.name!r} exited with {self._process.returncode}: "
                    + self.output_file.read_text(errors="replace")[-2000:]
                )
            if _udp_port_taken(self.host, self.port):
                return
            time.sleep(0.02)
        self.stop()
        raise SippError(f"sipp peer {self.name!r} did not bind {self.hostport}")

    def call(self, remote: str, *, calls: int = 1, timeout: float = 30.0) -> int:
        """Run a client scenario against ``remote`` (host:port) to its end; sipp's exit code."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.message_file.unlink(missing_ok=True)
        with open(self.output_file, "wb") as output:
            finished = subprocess.run(
                [*self.command(), "-m", str(calls), "-timeout", f"{timeout:.0f}s", remote],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                timeout=timeout + 5,
                check=False,
            )
        return finished.returncode

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def messages(self) -> list[SipMessage]:
        try:
            text = self.message_file.read_text(errors="replace").replace("\r\n", "\n")
        except FileNotFoundError:
            return []
        return [
            SipMessage(
                m.group("direction"), m.group("text").strip("\n") + "\n", _when(m.group("at"))
            )
            for m in _BLOCK.finditer(text)
        ]

    def received(self, method: str | None = None) -> list[SipMessage]:
        """Requests (of one method, if given) and responses this peer received."""
        return [
            m
            for m in self.messages()
            if m.direction == "received" and (method is None or m.method == method)
        ]


def _when(stamp: str) -> float | None:
    try:
        return datetime.strptime(stamp.strip(), "%Y-%m-%d %H:%M:%S.%f").timestamp()
    except ValueError:
        return None


def _udp_port_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False
