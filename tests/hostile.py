"""A corpus of hostile inputs to the call-back request paths, each with the refusal it must get.

Every entry changes one thing of an otherwise acceptable API body (``base_body``) sent to one
of the corpus subscribers below, and says where the change goes, the HTTP status and the error
``code`` the JSON API must answer with. The same entries are sent through the widget's path (the
API with an allowed ``Origin``) and, where they are text in one of its fields, the hosted form
(tests/web/test_hostile_inputs.py); and all of them through the real web app while a real
worker runs against real Asterisk, where none may ever become an INVITE
(tests/e2e/test_no_invite_for_hostile_inputs.py).

The corpus subscribers make each refusal the intended one: every one of them accepts numbers of
all of ``COUNTRIES``, so a premium-rate number of another country is refused as premium rate, not
as foreign; there is one subscriber per country, so an emergency number is sent to a business of
the country where it is one (a German visitor types 110, an American 911).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

import phonenumbers
from phonenumbers import PhoneNumberFormat, PhoneNumberType
from sqlalchemy.orm import Session

from cbserver.models import Agent, AgentAssignment, DeniedNumber, Subscriber

# What an entry changes, besides a field of the JSON body (``where`` is then the field's name).
BODY = "(the whole JSON body)"
RAW = "(the raw request body)"
IDEMPOTENCY_KEY = "(the Idempotency-Key header)"
ORIGIN = "(the Origin header)"


class Absent:
    """The field is left out of the body."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT = Absent()


@dataclass(frozen=True)
class Hostile:
    description: str
    # A field of the JSON body ("phone", "name", ...), or BODY, RAW, IDEMPOTENCY_KEY, ORIGIN.
    where: str
    # The field's value (ABSENT: left out), the whole body (BODY), bytes (RAW), a header's text.
    value: object
    status: int
    code: str
    subscriber: str = "hostile-de"
    # For RAW bodies.
    content_type: str = "application/json"


# --- The corpus subscribers -----------------------------------------------------------------

# Western Europe, the US, Australia and Japan: what a business there might serve.
EUROPE = ("DE", "AT", "BE", "CH", "ES", "FR", "GB", "IE", "IT", "NL", "PL", "PT", "SE")
COUNTRIES = (*EUROPE, "US", "AU", "JP")
ALLOWED_COUNTRIES = ",".join(COUNTRIES)
SUBSCRIBERS = {f"hostile-{country.lower()}": country for country in COUNTRIES}
HOME = "hostile-de"
# A corpus subscriber that is switched off: nothing may be asked of it.
INACTIVE = "hostile-closed"
# The widget's page: every corpus subscriber lists it in allowed_origins.
ALLOWED_ORIGIN = "https://shop.example"


def _example(country: str, kind: int) -> str:
    number = phonenumbers.example_number_for_type(country, kind)
    assert number is not None, (country, kind)
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


# Each subscriber's own number (its caller ID): a visitor may not make it call itself.
CALLER_ID = {
    slug: "+12015550100" if country == "US" else _example(country, PhoneNumberType.FIXED_LINE)
    for slug, country in SUBSCRIBERS.items()
}
# An acceptable visitor's number per subscriber: every entry's body has it unless the entry
# changes the phone field.
VALID_PHONE = {
    slug: _example(country, PhoneNumberType.MOBILE) for slug, country in SUBSCRIBERS.items()
}
# An agent serving HOME whose phone is this number (its contact's user part).
AGENT_NUMBER = "+4930901820"
AGENT_CONTACT = f"sip:{AGENT_NUMBER}@127.0.0.1:9"


@dataclass(frozen=True)
class Denial:
    pattern: str
    is_prefix: bool
    # None: denied for every subscriber.
    subscriber: str | None
    reason: str


DENIED = (
    Denial("+4915799912345", False, None, "harassed a business"),
    Denial("+4917099", True, None, "a range used for fraud"),
    Denial("+4930555123", False, HOME, "asked us never to call"),
    Denial("+49301111", True, HOME, "our own switchboard range"),
    Denial("+43664999888", False, "hostile-at", "asked us never to call"),
)


def base_body(subscriber: str = HOME) -> dict[str, object]:
    """An acceptable request body for ``subscriber``: each entry changes one thing of it."""
    return {"subscriber": subscriber, "phone": VALID_PHONE[subscriber], "consent": True}


