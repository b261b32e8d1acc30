"""Alembic's environment for sslbench's migrations: runs on the connection sslbench hands over.

sslbench migrates a store while it holds the store's lock and its transaction
(:func:`sslbench.db.engine.init_schema`), so this environment never connects by itself and has
no offline (``--sql``) mode: the connection comes in ``config.attributes["connection"]``, already
inside a transaction, and Alembic runs every revision inside it (all of them or none).
"""

from alembic import context

from sslbench.db.migrations import VERSION_TABLE
from sslbench.db.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("sslbench's migrations run through sslbench.db.migrations (sslbench opens "
                       "and upgrades a store by itself), not through the alembic command")
# SQLite alters little in place: batch mode lets a revision recreate a table when it must.
context.configure(connection=connection, target_metadata=Base.metadata,
                  version_table=VERSION_TABLE,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
