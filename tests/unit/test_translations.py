"""The German catalog covers every visitor-facing text, and the shipped .mo matches the .po."""

from __future__ import annotations

from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

import cbserver
from cbserver.i18n import LANGUAGES

PACKAGE = Path(cbserver.__file__).parent
KEYWORDS = {"_": None, "_l": None}
METHODS = [("**.py", "python"), ("templates/**.html", "jinja2")]


def marked_texts() -> set[str]:
    found = extract_from_dir(PACKAGE, METHODS, keywords=KEYWORDS)
    return {message for _file, _line, message, _comments, _context in found}


def test_every_marked_text_is_translated_into_every_language() -> None:
    texts = marked_texts()
    assert "Your phone number" in texts, "extraction sees the form's labels"
    for language in LANGUAGES:
        if language == "en":
            continue
        po = PACKAGE / "translations" / language / "LC_MESSAGES" / "messages.po"
        catalog = read_po(po.open("rb"))
        translated = {m.id: m.string for m in catalog if m.id}
        missing = sorted(t for t in texts if not translated.get(t))
        assert not missing, f"untranslated into {language} (run `make translations`): {missing}"


def test_compiled_catalogs_match_their_sources() -> None:
    for language in (lang for lang in LANGUAGES if lang != "en"):
        folder = PACKAGE / "translations" / language / "LC_MESSAGES"
        source = {m.id: m.string for m in read_po((folder / "messages.po").open("rb")) if m.id}
        compiled = {m.id: m.string for m in read_mo((folder / "messages.mo").open("rb")) if m.id}
        assert compiled == source, f"{language}: messages.mo is stale; run `make translations`"
