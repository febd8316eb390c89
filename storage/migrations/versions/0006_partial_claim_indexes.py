"""partial indexes for claiming steps and deliveries

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("status = 'pending'")
RUNNING = sa.text("status = 'running'")


def upgrade() -> None:
    op.drop_index("ix_step_claim", table_name="step")
    op.drop_index("ix_outbox_claim", table_name="outbox")
    op.drop_index("ix_outbox_order_key", table_name="outbox")
    op.create_index(
        "ix_step_pending",
        "step",
        ["available_at", "id"],
        sqlite_where=PENDING,
        postgresql_where=PENDING,
    )
    op.create_index(
        "ix_step_leased", "step", ["lease_until"], sqlite_where=RUNNING, postgresql_where=RUNNING
    )
    op.create_index(
        "ix_outbox_pending", "outbox", ["id"], sqlite_where=PENDING, postgresql_where=PENDING
    )
    op.create_index(
        "ix_outbox_pending_order",
        "outbox",
        ["order_key", "id"],
        sqlite_where=PENDING,
        postgresql_where=PENDING,
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_pending_order", table_name="outbox")
    op.drop_index("ix_outbox_pending", table_name="outbox")
    op.drop_index("ix_step_leased", table_name="step")
    op.drop_index("ix_step_pending", table_name="step")
    op.create_index("ix_outbox_order_key", "outbox", ["order_key"])
    op.create_index("ix_outbox_claim", "outbox", ["status", "available_at"])
    op.create_index("ix_step_claim", "step", ["status", "available_at"])
