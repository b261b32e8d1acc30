"""Schema version 1: runs, params, metrics, summaries, artifacts, attempts, sslbench_meta.

The base of the chain, written out from the version-1 models (commit db7b950) rather than
imported from today's, so that it keeps describing version 1 whatever the models become. sslbench
never runs it on a store it creates (it builds a new store from the models and stamps it at head);
a version-1 store written before migrations existed is stamped at this revision, then upgraded.
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# The models' types, spelled without them: SQLite integers are 64-bit already.
BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME = sa.DateTime(timezone=True)


def _run_fk() -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE")


def _create_keyed(table: str, *columns: sa.Column[Any]) -> None:
    """A table of rows per (run, key): params, metrics, summaries."""
    op.create_table(table, sa.Column("run_id", sa.String(64), primary_key=True),
                    sa.Column("key", sa.String(255), primary_key=True), *columns, _run_fk())


def upgrade() -> None:
    op.create_table(
        "sslbench_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
    _create_runs()
    _create_keyed("params",
                  sa.Column("value_type", sa.String(8), nullable=False),
                  sa.Column("value_text", sa.Text()),
                  sa.Column("value_num", sa.Float()))
    op.create_index("ix_params_key_num", "params", ["key", "value_num"])
    _create_keyed("metrics",
                  sa.Column("step", BIG, primary_key=True),
                  sa.Column("epoch", sa.Integer()),
                  sa.Column("value", sa.Float()),
                  sa.Column("logged_at", TIME, nullable=False))
    op.create_index("ix_metrics_key", "metrics", ["key"])
    _create_keyed("summaries",
                  sa.Column("goal", sa.String(3), nullable=False),
                  sa.Column("final", sa.Float()),
                  sa.Column("final_step", BIG, nullable=False),
                  sa.Column("best", sa.Float()),
                  sa.Column("best_step", BIG),
                  sa.Column("min", sa.Float()),
                  sa.Column("max", sa.Float()),
                  sa.Column("count", sa.Integer(), nullable=False),
                  sa.Column("updated_at", TIME, nullable=False))
    op.create_index("ix_summaries_key_final", "summaries", ["key", "final"])
    _create_artifacts_and_attempts()


def _create_runs() -> None:
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("method", sa.String(64)),
        sa.Column("dataset", sa.String(64)),
        sa.Column("parent_id", sa.String(64)),
        sa.Column("config_json", sa.Text(), nullable=False),
        sa.Column("command_json", sa.Text(), nullable=False),
        sa.Column("env_json", sa.Text(), nullable=False),
        sa.Column("tags_json", sa.Text(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("host", sa.String(255)),
        sa.Column("pid", sa.Integer()),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.Column("started_at", TIME),
        sa.Column("ended_at", TIME),
        sa.Column("heartbeat_at", TIME),
        sa.ForeignKeyConstraint(["parent_id"], ["runs.run_id"], ondelete="SET NULL"),
    )
    for name, columns in (("ix_runs_kind_status", ["kind", "status"]),
                          ("ix_runs_method_dataset", ["method", "dataset"]),
                          ("ix_runs_parent", ["parent_id"]),
                          ("ix_runs_status_heartbeat", ["status", "heartbeat_at"]),
                          ("ix_runs_created", ["created_at"])):
        op.create_index(name, "runs", columns)


def _create_artifacts_and_attempts() -> None:
    op.create_table(
        "artifacts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size", BIG),
        sa.Column("sha256", sa.String(64)),
        sa.Column("created_at", TIME, nullable=False),
        _run_fk(),
        sa.UniqueConstraint("run_id", "path", name="uq_artifacts_run_path"),
    )
    op.create_table(
        "attempts",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("attempt", sa.Integer(), primary_key=True),
        sa.Column("host", sa.String(255)),
        sa.Column("pid", sa.Integer()),
        sa.Column("started_at", TIME, nullable=False),
        sa.Column("ended_at", TIME),
        sa.Column("status", sa.String(16)),
        sa.Column("failure_class", sa.String(64)),
        sa.Column("error", sa.Text()),
        _run_fk(),
    )


def downgrade() -> None:
    for table in ("attempts", "artifacts", "summaries", "metrics", "params", "runs",
                  "sslbench_meta"):
        op.drop_table(table)  # their indexes go with them
