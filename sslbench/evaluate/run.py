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
- ``analysis``: spectra, RankMe, negative-pair cosines, Table S4 bounds (sslbench.evaluate.analyse)
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field

from sslbench import numerics, paths
from sslbench.config import (
    EVAL_PROTOCOLS,
    PROBE_AUGMENTS,
    EvalConfig,
    replace,
    require_choice,
    validate_eval,
)
from sslbench.errors import ConfigError, SSLBenchError
from sslbench.evaluate.features import FeatureCache
from sslbench.evaluate.knn import best_cell, knn_sweep
from sslbench.evaluate.linear import (
    AUGMENT_SETTINGS,
    HeadRecipe,
    offline_linear_probe,
    train_linear_probe,
)

DEFAULT_PROTOCOLS = ("fast-linear", "knn")


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


def eval_config_for(store, run_id: str | None, **options) -> EvalConfig:
    """The EvalConfig of a pretraining run (dataset, backbone, ... taken from it) or, with
    ``run_id=None``, of a random-init baseline built from ``options``."""
    explicit = {k: v for k, v in options.items() if v is not None}
    if run_id is None:
        return _resolve_probe_augment(replace(EvalConfig(), **explicit))
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
        from sslbench.data import DATASETS

        spec = DATASETS.get(cfg.dataset)
        cfg = replace(cfg, probe_augment=spec.probe_augment if spec else "crop-flip")
    require_choice("--probe-augment", cfg.probe_augment, PROBE_AUGMENTS)
    validate_eval(cfg)  # every config built here (eval_config_for, random_init_config) or run
    return cfg


def random_init_config(*, backbone: str, dataset: str, **options) -> EvalConfig:
    """A random-init baseline with the dataset's native resolution and stem."""
    from sslbench.data import DATASETS
    from sslbench.models import backbone_names

    require_choice("backbone", backbone, backbone_names())
    require_choice("dataset", dataset, list(DATASETS))
    size = options.pop("image_size", None) or DATASETS[dataset].image_size or 224
    return eval_config_for(None, None, backbone=backbone, dataset=dataset, image_size=size,
                           cifar_stem=size <= 64, **options)


def evaluate(cfg: EvalConfig, store, *, command: list[str],
             cache: FeatureCache | None = None, claim: int | None = None) -> EvalResult:
    """Runs (or reuses) the evaluation ``cfg`` identifies.

    Like pretraining: inputs are checked before the store is written, this process takes
    ownership of the run (``claim``: the attempt a scheduler opened for this worker) and the
    protocol runs under the numerics recorded at the run's first start.
    """
    from sslbench.db.heartbeat import Heartbeat
    from sslbench.device import device_names, resolve_device
    from sslbench.runs.environment import capture

    require_choice("--protocol", cfg.protocol, EVAL_PROTOCOLS)
    cfg = _resolve_probe_augment(cfg)
    device = resolve_device(cfg.device)
    cache = cache or FeatureCache(device)
    # Everything that can fail on the user's input fails before anything is written: a missing,
    # unsafe or foreign backbone file, a missing dataset, an unreadable image in a folder.
    cache.check_source(cfg)
    for split in ("train", "test"):
        cache.dataset(cfg, split)
    record, _ = store.upsert_run(run_id=cfg.run_id, kind="eval", config=cfg.to_dict(),
                                 command=command, env=capture(device_names(device)),
                                 parent_id=cfg.source_run, method=cfg.method,
                                 dataset=cfg.dataset)
    if record.status == "completed":
        return EvalResult(cfg.run_id, cfg.protocol, "completed", True, store.summary(cfg.run_id))
    store.set_status(cfg.run_id, "running", claim=claim)
    settings = store.adopt_numerics(cfg.run_id, numerics.proposed(device))
    try:
        with numerics.applied(settings), Heartbeat(store.url, cfg.run_id):
            metrics, series, figures = _run_protocol(cfg, cache)
    except BaseException as err:
        message = str(err) if isinstance(err, SSLBenchError) else traceback.format_exc()
        store.set_status(cfg.run_id, "failed", error=message,
                         failure_class="error" if not isinstance(err, SSLBenchError) else "input")
        raise
    for kind, path in figures:
        store.log_artifact(cfg.run_id, kind, str(path), size=path.stat().st_size)
    store.log_metrics(cfg.run_id, 0, metrics)
    for key, values in series.items():
        store.log_series(cfg.run_id, key, values)
    store.set_status(cfg.run_id, "completed")
    return EvalResult(cfg.run_id, cfg.protocol, "completed", False, store.summary(cfg.run_id))


