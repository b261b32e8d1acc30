"""A side thread that keeps a run's heartbeat fresh while its process works.

The heartbeat is how another host tells a live owner from a dead one (``STALE_AFTER_S`` in
:mod:`sslbench.db.ownership`), so it must not depend on the training thread reaching a step:
one epoch's test pass, a first ``torch.compile`` or a slow data folder can take longer than the
lease. The thread opens its own connection (a ``Store`` must not be shared across threads that
write at once) and never raises: a busy store only skips a beat.
"""

from __future__ import annotations

import threading
from typing import Any

from sslbench.errors import SSLBenchError

HEARTBEAT_S = 30.0


class Heartbeat:
    """``with Heartbeat(store.url, run_id):`` beats every ``every`` seconds until the block ends."""

    def __init__(self, url: str, run_id: str, every: float = HEARTBEAT_S) -> None:
        self._url, self._run_id, self._every = url, run_id, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="heartbeat")

    def _loop(self) -> None:
        from sslbench.db.store import Store

        try:
            store = Store.open(self._url, create=False)
        except SSLBenchError:
            return
        with store:
            while not self._stop.wait(self._every):
                try:
                    store.heartbeat(self._run_id)
                except SSLBenchError:
                    pass  # a busy store: the next beat will do

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
