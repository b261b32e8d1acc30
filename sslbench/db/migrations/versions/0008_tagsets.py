"""Schema version 8: ``tagsets`` and ``runs.tagset_id``, held by the runs' indexes instead of
the tags' text.

The reports group runs by recipe and tags. Until version 7 they read every run's tags as text
(``ix_runs_kind_status`` and ``ix_runs_kind_status_id`` held ``tags_json``): at a million tagged
runs, a tenth of a second to fetch the texts and another to number them, and a Slurm job's tag
(``slurm:1234_0``, on every run the Slurm backend ran) made every run a group of its own. From
version 8 each run names its tag set: its tags but the Slurm jobs', unique and sorted, kept in
``tagsets`` once and set with the tags whenever they change; the two indexes hold the set's id.

The upgrade numbers the tag sets of the tagged runs, a page of runs at a time, with the function
that tagging a run uses (:func:`tagset` below is a frozen copy of
:func:`sslbench.db.values.tagset`: a test checks the two agree), and the untagged runs (most) in
one statement; then it rebuilds the two indexes (a million untagged runs on SQLite: 38 s,
the backup copy that opening the store makes first included).
"""

import hashlib
import json

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

PAGE = 5000
JOB_TAG = "slurm:"
#: The two indexes, by name: their columns but the last (the tags: their text up to version 7,
#: their set's id from version 8).
INDEXES = {"ix_runs_kind_status": ["kind", "status", "created_at", "run_id", "recipe_id"],
           "ix_runs_kind_status_id": ["kind", "status", "run_id", "created_at", "recipe_id"]}


def tagset(tags: list[str]) -> tuple[str, str]:
    """``(key, tags_json)`` of a tag set, as version 8 computes it."""
    text = json.dumps(sorted({t for t in tags if not t.startswith(JOB_TAG)}))
    return hashlib.sha256(text.encode()).hexdigest(), text


def _backfill() -> None:
    conn = op.get_bind()
    runs = sa.table("runs", sa.column("run_id"), sa.column("tags_json"),
                    sa.column("tagset_id"))
    tagsets = sa.table("tagsets", sa.column("tagset_id"), sa.column("key"),
                       sa.column("tags_json"))
    ids: dict[str, int] = {}

    def number(tags: list[str]) -> int:
        key, text = tagset(tags)
        if key not in ids:
            ids[key] = conn.execute(sa.insert(tagsets).values(key=key, tags_json=text)
                                    .returning(tagsets.c.tagset_id)).scalar_one()
        return ids[key]

    untagged = sa.or_(runs.c.tags_json == "[]", runs.c.tags_json.is_(None))
    conn.execute(sa.update(runs).where(untagged).values(tagset_id=number([])))
    set_tags = (sa.update(runs).where(runs.c.run_id == sa.bindparam("run"))
                .values(tagset_id=sa.bindparam("tagset")))
    after = ""
    while True:
        page = conn.execute(sa.select(runs.c.run_id, runs.c.tags_json)
                            .where(runs.c.run_id > after, sa.not_(untagged))
                            .order_by(runs.c.run_id).limit(PAGE)).all()
        if not page:
            return
        conn.execute(set_tags, [{"run": run_id, "tagset": number(json.loads(tags))}
                                for run_id, tags in page])
        after = page[-1][0]


def _indexes(last: str) -> None:
    for name, columns in INDEXES.items():
        op.drop_index(name, table_name="runs")
        op.create_index(name, "runs", [*columns, last])


def upgrade() -> None:
    op.create_table(
        "tagsets",
        sa.Column("tagset_id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("tags_json", sa.Text(), nullable=False),
        sa.UniqueConstraint("key"),
    )
    if op.get_bind().dialect.name == "sqlite":  # in place: batch mode would copy every run
        op.execute("ALTER TABLE runs ADD COLUMN tagset_id INTEGER "
                   "REFERENCES tagsets (tagset_id)")
    else:
        op.add_column("runs", sa.Column("tagset_id", sa.Integer()))
        op.create_foreign_key(None, "runs", "tagsets", ["tagset_id"], ["tagset_id"])
    _backfill()
    _indexes("tagset_id")


def downgrade() -> None:
    _indexes("tags_json")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("tagset_id")
    op.drop_table("tagsets")
