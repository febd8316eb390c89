"""one waiting edit per message: a newer edit of a message takes the place of the one no sender
has tried yet, rather than queue behind it; the lease take-over order has its index

Of a message's edits, only the latest goes out. Each edit used to be a row of its own, and
the claim marked the older ones superseded; on a busy engine that was most of a run's card
edits, written once and superseded later. A unique partial index now holds the one edit per
message that waits untried on the message's own order key, and a new edit updates it.

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

WAITING_EDIT = "kind = 'update' AND status = 'pending' AND attempts = 0 AND order_key LIKE 'edit:%'"
RUNNING = sa.text("status = 'running'")


def upgrade() -> None:
    # Edits waiting behind a newer one of the same message are superseded, as their claim
    # would have done, so that at most one waits when the index is built.
    op.execute(
        "UPDATE outbox SET status = 'superseded'"
        f" WHERE {WAITING_EDIT} AND EXISTS (SELECT 1 FROM outbox AS newer"
        " WHERE newer.message_id = outbox.message_id AND newer.id > outbox.id"
        f" AND newer.{WAITING_EDIT.replace(' AND ', ' AND newer.')})"
    )
    op.create_index(
        "ux_outbox_waiting_edit",
        "outbox",
        ["message_id"],
        unique=True,
        sqlite_where=sa.text(WAITING_EDIT),
        postgresql_where=sa.text(WAITING_EDIT),
    )
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
    op.drop_index("ux_outbox_waiting_edit", table_name="outbox")
