"""Schema version 3: ``runs.numerics_json``.

The execution settings that change a run's numbers (CPU intra-op threads, CUDA precision and
determinism flags), recorded as JSON at the run's first start and applied on every resume. NULL
for every run of an older store: those runs record theirs at their next start.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("numerics_json", sa.Text()))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("numerics_json")
