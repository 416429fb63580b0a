"""security: number policy, deny-list, CAPTCHA, consent, audit log

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(sa.Column("number_types", sa.String(200), nullable=True))
        batch.add_column(sa.Column("captcha_provider", sa.String(20), nullable=True))
        batch.add_column(sa.Column("captcha_site_key", sa.String(200), nullable=True))
        batch.add_column(sa.Column("captcha_secret", sa.String(200), nullable=True))
        batch.add_column(sa.Column("captcha_verify_url", sa.String(300), nullable=True))
    with op.batch_alter_table("callback_requests") as batch:
        batch.add_column(sa.Column("consent_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "denied_numbers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pattern", sa.String(20), nullable=False),
        sa.Column("is_prefix", sa.Boolean(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_denied_numbers_subscriber_id_subscribers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_denied_numbers")),
        sa.UniqueConstraint(
            "pattern",
            "is_prefix",
            "subscriber_id",
            name=op.f("uq_denied_numbers_pattern_is_prefix_subscriber_id"),
        ),
    )
    op.create_index(
        "uq_denied_numbers_global",
        "denied_numbers",
        ["pattern", "is_prefix"],
        unique=True,
        postgresql_where=sa.text("subscriber_id IS NULL"),
        sqlite_where=sa.text("subscriber_id IS NULL"),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(120), nullable=False),
        sa.Column("action", sa.String(60), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("detail", sa.String(1000), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_audit_events_subscriber_id_subscribers"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    op.create_index("ix_audit_events_subscriber_id", "audit_events", ["subscriber_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_subscriber_id", table_name="audit_events")
    op.drop_index("ix_audit_events_at", table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_index("uq_denied_numbers_global", table_name="denied_numbers")
    op.drop_table("denied_numbers")
    with op.batch_alter_table("callback_requests") as batch:
        batch.drop_column("consent_at")
    with op.batch_alter_table("subscribers") as batch:
        for column in (
            "captcha_verify_url",
            "captcha_secret",
            "captcha_site_key",
            "captcha_provider",
            "number_types",
        ):
            batch.drop_column(column)