def add_subscribers(session: Session, agent: Agent | None = None) -> None:
    """The corpus subscribers, served by ``agent`` if given, with the deny-list and an agent
    whose phone is AGENT_NUMBER; flushed, not committed."""
    number_agent = Agent(name="hostile-agent", contact=AGENT_CONTACT)
    slugs = {**SUBSCRIBERS, INACTIVE: "DE"}
    subscribers: dict[str, Subscriber] = {}
    for slug, country in slugs.items():
        subscriber = Subscriber(
            slug=slug,
            display_name=f"Hostile {country}",
            country=country,
            caller_id=CALLER_ID.get(slug, CALLER_ID[HOME]),
            allowed_countries=ALLOWED_COUNTRIES,
            allowed_origins=ALLOWED_ORIGIN,
            active=slug != INACTIVE,
        )
        if agent is not None:
            subscriber.assignments.append(AgentAssignment(agent=agent, priority=10))
        subscribers[slug] = subscriber
        session.add(subscriber)
    subscribers[HOME].assignments.append(AgentAssignment(agent=number_agent, priority=90))
    session.flush()
    for denial in DENIED:
        owner = subscribers[denial.subscriber].id if denial.subscriber else None
        session.add(
            DeniedNumber(
                pattern=denial.pattern,
                is_prefix=denial.is_prefix,
                subscriber_id=owner,
                reason=denial.reason,
            )
        )
    session.flush()


# --- The corpus -----------------------------------------------------------------------------

CORPUS: list[Hostile] = []


def _phone(description: str, value: str, code: str, subscriber: str = HOME) -> None:
    CORPUS.append(Hostile(description, "phone", value, 422, code, subscriber))


# Dial-string injection: characters that mean something to Asterisk's Dial() or to SIP.
for text, what in [
    ("+4930123456&PJSIP/+19005550100", "a second dial target after &"),
    ("+4930123456&PJSIP/+19005550100@trunk", "a second dial target with its trunk"),
    ("+4930123456,60,D(w1234)", "Dial() options after a comma"),
    ("+4930123456,,,,w9", "comma pauses and a DTMF digit"),
    ("+4930123456|PJSIP/+19005550100", "a pipe, the old Dial() separator"),
    ("+4930123456@evil.example", "a SIP host after @"),
    ("+19005550100@trunk", "a premium number aimed at the trunk with @"),
    ("+4930123456;transport=tcp", "a SIP URI parameter after ;"),
    ("+4930123456;ext=99", "an extension parameter after ;"),
    ("+4930123456^PJSIP/+19005550100", "a caret, Dial()'s escaped ampersand"),
    ("+49${EXTEN}", "a dialplan variable"),
    ("${SHELL}", "a shell-style variable"),
    ("+49$(SHELL(id))", "a dialplan function call"),
    ("+4930123456{PJSIP/+1900}", "braces"),
    ("+4930123456(PJSIP/+1900)", "a dial target in parentheses"),
    ('+4930123456"', "a double quote that ends a quoted string"),
    ('"+4930123456" <sip:+19005550100@evil.example>', "a SIP name-addr"),
    ("+4930123456\nChannel: PJSIP/+19005550100", "an AMI header after a newline"),
    ("+4930123456\r\nINVITE sip:+19005550100@evil.example SIP/2.0", "a SIP request after CRLF"),
    ("+4930123456\rX", "a carriage return inside"),
    ("sip:+19005550100@evil.example", "a SIP URI"),
    ("tel:+4930123456", "a tel: URI"),
    ("PJSIP/+19005550100@trunk", "a whole dial string"),
    ("Local/+19005550100@from-internal", "a Local channel"),
    ("+4930123456#", "a hash, a feature-code ending"),
    ("*31#+4930123456", "a star code hiding the caller ID"),
    ("%2B4930123456", "a URL-encoded plus"),
    ("+4930123456%00", "a URL-encoded NUL"),
    ("+4930123456\x00+19005550100", "a NUL byte between two numbers"),
    ("`id`", "backticks"),
    ("+4930123456'; DROP TABLE callback_requests; --", "SQL after a quote"),
    ("<script>alert(1)</script>", "a script tag"),
    ("+49 30 123456 ext 12", "a spelled-out extension"),
    ("+49 30 123456 x12", "an extension after x"),
    ("+4930123456\\n", "an escaped newline, as two characters"),
    ("+4930123456!", "an exclamation mark, Asterisk's 'end of number'"),
    ("+4930123456:5060", "a port after a colon"),
]:
    _phone(f"dial-string injection: {what}", text, "phone_characters")

for text, what in [
    ("+4930123456/+19005550100", "a second number after a slash"),
    ("+4930123456 + 1 900 555 0100", "two numbers joined by a plus"),
    ("+49 30 123456 7890 1234 5678 9012 3456", "more digits than any number has"),
]:
    _phone(f"dial-string injection: {what}", text, "phone_unparseable")

