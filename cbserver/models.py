"""Typed models. The database is the durable truth of everything cbserver knows."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Agent(Base):
    """A person at a SIP phone who takes call-backs. ``name`` is also the PJSIP endpoint."""

    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)
    # A fixed phone or test peer has a contact URI; a registering phone has a password.
    contact: Mapped[str | None] = mapped_column(String(255))
    sip_password: Mapped[str | None] = mapped_column(String(128))
    dtmf_mode: Mapped[str] = mapped_column(String(16), default="rfc4733")
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    def __repr__(self) -> str:
        return f"Agent(name={self.name!r}, contact={self.contact!r})"
