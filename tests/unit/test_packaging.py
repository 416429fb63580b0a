"""A wheel of cbserver, built offline as ``pip install .`` builds one: it carries Asterisk's
config templates (asterisk-conf/) and the compiled translations, and a cbserver installed from
it, away from any checkout, finds its templates."""

from __future__ import annotations

import gettext
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# What a build reads; deploy/install.sh copies the same.
SOURCES = ("cbserver", "asterisk-conf", "setup.cfg", "pyproject.toml", "README.md")
TEMPLATES = sorted(path.name for path in (REPO / "asterisk-conf").glob("*.conf"))
PROMPTS = sorted(
    str(path.relative_to(REPO / "asterisk-conf"))
    for path in (REPO / "asterisk-conf").glob("sounds/*/*.wav")
)
CATALOGS = sorted(
    str(path.relative_to(REPO)) for path in (REPO / "cbserver" / "translations").rglob("*.mo")
)
PIP_TIMEOUT = 60

pytestmark = pytest.mark.timeout(PIP_TIMEOUT * 2 + 30)


def pip(*args: str) -> str:
    """Run this interpreter's pip offline; its output (the build's warnings included)."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", *args, "--no-index", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The wheel, and the build's output."""
    # A copy of the checkout: building in place would leave build/ and *.egg-info in it.
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(
                REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(REPO / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    # No build isolation: the build backend comes from this virtualenv, not from an index.
    output = pip(
        "wheel", "--verbose", "--no-deps", "--no-build-isolation", "-w", str(out), str(source)
    )
    [wheel] = out.glob("cbserver-*.whl")
    return wheel, output


def test_the_wheel_carries_every_config_template_and_the_compiled_translations(
    built: tuple[Path, str],
) -> None:
    wheel, _ = built
    version = wheel.name.split("-")[1]

    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        shared = f"cbserver-{version}.data/data/share/cbserver/asterisk-conf"
        for template in TEMPLATES:
            assert (
                archive.read(f"{shared}/{template}")
                == (REPO / "asterisk-conf" / template).read_bytes()
            )
        for prompt in PROMPTS:
            assert (
                archive.read(f"{shared}/{prompt}") == (REPO / "asterisk-conf" / prompt).read_bytes()
            )
    assert "asterisk.conf" in TEMPLATES
    assert "sounds/en/cbserver-return-call.wav" in PROMPTS
    assert "cbserver/translations/de/LC_MESSAGES/messages.mo" in CATALOGS
    assert set(CATALOGS) <= names


def test_the_build_lists_every_data_directory_as_a_package(built: tuple[Path, str]) -> None:
    _, output = built

    # setuptools' warning for a directory Python can import that is not listed as a package.
    assert "is absent from the `packages` configuration" not in output


def test_an_installed_wheel_finds_its_templates_away_from_the_checkout(
    built: tuple[Path, str], tmp_path: Path
) -> None:
    wheel, _ = built
    target = tmp_path / "installed"
    pip("install", "--no-deps", "--target", str(target), str(wheel))
    probe = (
        "import json, cbserver.asterisk.instance as instance\n"
        "print(json.dumps([instance.__file__, str(instance.CONF_TEMPLATES)]))\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    module, templates = json.loads(result.stdout)
    assert Path(module) == target / "cbserver" / "asterisk" / "instance.py"
    assert Path(templates) == target / "share" / "cbserver" / "asterisk-conf"
    assert sorted(path.name for path in Path(templates).glob("*.conf")) == TEMPLATES
    assert (
        sorted(str(path.relative_to(templates)) for path in Path(templates).glob("sounds/*/*"))
        == PROMPTS
    )
    assert (Path(templates) / "asterisk.conf").is_file()
    catalog = gettext.translation(
        "messages", localedir=target / "cbserver" / "translations", languages=["de"]
    )
    assert isinstance(catalog, gettext.GNUTranslations)