# Emergency numbers and short codes, each sent to a business of the country where it is one.
for country, codes in [
    ("DE", ["110", "112", "1 1 2", "1-1-2", "(112)", "1.1.2", "+49 112", "+49110", "0049 110"]),
    ("US", ["911", "9-1-1", "9 1 1", "112", "+1 911"]),
    ("GB", ["999", "112", "9 9 9", "+44 999"]),
    ("FR", ["15", "17", "18", "112", "+33 112", "+33 15"]),
    ("AU", ["000", "0 0 0", "112", "106", "+61 000"]),
    ("IT", ["112", "113", "115", "118"]),
    ("CH", ["117", "118", "144", "+41 117"]),
    ("JP", ["110", "119", "+81 110"]),
    ("AT", ["133", "144", "122"]),
    ("PL", ["997", "998", "999"]),
    ("BE", ["100", "101"]),
    ("IE", ["999"]),
    ("SE", ["112"]),
    ("NL", ["112"]),
    ("ES", ["112"]),
]:
    for code in codes:
        _phone(
            f"emergency number {code!r} in {country}",
            code,
            "phone_emergency",
            f"hostile-{country.lower()}",
        )
# From another country, as a foreign visitor might type them.
for code in ["+33 112", "+44 999", "+1 911", "+61 000", "0033 17"]:
    _phone(f"a foreign emergency number {code!r}", code, "phone_emergency")
# Short codes that are not emergencies where they are meant: hotlines, services, directory
# enquiries (some charged at premium rates), never an ordinary number. A short code that is an
# emergency number in another country the business serves (115 in Italy, 118 in Switzerland,
# 119 in Japan) is refused as one: the visitor may be there.
for country, code, refusal in [
    ("DE", "116116", "phone_type_not_allowed"),
    ("DE", "115", "phone_emergency"),
    ("DE", "11880", "phone_emergency"),
    ("GB", "111", "phone_type_not_allowed"),
    ("GB", "118118", "phone_emergency"),
    ("GB", "118500", "phone_emergency"),
    ("US", "411", "phone_type_not_allowed"),
    ("US", "611", "phone_type_not_allowed"),
    ("US", "988", "phone_type_not_allowed"),
    ("FR", "114", "phone_type_not_allowed"),
    ("FR", "119", "phone_emergency"),
]:
    _phone(f"short code {code!r} in {country}", code, refusal, f"hostile-{country.lower()}")

# Number types no business calls back, from phonenumbers' own examples of each type.
_REFUSED_TYPES = [
    (PhoneNumberType.PREMIUM_RATE, "premium-rate", "phone_premium_rate"),
    (PhoneNumberType.SHARED_COST, "shared-cost", "phone_shared_cost"),
    (PhoneNumberType.TOLL_FREE, "toll-free", "phone_toll_free"),
    (PhoneNumberType.UAN, "UAN", "phone_type_not_allowed"),
    (PhoneNumberType.PERSONAL_NUMBER, "personal", "phone_type_not_allowed"),
    (PhoneNumberType.PAGER, "pager", "phone_type_not_allowed"),
    (PhoneNumberType.VOIP, "VoIP", "phone_type_not_allowed"),
    (PhoneNumberType.VOICEMAIL, "voicemail", "phone_type_not_allowed"),
]
for country in COUNTRIES:
    for kind, name, code in _REFUSED_TYPES:
        example = phonenumbers.example_number_for_type(country, kind)
        if example is not None:
            number = phonenumbers.format_number(example, PhoneNumberFormat.E164)
            _phone(f"{name} number of {country} ({number})", number, code)

# The same kinds as visitors type them at home, in national notation.
for country, number, name, code in [
    ("DE", "0900 5 123456", "premium-rate", "phone_premium_rate"),
    ("DE", "0137 9 123456", "televoting (premium-rate)", "phone_premium_rate"),
    ("DE", "01805 123456", "shared-cost", "phone_shared_cost"),
    ("DE", "0800 330 1000", "toll-free", "phone_toll_free"),
    ("DE", "0700 12345678", "personal", "phone_type_not_allowed"),
    ("DE", "0181 12345", "UAN", "phone_type_not_allowed"),
    ("GB", "0909 879 0000", "premium-rate", "phone_premium_rate"),
    ("GB", "0871 123 4567", "premium-rate", "phone_premium_rate"),
    ("GB", "0800 800 150", "toll-free", "phone_toll_free"),
    ("GB", "070 1234 5678", "personal", "phone_type_not_allowed"),
    ("FR", "08 99 23 45 67", "premium-rate", "phone_premium_rate"),
    ("FR", "08 10 12 34 56", "shared-cost", "phone_shared_cost"),
    ("US", "1-900-234-5678", "premium-rate", "phone_premium_rate"),
    ("US", "(888) 555-0100", "toll-free", "phone_toll_free"),
    ("AU", "1900 654 321", "premium-rate", "phone_premium_rate"),
    ("AU", "13 11 14", "shared-cost", "phone_shared_cost"),
    ("AU", "1800 123 456", "toll-free", "phone_toll_free"),
    ("IT", "899 123 456", "premium-rate", "phone_premium_rate"),
    ("ES", "806 123 456", "premium-rate", "phone_premium_rate"),
    ("ES", "902 123 456", "shared-cost", "phone_shared_cost"),
    ("CH", "0901 123 456", "premium-rate", "phone_premium_rate"),
    ("AT", "0930 123456", "premium-rate", "phone_premium_rate"),
    ("NL", "0900 1234", "premium-rate", "phone_premium_rate"),
    ("BE", "0903 12 345", "premium-rate", "phone_premium_rate"),
    ("JP", "0990 123 456", "premium-rate", "phone_premium_rate"),
]:
    _phone(
        f"{name} number of {country} in national notation ({number})",
        number,
        code,
        f"hostile-{country.lower()}",
    )

