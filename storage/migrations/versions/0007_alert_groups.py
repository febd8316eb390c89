"""alert.group_id: the alert whose cards show this one (alerts of one evaluation share one)

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("alert", schema=None) as batch_op:
        batch_op.add_column(sa.Column("group_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_alert_group_id"), ["group_id"], unique=False)
        batch_op.create_foreign_key("fk_alert_group_id_alert", "alert", ["group_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("alert", schema=None) as batch_op:
        batch_op.drop_constraint("fk_alert_group_id_alert", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_alert_group_id"))
        batch_op.drop_column("group_id")
