"""alert: alerts and their state; message.alert_id: an alert's card and thread

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_DATETIME = sqlmodel.sql.sqltypes.UTCDateTime
STRING = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "alert",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", STRING(), nullable=False),
        sa.Column("rule", STRING(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("state", STRING(), nullable=False),
        sa.Column("started_at", UTC_DATETIME(), nullable=False),
        sa.Column("last_true_at", UTC_DATETIME(), nullable=False),
        sa.Column("fired_at", UTC_DATETIME(), nullable=True),
        sa.Column("resolved_at", UTC_DATETIME(), nullable=True),
        sa.Column("notified_at", UTC_DATETIME(), nullable=True),
        sa.Column("escalated_at", UTC_DATETIME(), nullable=True),
        sa.Column("acknowledged_by", STRING(), nullable=True),
        sa.Column("acknowledged_at", UTC_DATETIME(), nullable=True),
        sa.Column("silenced_by", STRING(), nullable=True),
        sa.Column("silenced_until", UTC_DATETIME(), nullable=True),
        sa.Column("silence_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_alert_key_state", "alert", ["key", "state"], unique=False)
    op.create_index(op.f("ix_alert_state"), "alert", ["state"], unique=False)
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("alert_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_message_alert_id"), ["alert_id"], unique=False)
        batch_op.create_foreign_key("fk_message_alert_id_alert", "alert", ["alert_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.drop_constraint("fk_message_alert_id_alert", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_message_alert_id"))
        batch_op.drop_column("alert_id")
    op.drop_index(op.f("ix_alert_state"), table_name="alert")
    op.drop_index("ix_alert_key_state", table_name="alert")
    op.drop_table("alert")