# Countries nobody allowed: the one-ring scams' Caribbean area codes behind +1, far-away
# mobiles, satellite and international premium-rate services.
for country in ("JM", "DO", "BS", "AG", "GD", "TC", "VG", "DM"):
    caribbean = _example(country, PhoneNumberType.MOBILE)
    _phone(
        f"a {country} number behind +1, from the US ({caribbean})",
        caribbean,
        "phone_country_not_allowed",
        "hostile-us",
    )
_phone(
    "a Jamaican number in US notation",
    "1 (876) 210-1234",
    "phone_country_not_allowed",
    "hostile-us",
)
for country in ("BR", "IN", "CN", "RU", "NG", "CU", "KP", "SO", "TV", "ZA"):
    _phone(
        f"a mobile number of {country}",
        _example(country, PhoneNumberType.MOBILE),
        "phone_country_not_allowed",
    )
_phone("a Brazilian number after 00", "0055 11 96123 4567", "phone_country_not_allowed")
for calling_code, what in [
    (800, "international freephone"),
    (808, "international shared cost"),
    (870, "Inmarsat satellite"),
    (881, "global mobile satellite"),
    (882, "international networks"),
    (883, "international networks"),
    (979, "international premium rate"),
]:
    entity = phonenumbers.example_number_for_non_geo_entity(calling_code)
    assert entity is not None, calling_code
    _phone(
        f"{what} (+{calling_code})",
        phonenumbers.format_number(entity, PhoneNumberFormat.E164),
        "phone_country_not_allowed",
    )

# The deny-list: exact numbers and prefixes, for everyone or for one business.
for number, what, subscriber in [
    ("+4915799912345", "a globally denied number", HOME),
    ("0157 99912345", "a globally denied number, in national notation", HOME),
    ("+4915799912345", "a globally denied number, at another business", "hostile-at"),
    ("+491709912345", "a number under a globally denied prefix", HOME),
    ("+49 170 991 2345", "a number under a globally denied prefix, spaced", "hostile-fr"),
    ("+4930555123", "a number this business denied", HOME),
    ("030 555 123", "a number this business denied, in national notation", HOME),
    ("+493011112222", "a number under a prefix this business denied", HOME),
    ("+43664999888", "a number another business denied, there", "hostile-at"),
]:
    _phone(f"deny-list: {what}", number, "phone_denied", subscriber)

# The business itself: it may not be made to call its own number or its agents.
_phone("the business's own number", CALLER_ID[HOME], "phone_is_business")
_phone("the business's own number, national", "030 123456", "phone_is_business")
_phone("the business's own number, with a slash", "030/123456", "phone_is_business")
_phone("the US business's own number", "(201) 555-0100", "phone_is_business", "hostile-us")
_phone("the GB business's own number", CALLER_ID["hostile-gb"], "phone_is_business", "hostile-gb")
_phone("an agent's number", AGENT_NUMBER, "phone_is_business")
_phone("an agent's number, national", "030 901820", "phone_is_business")

# Unicode digit look-alikes: phonenumbers would read many of them as digits.
_LOOKALIKE_DIGITS = {
    "fullwidth": 0xFF10,
    "Arabic-Indic": 0x0660,
    "Extended Arabic-Indic": 0x06F0,
    "Devanagari": 0x0966,
    "Bengali": 0x09E6,
    "Thai": 0x0E50,
    "Myanmar": 0x1040,
    "mathematical bold": 0x1D7CE,
    "mathematical double-struck": 0x1D7D8,
    "mathematical monospace": 0x1D7F6,
}


def _digits(text: str, zero: int) -> str:
    return "".join(chr(zero + int(c)) if c.isdigit() else c for c in text)


for script, zero in _LOOKALIKE_DIGITS.items():
    _phone(f"{script} digits", _digits("+49 30 123456", zero), "phone_characters")
