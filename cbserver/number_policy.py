"""Which numbers cbserver calls for a visitor: the defence against toll fraud and call bombing.

A public "call me back" form is a free dialler for whoever finds it. A number passes only when
it is a valid number of a type the subscriber allows (fixed line and mobile by default), in a
country it serves, no emergency or short service number, on no deny-list, and not the
business's own number or one of its agents'. Each refusal is an ``Invalid`` in plain words
with a stable code; ``intake.submit`` records it in the audit log for the admin.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import phonenumbers
from phonenumbers import (
    CountryCodeSource,
    NumberParseException,
    PhoneNumber,
    PhoneNumberType,
    shortnumberinfo,
)
from phonenumbers.shortnumberinfo import ShortNumberCost
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from cbserver import audit
from cbserver.errors import FieldError, Invalid
from cbserver.i18n import _
from cbserver.models import Agent, AgentAssignment, DeniedNumber, Subscriber
from cbserver.numbers import E164

# The names the admin API and the command line use for phonenumbers' number types.
TYPE_NAMES: dict[str, int] = {
    "fixed_line": PhoneNumberType.FIXED_LINE,
    "mobile": PhoneNumberType.MOBILE,
    "fixed_line_or_mobile": PhoneNumberType.FIXED_LINE_OR_MOBILE,
    "toll_free": PhoneNumberType.TOLL_FREE,
    "premium_rate": PhoneNumberType.PREMIUM_RATE,
    "shared_cost": PhoneNumberType.SHARED_COST,
    "voip": PhoneNumberType.VOIP,
    "personal_number": PhoneNumberType.PERSONAL_NUMBER,
    "pager": PhoneNumberType.PAGER,
    "uan": PhoneNumberType.UAN,
    "voicemail": PhoneNumberType.VOICEMAIL,
}
DEFAULT_TYPES = ("fixed_line", "mobile", "fixed_line_or_mobile")
# Where phonenumbers cannot tell (the US, Canada): such a number may be either, so it passes
# when either is allowed.
_EITHER = {"fixed_line", "mobile", "fixed_line_or_mobile"}
MAX_INPUT = 40
# ASCII only: phonenumbers would quietly read look-alike digits (fullwidth, Arabic-Indic).
_PHONE_CHARACTERS = re.compile(rf"[0-9+()\-. /]{{1,{MAX_INPUT}}}")
MAX_REASON = 200
# Row ids are 32-bit integers on every database: a larger one is no entry, and not asked for.
MAX_ID = 2**31 - 1
# What a visitor typed, as the audit row keeps it when it was no number.
MAX_SHOWN_INPUT = 60


class NumberRefused(Invalid):
    """A visitor's number that will not be called; ``number`` is what the admin is shown."""

    def __init__(self, message: str, *, code: str, number: str) -> None:
        super().__init__(message, field="phone", code=code)
        self.number = number


class PolicyError(FieldError):
    """An admin's number types or deny-list entry were refused."""


class AlreadyDenied(PolicyError):
    """The same entry is on the list already."""


# --- number types ------------------------------------------------------------------------------


def validate_number_types(value: str | Sequence[str] | None) -> str | None:
    """The types as stored (comma-separated, in a fixed order); None for the default."""
    if value is None:
        return None
    listed = value.split(",") if isinstance(value, str) else list(value)
    names = {name.strip().lower() for name in listed if name.strip()}
    if not names:
        raise PolicyError(
            "number_types",
            "give at least one number type, or null for the default ("
            + ", ".join(DEFAULT_TYPES)
            + ")",
        )
    unknown = sorted(names - set(TYPE_NAMES))
    if unknown:
        raise PolicyError(
            "number_types",
            f"unknown number type {unknown[0]!r}: give one or more of {', '.join(TYPE_NAMES)}",
        )
    chosen = [name for name in TYPE_NAMES if name in names]
    return None if chosen == list(DEFAULT_TYPES) else ",".join(chosen)


def type_names(subscriber: Subscriber) -> list[str]:
    """The number types the subscriber's visitors' numbers may be, by name."""
    if subscriber.number_types is None:
        return list(DEFAULT_TYPES)
    return [name for name in subscriber.number_types.split(",") if name in TYPE_NAMES]


