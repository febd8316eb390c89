"""work of older runs first: steps are claimed and deliveries made oldest run first

A step or message of a run that has been waiting longest (a draft just approved) no longer
queues behind the work of every run launched since. A message's edits wait for its post, not
for the other posts of its thread: an index of the edits still waiting, by message.

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("rank", sa.Integer(), nullable=False, server_default="0"))
    # the run of each row still waiting: a run's rows share the order key "run:<id>"
    run_rows = sa.text("order_key LIKE 'run:%' AND status = 'pending'")
    run_id = sa.cast(sa.func.substr(sa.column("order_key"), 5), sa.Integer)
    op.execute(sa.table("outbox", sa.column("rank")).update().where(run_rows).values(rank=run_id))
    op.drop_index("ix_step_pending", table_name="step")
    op.create_index(
        "ix_step_pending", "step", ["run_id", "id"], sqlite_where=PENDING, postgresql_where=PENDING
    )
    op.drop_index("ix_outbox_pending", table_name="outbox")
    op.create_index(
        "ix_outbox_pending",
        "outbox",
        ["rank", "id"],
        sqlite_where=PENDING,
        postgresql_where=PENDING,
    )
    op.create_index(
        "ix_outbox_pending_message",
        "outbox",
        ["message_id", "id"],
        sqlite_where=PENDING,
        postgresql_where=PENDING,
    )


def downgrade() -> None:
    # Edits still waiting go back behind their run's posts (or on a key of their own), where
    # the claim before this revision looks for what an edit waits for.
    op.execute(
        "UPDATE outbox SET order_key = CASE WHEN rank > 0"
        " THEN 'run:' || CAST(rank AS VARCHAR) ELSE 'solo:' || CAST(id AS VARCHAR) END"
        " WHERE order_key LIKE 'edit:%' AND status = 'pending'"
    )
    op.drop_index("ix_outbox_pending_message", table_name="outbox")
    op.drop_index("ix_outbox_pending", table_name="outbox")
    op.create_index(
        "ix_outbox_pending", "outbox", ["id"], sqlite_where=PENDING, postgresql_where=PENDING
    )
    op.drop_index("ix_step_pending", table_name="step")
    op.create_index(
        "ix_step_pending",
        "step",
        ["available_at", "id"],
        sqlite_where=PENDING,
        postgresql_where=PENDING,
    )
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("rank")
