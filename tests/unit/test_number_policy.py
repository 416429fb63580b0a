"""The number policy: which visitor numbers are called, and each refusal in plain words."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import phonenumbers
import pytest
from phonenumbers import PhoneNumberFormat, PhoneNumberType
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cbserver import housekeeping, number_policy
from cbserver.agents import add_agent
from cbserver.errors import Invalid
from cbserver.intake import Submission, normalise_phone, submit
from cbserver.models import AgentAssignment, AuditEvent, DeniedNumber, Subscriber
from cbserver.number_policy import DenyEntry, PolicyError, check

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
COUNTRIES = ("US", "GB", "DE", "FR", "AU")
# What a refused type is called back with; every other type not allowed: phone_type_not_allowed.
TYPE_CODES = {
    PhoneNumberType.PREMIUM_RATE: "phone_premium_rate",
    PhoneNumberType.SHARED_COST: "phone_shared_cost",
    PhoneNumberType.TOLL_FREE: "phone_toll_free",
    PhoneNumberType.UAN: "phone_type_not_allowed",
    PhoneNumberType.PERSONAL_NUMBER: "phone_type_not_allowed",
    PhoneNumberType.PAGER: "phone_type_not_allowed",
    PhoneNumberType.VOIP: "phone_type_not_allowed",
    PhoneNumberType.VOICEMAIL: "phone_type_not_allowed",
}


def business(country: str = "US", **fields: str | None) -> Subscriber:
    values: dict[str, str | None] = {
        "slug": "acme",
        "display_name": "Acme",
        "country": country,
        "caller_id": "+12015550100",
        "allowed_countries": "",
        **fields,
    }
    return Subscriber(**values)


def example(country: str, number_type: int) -> str | None:
    found = phonenumbers.example_number_for_type(country, number_type)
    return None if found is None else phonenumbers.format_number(found, PhoneNumberFormat.E164)


def refusal(text: str, subscriber: Subscriber) -> Invalid:
    with pytest.raises(Invalid) as refused:
        check(text, subscriber)
    assert refused.value.status == 422
    assert refused.value.field == "phone"
    assert refused.value.message.endswith("."), "a plain sentence"
    return refused.value


# --- what a number is ------------------------------------------------------------------------


@pytest.mark.parametrize("country", COUNTRIES)
@pytest.mark.parametrize("number_type", [PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE])
def test_ordinary_numbers_of_the_subscribers_country_are_called(
    country: str, number_type: int
) -> None:
    number = example(country, number_type)
    assert number is not None

    assert check(number, business(country)) == number


REFUSED_EXAMPLES = [
    pytest.param(country, number, code, id=f"{country}-{number_type}-{number}")
    for country in COUNTRIES
    for number_type, code in TYPE_CODES.items()
    if (number := example(country, number_type)) is not None
]


@pytest.mark.parametrize(("country", "number", "code"), REFUSED_EXAMPLES)
def test_service_numbers_are_refused_each_with_its_own_code(
    country: str, number: str, code: str
) -> None:
    assert refusal(number, business(country)).code == code


def test_the_examples_cover_every_refused_kind_in_several_countries() -> None:
    codes = [code for _country, _number, code in (p.values for p in REFUSED_EXAMPLES)]
    for code in ("phone_premium_rate", "phone_shared_cost", "phone_toll_free"):
        assert codes.count(code) >= 3, code
    assert codes.count("phone_type_not_allowed") >= 8


@pytest.mark.parametrize(
    ("country", "text"),
    [
        ("US", "911"),
        ("US", "112"),
        ("US", "9-1-1"),
        ("US", "(911)"),
        ("US", "9111"),  # no number: an exchange may connect it to 911
        ("GB", "999"),
        ("GB", "112"),
        ("DE", "110"),
        ("DE", "1 1 2"),
        ("FR", "15"),
        ("FR", "17"),
        ("FR", "18"),
        ("AU", "000"),
        ("AU", "0 0 0"),
        ("CH", "117"),
        ("US", "+44 999"),  # the visitor says which country: its emergency number
        ("US", "+61 000"),
        ("US", "+49 110"),
        ("DE", "0033 17"),
    ],
)
def test_emergency_numbers_are_refused_as_such(country: str, text: str) -> None:
    refused = refusal(text, business(country))

    assert refused.code == "phone_emergency"
    assert "emergency" in refused.message


def test_the_emergency_numbers_of_every_country_served_count() -> None:
    assert refusal("000", business("US", allowed_countries="US,AU")).code == "phone_emergency"


def test_a_valid_number_that_starts_like_an_emergency_number_is_no_emergency() -> None:
    # 01 53... in Paris, typed without its 0; 1800 in Australia starts like France's 18.
    assert check("153456789", business("FR")) == "+33153456789"
    australia = business("AU", allowed_countries="AU,FR")
    assert refusal("1800 123 456", australia).code == "phone_toll_free"


@pytest.mark.parametrize(
    ("country", "text", "code", "words"),
    [
        ("GB", "118118", "phone_type_not_allowed", "short service number"),
        ("FR", "118118", "phone_premium_rate", "premium-rate"),
        ("US", "1234", "phone_invalid", "too short"),
        ("US", "+1 201 555 01", "phone_invalid", "not valid"),
    ],
)
def test_short_codes_and_short_numbers_say_what_they_are(
    country: str, text: str, code: str, words: str
) -> None:
    refused = refusal(text, business(country))

    assert refused.code == code
    assert words in refused.message


@pytest.mark.parametrize(
    "text",
    [
        "\uff0b\uff11\uff12\uff10\uff11\uff15\uff15\uff15\uff10\uff11\uff12\uff13",  # fullwidth
        "+1 201 555 \u0660\u0661\u0662\u0663",  # Arabic-Indic
        "\uff19\uff11\uff11",  # a fullwidth 911
        "+12015550123,w9",
        "+12015550123&PJSIP/+19002345678",
        "+12015550123\nChannel: PJSIP/+19002345678",
        "1" * 41,
    ],
)
def test_anything_but_ascii_digits_and_punctuation_is_refused(text: str) -> None:
    assert refusal(text, business()).code == "phone_characters"


def test_a_number_of_another_country_needs_that_country_allowed() -> None:
    refused = refusal("+447400123456", business("US"))

    assert refused.code == "phone_country_not_allowed"
    assert "US" in refused.message
    assert check("+447400123456", business("US", allowed_countries="US,GB")) == "+447400123456"


# --- the subscriber's number types -----------------------------------------------------------


def test_allowed_types_let_a_refused_kind_through() -> None:
    toll_free = example("US", PhoneNumberType.TOLL_FREE)
    assert toll_free is not None
    subscriber = business("US", number_types="fixed_line,mobile,toll_free")

    assert check(toll_free, subscriber) == toll_free


def test_a_subscriber_for_mobiles_only_refuses_landlines() -> None:
    subscriber = business("GB", number_types="mobile")
    landline = example("GB", PhoneNumberType.FIXED_LINE)
    assert landline is not None

    refused = refusal(landline, subscriber)
    assert refused.code == "phone_type_not_allowed"
    assert "a landline number" in refused.message
    assert check("+447400123456", subscriber) == "+447400123456"


def test_a_number_that_may_be_either_passes_for_either() -> None:
    # phonenumbers cannot tell a US landline from a mobile.
    assert check("+12015550123", business("US", number_types="mobile")) == "+12015550123"


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        (None, None),
        ("mobile, FIXED_LINE", "fixed_line,mobile"),
        (["fixed_line_or_mobile", "mobile", "fixed_line"], None),  # the default, as a list
        ("premium_rate", "premium_rate"),
    ],
)
def test_number_types_are_stored_in_one_spelling(
    given: str | list[str] | None, stored: str | None
) -> None:
    assert number_policy.validate_number_types(given) == stored


@pytest.mark.parametrize(("given", "words"), [("mobile,landline", "'landline'"), (" , ", "least")])
def test_unknown_number_types_are_refused_naming_the_known_ones(given: str, words: str) -> None:
    with pytest.raises(PolicyError) as refused:
        number_policy.validate_number_types(given)
    assert words in str(refused.value)
    assert "fixed_line" in str(refused.value)


# --- the deny-list and the business's own numbers (in the database) --------------------------


@pytest.fixture
def acme(session: Session) -> Subscriber:
    subscriber = business("US", slug="acme")
    session.add(subscriber)
    session.add(business("US", slug="bolt", caller_id="+12015550199"))
    session.commit()
    return subscriber


def deny(session: Session, pattern: str, *, prefix: bool = False, owner: int | None = None) -> None:
    session.add(DeniedNumber(pattern=pattern, is_prefix=prefix, subscriber_id=owner, reason=""))
    session.commit()


def listed_refusal(session: Session, text: str, slug: str = "acme") -> str | None:
    """The refusal code of the lists, or None when the number passes them."""
    subscriber = session.scalars(select(Subscriber).where(Subscriber.slug == slug)).one()
    try:
        normalise_phone(session, text, subscriber)
    except Invalid as refused:
        return refused.code
    return None


def test_a_denied_number_is_refused_exactly(session: Session, acme: Subscriber) -> None:
    deny(session, "+12015550123")

    assert listed_refusal(session, "(201) 555-0123") == "phone_denied"
    assert listed_refusal(session, "+12015550124") is None
    assert listed_refusal(session, "+12015550123", "bolt") == "phone_denied", "global"


def test_a_denied_prefix_refuses_every_number_under_it(session: Session, acme: Subscriber) -> None:
    deny(session, "+1201555", prefix=True)

    assert listed_refusal(session, "+12015550123") == "phone_denied"
    assert listed_refusal(session, "+12015559999") == "phone_denied"
    assert listed_refusal(session, "+12025550123") is None


def test_an_exact_entry_is_no_prefix(session: Session, acme: Subscriber) -> None:
    deny(session, "+1201555012")

    assert listed_refusal(session, "+12015550123") is None


def test_a_subscribers_own_entry_counts_for_it_alone(session: Session, acme: Subscriber) -> None:
    deny(session, "+12015550123", owner=acme.id)

    assert listed_refusal(session, "+12015550123") == "phone_denied"
    assert listed_refusal(session, "+12015550123", "bolt") is None


def test_the_business_is_not_made_to_call_itself_or_its_agents(
    session: Session, acme: Subscriber
) -> None:
    for name, contact in [
        ("desk", "sip:+12015550177@192.0.2.1"),
        ("back", "sip:2015550178@pbx.example:5060"),
        ("named", "sip:alice@192.0.2.2"),
    ]:
        agent = add_agent(session, name, contact=contact).agent
        session.add(AgentAssignment(subscriber_id=acme.id, agent_id=agent.id))
    add_agent(session, "elsewhere", contact="sip:+12015550179@192.0.2.3")
    acme.inbound_number = "+12015550188"  # the number acme gives out for calls in
    session.commit()

    assert listed_refusal(session, "(201) 555-0100") == "phone_is_business"
    assert listed_refusal(session, "201-555-0188") == "phone_is_business"
    assert listed_refusal(session, "+12015550177") == "phone_is_business"
    assert listed_refusal(session, "201 555 0178") == "phone_is_business"
    assert listed_refusal(session, "+12015550179") is None, "an agent who does not serve acme"
    assert listed_refusal(session, "+12015550100", "bolt") is None, "acme's number, for bolt"


@pytest.mark.parametrize(
    ("pattern", "prefix", "field"),
    [
        ("4490", True, "pattern"),
        ("+4", True, "pattern"),
        ("+0490", True, "pattern"),
        ("+44 90", True, "pattern"),
        ("+44\n90", False, "pattern"),
        ("+\uff14\uff14\uff19\uff10", True, "pattern"),
        ("+1234567890123456", False, "pattern"),
    ],
)
def test_deny_list_entries_are_plus_and_digits(pattern: str, prefix: bool, field: str) -> None:
    with pytest.raises(PolicyError) as refused:
        number_policy.validate_entry(pattern, prefix=prefix)
    assert refused.value.field == field
    assert "+4490" in str(refused.value), "the message shows the form it wants"


def test_a_reason_is_short_and_plain() -> None:
    assert number_policy.validate_entry("+4490", prefix=True, reason=" fraud ") == DenyEntry(
        "+4490", True, "fraud"
    )
    for reason in ("x" * 201, "fraud\nand more"):
        with pytest.raises(PolicyError) as refused:
            number_policy.validate_entry("+4490", prefix=True, reason=reason)
        assert refused.value.field == "reason"


# --- refusals are shown to the admin ---------------------------------------------------------


def test_a_refused_number_is_in_the_audit_log_and_masked_in_the_log_line(
    sessions: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    with sessions() as session:
        session.add(business("US"))
        session.commit()
        caplog.set_level(logging.INFO, logger="cbserver.audit")
        with pytest.raises(Invalid):
            submit(
                session,
                Submission(subscriber="acme", phone="+1 900 234 5678", client="203.0.113.9"),
            )
        with pytest.raises(Invalid):
            submit(session, Submission(subscriber="acme", phone="", client="203.0.113.9"))

    with sessions() as session:
        [event] = session.scalars(select(AuditEvent))
    assert event.action == "number_refused"
    assert event.actor == "visitor 203.0.113.9"
    assert event.detail == "phone_premium_rate: +19002345678", "the admin sees the number"
    assert event.subscriber_id is not None
    logged = caplog.text
    assert "phone_premium_rate: +19002..." in logged
    assert "+19002345678" not in logged, "log lines do not carry the whole number"


def test_a_refusal_from_an_unknown_address_is_a_visitors_and_erased_in_time(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as session:
        session.add(business("US"))
        session.commit()
        with pytest.raises(Invalid):
            submit(session, Submission(subscriber="acme", phone="+1 900 234 5678"), now=NOW)

    with sessions() as session:
        assert session.scalars(select(AuditEvent.actor)).one() == "visitor unknown"
        housekeeping.anonymise_old_refusals(session, NOW + timedelta(days=91), timedelta(days=90))
        erased = session.scalars(select(AuditEvent)).one()
    assert erased.detail == housekeeping.ERASED, "the number refused is not kept for ever"


def test_what_was_typed_is_kept_quoted_when_it_was_no_number(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as session:
        session.add(business("US"))
        session.commit()
        with pytest.raises(Invalid):
            submit(session, Submission(subscriber="acme", phone="+1201\nChannel: x"))

    with sessions() as session:
        detail = session.scalars(select(AuditEvent.detail)).one()
    assert detail == "phone_characters: '+1201\\nChannel: x'"


@pytest.mark.parametrize(
    ("number", "shown"),
    [
        ("+19002345678", "+19002..."),
        ("+4930901820", "+49309..."),
        ("+44999", "+44999"),
        ("112", "112"),
        ("'a\\nb'", "(input of 6 characters)"),
        ("", "(nothing)"),
    ],
)
def test_log_lines_show_the_range_not_the_person(number: str, shown: str) -> None:
    assert number_policy.masked(number) == shown
