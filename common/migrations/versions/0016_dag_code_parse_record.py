"""dag_code.parse_record: what a file's last clean parse defined and which DAG-folder modules it imported

The DAG processor's first scan after a restart skips a file whose source, and every module from the
DAG folder it imported, are unchanged since that parse, and whose DAGs are still stored active.
Null (rows written before this revision, or a parse that reported errors): the file is parsed.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03 15:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("dag_code", sa.Column("parse_record", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("dag_code", "parse_record")