def _run_protocol(cfg: EvalConfig, cache: FeatureCache):
    """(metrics, series, figures) of one protocol."""
    if cfg.protocol == "analysis":
        from sslbench.evaluate.analyse import analyse

        return analyse(cfg, cache, paths.run_dir(cfg.run_id))
    return PROTOCOL_FUNCTIONS[cfg.protocol](cfg, cache), {}, []


def evaluate_protocols(store, base: EvalConfig, protocols: tuple[str, ...], *,
                       command: list[str]) -> list[EvalResult]:
    """Several protocols on one backbone, sharing extracted features."""
    from sslbench.device import resolve_device

    cache = FeatureCache(resolve_device(base.device))
    return [evaluate(replace(base, protocol=p), store, command=command, cache=cache)
            for p in protocols]


def pending(store, protocols: tuple[str, ...]) -> list[tuple[str, str]]:
    """(run id, protocol) for each completed pretraining run lacking a completed evaluation."""
    done: dict[str, set[str]] = {}
    for ev in store.find_runs(kind="eval", status="completed"):
        if ev.parent_id:
            done.setdefault(ev.parent_id, set()).add(ev.config.get("protocol", ""))
    todo = []
    for run in store.find_runs(kind="pretrain", status="completed"):
        for protocol in protocols:
            if protocol not in done.get(run.run_id, set()):
                todo.append((run.run_id, protocol))
    return todo


def _fast_linear(cfg: EvalConfig, cache: FeatureCache) -> dict[str, float]:
    train_x, train_y, ds = cache.features(cfg, "train")
    test_x, test_y, _ = cache.features(cfg, "test")
    flip_p = AUGMENT_SETTINGS[cfg.probe_augment][1]
    mirror_x = cache.features(cfg, "train", mirror=True)[0].to(cache.device) if flip_p else None
    on = cache.device
    res = train_linear_probe(train_x.to(on), train_y.to(on), test_x.to(on), test_y.to(on),
                             ds.num_classes, _recipe(cfg), mirror_x=mirror_x, flip_p=flip_p)
    return {"fast_linear_top1": res["top1"], "fast_linear_train_top1": res["train_top1"]}


def _knn(cfg: EvalConfig, cache: FeatureCache) -> dict[str, float]:
    train_x, train_y, ds = cache.features(cfg, "train")
    test_x, test_y, _ = cache.features(cfg, "test")
    grid = knn_sweep(train_x, train_y, test_x, test_y, ds.num_classes)
    (k, t), top1 = best_cell(grid)
    metrics = {"knn_top1": top1, "knn_k": float(k), "knn_temperature": t}
    metrics.update({f"knn_top1/k{kk}_t{tt:g}": v for (kk, tt), v in grid.items()})
    return metrics


def _offline_linear(cfg: EvalConfig, cache: FeatureCache) -> dict[str, float]:
    train_ds, test_ds = cache.dataset(cfg, "train"), cache.dataset(cfg, "test")
    res = offline_linear_probe(cache.backbone(cfg), train_ds, test_ds, image_size=cfg.image_size,
                               recipe=_recipe(cfg), augment=cfg.probe_augment,
                               device=cache.device)
    return {"linear_top1": res["top1"], "linear_train_top1": res["train_top1"]}


def _recipe(cfg: EvalConfig) -> HeadRecipe:
    return HeadRecipe(epochs=cfg.linear_epochs, batch_size=cfg.batch_size, base_lr=cfg.lr,
                      seed=cfg.seed, standardize=cfg.probe_standardize)


PROTOCOL_FUNCTIONS = {"fast-linear": _fast_linear, "knn": _knn, "linear": _offline_linear}


def export_features(store, run_id: str, split: str, out, *, device: str = "auto") -> dict:
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
