"""Languages the visitor-facing pages speak: each subscriber chooses one.

Outside a web request (CLI, worker) the marked texts stay English.
"""

from __future__ import annotations

from typing import cast

import flask_babel
from flask import Flask, g, request

LANGUAGES = ("en", "de")
DEFAULT_LANGUAGE = "en"


def _(text: str, **params: object) -> str:
    """``text`` in the current request's language, with ``%(name)s`` parameters filled in."""
    return str(flask_babel.gettext(text, **params))


def _l(text: str, **params: object) -> str:
    """Translated when used, not when defined: for labels declared at import time."""
    return cast(str, flask_babel.lazy_gettext(text, **params))


def use_language(language: str) -> None:
    """Speak ``language`` for the rest of this request (the subscriber's choice)."""
    g.language = language if language in LANGUAGES else DEFAULT_LANGUAGE


def _select_locale() -> str:
    chosen: str | None = g.get("language")
    return chosen or request.accept_languages.best_match(LANGUAGES) or DEFAULT_LANGUAGE


def current_language() -> str:
    return str(flask_babel.get_locale() or DEFAULT_LANGUAGE)


def init_app(app: Flask) -> None:
    flask_babel.Babel(app, locale_selector=_select_locale)
    app.context_processor(lambda: {"current_language": current_language})
