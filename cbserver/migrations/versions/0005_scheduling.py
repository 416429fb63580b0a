"""scheduling: opening hours, slots with capacity, retry rules, deadlines, retention

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(sa.Column("hours", sa.JSON(), nullable=True))
        batch.add_column(
            sa.Column("outside_hours", sa.String(16), nullable=False, server_default="schedule")
        )
        batch.add_column(
            sa.Column("slot_minutes", sa.Integer(), nullable=False, server_default="15")
        )
        batch.add_column(sa.Column("slot_capacity", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("booking_days", sa.Integer(), nullable=False, server_default="7")
        )
        batch.add_column(
            sa.Column("deadline_days", sa.Integer(), nullable=False, server_default="1")
        )
        batch.add_column(sa.Column("retry_rules", sa.JSON(), nullable=True))
    with op.batch_alter_table("callback_requests") as batch:
        batch.add_column(sa.Column("slot_start", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("anonymised_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_callback_requests_deadline", ["status", "deadline_at"])
        # Claims read requests in (due_at, created_at) order: the index gives that order, so
        # a claim reads the first few rows instead of sorting every request that is due.
        batch.drop_index("ix_callback_requests_due")
        batch.create_index("ix_callback_requests_due", ["status", "due_at", "created_at", "id"])
    op.create_table(
        "slot_bookings",
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("booked", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_slot_bookings_subscriber_id_subscribers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("subscriber_id", "starts_at", name=op.f("pk_slot_bookings")),
    )


def downgrade() -> None:
    op.drop_table("slot_bookings")
    with op.batch_alter_table("callback_requests") as batch:
        batch.drop_index("ix_callback_requests_due")
        batch.create_index("ix_callback_requests_due", ["status", "due_at"])
        batch.drop_index("ix_callback_requests_deadline")
        batch.drop_column("anonymised_at")
        batch.drop_column("deadline_at")
        batch.drop_column("slot_start")
    with op.batch_alter_table("subscribers") as batch:
        for column in (
            "retry_rules",
            "deadline_days",
            "booking_days",
            "slot_capacity",
            "slot_minutes",
            "outside_hours",
            "hours",
        ):
            batch.drop_column(column)