_phone("fullwidth plus and digits", "\uff0b" + _digits("4930123456", 0xFF10), "phone_characters")
_phone("fullwidth emergency number", _digits("112", 0xFF10), "phone_characters")
_phone("Arabic-Indic emergency number", _digits("112", 0x0660), "phone_characters")
_phone(
    "fullwidth digits for a premium number", _digits("+1 900 234 5678", 0xFF10), "phone_characters"
)
_phone("one fullwidth digit among ASCII", "+49 30 12345" + chr(0xFF16), "phone_characters")
_phone("one Arabic-Indic digit among ASCII", "+49 30 1234" + chr(0x0665) + "6", "phone_characters")
_phone(
    "superscript digits",
    "+49 \u00b3\u2070 \u00b9\u00b2\u00b3\u2074\u2075\u2076",
    "phone_characters",
)
_phone(
    "subscript digits", "+49 \u2083\u2080 \u2081\u2082\u2083\u2084\u2085\u2086", "phone_characters"
)
_phone(
    "circled digits", "+49 \u2462\u24ea \u2460\u2461\u2462\u2463\u2464\u2465", "phone_characters"
)
_phone("fullwidth plus", "\uff0b4930123456", "phone_characters")
_phone("small plus sign", "\ufe624930123456", "phone_characters")
_phone("superscript plus", "\u207a4930123456", "phone_characters")
_phone("heavy plus sign", "\u27954930123456", "phone_characters")
_phone("minus sign as separator", "+49\u221230\u2212123456", "phone_characters")
_phone("en dash as separator", "+49\u201330\u2013123456", "phone_characters")
_phone("non-breaking hyphen", "+49\u201130\u2011123456", "phone_characters")
_phone("no-break space", "+49\u00a030\u00a0123456", "phone_characters")
_phone("narrow no-break space", "+49\u202f30\u202f123456", "phone_characters")
_phone("ideographic space", "+49\u300030\u3000123456", "phone_characters")
_phone("fullwidth parentheses", "\uff08030\uff09 123456", "phone_characters")
_phone("letter O for zero", "+49 3O 123456", "phone_characters")
_phone("letter l for one", "+49 30 l23456", "phone_characters")
_phone("vanity letters", "+1 800 FLOWERS", "phone_characters")

# Invisible formatting characters inside a number, in a name and in a topic.
_INVISIBLE = {
    "zero-width space": "\u200b",
    "zero-width non-joiner": "\u200c",
    "zero-width joiner": "\u200d",
    "word joiner": "\u2060",
    "byte order mark": "\ufeff",
    "right-to-left override": "\u202e",
    "left-to-right override": "\u202d",
    "right-to-left mark": "\u200f",
    "left-to-right mark": "\u200e",
    "Arabic letter mark": "\u061c",
    "right-to-left isolate": "\u2067",
    "pop directional isolate": "\u2069",
    "soft hyphen": "\u00ad",
    "Mongolian vowel separator": "\u180e",
}
for name, character in _INVISIBLE.items():
    _phone(f"{name} inside the number", f"+49 30{character}123456", "phone_characters")
    CORPUS.append(
        Hostile(f"{name} in the name", "name", f"Ada{character} Lovelace", 422, "bad_text")
    )
for name in ("right-to-left override", "zero-width space", "byte order mark"):
    CORPUS.append(
        Hostile(f"{name} in the topic", "topic", f"Leak{_INVISIBLE[name]}ing tap", 422, "bad_text")
    )
CORPUS.append(Hostile("a name of zero-width spaces only", "name", "\u200b" * 5, 422, "bad_text"))
CORPUS.append(Hostile("a name reversed by an override", "name", "\u202egnp.exe", 422, "bad_text"))

# Control characters.
for character, what in [
    ("\x00", "NUL"),
    ("\x07", "bell"),
    ("\x08", "backspace"),
    ("\t", "tab"),
    ("\x0b", "vertical tab"),
    ("\x0c", "form feed"),
    ("\x1b", "escape"),
    ("\x7f", "delete"),
    ("\x85", "next line (C1)"),
]:
    _phone(f"{what} inside the number", f"+4930{character}123456", "phone_characters")
for text, what in [
    ("Ada\x00", "a NUL byte"),
    ("Ada\nX-Injected: yes", "a newline and a header"),
    ("Ada\r\nBcc: victim@example.com", "CRLF and a mail header"),
    ("Ada\tLovelace", "a tab"),
    ("\x1b[2J\x1b[31mAda", "terminal escape sequences"),
    ("Ada\x08\x08\x08Eve", "backspaces rewriting the name"),
    ("Ada\x7f", "a delete character"),
    ("Ada\x85Lovelace", "a C1 next-line character"),
]:
    CORPUS.append(Hostile(f"name with {what}", "name", text, 422, "bad_text"))
for text, what in [
    ("Leaking tap\x00", "a NUL byte"),
    ("\x1b]8;;https://evil.example\x07click\x1b]8;;\x07", "a terminal hyperlink escape"),
    ("Leak\x07ing", "a bell"),
    ("Leaking\x0ctap", "a form feed"),
]:
    CORPUS.append(Hostile(f"topic with {what}", "topic", text, 422, "bad_text"))
# Lone surrogates (valid as JSON escapes, not as text).
CORPUS.append(Hostile("a lone surrogate in the name", "name", "Ada\ud800", 422, "bad_text"))
CORPUS.append(Hostile("a lone surrogate in the topic", "topic", "Tap\udfff", 422, "bad_text"))
_phone("a lone surrogate in the number", "+4930123456\ud83d", "phone_characters")