def set_number_types(
    session: Session,
    subscriber: Subscriber,
    value: str | Sequence[str] | None,
    *,
    actor: str,
    at: datetime | None = None,
) -> None:
    """Change the subscriber's number types (None: the default), with the audit row; not
    committed. PolicyError when a type is unknown."""
    subscriber.number_types = validate_number_types(value)
    audit.record(
        session,
        actor,
        "number_types_changed",
        f"{subscriber.slug} calls {', '.join(type_names(subscriber))}",
        subscriber_id=subscriber.id,
        at=at,
    )


def _allowed(subscriber: Subscriber, number_type: int) -> bool:
    names = set(type_names(subscriber))
    if number_type == PhoneNumberType.FIXED_LINE_OR_MOBILE:
        return bool(names & _EITHER)
    return any(TYPE_NAMES[name] == number_type for name in names)


# --- the visitor's number ----------------------------------------------------------------------


def _regions(subscriber: Subscriber) -> list[str]:
    """Where a number without a country code may be meant: the subscriber's countries."""
    return list(dict.fromkeys([subscriber.country.upper(), *subscriber.allowed_country_list]))


def _valid_in(text: str, region: str) -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(text, region))
    except NumberParseException:
        return False


def _dials_emergency(text: str, subscriber: Subscriber) -> bool:
    """Dialled as typed in one of the subscriber's countries, would it reach emergency services?

    Exactly an emergency number there (112, 911, 999, 000, 110...); or, when it is no valid
    number, one that starts like one: an exchange may connect "1121" to 112 (libphonenumber's
    prefix rule). A valid number that happens to start like one (1800 123 456 in Australia,
    like 18 in France) is a phone number, not an emergency call.
    """
    home_valid = _valid_in(text, subscriber.country.upper())
    for region in _regions(subscriber):
        if shortnumberinfo.is_emergency_number(text, region):
            return True
        if (
            not home_valid
            and shortnumberinfo.connects_to_emergency_number(text, region)
            and not _valid_in(text, region)
        ):
            return True
    return False


def _is_emergency_abroad(number: PhoneNumber) -> bool:
    """+44 999, 0049 110: an emergency number of the country its country code names."""
    if number.country_code_source == CountryCodeSource.FROM_DEFAULT_COUNTRY:
        return False  # no country code given: the subscriber's countries were asked already
    national = phonenumbers.national_significant_number(number)
    regions = phonenumbers.region_codes_for_country_code(number.country_code or 0)
    return any(shortnumberinfo.is_emergency_number(national, region) for region in regions)


def _emergency(number: str) -> NumberRefused:
    return NumberRefused(
        _(
            "This is an emergency number, and we never call emergency numbers. "
            "In an emergency, please call it yourself now."
        ),
        code="phone_emergency",
        number=number,
    )


def _premium(number: str) -> NumberRefused:
    return NumberRefused(
        _("This is a premium-rate number. We do not call premium-rate numbers."),
        code="phone_premium_rate",
        number=number,
    )


def _invalid(number: str) -> NumberRefused:
    return NumberRefused(
        _(
            "This phone number is not valid. Please check it, with the country code "
            "if it is from abroad."
        ),
        code="phone_invalid",
        number=number,
    )


def _not_a_full_number(number: PhoneNumber, shown: str) -> NumberRefused:
    """Why a number that is no valid full number is refused: a service code, or too short."""
    if shortnumberinfo.is_valid_short_number(number):
        if shortnumberinfo.expected_cost(number) == ShortNumberCost.PREMIUM_RATE:
            return _premium(shown)
        return NumberRefused(
            _(
                "This is a short service number. We can only call full phone numbers: "
                "please enter yours, with the area code."
            ),
            code="phone_type_not_allowed",
            number=shown,
        )
    if shortnumberinfo.is_possible_short_number(number):
        return NumberRefused(
            _("This number is too short. Please enter your full number, with the area code."),
            code="phone_invalid",
            number=shown,
        )
    return _invalid(shown)


