"""Dial-string safety: no input text ever puts anything but "+" and digits into a dial string."""

from __future__ import annotations

import re

import phonenumbers
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from cbserver import number_policy
from cbserver.models import Subscriber
from cbserver.number_policy import TYPE_NAMES, NumberRefused
from cbserver.numbers import UnsafeNumber, trunk_endpoint

DIAL_STRING = re.compile(r"PJSIP/(\+[0-9]+)@trunk")
# Characters Asterisk's Dial(), the dialplan or SIP read as more than a digit.
MEANINGFUL = [*"&,|/@;^${}()\"\n\r\t #*!:%'`<>=?~\\", "\x00"]
LOOKALIKE_DIGITS = [
    *(chr(0xFF10 + d) for d in range(10)),  # fullwidth
    *(chr(0x0660 + d) for d in range(10)),  # Arabic-Indic
    *(chr(0x06F0 + d) for d in range(10)),  # extended Arabic-Indic (Persian)
    *(chr(0x0966 + d) for d in range(10)),  # Devanagari
    "\u00b2",  # superscript two
    "\u2460",  # circled one
    "\uff0b",  # fullwidth plus
    "\u2212",  # minus sign
]
COUNTRIES = ("US", "GB", "DE", "FR", "AU")
VALID_NUMBERS = [
    phonenumbers.format_number(found, PhoneNumberFormat.E164)
    for country in COUNTRIES
    for number_type in (PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE)
    if (found := phonenumbers.example_number_for_type(country, number_type)) is not None
]

# A subscriber that lets as much through as it can, so the property meets accepted numbers.
OPEN_DOOR = Subscriber(
    slug="open",
    display_name="Open",
    country="US",
    caller_id="+12015550100",
    allowed_countries=",".join(COUNTRIES),
    number_types=",".join(TYPE_NAMES),
)

digitish = st.sampled_from(list("0123456789+-. ") + MEANINGFUL + LOOKALIKE_DIGITS)
inputs = st.one_of(
    # Mostly digits, with whatever else in between.
    st.lists(digitish, max_size=45).map("".join),
    # A valid number with something hidden before, inside or after it.
    st.tuples(
        st.sampled_from(VALID_NUMBERS),
        st.integers(min_value=0, max_value=16),
        st.lists(st.sampled_from(MEANINGFUL + LOOKALIKE_DIGITS), min_size=1, max_size=8),
    ).map(lambda t: t[0][: t[1]] + "".join(t[2]) + t[0][t[1] :]),
    # Valid numbers as people write them, which must pass whole.
    st.sampled_from(VALID_NUMBERS).map(
        lambda n: phonenumbers.format_number(phonenumbers.parse(n), PhoneNumberFormat.INTERNATIONAL)
    ),
    # Anything at all.
    st.text(max_size=60),
    st.text(alphabet=st.characters(categories=["Nd", "No", "Pd", "Zs", "Cc", "Cf"]), max_size=30),
)
PROPERTY = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(text=inputs)
@example(text="+12015550123&PJSIP/+19002345678")
@example(text="+12015550123,,w9")
@example(text="+1201555\uff10123")
@example(text="+1201555\u0660123")
@example(text="+44 20 7946 0018\n")
@example(text="911")
def test_no_input_puts_anything_but_a_number_into_a_dial_string(text: str) -> None:
    try:
        number = number_policy.check(text, OPEN_DOOR)
    except NumberRefused:
        return  # refused in plain words (422): nothing to dial
    endpoint = trunk_endpoint(number)
    dialled = DIAL_STRING.fullmatch(endpoint)
    assert dialled is not None, endpoint
    assert dialled.group(1) == number
    assert number.isascii()
    assert all(c in "0123456789" for c in text if c.isdigit()), "only ASCII digits were read"


@PROPERTY
@given(text=inputs)
def test_the_dial_string_refuses_anything_but_a_valid_e164_number(text: str) -> None:
    try:
        endpoint = trunk_endpoint(text)
    except UnsafeNumber:
        return
    assert endpoint == f"PJSIP/{text}@trunk"
    assert re.fullmatch(r"\+[0-9]{2,15}", text)
    assert phonenumbers.is_valid_number(phonenumbers.parse(text))


@pytest.mark.parametrize("number", VALID_NUMBERS)
def test_a_valid_number_becomes_its_trunk_dial_string(number: str) -> None:
    assert trunk_endpoint(number) == f"PJSIP/{number}@trunk"


@pytest.mark.parametrize(
    "stored",
    [
        "+12015550123&PJSIP/+19002345678",
        "+12015550123,,w9",
        "+12015550123\n",
        "+1201555\uff10123",  # a fullwidth zero
        "+1201555\u0660123",  # an Arabic-Indic zero
        "12015550123",  # no plus
        "+012015550123",  # no country code starts with 0
        "+1 201 555 0123",  # spaces
        "+1201555012",  # too short to be valid
        "+19999999999",  # E.164 in form, but no valid number
        "+120155501230000",
        "+",
        "",
    ],
)
def test_the_dial_string_refuses_what_is_no_valid_e164_number(stored: str) -> None:
    with pytest.raises(UnsafeNumber):
        trunk_endpoint(stored)