# Over-long values for every text field (well under the 16 KiB body limit).
CORPUS += [
    Hostile("a name of 101 characters", "name", "A" * 101, 422, "too_long"),
    Hostile("a name of 5000 characters", "name", "Ada " * 1250, 422, "too_long"),
    Hostile("a name of 101 emoji", "name", "\U0001f4de" * 101, 422, "too_long"),
    Hostile("a topic of 501 characters", "topic", "t" * 501, 422, "too_long"),
    Hostile("a topic of 10000 characters", "topic", "Leak. " * 1700, 422, "too_long"),
    Hostile(
        "a page address of 2001 characters",
        "page_url",
        "https://a.example/" + "p" * 1983,
        422,
        "too_long",
    ),
    Hostile(
        "a time of 1000 characters",
        "when",
        "2026-12-01T09:30:00+01:00" + "0" * 975,
        422,
        "bad_time",
    ),
    Hostile(
        "a business name of 5000 characters",
        "subscriber",
        "hostile-de" * 500,
        404,
        "unknown_subscriber",
    ),
]
_phone("a number of 41 digits", "+" + "4" * 40, "phone_characters")
_phone("a number of 5000 digits", "4" * 5000, "phone_characters")
_phone("a number padded with 100 spaces inside", "+49" + " " * 100 + "30123456", "phone_characters")

# Wrong JSON types for every field.
for where, value in [
    ("phone", 4930123456),
    ("phone", 4.930123456e10),
    ("phone", ["+4930123456"]),
    ("phone", ["+4930123456", "+19005550100"]),
    ("phone", {"number": "+4930123456"}),
    ("phone", True),
    ("phone", False),
    ("phone", [[[[[[[[[[[[[[[[[[[[["+4930123456"]]]]]]]]]]]]]]]]]]]]]),
    ("name", 42),
    ("name", ["Ada"]),
    ("name", {"first": "Ada"}),
    ("name", True),
    ("topic", 3.14),
    ("topic", ["a", "b"]),
    ("topic", {"$gt": ""}),
    ("when", 1767225600),
    ("when", ["asap"]),
    ("when", {"at": "asap"}),
    ("page_url", {"href": "https://a.example/"}),
    ("page_url", 1),
    ("subscriber", ["hostile-de"]),
    ("subscriber", {"$ne": "nobody"}),
    ("subscriber", 1),
    ("subscriber", True),
]:
    CORPUS.append(
        Hostile(
            f"{where} as JSON {type(value).__name__}: {value!r:.40}",
            where,
            value,
            400,
            "wrong_type",
        )
    )
for where in ("phone", "subscriber"):
    CORPUS.append(Hostile(f"{where} null", where, None, 400, "missing_field"))
    CORPUS.append(Hostile(f"{where} empty", where, "", 400, "missing_field"))
    CORPUS.append(Hostile(f"{where} left out", where, ABSENT, 400, "missing_field"))
_phone("phone of spaces only", "     ", "phone_missing")

# Consent to be called is required, and only a JSON true gives it.
CORPUS += [
    Hostile("consent left out", "consent", ABSENT, 422, "consent_missing"),
    Hostile("consent false", "consent", False, 422, "consent_missing"),
    Hostile("consent null", "consent", None, 422, "consent_missing"),
    Hostile("consent as the text true", "consent", "true", 400, "wrong_type"),
    Hostile("consent as the text yes", "consent", "yes", 400, "wrong_type"),
    Hostile("consent as the number 1", "consent", 1, 400, "wrong_type"),
    Hostile("consent as a list", "consent", [True], 400, "wrong_type"),
]

# Fields the API does not take, some of them names of columns or internals.
for field in (
    "admin",
    "status",
    "visitor_token",
    "id",
    "subscriber_id",
    "claimed_by",
    "attempt_count",
    "due_at",
    "caller_id",
    "agent",
    "__proto__",
    "constructor",
    "",
    "PHONE",
    "phone ",
    "ph\u200bone",
):
    body = {**base_body(), field: "x"}
    CORPUS.append(Hostile(f"unknown field {field!r}", BODY, body, 400, "unknown_field"))

# Bodies that are not a JSON object, or not JSON at all.
for value in ([], [base_body()], "call me", 42, None, True):
    CORPUS.append(Hostile(f"body {value!r:.30} instead of an object", BODY, value, 400, "bad_json"))
