"""Evaluation runs: one protocol applied to a frozen backbone, recorded in the store.

An evaluation is a run of kind "eval" whose parent is the pretraining run (no parent for a
randomly initialised baseline); its id is the hash of its config, so re-running the same
evaluation reuses it. Protocols and the metrics they write:

- ``fast-linear``: the ``linear`` protocol without its crops, on cached features (the centre
  crops' and, when ``probe_augment`` flips, their mirror images') -> ``fast_linear_top1``
- ``knn``: the paper's k x T sweep -> ``knn_top1`` (best cell), ``knn_k``, ``knn_temperature``
  and every cell as ``knn_top1/k{k}_t{t}``
- ``linear``: the paper's offline protocol (augmented images through the frozen backbone every
  epoch; the augmentation is ``probe_augment``, the dataset's unless given) -> ``linear_top1``
- ``analysis``: spectra, RankMe, negative-pair cosines, Table S4 bounds (sslbench.evaluate.analysis)

``sslbench duality`` (protocol ``duality``) and ``sslbench compare`` (protocol ``cka``) are
evaluations too: :func:`evaluate` runs every protocol of :mod:`sslbench.evaluate.protocols`, so
all of them are checked, owned, reused and recorded the same way.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sslbench import numerics
from sslbench.config import (
    EVAL_PROTOCOLS,
    PROBE_AUGMENTS,
    EvalConfig,
    replace,
    require_choice,
    validate_eval,
)
from sslbench.errors import ConfigError, SSLBenchError, one_line
from sslbench.evaluate.features import FeatureCache
from sslbench.evaluate.protocols import EvalTarget, ProtocolResult, protocol_named

if TYPE_CHECKING:
    from sslbench.db import Store

DEFAULT_PROTOCOLS = ("fast-linear", "knn")


class RunLookup(Protocol):
    """What :func:`eval_config_for` reads of the store: the parent run (a sweep's planner
    passes a stand-in for a parent that is only planned)."""

    def get_run(self, run_id: str) -> Any: ...


@dataclass
class EvalResult:
    run_id: str
    protocol: str
    status: str
    reused: bool
    summary: dict[str, float] = field(default_factory=dict)


def parse_protocols(text: str) -> tuple[str, ...]:
    """``"fast-linear,knn"`` or ``"all"`` -> a tuple of protocol names."""
    names = [p.strip() for p in text.split(",") if p.strip()]
    if names == ["all"]:
        return EVAL_PROTOCOLS
    if not names:
        raise ConfigError("--protocol is empty: use linear, fast-linear, knn, analysis or all")
    for name in names:
        require_choice("--protocol", name, EVAL_PROTOCOLS)
    return tuple(dict.fromkeys(names))


def eval_config_for(store: RunLookup | None, run_id: str | None, **options: Any) -> EvalConfig:
    """The EvalConfig of a pretraining run (dataset, backbone, ... taken from it) or, with
    ``run_id=None``, of a random-init baseline built from ``options``."""
    explicit = {k: v for k, v in options.items() if v is not None}
    if run_id is None:
        return _resolve_probe_augment(replace(EvalConfig(), **explicit))
    assert store is not None, "a run id is looked up in a store"
    record = store.get_run(run_id)
    if record.kind != "pretrain":
        raise ConfigError(f"run {record.run_id} is an {record.kind} run: pass the id of a "
                          "pretraining run (see `sslbench runs list`)")
    if record.status != "completed":
        raise ConfigError(f"run {record.run_id} is {record.status}: evaluation needs a completed "
                          "pretraining run (re-run its train command to finish it)")
    c = record.config
    inherited = dict(source_run=record.run_id, method=c["method"], dataset=c["dataset"],
                     backbone=c["backbone"], cifar_stem=c["cifar_stem"], projector=c["projector"],
                     dim=c["dim"], image_size=c["image_size"], seed=c["seed"],
                     data_root=c.get("data_root", ""))
    return _resolve_probe_augment(replace(EvalConfig(), **{**inherited, **explicit}))


def _resolve_probe_augment(cfg: EvalConfig) -> EvalConfig:
    """``probe_augment="auto"`` -> the dataset's choice, so that the run records what it did."""
    if cfg.probe_augment == "auto":
        from sslbench.data.registry import probe_augment_of

        cfg = replace(cfg, probe_augment=probe_augment_of(cfg.dataset))
    require_choice("--probe-augment", cfg.probe_augment, PROBE_AUGMENTS)
    validate_eval(cfg)  # every config built here (eval_config_for, random_init_config) or run
    return cfg


def random_init_config(*, backbone: str, dataset: str, **options: Any) -> EvalConfig:
    """A random-init baseline with the dataset's native resolution and stem."""
    from sslbench.data import DATASETS
    from sslbench.models import backbone_names

    require_choice("backbone", backbone, backbone_names())
    require_choice("dataset", dataset, list(DATASETS))
    size = options.pop("image_size", None) or DATASETS[dataset].image_size or 224
    return eval_config_for(None, None, backbone=backbone, dataset=dataset, image_size=size,
                           cifar_stem=size <= 64, **options)


