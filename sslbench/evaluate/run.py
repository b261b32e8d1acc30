"""Evaluation runs: a frozen backbone (pretrained, or randomly initialised as a baseline),
probed with a linear classifier and a k-NN sweep on cached features, recorded in the store.

An evaluation is a run of kind "eval" whose parent is the pretraining run; its id is the hash of
its own config, so re-running the same evaluation reuses it.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sslbench import paths
from sslbench.config import EvalConfig, replace
from sslbench.errors import ConfigError, SSLBenchError
from sslbench.evaluate.features import extract_features
from sslbench.evaluate.knn import best_cell, knn_sweep
from sslbench.evaluate.linear import train_linear_probe
from sslbench.train import checkpoint as ckpt


@dataclass
class EvalResult:
    run_id: str
    status: str
    reused: bool
    summary: dict[str, float] = field(default_factory=dict)


def eval_config_for(store, run_id: str | None, **options) -> EvalConfig:
    """The EvalConfig of a pretraining run (dataset, backbone, ... taken from it) or, with
    ``run_id=None``, of a random-init baseline built from ``options``."""
    explicit = {k: v for k, v in options.items() if v is not None}
    if run_id is None:
        return replace(EvalConfig(), **explicit)
    record = store.get_run(run_id)
    if record.kind != "pretrain":
        raise ConfigError(f"run {record.run_id} is an {record.kind} run: pass the id of a "
                          "pretraining run (see `sslbench runs list`)")
    if record.status != "completed":
        raise ConfigError(f"run {record.run_id} is {record.status}: evaluation needs a completed "
                          "pretraining run (re-run its train command to finish it)")
    c = record.config
    inherited = dict(source_run=record.run_id, method=c["method"], dataset=c["dataset"],
                     backbone=c["backbone"], cifar_stem=c["cifar_stem"],
                     image_size=c["image_size"], seed=c["seed"], data_root=c.get("data_root", ""))
    return replace(EvalConfig(), **{**inherited, **explicit})


def load_backbone(cfg: EvalConfig, device: torch.device) -> torch.nn.Module:
    from sslbench.models import build_backbone

    torch.manual_seed(cfg.seed)
    net, _ = build_backbone(cfg.backbone, cifar_stem=cfg.cifar_stem)
    if cfg.source_run is not None:
        path = paths.run_dir(cfg.source_run) / ckpt.BACKBONE
        if not path.exists():
            raise SSLBenchError(f"no backbone file at {path}: the run's artifacts were moved or "
                                "deleted; set SSLBENCH_HOME to the folder holding runs/")
        net.load_state_dict(ckpt.load(path)["backbone"])
    from sslbench.device import memory_format

    return net.to(device, memory_format=memory_format(device)).eval()


def features_of(cfg: EvalConfig, split: str, device: torch.device,
                backbone: torch.nn.Module | None = None):
    """(features, labels, dataset) of a split through the frozen backbone."""
    from sslbench.data import load_dataset, subset
    from sslbench.data.augment import eval_transform

    ds = load_dataset(cfg.dataset, split, cfg.data_root or None, image_size=cfg.image_size)
    if split == "train" and cfg.train_samples:
        ds = subset(ds, cfg.train_samples, seed=cfg.seed)
    backbone = backbone if backbone is not None else load_backbone(cfg, device)
    transform = eval_transform(image_size=cfg.image_size, mean=ds.mean, std=ds.std)
    x, y = extract_features(backbone, ds, transform, device)
    return x, y, ds


def evaluate(cfg: EvalConfig, store, *, command: list[str]) -> EvalResult:
    from sslbench.device import device_names, resolve_device
    from sslbench.runs.environment import capture

    device = resolve_device(cfg.device)
    backbone = load_backbone(cfg, device)
    record, _ = store.upsert_run(run_id=cfg.run_id, kind="eval", config=cfg.to_dict(),
                                 command=command, env=capture(device_names(device)),
                                 parent_id=cfg.source_run, method=cfg.method,
                                 dataset=cfg.dataset)
    if record.status == "completed":
        return EvalResult(cfg.run_id, "completed", True, store.summary(cfg.run_id))
    store.set_status(cfg.run_id, "running")
    try:
        metrics = _probe(cfg, backbone, device)
    except BaseException as err:
        message = str(err) if isinstance(err, SSLBenchError) else traceback.format_exc()
        store.set_status(cfg.run_id, "failed", error=message)
        raise
    store.log_metrics(cfg.run_id, 0, metrics)
    store.set_status(cfg.run_id, "completed")
    return EvalResult(cfg.run_id, "completed", False, store.summary(cfg.run_id))


def _probe(cfg: EvalConfig, backbone: torch.nn.Module, device: torch.device) -> dict[str, float]:
    train_x, train_y, train_ds = features_of(cfg, "train", device, backbone)
    test_x, test_y, _ = features_of(cfg, "test", device, backbone)
    linear = train_linear_probe(train_x, train_y, test_x, test_y, train_ds.num_classes,
                                epochs=cfg.linear_epochs, seed=cfg.seed)
    grid = knn_sweep(train_x, train_y, test_x, test_y, train_ds.num_classes)
    (k, t), knn_top1 = best_cell(grid)
    metrics = {"linear_top1": linear["top1"], "linear_train_top1": linear["train_top1"],
               "knn_top1": knn_top1, "knn_k": float(k), "knn_temperature": t}
    metrics.update({f"knn_top1/k{kk}_t{tt:g}": v for (kk, tt), v in grid.items()})
    return metrics


def export_features(store, run_id: str, split: str, out: Path, *, device: str = "auto") -> dict:
    """Writes ``features`` (N, D) float32 and ``labels`` (N,) int64 to ``out`` (.npz)."""
    from sslbench.device import resolve_device

    if split not in ("train", "test"):
        raise ConfigError(f"unknown --split {split!r}: use train or test")
    cfg = eval_config_for(store, run_id, device=device)
    x, y, _ = features_of(cfg, split, resolve_device(cfg.device))
    out = Path(out)
    if out.suffix != ".npz":
        raise ConfigError(f"--out {out} must end in .npz")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.npz")
    np.savez(tmp, features=x.numpy().astype(np.float32), labels=y.numpy().astype(np.int64))
    tmp.replace(out)
    return {"path": str(out), "features": list(x.shape), "labels": int(len(y))}