def _kind(number_type: int) -> str:
    kinds = {
        PhoneNumberType.FIXED_LINE: _("a landline number"),
        PhoneNumberType.MOBILE: _("a mobile number"),
        PhoneNumberType.FIXED_LINE_OR_MOBILE: _("a landline or mobile number"),
        PhoneNumberType.VOIP: _("an internet telephony (VoIP) number"),
        PhoneNumberType.PERSONAL_NUMBER: _("a personal forwarding number"),
        PhoneNumberType.PAGER: _("a pager number"),
        PhoneNumberType.UAN: _("a company's service number"),
        PhoneNumberType.VOICEMAIL: _("a voicemail access number"),
    }
    return kinds.get(number_type, _("a number of an unknown kind"))


def _type_refused(number_type: int, e164: str) -> NumberRefused:
    if number_type == PhoneNumberType.PREMIUM_RATE:
        return _premium(e164)
    if number_type == PhoneNumberType.SHARED_COST:
        return NumberRefused(
            _(
                "This is a shared-cost service number. We can only call ordinary landline "
                "and mobile numbers."
            ),
            code="phone_shared_cost",
            number=e164,
        )
    if number_type == PhoneNumberType.TOLL_FREE:
        return NumberRefused(
            _(
                "This is a toll-free service number. We can only call ordinary landline "
                "and mobile numbers."
            ),
            code="phone_toll_free",
            number=e164,
        )
    return NumberRefused(
        _(
            "We cannot call this kind of number (%(kind)s). Please enter another number.",
            kind=_kind(number_type),
        ),
        code="phone_type_not_allowed",
        number=e164,
    )


def _shown_input(text: str) -> str:
    """What the visitor typed, for the admin: quoted, so no control character gets through."""
    clipped = text if len(text) <= MAX_SHOWN_INPUT else text[:MAX_SHOWN_INPUT] + "..."
    return repr(clipped)


def check(raw: str, subscriber: Subscriber) -> str:
    """The visitor's number in E.164, or NumberRefused saying in plain words what is wrong.

    Only what the number itself says; ``check_lists`` adds the deny-list and the business's
    own numbers, which need the database.
    """
    text = raw.strip()
    if not text:
        raise NumberRefused(_("Please enter your phone number."), code="phone_missing", number="")
    if not _PHONE_CHARACTERS.fullmatch(text) or not any(c in "0123456789" for c in text):
        raise NumberRefused(
            _("Please enter a phone number using digits, and + for the country code."),
            code="phone_characters",
            number=_shown_input(raw),
        )
    # Before validity: "112" is no valid number, and "please check it" would be the wrong answer.
    if _dials_emergency(text, subscriber):
        raise _emergency("".join(c for c in text if c.isdigit()))
    try:
        number = phonenumbers.parse(text, subscriber.country.upper(), keep_raw_input=True)
    except NumberParseException as exc:
        raise NumberRefused(
            _("This does not look like a phone number. Please check it."),
            code="phone_unparseable",
            number=repr(text),
        ) from exc
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if _is_emergency_abroad(number):
        raise _emergency(e164)
    if not phonenumbers.is_valid_number(number):
        raise _not_a_full_number(number, e164)
    region = phonenumbers.region_code_for_number(number)
    allowed = subscriber.allowed_country_list
    if region not in allowed:
        raise NumberRefused(
            _("We can only call numbers in %(countries)s.", countries=", ".join(allowed)),
            code="phone_country_not_allowed",
            number=e164,
        )
    number_type = phonenumbers.number_type(number)
    if not _allowed(subscriber, number_type):
        raise _type_refused(number_type, e164)
    if not E164.fullmatch(e164):
        # phonenumbers formats valid numbers so; if it ever did not, nothing is dialled.
        raise _invalid(e164)
    return e164


# --- the database's lists ----------------------------------------------------------------------


def _prefixes(e164: str) -> list[str]:
    return [e164[:end] for end in range(3, len(e164) + 1)]


def denial(session: Session, e164: str, subscriber_id: int | None) -> DeniedNumber | None:
    """The deny-list entry (global, or the subscriber's) that refuses the number, if any."""
    return session.scalars(
        select(DeniedNumber)
        .where(
            or_(DeniedNumber.subscriber_id.is_(None), DeniedNumber.subscriber_id == subscriber_id),
            DeniedNumber.pattern.in_(_prefixes(e164)),
            or_(DeniedNumber.is_prefix.is_(True), DeniedNumber.pattern == e164),
        )
        .order_by(DeniedNumber.id)
        .limit(1)
    ).first()


