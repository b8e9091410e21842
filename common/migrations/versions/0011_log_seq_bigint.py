"""task_log.seq becomes a 64-bit integer: each delivery of a try numbers its chunks from its own base

A try redelivered after its worker died numbered its log chunks from the same base as the lost
delivery, so the lost delivery's chunks took the numbers and the new delivery's first lines were
dropped as duplicates. Each delivery now starts at ``(delivery - 1) * 2**32``, which needs 64 bits.
SQLite's INTEGER is 64-bit already; PostgreSQL and MySQL/MariaDB widen the column in place. The
downgrade fails while chunks numbered past 2**31 - 1 exist (delete them first).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 08:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.alter_column(
        "task_log", "seq", existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=False
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.alter_column(
        "task_log", "seq", existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=False
    )
