"""outbox rows name their thread; outbox.message_id indexed

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("thread_of", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_outbox_message_id"), ["message_id"], unique=False)
    # Rows written before: a post shows in its message's thread, a notice about a run in the
    # thread of that run's card (its template context named the run).
    op.execute(
        "UPDATE outbox SET thread_of = (SELECT m.thread_of FROM message m "
        "WHERE m.id = outbox.message_id) WHERE kind = 'post'"
    )


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_message_id"))
        batch_op.drop_column("thread_of")
