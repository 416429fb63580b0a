"""Finding an Asterisk: version parsing, a host binary, the Debian mirror apt already uses,
and debootstrap's progress. Fake binaries and apt directories only; nothing is installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from cbserver.asterisk.provision import (
    ROOT_MARKER,
    DebootstrapProgress,
    asterisk_major_version,
    debian_mirror_from_apt,
    host_asterisk,
    root_is_complete,
)
from cbserver.asterisk.runtime import HostRuntime

MIRROR = "http://mirror.example.org/debian"
SECURITY = "http://security.example.org/debian-security"
THIRD_PARTY = "https://repo.example.com/node_22.x"


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ("Asterisk 22.10.1+dfsg+~cs6.17.60671434-1\n", 22),
        ("Asterisk certified/20.7-cert3\n", 20),
        ("Asterisk 18.2.0\n", 18),
        ("Asterisk 21.4.0", 21),
    ],
)
def test_major_version_is_read_from_real_version_lines(output: str, major: int) -> None:
    assert asterisk_major_version(output) == major


@pytest.mark.parametrize("output", ["", "bash: asterisk: command not found", "Asterisk GIT-master"])
def test_major_version_of_garbage_is_none(output: str) -> None:
    assert asterisk_major_version(output) is None


def fake_binary(tmp_path: Path, output: str, exit_code: int = 0) -> str:
    path = tmp_path / "asterisk"
    path.write_text(f"#!/bin/sh\necho '{output}'\nexit {exit_code}\n")
    path.chmod(0o755)
    return str(path)


def test_host_asterisk_older_than_20_is_not_used(tmp_path: Path) -> None:
    assert host_asterisk(fake_binary(tmp_path, "Asterisk 18.2.0")) is None


def test_host_asterisk_20_is_used_with_its_version(tmp_path: Path) -> None:
    binary = fake_binary(tmp_path, "Asterisk 20.5.2")

    assert host_asterisk(binary) == HostRuntime(binary=binary, version="Asterisk 20.5.2")


def test_host_asterisk_that_prints_no_version_is_not_used(tmp_path: Path) -> None:
    assert host_asterisk(fake_binary(tmp_path, "Segmentation fault", exit_code=139)) is None


def test_missing_host_asterisk_is_none(tmp_path: Path) -> None:
    assert host_asterisk(str(tmp_path / "no-such-asterisk")) is None


# --- the Debian mirror apt uses -------------------------------------------------------------


def apt_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "apt"
    (root / "sources.list.d").mkdir(parents=True)
    for name, text in files.items():
        (root / name).write_text(text)
    return root


DEB822_SECURITY_FIRST = f"""\
Types: deb
URIs: {SECURITY}
Suites: bookworm-security
Components: main non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: {MIRROR}
Suites: bookworm bookworm-updates
Components: main non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

DEB822_THIRD_PARTY = f"""\
Types: deb
URIs: {THIRD_PARTY}
Suites: nodistro
Components: main
Signed-By: /usr/share/keyrings/nodesource.gpg
"""


def test_deb822_sources_of_a_debian_12_machine_give_the_main_archive(tmp_path: Path) -> None:
    # Sorted by name the security-only file and the third-party one are read first.
    root = apt_dir(
        tmp_path,
        {
            "sources.list.d/debian-security.sources": DEB822_SECURITY_FIRST.split("\n\n")[0],
            "sources.list.d/debian.sources": DEB822_SECURITY_FIRST,
            "sources.list.d/archive-nodesource.sources": DEB822_THIRD_PARTY,
        },
    )

    assert debian_mirror_from_apt(root) == MIRROR


def test_disabled_deb822_stanza_is_ignored(tmp_path: Path) -> None:
    disabled = DEB822_SECURITY_FIRST.replace(
        f"URIs: {MIRROR}", "Enabled: no\nURIs: http://old.example.org/debian"
    )
    root = apt_dir(
        tmp_path,
        {
            "sources.list.d/a-old.sources": disabled,
            "sources.list.d/debian.sources": DEB822_SECURITY_FIRST,
        },
    )

    assert debian_mirror_from_apt(root) == MIRROR


def test_one_line_sources_list_with_options_gives_the_archive(tmp_path: Path) -> None:
    root = apt_dir(
        tmp_path,
        {
            "sources.list": (
                "# deb http://commented.example.org/debian bookworm main\n"
                f"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {SECURITY} "
                "bookworm-security main\n"
                f"deb-src {MIRROR} bookworm main\n"
                f"deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
                f"{MIRROR} bookworm main contrib\n"
            )
        },
    )

    assert debian_mirror_from_apt(root) == MIRROR


