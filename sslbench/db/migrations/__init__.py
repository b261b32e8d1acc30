"""Versioned schema migrations (Alembic), run by sslbench itself when it opens an older store.

Users never run ``alembic``: :func:`sslbench.db.engine.init_schema` upgrades a store in place
when it finds an older schema version, under the store's lock and inside one transaction.
So this package has no ``alembic.ini``: :func:`alembic_config` builds the configuration in code
and hands Alembic the connection that sslbench holds (see ``env.py``).

Schema version N is revision ``000N`` (``versions/000N_*.py``); ``sslbench_meta.schema_version``
stays the number users and other code read. Alembic's record of the revision is the table
``sslbench_alembic_version`` (:data:`VERSION_TABLE`), not Alembic's default ``alembic_version``:
Optuna keeps its own Alembic revision there when ``sslbench tune`` puts its studies in the same
database. Stores written before migrations existed have no version table: they are stamped at the
revision of their schema version first.
Alembic is imported only here and only when a store is created or upgraded, so opening a
current store (every CLI command) does not pay for it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection

#: The Alembic script directory: this package.
SCRIPT_LOCATION = Path(__file__).resolve().parent
#: Where Alembic records sslbench's revision (schema versions 1-3 used ``alembic_version``).
VERSION_TABLE = "sslbench_alembic_version"


def revision_of(version: int) -> str:
    """The Alembic revision of schema version ``version`` (``"0003"`` for 3)."""
    return f"{version:04d}"


def head_version() -> int:
    """The schema version of the newest revision (equals ``models.SCHEMA_VERSION``)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(SCRIPT_LOCATION)).get_current_head()
    return int(head or 0)


def alembic_config(conn: Connection) -> Config:
    """The Alembic configuration that runs this package's revisions on ``conn`` (for
    ``alembic.command``; sslbench itself uses :func:`stamp_head` and :func:`upgrade`)."""
    from alembic.config import Config

    config = Config(stdout=io.StringIO())  # a library prints nothing; callers report upgrades
    # ConfigParser interpolates '%': a folder name holding one must not break the lookup.
    config.set_main_option("script_location", str(SCRIPT_LOCATION).replace("%", "%%"))
    config.attributes["connection"] = conn
    return config


def stamp_head(conn: Connection) -> None:
    """Mark a store just created from the models as being at the newest revision."""
    from alembic import command

    command.stamp(alembic_config(conn), "head")


def upgrade(conn: Connection, from_version: int) -> None:
    """Upgrade a store of schema version ``from_version`` to the newest, in ``conn``'s open
    transaction (nothing is committed here: on an error the caller's rollback undoes it all).

    :data:`VERSION_TABLE` is set to the revision of ``from_version`` first, whatever it held:
    ``sslbench_meta.schema_version`` is what sslbench trusts, and older stores have none.
    """
    from alembic import command

    config = alembic_config(conn)
    command.stamp(config, revision_of(from_version), purge=True)
    command.upgrade(config, "head")
