"""Subscribers and their agents, on SQLite and, when CBSERVER_TEST_POSTGRES_URL is set,
PostgreSQL (each test in a schema of its own, dropped afterwards)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cbserver.agents import add_agent
from cbserver.models import AgentAssignment, Subscriber
from cbserver.subscribers import (
    SubscriberError,
    add_subscriber,
    assign_agent,
    get_subscriber,
    list_subscribers,
    schedule_of,
    set_schedule,
    unassign_agent,
)

pytestmark = pytest.mark.postgres

ACME: dict[str, Any] = {
    "display_name": "Acme Plumbing",
    "country": "US",
    "caller_id": "+12015550100",
}
# Look-alike digits, which phonenumbers would read as digits; never a caller ID.
FULLWIDTH_CALLER_ID = "+" + "12015550100".translate({c: c + 0xFEE0 for c in range(0x30, 0x3A)})


def add_acme(session: Session, slug: str = "acme", **fields: Any) -> Subscriber:
    return add_subscriber(session, slug, **{**ACME, **fields})


def stored_slugs(session: Session) -> list[str]:
    session.expire_all()
    return list(session.scalars(select(Subscriber.slug).order_by(Subscriber.slug)))


def assigned(session: Session, slug: str = "acme") -> list[tuple[str, int]]:
    return [(a.agent.name, a.priority) for a in get_subscriber(session, slug).assignments]


# --- adding subscribers --------------------------------------------------------------------


def test_subscriber_is_stored_with_normalised_values(session: Session) -> None:
    created = add_subscriber(
        session,
        "acme-plumbing-2",
        display_name="  Acme Plumbing  ",
        country="us",
        caller_id="+1 (201) 555-0100",
        time_zone="America/Los_Angeles",
        language="de",
        call_order="visitor_first",
        max_attempts=10,
        retry_interval_seconds=30,
        wrap_up_seconds=3600,
        inbound_number="+1 (201) 555-0111",
        unknown_callers="message",
        allowed_countries=" us, ca ,US,",
        allowed_origins="https://WWW.Example.com/, http://localhost:8000,https://www.example.com:443",
    )

    session.expire_all()
    [stored] = list_subscribers(session)
    assert stored.id == created.id
    assert stored.slug == "acme-plumbing-2"
    assert stored.display_name == "Acme Plumbing"
    assert stored.country == "US"
    assert stored.caller_id == "+12015550100"
    assert stored.time_zone == "America/Los_Angeles"
    assert stored.language == "de"
    assert stored.call_order == "visitor_first"
    assert stored.max_attempts == 10
    assert stored.retry_interval_seconds == 30
    assert stored.wrap_up_seconds == 3600
    assert stored.inbound_number == "+12015550111"
    assert stored.unknown_callers == "message"
    assert stored.allowed_countries == "US,CA"
    assert stored.allowed_country_list == ["US", "CA"]
    assert stored.allowed_origins == "https://www.example.com,http://localhost:8000"
    assert stored.active is True
    assert len(stored.widget_key) >= 40
    assert stored.assignments == []


def test_defaults_apply_and_each_subscriber_gets_its_own_widget_key(session: Session) -> None:
    acme = add_acme(session)
    other = add_acme(session, "other")

    assert (acme.time_zone, acme.language, acme.call_order) == ("UTC", "en", "agent_first")
    assert (acme.max_attempts, acme.retry_interval_seconds) == (3, 300)
    assert acme.wrap_up_seconds == 0, "no wrap-up unless asked for"
    assert acme.inbound_number is None, "calls in by the caller ID only unless asked for"
    assert acme.unknown_callers == "agents", "every caller reaches the agents unless asked for"
    assert (acme.allowed_countries, acme.allowed_origins) == ("", "")
    assert acme.allowed_country_list == ["US"]
    assert acme.widget_key != other.widget_key
    assert get_subscriber(session, "other").id == other.id


def test_duplicate_slug_is_refused_and_nothing_stored(session: Session) -> None:
    add_acme(session)

    with pytest.raises(SubscriberError, match="a subscriber named 'acme' already exists") as caught:
        add_acme(session, display_name="Another Acme")

    assert caught.value.field == "slug"
    assert session.scalar(select(func.count()).select_from(Subscriber)) == 1
    assert get_subscriber(session, "acme").display_name == "Acme Plumbing"


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"slug": "Acme"}, "slug", "lowercase letters"),
        ({"slug": "a"}, "slug", "2 to 40"),
        ({"slug": "-acme"}, "slug", "starting with a letter or digit"),
        ({"slug": "acme_plumbing"}, "slug", "lowercase letters"),
        ({"slug": "a" * 41}, "slug", "2 to 40"),
        ({"slug": "acme\n"}, "slug", "lowercase letters"),
        ({"display_name": "  "}, "display_name", "must not be empty"),
        ({"display_name": "x" * 121}, "display_name", "too long"),
        ({"display_name": "Acme\x00"}, "display_name", "control characters"),
        ({"country": "XX"}, "country", "not an ISO 3166"),
        ({"country": "USA"}, "country", "not an ISO 3166"),
        ({"caller_id": "12345"}, "caller_id", "E.164"),
        ({"caller_id": "+1201555"}, "caller_id", "E.164"),
        ({"caller_id": "2015550100"}, "caller_id", "E.164"),
        ({"caller_id": FULLWIDTH_CALLER_ID}, "caller_id", "E.164"),
        ({"time_zone": "Mars/Olympus"}, "time_zone", "IANA time zone"),
        ({"time_zone": "../../etc/passwd"}, "time_zone", "IANA time zone"),
        ({"time_zone": ""}, "time_zone", "IANA time zone"),
        ({"language": "fr"}, "language", "en, de"),
        ({"call_order": "random"}, "call_order", "agent_first, visitor_first"),
        ({"max_attempts": 0}, "max_attempts", "from 1 to 10"),
        ({"max_attempts": 11}, "max_attempts", "from 1 to 10"),
        ({"retry_interval_seconds": 5}, "retry_interval_seconds", "from 30 to 86400"),
        ({"retry_interval_seconds": 86401}, "retry_interval_seconds", "from 30 to 86400"),
        ({"wrap_up_seconds": -1}, "wrap_up_seconds", "wrap-up time in seconds must be"),
        ({"wrap_up_seconds": 3601}, "wrap_up_seconds", "from 0 to 3600"),
        ({"wrap_up_seconds": True}, "wrap_up_seconds", "from 0 to 3600"),
        ({"inbound_number": "12345"}, "inbound_number", "inbound number '12345' is not a valid"),
        ({"inbound_number": "+1201555"}, "inbound_number", "E.164"),
        ({"inbound_number": ""}, "inbound_number", "E.164"),
        ({"inbound_number": FULLWIDTH_CALLER_ID}, "inbound_number", "E.164"),
        (
            {"inbound_number": "+1 201 555 0100"},
            "inbound_number",
            "inbound number '+12015550100' is already acme's number: its caller ID",
        ),
        ({"unknown_callers": "voicemail"}, "unknown_callers", "one of agents, message"),
        ({"allowed_countries": "US,ZZ"}, "allowed_countries", "'ZZ' is not an ISO 3166"),
        ({"allowed_origins": "ftp://x"}, "allowed_origins", "'ftp://x' is not a web origin"),
        ({"allowed_origins": "https://x.example/path"}, "allowed_origins", "no path"),
        ({"allowed_origins": "https://a.example,https://x.example?q"}, "allowed_origins", "?q"),
        ({"allowed_origins": "https://user@x.example"}, "allowed_origins", "web origin"),
        ({"allowed_origins": "https://x.example:99999"}, "allowed_origins", "web origin"),
        ({"allowed_origins": "*"}, "allowed_origins", "web origin"),
        ({"allowed_origins": "https://bad host"}, "allowed_origins", "web origin"),
    ],
    ids=repr,
)
def test_invalid_field_is_refused_by_name_and_nothing_stored(
    session: Session, fields: dict[str, Any], field: str, words: str
) -> None:
    fields = dict(fields)  # the same dict serves every database: leave it whole
    slug = fields.pop("slug", "acme")

    with pytest.raises(SubscriberError) as caught:
        add_acme(session, slug, **fields)

    assert caught.value.field == field
    assert words in str(caught.value)
    assert stored_slugs(session) == []


@pytest.mark.parametrize("slug", ["ab", "0acme", "a" * 40, "acme-plumbing"])
def test_valid_slugs_are_accepted(session: Session, slug: str) -> None:
    add_acme(session, slug)

    assert stored_slugs(session) == [slug]


def test_ipv6_origin_is_accepted_in_its_short_form(session: Session) -> None:
    acme = add_acme(session, allowed_origins="http://[2001:DB8:0::1]:8080/")

    assert acme.allowed_origin_list == ["http://[2001:db8::1]:8080"]


def test_subscribers_are_listed_by_slug(session: Session) -> None:
    for slug in ("zeta", "acme", "mid"):
        add_acme(session, slug)

    assert [s.slug for s in list_subscribers(session)] == ["acme", "mid", "zeta"]


def test_unknown_subscriber_is_named(session: Session) -> None:
    with pytest.raises(SubscriberError, match="no subscriber named 'nobody'") as caught:
        get_subscriber(session, "nobody")

    assert caught.value.field == "subscriber"


def test_the_wrap_up_time_is_changed_and_shown_with_the_schedule(session: Session) -> None:
    add_acme(session)

    set_schedule(session, "acme", {"wrap_up_seconds": 90})

    session.expire_all()
    assert schedule_of(get_subscriber(session, "acme"))["wrap_up_seconds"] == 90


@pytest.mark.parametrize("seconds", [-1, 3601, "60"])
def test_a_wrap_up_time_out_of_range_is_refused_and_nothing_changed(
    session: Session, seconds: object
) -> None:
    add_acme(session, wrap_up_seconds=30)

    with pytest.raises(SubscriberError, match="must be a whole number from 0 to 3600") as caught:
        set_schedule(session, "acme", {"wrap_up_seconds": seconds, "slot_minutes": 30})

    assert caught.value.field == "wrap_up_seconds"
    session.expire_all()
    acme = get_subscriber(session, "acme")
    assert (acme.wrap_up_seconds, acme.slot_minutes) == (30, 15)


def test_the_inbound_number_and_unknown_callers_are_changed_and_shown_with_the_schedule(
    session: Session,
) -> None:
    add_acme(session)

    set_schedule(
        session, "acme", {"inbound_number": "+1 201-555-0111", "unknown_callers": "message"}
    )

    session.expire_all()
    shown = schedule_of(get_subscriber(session, "acme"))
    assert (shown["inbound_number"], shown["unknown_callers"]) == ("+12015550111", "message")
    set_schedule(session, "acme", {"inbound_number": None, "unknown_callers": "agents"})
    shown = schedule_of(get_subscriber(session, "acme"))
    assert (shown["inbound_number"], shown["unknown_callers"]) == (None, "agents")


@pytest.mark.parametrize("number", ["+12015550199", "+12015550111"], ids=["caller_id", "inbound"])
def test_another_businesss_number_is_refused_as_an_inbound_number(
    session: Session, number: str
) -> None:
    add_acme(session)
    add_acme(session, "bolt", caller_id="+12015550199", inbound_number="+12015550111")
    message = re.escape(f"inbound number '{number}' is already bolt's number")

    with pytest.raises(SubscriberError, match=message) as caught:
        set_schedule(session, "acme", {"inbound_number": number, "unknown_callers": "message"})
    assert caught.value.field == "inbound_number"
    with pytest.raises(SubscriberError, match=message):
        add_acme(session, "cafe", inbound_number=number)

    session.expire_all()
    acme = get_subscriber(session, "acme")
    assert (acme.inbound_number, acme.unknown_callers) == (None, "agents")
    assert stored_slugs(session) == ["acme", "bolt"]


def test_another_businesss_inbound_number_is_refused_as_a_caller_id(session: Session) -> None:
    add_acme(session, inbound_number="+12015550111")

    message = re.escape("caller ID '+12015550111' is already acme's number")
    with pytest.raises(SubscriberError, match=message) as caught:
        add_acme(session, "bolt", caller_id="+1 201 555 0111")

    assert caught.value.field == "caller_id"
    assert stored_slugs(session) == ["acme"]


def test_a_business_keeps_its_own_inbound_number_when_it_sets_it_again(session: Session) -> None:
    add_acme(session, inbound_number="+12015550111")

    set_schedule(session, "acme", {"inbound_number": "+12015550111"})

    assert get_subscriber(session, "acme").inbound_number == "+12015550111"


# --- assigning agents ----------------------------------------------------------------------


@pytest.fixture
def team(session: Session) -> None:
    add_acme(session)
    for name in ("alice", "bob", "carol"):
        add_agent(session, name)


@pytest.mark.usefixtures("team")
def test_assignments_come_back_in_priority_order(session: Session) -> None:
    acme = get_subscriber(session, "acme")
    assert acme.assignments == []

    assign_agent(session, "acme", "carol", priority=30)
    assign_agent(session, "acme", "alice", priority=10)
    created = assign_agent(session, "acme", "bob")

    assert (created.agent.name, created.priority) == ("bob", 100)
    # The same subscriber object, already loaded: it sees the new order too.
    assert [a.agent.name for a in acme.assignments] == ["alice", "carol", "bob"]
    session.expire_all()
    assert assigned(session) == [("alice", 10), ("carol", 30), ("bob", 100)]


@pytest.mark.usefixtures("team")
def test_equal_priorities_keep_the_order_agents_were_added(session: Session) -> None:
    for name in ("carol", "alice", "bob"):
        assign_agent(session, "acme", name, priority=50)

    assert [name for name, _ in assigned(session)] == ["alice", "bob", "carol"]


@pytest.mark.usefixtures("team")
def test_assigning_again_changes_the_priority(session: Session) -> None:
    assign_agent(session, "acme", "alice", priority=10)
    assign_agent(session, "acme", "bob", priority=20)

    again = assign_agent(session, "acme", "alice", priority=30)

    assert again.priority == 30
    assert assigned(session) == [("bob", 20), ("alice", 30)]
    assert session.scalar(select(func.count()).select_from(AgentAssignment)) == 2


@pytest.mark.usefixtures("team")
def test_unassigning_removes_only_that_agent(session: Session) -> None:
    assign_agent(session, "acme", "alice", priority=10)
    assign_agent(session, "acme", "bob", priority=20)
    acme = get_subscriber(session, "acme")
    assert len(acme.assignments) == 2

    assert unassign_agent(session, "acme", "alice") is True
    assert unassign_agent(session, "acme", "alice") is False

    assert [a.agent.name for a in acme.assignments] == ["bob"]
    session.expire_all()
    assert assigned(session) == [("bob", 20)]


@pytest.mark.usefixtures("team")
def test_an_agent_may_serve_several_subscribers(session: Session) -> None:
    add_acme(session, "other")

    assign_agent(session, "acme", "alice", priority=10)
    assign_agent(session, "other", "alice", priority=90)

    assert assigned(session, "acme") == [("alice", 10)]
    assert assigned(session, "other") == [("alice", 90)]


@pytest.mark.usefixtures("team")
@pytest.mark.parametrize(
    ("subscriber", "agent", "field", "words"),
    [
        ("nobody", "alice", "subscriber", "no subscriber named 'nobody'"),
        ("acme", "nobody", "agent", "no agent named 'nobody'"),
    ],
)
def test_unknown_subscriber_or_agent_is_refused_by_name(
    session: Session, subscriber: str, agent: str, field: str, words: str
) -> None:
    for change in (assign_agent, unassign_agent):
        with pytest.raises(SubscriberError, match=words) as caught:
            change(session, subscriber, agent)
        assert caught.value.field == field
    assert session.scalar(select(func.count()).select_from(AgentAssignment)) == 0


@pytest.mark.usefixtures("team")
@pytest.mark.parametrize("priority", [-1, 1001])
def test_priority_out_of_range_is_refused(session: Session, priority: int) -> None:
    with pytest.raises(SubscriberError, match="from 0 to 1000") as caught:
        assign_agent(session, "acme", "alice", priority=priority)

    assert caught.value.field == "priority"
    assert assigned(session) == []


def test_deleting_a_subscriber_removes_its_assignments(session: Session) -> None:
    add_acme(session)
    add_agent(session, "alice")
    assign_agent(session, "acme", "alice")

    session.delete(get_subscriber(session, "acme"))
    session.commit()

    assert session.scalar(select(func.count()).select_from(AgentAssignment)) == 0
