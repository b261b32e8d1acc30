"""Checkpoint files: safe to load, stamped with their run, written atomically with a spare.

Three promises, each a way the store could otherwise hold a wrong number or a file could do harm:

* **Nothing executes from a file.** Every load uses ``torch.load(weights_only=True)``: tensors,
  containers and plain values only. Run folders live on shared filesystems and checkpoints are
  passed between people, so a pickle that names a callable is refused
  (:class:`UnsafeCheckpoint`) and its payload never runs.
* **A checkpoint says whose it is.** :func:`stamp` adds ``{"sslbench": {"run_id",
  "config_sha256", ...}}``; :func:`check_owner` refuses a file whose run or configuration differs
  from the run that reads it (:class:`ForeignCheckpoint`), so a file copied from another run
  (another seed, say) is never resumed as if it were this one's. Files written before the stamp
  existed are identified by the configuration they carry.
* **A damaged checkpoint is not a crash loop.** :func:`save` writes a temporary file, fsyncs it,
  moves the current checkpoint to ``checkpoint.prev.pt`` and only then puts the new one in place,
  so a reader sees complete files only and one earlier good checkpoint survives. A file that
  cannot be read (truncated, empty, random bytes) raises :class:`DamagedCheckpoint`, which the
  training loop answers by falling back to the previous file, or to a fresh start.

This module sits below ``train/`` and ``evaluate/`` (both read checkpoints); it imports torch and
:mod:`sslbench.config` only.
"""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from sslbench.config import canonical_json, from_dict
from sslbench.errors import SSLBenchError

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
BACKBONE = "backbone.pt"
#: Key of the stamp in a checkpoint's top-level dict; bumped ``format`` on layout changes.
STAMP = "sslbench"
FORMAT = 1


class CheckpointError(SSLBenchError):
    """A checkpoint that cannot be used; the message names the file."""


class UnsafeCheckpoint(CheckpointError):
    """The file holds objects other than tensors and plain values (it could run code)."""


class ForeignCheckpoint(CheckpointError):
    """The file belongs to another run or another configuration."""


class DamagedCheckpoint(CheckpointError):
    """The file cannot be read or does not have the expected content."""


class CheckpointWriteError(CheckpointError):
    """The file could not be written (a full disk, a read-only folder)."""


# --------------------------------------------------------------------------------- identity

def config_sha256(cfg: Any) -> str:
    """The full SHA-256 of a config's identity (the run id is its 12-character prefix)."""
    return hashlib.sha256(canonical_json({"kind": cfg.kind, **cfg.identity()}).encode()
                          ).hexdigest()


def stamp(payload: dict[str, Any], cfg: Any) -> dict[str, Any]:
    """``payload`` with the stamp of the run ``cfg`` identifies."""
    return {**payload, STAMP: {"format": FORMAT, "kind": cfg.kind, "run_id": cfg.run_id,
                               "config_sha256": config_sha256(cfg)}}


def owner(payload: Mapping[str, Any], path: Path, config_class: type) -> tuple[str, str]:
    """``(run_id, config_sha256)`` of the run that wrote a checkpoint.

    Checkpoints written before stamps existed carry their configuration, which identifies them.
    """
    mark = payload.get(STAMP)
    if isinstance(mark, Mapping):
        return str(mark.get("run_id")), str(mark.get("config_sha256"))
    if isinstance(payload.get("config"), Mapping):
        try:
            legacy = from_dict(config_class, payload["config"])
        except (SSLBenchError, TypeError):
            raise DamagedCheckpoint(f"{path} holds a configuration this sslbench cannot read: "
                                    "delete it to start the run afresh") from None
        return legacy.run_id, config_sha256(legacy)
    raise DamagedCheckpoint(f"{path} does not say which run it belongs to (no sslbench stamp "
                            "and no config): it is not an sslbench checkpoint")


def check_owner(payload: Mapping[str, Any], path: Path, cfg: Any) -> None:
    """Refuse (ForeignCheckpoint) a checkpoint that is not the run ``cfg``'s."""
    run_id, digest = owner(payload, path, type(cfg))
    if run_id != cfg.run_id or digest != config_sha256(cfg):
        raise ForeignCheckpoint(_foreign(path, run_id, cfg.run_id))


def check_run(payload: Mapping[str, Any], path: Path, run_id: str, config_class: type) -> None:
    """Refuse (ForeignCheckpoint) a file of run ``run_id`` (a backbone) written by another run."""
    found, _ = owner(payload, path, config_class)
    if found != run_id:
        raise ForeignCheckpoint(_foreign(path, found, run_id))


def _foreign(path: Path, found: str, expected: str) -> str:
    return (f"{path} belongs to run {found}, not to run {expected} (copied from another run?): "
            "move it out of the run folder and re-run")


# ------------------------------------------------------------------------------------ load

def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint's top-level dict, loaded with ``weights_only=True``.

    Raises UnsafeCheckpoint for a pickle that references callables or classes outside torch's
    allow-list, DamagedCheckpoint for anything unreadable, FileNotFoundError when missing.
    """
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Unsupported global" in text or "reduce" in text.lower():
            raise UnsafeCheckpoint(
                f"refusing to load {path}: it holds objects other than tensors and plain values "
                "(a pickle that could run code); delete it unless you know where it came "
                "from") from None
        raise DamagedCheckpoint(f"{path} is damaged ({_first_line(text, exc)})") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DamagedCheckpoint(f"{path} is damaged ({_first_line(str(exc), exc)})") from None
    if not isinstance(payload, dict):
        raise DamagedCheckpoint(f"{path} is damaged (it holds a {type(payload).__name__}, "
                                "not a checkpoint)")
    return payload


def _first_line(text: str, exc: BaseException) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("Weights only load failed"):
            return line[:200]
    return "empty or truncated file" if isinstance(exc, EOFError) else type(exc).__name__


# ------------------------------------------------------------------------------------ save

def save(obj: Any, path: Path, *, keep_previous: bool = False) -> int:
    """Save ``obj`` atomically; returns the file size in bytes.

    With ``keep_previous`` the file being replaced becomes ``checkpoint.prev.pt`` (for
    ``checkpoint.pt``) once the new one is complete on disk: write new, then rotate. A failed
    write (a full disk) raises CheckpointWriteError and leaves the existing files as they were.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        if keep_previous and path.exists():
            os.replace(path, previous_of(path))
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        Path(tmp).unlink(missing_ok=True)
        raise CheckpointWriteError(f"cannot write {path} ({_write_reason(exc, path)}): "
                                   "free disk space or move SSLBENCH_HOME, then re-run the same "
                                   "command to resume from the last good checkpoint") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path.stat().st_size


def previous_of(path: Path) -> Path:
    """``checkpoint.pt`` -> ``checkpoint.prev.pt``."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _write_reason(exc: BaseException, path: Path) -> str:
    # torch.save reports a full disk as a RuntimeError from its zip writer, not as ENOSPC.
    if isinstance(exc, OSError) and exc.errno is not None:
        return os.strerror(exc.errno).lower()
    try:
        if shutil.disk_usage(path.parent).free < 1 << 20:
            return os.strerror(errno.ENOSPC).lower()
    except OSError:
        pass
    return _first_line(str(exc), exc)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
