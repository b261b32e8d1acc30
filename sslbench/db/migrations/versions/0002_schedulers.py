"""Schema version 2: attempt process and exit details, runs.attempt_limit, the schedulers.

What the schedulers (commit 4c05011) added to version 1: the process start time, exit code,
device, scheduler and log file of each attempt; a per-run attempt budget; the ``schedulers``
table and the device ledger ``reservations``, with their indexes. Only nullable columns and new
tables: SQLite adds them in place, without copying a table.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME = sa.DateTime(timezone=True)
ATTEMPT_COLUMNS = ("proc_start", "exit_code", "device", "scheduler_id", "log_path")


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("attempt_limit", sa.Integer()))
    with op.batch_alter_table("attempts") as batch:
        for column in (sa.Column("proc_start", BIG), sa.Column("exit_code", sa.Integer()),
                       sa.Column("device", sa.String(64)),
                       sa.Column("scheduler_id", sa.String(128)),
                       sa.Column("log_path", sa.Text())):
            batch.add_column(column)
    op.create_table(
        "schedulers",
        sa.Column("scheduler_id", sa.String(128), primary_key=True),
        sa.Column("backend", sa.String(16), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("proc_start", BIG),
        sa.Column("slots_json", sa.Text(), nullable=False),
        sa.Column("started_at", TIME, nullable=False),
        sa.Column("heartbeat_at", TIME, nullable=False),
        sa.Column("ended_at", TIME),
        sa.Column("stop_requested", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_schedulers_host", "schedulers", ["host", "ended_at"])
    op.create_table(
        "reservations",
        sa.Column("host", sa.String(255), primary_key=True),
        sa.Column("device", sa.String(64), primary_key=True),
        sa.Column("slot", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("scheduler_id", sa.String(128), nullable=False),
        sa.Column("reserved_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
    )
    op.create_index("ix_reservations_run", "reservations", ["run_id"])
    op.create_index("ix_reservations_scheduler", "reservations", ["scheduler_id"])


def downgrade() -> None:
    op.drop_table("reservations")
    op.drop_table("schedulers")
    with op.batch_alter_table("attempts") as batch:
        for name in ATTEMPT_COLUMNS:
            batch.drop_column(name)
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("attempt_limit")