def evaluate(cfg: EvalTarget, store: Store, *, command: list[str],
             cache: FeatureCache | None = None, claim: int | None = None) -> EvalResult:
    """Runs (or reuses) the evaluation ``cfg`` identifies, whichever its protocol.

    Like pretraining: inputs are checked before the store is written, a completed run is
    returned as it is stored (``reused``), this process takes ownership of the run (``claim``:
    the attempt a scheduler opened for this worker) and the protocol runs under the numerics
    recorded at the run's first start. A failure ends the run ``failed``: one line for an
    SSLBenchError (class ``input``), the traceback otherwise (class ``error``); it is re-raised.
    """
    from sslbench.device import device_names, resolve_device
    from sslbench.environment import capture

    protocol = protocol_named(cfg.protocol)
    if isinstance(cfg, EvalConfig):  # a cka config is built from resolved configs already
        cfg = _resolve_probe_augment(cfg)
    device = resolve_device(cfg.device)
    cache = cache or FeatureCache(device)
    _check_inputs(protocol.inputs(cfg), cache)
    record, _ = store.upsert_run(run_id=cfg.run_id, kind="eval", config=cfg.to_dict(),
                                 command=command, env=capture(device_names(device)),
                                 parent_id=cfg.source_run, method=cfg.method,
                                 dataset=cfg.dataset)
    if record.status == "completed":
        return _stored(store, cfg, reused=True)
    store.set_status(cfg.run_id, "running", claim=claim)
    settings = store.adopt_numerics(cfg.run_id, numerics.proposed(device))
    result = _run_owned(store, cfg, settings, lambda: protocol.run(cfg, cache))
    _record(store, cfg.run_id, result)
    store.set_status(cfg.run_id, "completed")
    return _stored(store, cfg, reused=False)


def _check_inputs(networks: tuple[EvalConfig, ...], cache: FeatureCache) -> None:
    """Everything that can fail on the user's input fails before anything is written: a
    missing, unsafe or foreign backbone file, a missing dataset, an unreadable image."""
    for net in networks:
        cache.check_source(net)
        for split in ("train", "test"):
            cache.dataset(net, split)


def _run_owned(store: Store, cfg: EvalTarget, settings: dict[str, Any],
               run: Callable[[], ProtocolResult]) -> ProtocolResult:
    """``run()`` under the run's numerics and heartbeat; a failure is recorded, then raised."""
    from sslbench.db.heartbeat import Heartbeat

    try:
        with numerics.applied(settings), Heartbeat(store.url, cfg.run_id):
            return run()
    except BaseException as err:
        user = isinstance(err, SSLBenchError)
        store.set_status(cfg.run_id, "failed",
                         error=one_line(err) if user else traceback.format_exc(),
                         failure_class="input" if user else "error")
        raise


def _record(store: Store, run_id: str, result: ProtocolResult) -> None:
    for kind, path in result.artifacts:
        store.log_artifact(run_id, kind, str(path), size=path.stat().st_size)
    store.log_metrics(run_id, 0, result.metrics)
    for key, values in result.series.items():
        store.log_series(run_id, key, values)


def _stored(store: Store, cfg: EvalTarget, *, reused: bool) -> EvalResult:
    # Fresh or reused, what is reported is what the store holds.
    return EvalResult(cfg.run_id, cfg.protocol, "completed", reused, store.summary(cfg.run_id))


def evaluate_protocols(store: Store, base: EvalConfig, protocols: tuple[str, ...], *,
                       command: list[str]) -> list[EvalResult]:
    """Several protocols on one backbone, sharing extracted features."""
    from sslbench.device import resolve_device

    cache = FeatureCache(resolve_device(base.device))
    return [evaluate(replace(base, protocol=p), store, command=command, cache=cache)
            for p in protocols]


def pending(store: Store, protocols: tuple[str, ...]) -> list[tuple[str, str]]:
    """(run id, protocol) for each completed pretraining run lacking a completed evaluation."""
    return store.pending_evaluations(protocols)


def export_features(store: Store, run_id: str, split: str, out: Any, *,
                    device: str = "auto") -> dict[str, Any]:
    """Writes ``features`` (N, D) float32 and ``labels`` (N,) int64 to ``out`` (.npz)."""
    from pathlib import Path

    import numpy as np

    from sslbench.device import resolve_device

    if split not in ("train", "test"):
        raise ConfigError(f"unknown --split {split!r}: use train or test")
    out = Path(out)
    if out.suffix != ".npz":
        raise ConfigError(f"--out {out} must end in .npz")
    cfg = eval_config_for(store, run_id, device=device)
    x, y, _ = FeatureCache(resolve_device(device)).features(cfg, split)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.npz")
    np.savez(tmp, features=x.numpy().astype(np.float32), labels=y.numpy().astype(np.int64))
    tmp.replace(out)
    return {"path": str(out), "features": list(x.shape), "labels": int(len(y))}
