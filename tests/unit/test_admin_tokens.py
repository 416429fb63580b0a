"""Admin API tokens, on SQLite and, when CBSERVER_TEST_POSTGRES_URL is set, PostgreSQL."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from cbserver.admin_tokens import (
    PREFIX,
    TokenError,
    Unauthorized,
    authenticate,
    create_token,
    list_tokens,
    revoke_token,
)
from cbserver.models import ApiToken, Subscriber, utcnow
from cbserver.subscribers import add_subscriber

pytestmark = pytest.mark.postgres


def add_acme(session: Session, slug: str = "acme") -> Subscriber:
    return add_subscriber(
        session, slug, display_name="Acme Plumbing", country="US", caller_id="+12015550100"
    )


def test_the_secret_is_shown_once_and_only_its_hash_is_stored(
    session: Session, engine: Engine
) -> None:
    token, secret = create_token(session, "  ci deploy  ")

    assert secret.startswith(PREFIX)
    assert len(secret) >= len(PREFIX) + 40
    assert token.name == "ci deploy"
    assert token.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert token.scope_subscriber_id is None
    assert token.created_at is not None
    assert (token.last_used_at, token.revoked_at) == (None, None)
    with engine.connect() as connection:
        [row] = connection.execute(text("SELECT * FROM api_tokens")).all()
    stored = " ".join(str(value) for value in row)
    assert secret not in stored
    assert secret[len(PREFIX) :] not in stored
    assert secret not in repr(token)
    assert token.token_hash not in repr(token)


def test_every_token_gets_its_own_secret(session: Session) -> None:
    secrets = {create_token(session, "same name")[1] for _ in range(5)}

    assert len(secrets) == 5
    assert len(list_tokens(session)) == 5


def test_the_right_secret_authenticates_and_marks_the_token_used(session: Session) -> None:
    token, secret = create_token(session, "ci")

    found = authenticate(session, secret)

    assert found.id == token.id
    assert found.last_used_at is not None


@pytest.mark.parametrize(
    "presented",
    [None, "", "cbs_wrong", "x" * 10_000],
    ids=["missing", "empty", "wrong", "huge"],
)
def test_anything_else_is_refused(session: Session, presented: str | None) -> None:
    create_token(session, "ci")

    with pytest.raises(Unauthorized) as refused:
        authenticate(session, presented)

    assert refused.value.status == 401
    assert refused.value.code == "unauthorized"


def test_the_hash_itself_does_not_authenticate(session: Session) -> None:
    token, _secret = create_token(session, "ci")

    with pytest.raises(Unauthorized):
        authenticate(session, token.token_hash)


def test_a_revoked_token_is_refused(session: Session) -> None:
    token, secret = create_token(session, "ci")

    assert revoke_token(session, token.id) is True
    assert revoke_token(session, token.id) is False  # already revoked: nothing changes

    with pytest.raises(Unauthorized):
        authenticate(session, secret)
    session.expire_all()
    assert session.get(ApiToken, token.id).revoked_at is not None  # type: ignore[union-attr]


def test_revoking_an_unknown_token_names_it(session: Session) -> None:
    with pytest.raises(TokenError, match="there is no token with id 42") as refused:
        revoke_token(session, 42)

    assert refused.value.field == "id"


def test_last_used_is_written_at_most_once_a_minute(session: Session) -> None:
    _token, secret = create_token(session, "ci")
    start = utcnow()

    first = authenticate(session, secret, now=start).last_used_at
    soon = authenticate(session, secret, now=start + timedelta(seconds=59)).last_used_at
    later = authenticate(session, secret, now=start + timedelta(seconds=61)).last_used_at

    assert first == soon == start
    assert later == start + timedelta(seconds=61)


def test_a_token_can_be_for_one_subscriber(session: Session) -> None:
    acme = add_acme(session)
    token, secret = create_token(session, "acme's shop", subscriber=acme)

    assert token.scope_subscriber_id == acme.id
    assert authenticate(session, secret).scope_subscriber_id == acme.id


def test_a_token_for_one_subscriber_goes_with_it(session: Session) -> None:
    """Never left behind as a token for every subscriber (which SET NULL would make it)."""
    acme = add_acme(session)
    _token, secret = create_token(session, "acme's shop", subscriber=acme)

    session.delete(acme)
    session.commit()

    assert session.scalars(select(ApiToken)).all() == []
    with pytest.raises(Unauthorized):
        authenticate(session, secret)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("   ", "must not be empty"),
        ("x" * 101, "too long"),
        ("bad\x00name", "control characters"),
    ],
)
def test_a_bad_name_is_refused(session: Session, name: str, message: str) -> None:
    with pytest.raises(TokenError, match=message) as refused:
        create_token(session, name)

    assert refused.value.field == "name"
    assert list_tokens(session) == []


def test_tokens_are_listed_oldest_first_with_their_subscriber(session: Session) -> None:
    acme = add_acme(session)
    create_token(session, "everything")
    create_token(session, "acme only", subscriber=acme)

    listed = list_tokens(session)

    assert [(t.name, t.scope_subscriber.slug if t.scope_subscriber else None) for t in listed] == [
        ("everything", None),
        ("acme only", "acme"),
    ]
