"""The only road from a visitor's number to something Asterisk dials."""

from __future__ import annotations

import re

_E164 = re.compile(r"\+[1-9][0-9]{1,14}")


class UnsafeNumber(ValueError):
    """Not an E.164 number: it never reaches a dial string."""


def trunk_endpoint(e164: str) -> str:
    """``PJSIP/+14155550123@trunk``; re-validated here, at dial time, whatever the store says."""
    if not _E164.fullmatch(e164):
        raise UnsafeNumber(f"refusing to dial {e164!r}: not an E.164 number")
    return f"PJSIP/{e164}@trunk"
