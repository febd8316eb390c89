"""llmcall.prompt_version, draftversion.prompt_version: which prompt produced them

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("llmcall", "draftversion"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("prompt_version", sqlmodel.sql.sqltypes.AutoString(), nullable=True)
            )


def downgrade() -> None:
    for table in ("llmcall", "draftversion"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("prompt_version")
