"""Schema version 6: ``recipes`` and ``runs.recipe_id``; ``summaries`` WITHOUT ROWID.

The reports group the runs of a sweep by recipe (the config without its ``seed``, the method,
the dataset). Version 5 stripped the seed from every run's config in the query, a million JSON
rewrites at a million runs; from version 6 each run names its recipe, set once when it is
created from columns that never change; ``ix_runs_kind_status`` covers it with the tags, and
``ix_runs_recipe`` finds a recipe's runs. ``ix_runs_parent`` adds the children's kind and
status: with the wider ``ix_runs_kind_status``, SQLite's planner could prefer that one for
``eval --pending``'s question (this run's completed evaluations) and read every evaluation for
each run.

A report reads one summary per run and metric, by primary key: on SQLite ``summaries`` is
rebuilt WITHOUT ROWID (as ``metrics`` in version 5), so that lookup is one B-tree search instead
of two (the rebuild copies every row, inside the upgrade's transaction).

The upgrade fills ``recipes`` and ``runs.recipe_id`` from every run's stored config, a page of
runs at a time, with the function that creating a run uses (:func:`recipe` below is a frozen
copy of :func:`sslbench.db.values.recipe`: a test checks the two agree).
"""

import hashlib
import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

PAGE = 5000
LISTING = ["kind", "status", "created_at", "run_id"]


def recipe(config: dict[str, Any], method: str | None, dataset: str | None) -> tuple[str, str]:
    """``(key, config_json)`` of a recipe, as version 6 computes it."""
    text = json.dumps({k: v for k, v in config.items() if k != "seed"}, sort_keys=True)
    return hashlib.sha256(json.dumps([text, method, dataset]).encode()).hexdigest(), text


def _backfill() -> None:
    conn = op.get_bind()
    runs = sa.table("runs", sa.column("run_id"), sa.column("config_json"), sa.column("method"),
                    sa.column("dataset"), sa.column("recipe_id"))
    recipes = sa.table("recipes", sa.column("recipe_id"), sa.column("key"), sa.column("method"),
                       sa.column("dataset"), sa.column("config_json"))
    ids: dict[str, int] = {}
    after = ""
    set_recipe = (sa.update(runs).where(runs.c.run_id == sa.bindparam("run"))
                  .values(recipe_id=sa.bindparam("recipe")))
    while True:
        page = conn.execute(sa.select(runs.c.run_id, runs.c.config_json, runs.c.method,
                                      runs.c.dataset).where(runs.c.run_id > after)
                            .order_by(runs.c.run_id).limit(PAGE)).all()
        if not page:
            return
        updates = []
        for run_id, config_json, method, dataset in page:
            key, text = recipe(json.loads(config_json), method, dataset)
            if key not in ids:
                ids[key] = conn.execute(sa.insert(recipes).values(
                    key=key, method=method, dataset=dataset, config_json=text)
                    .returning(recipes.c.recipe_id)).scalar_one()
            updates.append({"run": run_id, "recipe": ids[key]})
        conn.execute(set_recipe, updates)
        after = page[-1][0]


def _summaries(with_rowid: bool) -> None:
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("summaries", recreate="always",
                                  table_kwargs={"sqlite_with_rowid": with_rowid}):
            pass


def upgrade() -> None:
    op.create_table(
        "recipes",
        sa.Column("recipe_id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("method", sa.String(64)),
        sa.Column("dataset", sa.String(64)),
        sa.Column("config_json", sa.Text(), nullable=False),
        sa.UniqueConstraint("key"),
    )
    if op.get_bind().dialect.name == "sqlite":  # in place: batch mode would copy every run
        op.execute("ALTER TABLE runs ADD COLUMN recipe_id INTEGER "
                   "REFERENCES recipes (recipe_id)")
    else:
        op.add_column("runs", sa.Column("recipe_id", sa.Integer()))
        op.create_foreign_key(None, "runs", "recipes", ["recipe_id"], ["recipe_id"])
    _backfill()
    op.drop_index("ix_runs_kind_status", table_name="runs")
    op.create_index("ix_runs_kind_status", "runs", [*LISTING, "recipe_id", "tags_json"])
    op.create_index("ix_runs_recipe", "runs", ["recipe_id", "run_id"])
    op.drop_index("ix_runs_parent", table_name="runs")
    op.create_index("ix_runs_parent", "runs", ["parent_id", "kind", "status"])
    _summaries(with_rowid=False)


def downgrade() -> None:
    _summaries(with_rowid=True)
    op.drop_index("ix_runs_parent", table_name="runs")
    op.create_index("ix_runs_parent", "runs", ["parent_id"])
    op.drop_index("ix_runs_recipe", table_name="runs")
    op.drop_index("ix_runs_kind_status", table_name="runs")
    op.create_index("ix_runs_kind_status", "runs", LISTING)
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("recipe_id")
    op.drop_table("recipes")