CORPUS.append(Hostile("an empty object", BODY, {}, 400, "missing_field"))
_DUPLICATE_PHONE = (
    '{"subscriber": "hostile-de", "phone": "+4915123456789", "phone": "110", "consent": true}'
)
CORPUS += [
    Hostile("an empty body", RAW, b"", 400, "bad_json"),
    Hostile("half a JSON object", RAW, b'{"subscriber": "hostile-de", "phone": ', 400, "bad_json"),
    Hostile(
        "JSON with trailing garbage", RAW, b'{"subscriber": "hostile-de"} junk', 400, "bad_json"
    ),
    Hostile("single-quoted pseudo-JSON", RAW, b"{'subscriber': 'hostile-de'}", 400, "bad_json"),
    Hostile(
        "invalid UTF-8 in a string",
        RAW,
        b'{"subscriber": "hostile-de", "phone": "\xff\xfe"}',
        400,
        "bad_json",
    ),
    Hostile(
        "a number literal of 5000 digits",
        RAW,
        b'{"subscriber": "hostile-de", "phone": ' + b"9" * 5000 + b"}",
        400,
        "bad_json",
    ),
    Hostile(
        "phone as NaN",
        RAW,
        b'{"subscriber": "hostile-de", "phone": NaN, "consent": true}',
        400,
        "wrong_type",
    ),
    Hostile(
        "phone as Infinity",
        RAW,
        b'{"subscriber": "hostile-de", "phone": -Infinity, "consent": true}',
        400,
        "wrong_type",
    ),
    Hostile(
        "a duplicate phone key: the last one, an emergency number, counts",
        RAW,
        _DUPLICATE_PHONE.encode(),
        422,
        "phone_emergency",
    ),
    Hostile("JSON nested 5000 deep", RAW, b"[" * 5000 + b"]" * 5000, 400, "bad_json"),
    Hostile(
        "a field nested 5000 deep",
        RAW,
        b'{"subscriber": "hostile-de", "phone": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        400,
        "bad_json",
    ),
    Hostile("objects nested 2000 deep", RAW, b'{"a":' * 2000 + b"1" + b"}" * 2000, 400, "bad_json"),
    Hostile(
        "a form post to the API",
        RAW,
        b"subscriber=hostile-de&phone=%2B4915123456789",
        400,
        "not_json",
        content_type="application/x-www-form-urlencoded",
    ),
    Hostile(
        "JSON sent as text/plain",
        RAW,
        b'{"subscriber": "hostile-de", "phone": "+4915123456789"}',
        400,
        "not_json",
        content_type="text/plain",
    ),
    Hostile(
        "JSON sent as XML",
        RAW,
        b'{"subscriber": "hostile-de", "phone": "+4915123456789"}',
        400,
        "not_json",
        content_type="application/xml",
    ),
    Hostile(
        "an XML body with an entity",
        RAW,
        b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>',
        400,
        "not_json",
        content_type="application/xml",
    ),
    Hostile(
        "a multipart upload",
        RAW,
        b'--x\r\nContent-Disposition: form-data; name="phone"\r\n\r\n+4915123456789\r\n--x--\r\n',
        400,
        "not_json",
        content_type="multipart/form-data; boundary=x",
    ),
]

# Bodies over 16 KiB.
_HUGE = 20_000
CORPUS += [
    Hostile("a topic of 20000 characters", "topic", "x" * _HUGE, 413, "request_entity_too_large"),
    Hostile("a name of 20000 characters", "name", "A" * _HUGE, 413, "request_entity_too_large"),
    Hostile("a number of 20000 digits", "phone", "4" * _HUGE, 413, "request_entity_too_large"),
    Hostile(
        "a page address of 20000 characters",
        "page_url",
        "https://a.example/" + "p" * _HUGE,
        413,
        "request_entity_too_large",
    ),
    Hostile(
        "2000 unknown fields",
        BODY,
        {**base_body(), **{f"f{i}": "x" for i in range(2000)}},
        413,
        "request_entity_too_large",
    ),
    Hostile(
        "a list of 5000 numbers", "phone", ["+4930123456"] * 5000, 413, "request_entity_too_large"
    ),
    Hostile(
        "a valid body after 17000 spaces",
        RAW,
        b" " * 17_000 + b'{"subscriber": "hostile-de", "phone": "+4915123456789", "consent": true}',
        413,
        "request_entity_too_large",
    ),
    Hostile(
        "JSON nested 17000 deep",
        RAW,
        b"[" * 17_000 + b"]" * 17_000,
        413,
        "request_entity_too_large",
    ),
    Hostile("1 MiB of zeros", RAW, b"\x00" * 1_048_576, 413, "request_entity_too_large"),
]

# The business named in the body.
for slug, what in [
    ("../hostile-de", "a path traversal"),
    ("hostile-de/../admin", "a path traversal behind a name"),
    ("HOSTILE-DE", "a business in capitals"),
    ("hostile-de ", "a business with a trailing space"),
    ("hostile-de\x00", "a business with a NUL"),
    ("%", "a LIKE wildcard"),
    ("*", "a star"),
    ("' OR '1'='1", "SQL in the name"),
    ("hostile-\u0434e", "a Cyrillic look-alike letter"),
    (INACTIVE, "a business that is switched off"),
    ("nobody", "a business that does not exist"),
]:
    CORPUS.append(Hostile(f"subscriber: {what}", "subscriber", slug, 404, "unknown_subscriber"))

