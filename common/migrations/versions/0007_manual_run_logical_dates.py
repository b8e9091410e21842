"""dag_run.interval_key for manual runs: one run per DAG and logical date, whatever its type

Manual runs used to leave ``interval_key`` NULL, so the unique key on ``(dag_id, interval_key)``
held only for scheduled and backfill runs. From now on every run sets it to its logical date. This
migration fills it in for existing manual runs; where several runs of a DAG already share a logical
date (allowed before), the oldest run keeps the key and the others stay NULL. They keep working
and showing as before; only new triggers are held to the rule.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 20:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_runs = sa.table(
    "dag_run",
    sa.column("id", sa.Integer),
    sa.column("dag_id", sa.String),
    sa.column("run_type", sa.String),
    sa.column("logical_date", sa.DateTime),
    sa.column("interval_key", sa.DateTime),
)


def upgrade() -> None:
    # Row by row in Python: MySQL cannot update a table from a subquery on the same table, and
    # dates are compared as stored, so every database sees the same rows as duplicates.
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(_runs.c.id, _runs.c.dag_id, _runs.c.run_type, _runs.c.logical_date, _runs.c.interval_key)
        .where(_runs.c.logical_date.is_not(None))
        .order_by(_runs.c.id)
    ).all()
    taken = {(r.dag_id, r.interval_key) for r in rows if r.interval_key is not None}
    for row in rows:
        if row.run_type != "manual" or row.interval_key is not None:
            continue
        key = (row.dag_id, row.logical_date)
        if key in taken:
            continue
        taken.add(key)
        bind.execute(sa.update(_runs).where(_runs.c.id == row.id).values(interval_key=row.logical_date))


def downgrade() -> None:
    op.execute(sa.update(_runs).where(_runs.c.run_type == "manual").values(interval_key=None))
