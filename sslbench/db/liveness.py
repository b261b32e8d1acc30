"""Is the process behind a run still alive? pid plus process start time, never pid alone.

A pid is reused by the kernel once its process is gone, so "a process with pid 4242 exists" does
not prove that *our* worker still runs. Every attempt therefore records the start time of its
process (clock ticks since boot, field 22 of ``/proc/<pid>/stat`` on Linux) beside the pid, and a
process counts as alive only when both match. Where ``/proc`` is missing (macOS, Windows) the
start time is None and the check falls back to the pid alone.

This module is torch-free and imports no other sslbench module.
"""

from __future__ import annotations

import os
from pathlib import Path

_PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name, or None."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except (OSError, ValueError):
        return None
    # The command name (field 2) is in parentheses and may itself contain spaces or ')'.
    _, _, rest = text.rpartition(")")
    return rest.split()


def process_start_time(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot, or None (gone, or no /proc)."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    return int(fields[19])  # field 22 overall: state is fields[0] (field 3)


def _is_zombie(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] in ("Z", "X")


def process_alive(pid: int | None, start_time: int | None = None) -> bool:
    """True while process ``pid`` runs and (when ``start_time`` is given and knowable) is the
    same process that had that start time. Zombies (exited, not yet reaped) count as dead."""
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        pass
    except OSError:
        return False
    if _is_zombie(pid):
        return False
    if start_time is not None:
        current = process_start_time(pid)
        if current is not None and current != start_time:
            return False  # the pid was reused by another process
    return True
