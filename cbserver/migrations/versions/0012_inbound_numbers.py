"""inbound numbers: a subscriber's inbound number (a second number calls in reach it by) and
what a caller without a waiting call-back gets

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(sa.Column("inbound_number", sa.String(length=20), nullable=True))
        batch.add_column(
            sa.Column(
                "unknown_callers", sa.String(length=16), nullable=False, server_default="agents"
            )
        )
        batch.create_unique_constraint(op.f("uq_subscribers_inbound_number"), ["inbound_number"])


def downgrade() -> None:
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_constraint(op.f("uq_subscribers_inbound_number"), type_="unique")
        batch.drop_column("unknown_callers")
        batch.drop_column("inbound_number")
