"""Schema version 4: sslbench's Alembic revision moves to ``sslbench_alembic_version``.

``sslbench tune`` keeps its Optuna studies in the store's own database, and Optuna records its
schema revision in Alembic's default table, ``alembic_version``. Versions 1-3 kept sslbench's
revision there too, which Optuna would read as its own and refuse. The migration runs with the
new table already stamped (``sslbench.db.migrations.upgrade``), so all that is left is to drop
the old table -- only when every row in it is one of sslbench's revisions, never Optuna's.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_OURS = {"0001", "0002", "0003"}


def upgrade() -> None:
    conn = op.get_bind()
    if not sa.inspect(conn).has_table("alembic_version"):
        return
    rows = {r[0] for r in conn.execute(sa.text("SELECT version_num FROM alembic_version"))}
    if rows <= _OURS:
        op.drop_table("alembic_version")


def downgrade() -> None:
    """Nothing to restore: version 3 read its revision from whichever table Alembic is told."""
