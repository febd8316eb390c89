"""the index of steps whose lease may run out holds the take-over order (lease_until, id)

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RUNNING = sa.text("status = 'running'")


def upgrade() -> None:
    op.drop_index("ix_step_leased", table_name="step")
    op.create_index(
        "ix_step_leased",
        "step",
        ["lease_until", "id"],
        sqlite_where=RUNNING,
        postgresql_where=RUNNING,
    )


def downgrade() -> None:
    op.drop_index("ix_step_leased", table_name="step")
    op.create_index(
        "ix_step_leased", "step", ["lease_until"], sqlite_where=RUNNING, postgresql_where=RUNNING
    )
