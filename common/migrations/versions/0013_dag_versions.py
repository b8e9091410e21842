"""DAG versions: each DAG's serialized form and source per version, and the version each run used

``dag_version`` keeps one row per version of a DAG (numbered 1, 2, 3... per DAG); ``dag`` points
at its current version and every new ``dag_run`` records the one it was created with.

Existing data: each stored DAG gets version 1 from what the metastore holds now (its serialized
form, and its file's source from ``dag_code``). An existing run whose recorded ``dag_hash`` is the
DAG's current one ran that serialized form, and is given version 1; every other existing run
(its DAG changed since it was created) keeps ``dag_version_id`` NULL, shown as "unknown": the
metastore never kept the form it ran.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 11:00:00.000000
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import hareflow.common.db.types
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

LONG_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mariadb").with_variant(mysql.LONGTEXT(), "mysql")


def _version_hash(dag_hash: str, source_hash: str) -> str:
    # The formula of hareflow.common.dag_versions.version_hash, copied: a migration never changes
    # with the code around it.
    return hashlib.sha256(f"{dag_hash}\n{source_hash}".encode()).hexdigest()


def upgrade() -> None:
    op.create_table(
        "dag_version",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dag_id", sa.String(length=250), nullable=False),
        sa.Column("version_number", sa.Integer(), nullable=False),
        sa.Column("version_hash", sa.String(length=64), nullable=False),
        sa.Column("dag_hash", sa.String(length=64), nullable=False),
        sa.Column("fileloc", sa.String(length=1000), nullable=False),
        sa.Column("serialized", sa.JSON(), nullable=False),
        sa.Column("source", LONG_TEXT, nullable=True),
        sa.Column("created_at", hareflow.common.db.types.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dag_version")),
        sa.UniqueConstraint("dag_id", "version_hash", name=op.f("uq_dag_version_dag_id_version_hash")),
        sa.UniqueConstraint("dag_id", "version_number", name=op.f("uq_dag_version_dag_id_version_number")),
    )
    op.add_column("dag", sa.Column("dag_version_id", sa.Integer(), nullable=True))
    # No foreign key (as asset_event.source_ti_id): versions are never deleted, and SQLite adds
    # and drops a plain column in place, where a constrained one would make it copy dag_run, the
    # table task_instance's foreign keys point at.
    op.add_column("dag_run", sa.Column("dag_version_id", sa.Integer(), nullable=True))
    op.create_index(op.f("ix_dag_run_dag_version_id"), "dag_run", ["dag_version_id"])
    _create_first_versions()


def _create_first_versions() -> None:
    bind = op.get_bind()
    dag = sa.table(
        "dag",
        sa.column("dag_id", sa.String),
        sa.column("fileloc", sa.String),
        sa.column("dag_hash", sa.String),
        sa.column("dag_version_id", sa.Integer),
        sa.column("last_parsed_at", hareflow.common.db.types.UtcDateTime()),
        sa.column("created_at", hareflow.common.db.types.UtcDateTime()),
        sa.column("serialized", sa.JSON),
    )
    code = sa.table(
        "dag_code",
        sa.column("fileloc", sa.String),
        sa.column("source", sa.Text),
        sa.column("source_hash", sa.String),
    )
    version = sa.table(
        "dag_version",
        sa.column("id", sa.Integer),
        sa.column("dag_id", sa.String),
        sa.column("version_number", sa.Integer),
        sa.column("version_hash", sa.String),
        sa.column("dag_hash", sa.String),
        sa.column("fileloc", sa.String),
        sa.column("serialized", sa.JSON),
        sa.column("source", sa.Text),
        sa.column("created_at", hareflow.common.db.types.UtcDateTime()),
    )
    run = sa.table(
        "dag_run",
        sa.column("dag_id", sa.String),
        sa.column("dag_hash", sa.String),
        sa.column("dag_version_id", sa.Integer),
    )
    dags = bind.execute(
        sa.select(dag.c.dag_id, dag.c.fileloc, dag.c.dag_hash, dag.c.last_parsed_at, dag.c.created_at).where(
            dag.c.dag_hash != ""
        )
    ).all()
    for dag_id, fileloc, dag_hash, parsed_at, created_at in dags:
        found = bind.execute(
            sa.select(code.c.source, code.c.source_hash).where(code.c.fileloc == fileloc)
        ).first()
        source, source_hash = (found[0], found[1]) if found is not None else (None, "")
        serialized = bind.execute(sa.select(dag.c.serialized).where(dag.c.dag_id == dag_id)).scalar()
        bind.execute(
            version.insert().values(
                dag_id=dag_id,
                version_number=1,
                version_hash=_version_hash(dag_hash, source_hash),
                dag_hash=dag_hash,
                fileloc=fileloc,
                serialized=serialized,
                source=source,
                created_at=parsed_at or created_at or datetime.now(UTC),
            )
        )
        version_id = bind.execute(
            sa.select(version.c.id).where(version.c.dag_id == dag_id, version.c.version_number == 1)
        ).scalar()
        bind.execute(dag.update().where(dag.c.dag_id == dag_id).values(dag_version_id=version_id))
        bind.execute(
            run.update()
            .where(run.c.dag_id == dag_id, run.c.dag_hash == dag_hash, run.c.dag_version_id.is_(None))
            .values(dag_version_id=version_id)
        )


def downgrade() -> None:
    op.drop_index(op.f("ix_dag_run_dag_version_id"), table_name="dag_run")
    op.drop_column("dag_run", "dag_version_id")
    op.drop_column("dag", "dag_version_id")
    op.drop_table("dag_version")
