"""The only road from a visitor's number to something Asterisk dials."""

from __future__ import annotations

import re

import phonenumbers
from phonenumbers import NumberParseException

# E.164's form: "+", a country code and more digits, 15 at most (whether such a number exists
# is phonenumbers' to say). ASCII digits only, spelt out: "\d" would take any Unicode digit.
E164 = re.compile(r"\+[1-9][0-9]{1,14}")


class UnsafeNumber(ValueError):
    """Not a valid E.164 number: it never reaches a dial string."""


def trunk_endpoint(e164: str) -> str:
    """``PJSIP/+14155550123@trunk``; re-validated here, at dial time, whatever the store says.

    The number must be "+" and digits, a valid number by phonenumbers, and format back to
    itself: nothing Asterisk reads as a separator (``&``, ``,``, ``/``, ``@``...) gets through.
    """
    refused = UnsafeNumber(f"refusing to dial {e164!r}: not a valid E.164 number")
    if not E164.fullmatch(e164):
        raise refused
    try:
        number = phonenumbers.parse(e164, None)
    except NumberParseException as exc:
        raise refused from exc
    formatted = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if not phonenumbers.is_valid_number(number) or formatted != e164:
        raise refused
    return f"PJSIP/{e164}@trunk"
