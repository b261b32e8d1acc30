"""The sslbench results store: runs, params, per-step metrics, summaries, artifacts.

SQLite by default (``$SSLBENCH_HOME/db/sslbench.sqlite``), any PostgreSQL URL through ``--db`` /
``SSLBENCH_DB``. This package never imports torch, so listing runs and reports stay instant.
"""

from sslbench.db.engine import default_url, resolve_url
from sslbench.db.models import RUN_KINDS, RUN_STATUSES, SCHEMA_VERSION, TERMINAL_STATUSES
from sslbench.db.records import RunRecord
from sslbench.db.store import Store
from sslbench.db.values import metric_goal

__all__ = [
    "RUN_KINDS",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "TERMINAL_STATUSES",
    "RunRecord",
    "Store",
    "default_url",
    "metric_goal",
    "resolve_url",
]