def e164_in(text: str, country: str) -> str | None:
    """``text`` as a valid number read in ``country`` (national forms allowed), in E.164; None
    when it is no such number."""
    try:
        number = phonenumbers.parse(text, country)
    except NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def as_international(text: str) -> str | None:
    """A trunk's number of digits alone read as an international number without its "+"
    (``4930901820``: +49 30 901820), in E.164; None when it is no such number. Some trunks
    send foreign numbers so; a number that is a valid national one is that (``e164_in``)."""
    digits = text.strip()
    return e164_in(f"+{digits}", "ZZ") if digits.isdigit() else None


def _contact_number(contact: str, country: str) -> str | None:
    """An agent's number, when its SIP URI's user part is one: sip:+4930901820@pbx."""
    user = contact.removeprefix("sip:").partition("@")[0]
    if not user or not _PHONE_CHARACTERS.fullmatch(user):
        return None
    return e164_in(user, country)


def business_numbers(session: Session, subscriber: Subscriber) -> set[str]:
    """The subscriber's own numbers (caller ID, inbound number) and its agents' numbers, in
    E.164."""
    contacts = session.scalars(
        select(Agent.contact)
        .join(AgentAssignment, AgentAssignment.agent_id == Agent.id)
        .where(AgentAssignment.subscriber_id == subscriber.id, Agent.contact.is_not(None))
    )
    numbers = {n for n in (subscriber.caller_id, subscriber.inbound_number) if n}
    for contact in contacts:
        if contact and (number := _contact_number(contact, subscriber.country.upper())):
            numbers.add(number)
    return numbers


def check_lists(session: Session, subscriber: Subscriber, e164: str) -> None:
    """Refuse a number on a deny-list, and the business's own numbers (no calling itself)."""
    if denial(session, e164, subscriber.id) is not None:
        raise NumberRefused(
            _(
                "We cannot call this number. If you think this is a mistake, please "
                "contact us another way."
            ),
            code="phone_denied",
            number=e164,
        )
    if e164 in business_numbers(session, subscriber):
        raise NumberRefused(
            _("This is the business's own number. Please enter your own phone number."),
            code="phone_is_business",
            number=e164,
        )


# --- recording refusals ------------------------------------------------------------------------


def masked(number: str) -> str:
    """For log lines: the country code and the range (is it premium?), not whose number it is.

    The audit row holds the whole number, for the admin who must see what was refused; log
    lines are kept longer and read by more people, so they get no more than that.
    """
    if E164.fullmatch(number):
        return number if len(number) <= 7 else number[:6] + "..."
    if number.isascii() and number.isdigit() and len(number) <= 6:
        return number  # a short code like 112: nobody's own number
    return f"(input of {len(number)} characters)" if number else "(nothing)"


def record_refusal(
    sessions: sessionmaker[Session],
    refusal: NumberRefused,
    subscriber: Subscriber,
    client: str | None,
    *,
    at: datetime | None = None,
) -> None:
    """Write the refusal to the audit log at once (nothing else is stored for it)."""
    audit.record_now(
        sessions,
        audit.visitor(client),
        "number_refused",
        f"{refusal.code}: {refusal.number}",
        subscriber_id=subscriber.id,
        at=at,
        log_detail=f"{refusal.code}: {masked(refusal.number)}",
    )


# --- the deny-list, as admins manage it --------------------------------------------------------


@dataclass(frozen=True)
class DenyEntry:
    pattern: str
    prefix: bool
    reason: str


def validate_entry(pattern: str, *, prefix: bool, reason: str = "") -> DenyEntry:
    """A deny-list entry as stored: "+" and digits (a prefix at least 2 digits), a short reason."""
    text = pattern.strip()
    if not E164.fullmatch(text):
        what = "prefix" if prefix else "number"
        raise PolicyError(
            "pattern",
            f"{what} {pattern!r} must be '+', the country code and more digits, with no "
            "spaces or other characters (at least 2 digits, at most 15), like +4490 or "
            "+12015550123",
        )
    cleaned = unicodedata.normalize("NFC", reason).strip()
    if len(cleaned) > MAX_REASON:
        raise PolicyError("reason", f"the reason is too long: at most {MAX_REASON} characters")
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in cleaned):
        raise PolicyError("reason", "the reason contains control characters")
    return DenyEntry(text, prefix, cleaned)


