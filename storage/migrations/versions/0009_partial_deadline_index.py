"""a partial index for the drafts whose approval may time out

The deadline check runs every second; without it, it read every step ever made.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AWAITING = sa.text("status = 'awaiting_approval'")


def upgrade() -> None:
    op.create_index(
        "ix_step_awaiting",
        "step",
        ["deadline_at"],
        sqlite_where=AWAITING,
        postgresql_where=AWAITING,
    )


def downgrade() -> None:
    op.drop_index("ix_step_awaiting", table_name="step")
