"""return calls: a visitor's call back to the business, answered by an agent, is an attempt of
its request too (kind "return_call"), so the agent's console and usage see it; a request is
held from claims (held_until) while its visitor's return call rings the agents

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("call_attempts") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(length=12), nullable=False, server_default="call_back")
        )
    with op.batch_alter_table("callback_requests") as batch:
        batch.add_column(sa.Column("held_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("callback_requests") as batch:
        batch.drop_column("held_until")
    with op.batch_alter_table("call_attempts") as batch:
        batch.drop_column("kind")