# The time to be called.
for when, what, code in [
    ("soon", "words", "bad_time"),
    ("asap; Dial(PJSIP/+19005550100)", "asap with a dial command", "bad_time"),
    ("2026-02-30T10:00:00+01:00", "a day that does not exist", "bad_time"),
    ("2026-11-18T10:00:00+99:00", "a time zone 99 hours off", "bad_time"),
    (_digits("2026-12-01T09:30:00+01:00", 0xFF10), "fullwidth digits", "bad_time"),
    ("2026-12-01T09:30:00", "no time zone", "time_without_zone"),
    ("9999-12-31T23:59:59+00:00", "the year 9999", "time_too_far"),
    ("2020-01-01T10:00:00+00:00", "the past", "time_past"),
]:
    CORPUS.append(Hostile(f"when: {what}", "when", when, 422, code))

# The page the visitor came from.
for url, what in [
    ("javascript:alert(document.cookie)", "a javascript: address"),
    ("JaVaScRiPt:alert(1)", "a javascript: address in mixed case"),
    ("data:text/html,<script>alert(1)</script>", "a data: address"),
    ("vbscript:msgbox(1)", "a vbscript: address"),
    ("file:///etc/passwd", "a local file"),
    ("ftp://a.example/", "an FTP address"),
    ("//evil.example/", "an address without a scheme"),
    ("http://", "an address without a host"),
    ("http://[::1", "an unclosed IPv6 host"),
    ("not a url", "words"),
    ("https://a.example/\ud800", "a lone surrogate"),
    ("https://a.example/\x00", "a NUL"),
    ("https://a.example/\x1b[2J", "an ANSI escape"),
    ("https://a.example/\u202egnp.exe", "a bidi override"),
    ("https://a.example/a\rb", "a control character"),
]:
    CORPUS.append(Hostile(f"page address: {what}", "page_url", url, 422, "bad_url"))

# The headers.
CORPUS += [
    Hostile(
        "an Idempotency-Key of 101 characters",
        IDEMPOTENCY_KEY,
        "k" * 101,
        400,
        "bad_idempotency_key",
    ),
    Hostile("an empty Idempotency-Key", IDEMPOTENCY_KEY, "", 400, "bad_idempotency_key"),
    Hostile("a Latin-1 Idempotency-Key", IDEMPOTENCY_KEY, "cl\u00e9", 400, "bad_idempotency_key"),
    Hostile(
        "a page that is not allowed", ORIGIN, "https://evil.example", 403, "origin_not_allowed"
    ),
    Hostile(
        "the allowed page's name inside another",
        ORIGIN,
        "https://shop.example.evil.example",
        403,
        "origin_not_allowed",
    ),
    Hostile(
        "the allowed page over plain http", ORIGIN, "http://shop.example", 403, "origin_not_allowed"
    ),
    Hostile("a sandboxed page (null origin)", ORIGIN, "null", 403, "origin_not_allowed"),
]


# --- Sending the corpus ---------------------------------------------------------------------

# The app's settings for the corpus: every rate limit lifted and no minimum fill time, as it
# sends hundreds of requests from one address within seconds, and each must meet the refusal
# it is about, not a limit.
NO_LIMITS: dict[str, object] = {
    "rate_limit_per_ip": "off",
    "rate_limit_per_number": "off",
    "rate_limit_per_subscriber": "off",
    "rate_limit_numbers_per_ip": "off",
    "rate_limit_public": "off",
    "form_min_seconds": 0,
}
# The hosted form's fields an entry can go into; "when" goes in as the chosen slot.
FORM_FIELDS = ("phone", "name", "topic", "page_url", "when")


def sendable_by_form(entry: Hostile) -> bool:
    """Text a browser could put in one of the form's fields (a lone surrogate it cannot)."""
    if entry.where not in FORM_FIELDS or not isinstance(entry.value, str):
        return False
    try:
        entry.value.encode()
    except UnicodeEncodeError:
        return False
    return True


def hidden_fields(page: str) -> dict[str, str]:
    """The hidden inputs of a form page (CSRF token, bot checks, ...), as a browser sends them."""
    found: dict[str, str] = {}
    for tag in re.findall(r"<input[^>]*>", page):
        name = re.search(r'name="([^"]*)"', tag)
        value = re.search(r'value="([^"]*)"', tag)
        if name and 'type="hidden"' in tag:
            found[name.group(1)] = html.unescape(value.group(1)) if value else ""
    return found


def form_submission(page: str, entry: Hostile) -> dict[str, str]:
    """The hosted form as a browser sends it from ``page``, acceptable but for ``entry``."""
    data = {
        **hidden_fields(page),
        "phone": VALID_PHONE[entry.subscriber],
        "name": "",
        "topic": "",
        "when": "asap",
        "consent": "y",
    }
    assert isinstance(entry.value, str)
    if entry.where == "when":
        data.update(when="slot", slot=entry.value)
    else:
        data[entry.where] = entry.value
    return data
