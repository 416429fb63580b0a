"""Admin API tokens: created with a secret shown once, stored only as its SHA-256, revocable.

A token is for every subscriber, or for one (``scope_subscriber``). The secret is 256 random
bits, so a plain SHA-256 is enough at rest (no slow hash needed: nothing to guess); lookups go
by that hash, and the hashes are compared again in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import unicodedata
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from cbserver.errors import CbError, FieldError
from cbserver.models import ApiToken, Subscriber, utcnow

PREFIX = "cbs_"
MAX_NAME = 100
# Longer than any secret we hand out; a longer presented value is refused unhashed.
MAX_PRESENTED = 256
# ``last_used_at`` is a hint for people, not an audit log: one write a minute per token at most.
LAST_USED_PRECISION = timedelta(minutes=1)


class TokenError(FieldError):
    """A token could not be created or found."""


class Unauthorized(CbError):
    """No token, or one that is unknown or revoked: the same answer for all, by design."""

    status = 401
    code = "unauthorized"


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def validate_name(name: str) -> str:
    text = unicodedata.normalize("NFC", name).strip()
    if not text:
        raise TokenError("name", "the token's name must not be empty")
    if len(text) > MAX_NAME:
        raise TokenError("name", f"the token's name is too long: at most {MAX_NAME} characters")
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in text):
        raise TokenError("name", "the token's name contains control characters")
    return text


def create_token(
    session: Session, name: str, *, subscriber: Subscriber | None = None
) -> tuple[ApiToken, str]:
    """A new token (committed) and its secret, which is not stored: show it once."""
    secret = new_secret()
    token = ApiToken(
        name=validate_name(name),
        token_hash=hash_secret(secret),
        scope_subscriber=subscriber,
    )
    session.add(token)
    session.commit()
    return token, secret


def authenticate(
    session: Session, presented: str | None, *, now: datetime | None = None
) -> ApiToken:
    """The live token whose secret was presented; Unauthorized otherwise."""
    refused = Unauthorized(
        "The admin token is missing, unknown or revoked. Send it as "
        "'Authorization: Bearer <token>' (create one with: cbserver token create NAME)."
    )
    if not presented or len(presented) > MAX_PRESENTED:
        raise refused
    digest = hash_secret(presented)
    token = session.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
    # The lookup already matched; comparing again in constant time costs nothing and keeps
    # the check independent of how the database compares strings.
    if token is None or not hmac.compare_digest(token.token_hash, digest):
        raise refused
    if token.revoked_at is not None:
        raise refused
    now = now or utcnow()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_PRECISION:
        token.last_used_at = now
        session.commit()
    return token


def get_token(session: Session, token_id: int) -> ApiToken:
    token = session.get(ApiToken, token_id)
    if token is None:
        raise TokenError("id", f"there is no token with id {token_id}")
    return token


def revoke_token(session: Session, token_id: int, *, now: datetime | None = None) -> bool:
    """Revoke the token (committed): it is refused from now on. False if it already was."""
    token = get_token(session, token_id)
    if token.revoked_at is not None:
        return False
    token.revoked_at = now or utcnow()
    session.commit()
    return True


def list_tokens(session: Session) -> list[ApiToken]:
    """Every token, oldest first, with its subscriber (if any) loaded."""
    query = select(ApiToken).order_by(ApiToken.id).options(selectinload(ApiToken.scope_subscriber))
    return list(session.scalars(query))
