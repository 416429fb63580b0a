"""Agents and the schema, on SQLite and, when CBSERVER_TEST_POSTGRES_URL is set, PostgreSQL
(each test in a schema of its own, dropped afterwards)."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, func, inspect, select
from sqlalchemy.orm import Session

from cbserver import db
from cbserver.agents import AgentError, add_agent, list_agents
from cbserver.models import Agent, Base

pytestmark = pytest.mark.postgres


def stored_names(session: Session) -> list[str]:
    session.expire_all()
    return list(session.scalars(select(Agent.name).order_by(Agent.name)))


# --- the schema ----------------------------------------------------------------------------


def test_upgrade_creates_the_schema_and_leaves_nothing_pending(engine: Engine) -> None:
    pending = db.pending_migrations(engine)
    assert pending[0] == "0001", "oldest first"
    assert len(pending) == len(list((db.MIGRATIONS / "versions").glob("0*.py")))
    assert "agents" not in inspect(engine).get_table_names()

    db.upgrade(engine)

    assert db.pending_migrations(engine) == []
    assert "agents" in inspect(engine).get_table_names()


def test_upgrade_twice_is_harmless(engine: Engine) -> None:
    db.upgrade(engine)
    db.upgrade(engine)

    assert db.pending_migrations(engine) == []


def test_migrations_match_the_models(engine: Engine) -> None:
    db.upgrade(engine)

    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        differences = compare_metadata(context, Base.metadata)

    assert differences == []


# --- adding agents -------------------------------------------------------------------------


def test_agent_with_a_contact_is_stored_without_a_password(session: Session) -> None:
    created = add_agent(session, "alice", contact="sip:alice@127.0.0.1:5070", dtmf_mode="info")

    assert created.sip_password is None
    [alice] = list_agents(session)
    assert alice.name == "alice"
    assert alice.contact == "sip:alice@127.0.0.1:5070"
    assert alice.sip_password is None
    assert alice.dtmf_mode == "info"
    assert alice.active is True
    assert alice.created_at is not None


def test_registering_agent_gets_a_strong_generated_password(session: Session) -> None:
    bob = add_agent(session, "bob")
    carol = add_agent(session, "carol")

    assert bob.sip_password is not None
    assert carol.sip_password is not None
    assert len(bob.sip_password) >= 20
    assert bob.sip_password != carol.sip_password
    session.expire_all()
    stored = {a.name: a.sip_password for a in list_agents(session)}
    assert stored == {"bob": bob.sip_password, "carol": carol.sip_password}


def test_duplicate_agent_name_is_refused_and_nothing_stored(session: Session) -> None:
    add_agent(session, "alice", contact="sip:alice@127.0.0.1:5070")

    with pytest.raises(AgentError, match="already exists") as caught:
        add_agent(session, "alice")

    assert caught.value.field == "name"
    assert stored_names(session) == ["alice"]
    assert session.scalar(select(func.count()).select_from(Agent)) == 1
    # The session is still usable after the refusal.
    add_agent(session, "bob")
    assert stored_names(session) == ["alice", "bob"]


@pytest.mark.parametrize(
    "name",
    ["Alice", "trunk", "a b", "x" * 41, "", "1alice", "alice;x", "alice\n", "al]ice"],
    ids=repr,
)
def test_invalid_agent_name_is_refused_and_nothing_stored(session: Session, name: str) -> None:
    with pytest.raises(AgentError) as caught:
        add_agent(session, name, contact="sip:x@127.0.0.1")

    assert caught.value.field == "name"
    assert "must start with a lowercase letter" in str(caught.value) or name == "trunk"
    assert stored_names(session) == []


def test_reserved_agent_name_is_refused_as_reserved(session: Session) -> None:
    with pytest.raises(AgentError, match="'trunk' is reserved"):
        add_agent(session, "trunk")


def test_longest_allowed_name_is_accepted(session: Session) -> None:
    add_agent(session, "a" * 40)

    assert stored_names(session) == ["a" * 40]


@pytest.mark.parametrize(
    "contact",
    [
        "sip:a@b\n[evil]",
        "sip:a@b\n",
        "sip:a@b;transport=tcp",
        "sip:a@b:99999",
        "sip:a@b:0",
        "tel:123",
        "sip:a@b,c",
        "sip:a@b?X-Evil=1",
        "sip:a @b",
        "b",
    ],
    ids=repr,
)
def test_hostile_contact_is_refused_and_nothing_stored(session: Session, contact: str) -> None:
    with pytest.raises(AgentError, match="is not a SIP URI") as caught:
        add_agent(session, "alice", contact=contact)

    assert caught.value.field == "contact"
    assert stored_names(session) == []


@pytest.mark.parametrize(
    "contact", ["sip:alice@127.0.0.1", "sip:alice@192.0.2.10:5060", "sip:alice@[2001:db8::1]:5070"]
)
def test_plain_sip_contacts_are_accepted(session: Session, contact: str) -> None:
    add_agent(session, "alice", contact=contact)

    assert [a.contact for a in list_agents(session)] == [contact]


def test_unknown_dtmf_mode_is_refused(session: Session) -> None:
    with pytest.raises(AgentError) as caught:
        add_agent(session, "alice", dtmf_mode="tones")

    assert caught.value.field == "dtmf_mode"
    assert stored_names(session) == []


# --- listing -------------------------------------------------------------------------------


def test_agents_are_listed_by_name_and_inactive_ones_can_be_left_out(session: Session) -> None:
    for name in ("carol", "alice", "bob"):
        add_agent(session, name)
    bob = session.scalars(select(Agent).where(Agent.name == "bob")).one()
    bob.active = False
    session.commit()

    assert [a.name for a in list_agents(session)] == ["alice", "bob", "carol"]
    assert [a.name for a in list_agents(session, active_only=True)] == ["alice", "carol"]