def find_entry(
    session: Session, entry: DenyEntry, subscriber_id: int | None
) -> DeniedNumber | None:
    return session.scalars(
        select(DeniedNumber).where(
            DeniedNumber.pattern == entry.pattern,
            DeniedNumber.is_prefix.is_(entry.prefix),
            DeniedNumber.subscriber_id.is_(None)
            if subscriber_id is None
            else DeniedNumber.subscriber_id == subscriber_id,
        )
    ).first()


def entry_by_id(session: Session, entry_id: int) -> DeniedNumber | None:
    return session.get(DeniedNumber, entry_id) if 0 < entry_id <= MAX_ID else None


def _slug(owner: Subscriber | None) -> str | None:
    return owner.slug if owner is not None else None


def add_entry(
    session: Session,
    entry: DenyEntry,
    owner: Subscriber | None,
    *,
    actor: str,
    at: datetime | None = None,
) -> DeniedNumber:
    """Add the entry (for every subscriber when ``owner`` is None) with its audit row; flushed,
    not committed. AlreadyDenied when it is on the list already."""
    what = "prefix" if entry.prefix else "number"
    where = "for this subscriber" if owner is not None else "for every subscriber"
    duplicate = AlreadyDenied("pattern", f"the {what} {entry.pattern} is already denied {where}")
    owner_id = owner.id if owner is not None else None
    if find_entry(session, entry, owner_id) is not None:
        raise duplicate
    denied = DeniedNumber(
        pattern=entry.pattern,
        is_prefix=entry.prefix,
        subscriber_id=owner_id,
        reason=entry.reason,
    )
    session.add(denied)
    try:
        session.flush()
    except IntegrityError as exc:
        # A concurrent add of the same entry won the unique index.
        session.rollback()
        raise duplicate from exc
    detail = describe(denied, _slug(owner))
    audit.record(
        session, actor, "denied_number_added", f"denied {detail}", subscriber_id=owner_id, at=at
    )
    return denied


def remove_entry(
    session: Session, denied: DeniedNumber, *, actor: str, at: datetime | None = None
) -> str:
    """Remove the entry with its audit row (not committed); what it was, in words."""
    owner = session.get(Subscriber, denied.subscriber_id) if denied.subscriber_id else None
    detail = describe(denied, _slug(owner))
    session.delete(denied)
    audit.record(
        session,
        actor,
        "denied_number_removed",
        f"no longer denied: {detail}",
        subscriber_id=denied.subscriber_id,
        at=at,
    )
    return detail


def list_entries(session: Session, *, subscriber_id: int | None = None) -> list[DeniedNumber]:
    """Every entry, or, for one subscriber, the global ones and its own; oldest first."""
    query = select(DeniedNumber).order_by(DeniedNumber.id)
    if subscriber_id is not None:
        query = query.where(
            or_(DeniedNumber.subscriber_id.is_(None), DeniedNumber.subscriber_id == subscriber_id)
        )
    return list(session.scalars(query))


def describe(entry: DeniedNumber, slug: str | None) -> str:
    """An entry in words, for the audit log and the command line."""
    what = f"prefix {entry.pattern}" if entry.is_prefix else f"number {entry.pattern}"
    where = f"for {slug}" if slug else "for every subscriber"
    reason = f" ({entry.reason})" if entry.reason else ""
    return f"{what} {where}{reason}"


def listed(entries: Iterable[DeniedNumber], e164: str, subscriber_id: int) -> DeniedNumber | None:
    """Which of ``entries`` refuses the number for the subscriber, as ``denial`` would find it
    in the database: for checking many numbers against one read of a short list."""
    for entry in entries:
        if entry.subscriber_id not in (None, subscriber_id):
            continue
        if entry.pattern == e164 or (entry.is_prefix and e164.startswith(entry.pattern)):
            return entry
    return None
