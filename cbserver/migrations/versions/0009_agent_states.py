"""agent states: paused (with a reason), the call-back an agent is on, wrap-up and idle times;
a subscriber's wrap-up seconds

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(
            sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("pause_reason", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("on_call", sa.String(length=36), nullable=True))
        batch.add_column(sa.Column("wrap_up_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("idle_since", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_agents_on_call", ["on_call"])
    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(
            sa.Column("wrap_up_seconds", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_column("wrap_up_seconds")
    with op.batch_alter_table("agents") as batch:
        batch.drop_index("ix_agents_on_call")
        batch.drop_column("idle_since")
        batch.drop_column("wrap_up_until")
        batch.drop_column("on_call")
        batch.drop_column("pause_reason")
        batch.drop_column("paused")