def test_third_party_repo_for_the_same_suite_is_not_taken_for_debian(tmp_path: Path) -> None:
    # A vendor repository (Docker's is laid out like this) names the Debian release as its suite
    # but has no "main" component; it is listed before debian.sources (.list before .sources).
    root = apt_dir(
        tmp_path,
        {
            "sources.list.d/docker.list": (
                "deb [arch=amd64 signed-by=/etc/apt/keyrings/docker.asc] "
                "https://download.example.com/linux/debian bookworm stable\n"
            ),
            "sources.list.d/debian.sources": DEB822_SECURITY_FIRST,
        },
    )

    assert debian_mirror_from_apt(root) == MIRROR


def test_installation_dvd_is_not_a_mirror(tmp_path: Path) -> None:
    root = apt_dir(
        tmp_path,
        {
            "sources.list": (
                "deb cdrom:[Debian GNU/Linux 12.5.0 _Bookworm_ - Official amd64 DVD Binary-1 "
                "20240210-11:28]/ bookworm contrib main\n"
                f"deb {MIRROR} bookworm main\n"
            )
        },
    )

    assert debian_mirror_from_apt(root) == MIRROR


def test_machine_without_debian_sources_has_no_mirror(tmp_path: Path) -> None:
    root = apt_dir(
        tmp_path,
        {
            "sources.list": "deb http://archive.example.org/ubuntu noble main universe\n",
            "sources.list.d/third-party.sources": DEB822_THIRD_PARTY,
        },
    )

    assert debian_mirror_from_apt(root) is None


def test_machine_without_apt_has_no_mirror(tmp_path: Path) -> None:
    assert debian_mirror_from_apt(tmp_path / "no-apt") is None


# --- debootstrap's progress -----------------------------------------------------------------

DEBOOTSTRAP_OUTPUT = """\
I: Target architecture can be executed
I: Retrieving InRelease
I: Checking Release signature
I: Valid Release signature (key id 4CB50190207B4758A3F73A796ED0E7B82643E131)
I: Retrieving Packages
I: Validating Packages
I: Resolving dependencies of required packages...
I: Resolving dependencies of base packages...
I: Checking component main on http://mirror.example.org/debian...
I: Retrieving adduser 3.137
I: Validating adduser 3.137
I: Retrieving apt 2.9.8
I: Validating apt 2.9.8
I: Retrieving asterisk 1:22.0.0~dfsg+~cs6.14.60671434-1
I: Validating asterisk 1:22.0.0~dfsg+~cs6.14.60671434-1
I: Chosen extractor for .deb packages: dpkg-deb
I: Extracting adduser...
I: Extracting apt...
I: Installing core packages...
I: Unpacking required packages...
I: Unpacking adduser...
I: Configuring required packages...
I: Configuring adduser...
I: Configuring apt...
I: Base system installed successfully.
""".splitlines()


def test_debootstrap_lines_fold_into_phases_with_counts() -> None:
    state: DebootstrapProgress | None = None
    seen: list[tuple[str, int] | None] = []
    for line in DEBOOTSTRAP_OUTPUT:
        state = DebootstrapProgress.advance(state, line + "\n")
        seen.append(None if state is None else (state.phase, state.count))

    def after(line: str) -> tuple[str, int] | None:
        return seen[DEBOOTSTRAP_OUTPUT.index(line)]

    # Index files and summary lines are not packages.
    assert after("I: Retrieving Packages") is None
    assert after("I: Retrieving adduser 3.137") == ("downloading packages", 1)
    # Validating a package keeps the count: each package counts once.
    assert after("I: Validating asterisk 1:22.0.0~dfsg+~cs6.14.60671434-1") == (
        "downloading packages",
        3,
    )
    assert after("I: Extracting apt...") == ("extracting the base system", 2)
    assert after("I: Unpacking required packages...") == ("extracting the base system", 2)
    assert after("I: Unpacking adduser...") == ("unpacking packages", 1)
    assert after("I: Configuring required packages...") == ("unpacking packages", 1)
    assert after("I: Base system installed successfully.") == ("configuring packages", 2)
    phases_in_order = list(dict.fromkeys(s[0] for s in seen if s is not None))
    assert phases_in_order == [
        "downloading packages",
        "extracting the base system",
        "unpacking packages",
        "configuring packages",
    ]


def test_root_without_marker_is_a_half_built_root(tmp_path: Path) -> None:
    (tmp_path / "usr/sbin").mkdir(parents=True)
    (tmp_path / "usr/sbin/asterisk").write_text("")
    assert not root_is_complete(tmp_path)

    (tmp_path / ROOT_MARKER).write_text("{}")
    assert root_is_complete(tmp_path)
