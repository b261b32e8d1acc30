"""Representations of a frozen backbone: extracted once per checkpoint and kept.

``FeatureCache`` holds, for one command, the datasets, backbones and features it has loaded, and
keeps the features of pretrained runs on disk beside the run
(``runs/<run_id>/features/<split>-<key>.pt``), tagged with the hash of the backbone file they
come from, so a later evaluation of the same checkpoint skips the forward passes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from sslbench import checkpoint as ckpt
from sslbench import paths
from sslbench.config import EvalConfig
from sslbench.errors import SSLBenchError

if TYPE_CHECKING:
    from sslbench.data.base import ImageDataset

# Cache keys: the settings the cached value depends on (see each method).
CacheKey = tuple[object, ...]


@torch.no_grad()
def extract_features(backbone: nn.Module, dataset: ImageDataset,
                     transform: Callable[[torch.Tensor], torch.Tensor], device: torch.device,
                     batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """(features float32 (N, D) on CPU, labels int64 (N,)) with the backbone in eval mode.

    The backbone's training flag is restored afterwards; its weights and BatchNorm statistics
    are never touched (no_grad, eval mode).
    """
    from sslbench.data import iterate_batches
    from sslbench.device import autocast, memory_format, to_device

    was_training = backbone.training
    backbone.eval()
    feats, labels = [], []
    for images, y in iterate_batches(dataset, batch_size, shuffle=False, drop_last=False):
        x = transform(to_device(images, device)).contiguous(memory_format=memory_format(device))
        with autocast(device):
            h = backbone(x)
        feats.append(h.float().cpu())
        labels.append(y)
    backbone.train(was_training)
    if not feats:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(feats), torch.cat(labels)


def backbone_path(run_id: str) -> Path:
    return paths.run_dir(run_id) / ckpt.BACKBONE


class FeatureCache:
    """Datasets, frozen backbones and their features, loaded at most once per command."""

    def __init__(self, device: torch.device):
        self.device = device
        self._datasets: dict[CacheKey, ImageDataset] = {}
        self._backbones: dict[CacheKey, nn.Module] = {}
        self._features: dict[CacheKey, tuple[torch.Tensor, torch.Tensor]] = {}
        self._sources: dict[str, dict[str, Any]] = {}  # run id -> its checked backbone weights

    def check_source(self, cfg: EvalConfig) -> None:
        """A pretrained run's backbone file exists, loads safely and is that run's."""
        if cfg.source_run is not None:
            self._source_weights(cfg.source_run)

    def _source_weights(self, run_id: str) -> dict[str, Any]:
        if run_id not in self._sources:
            from sslbench.config import TrainConfig

            path = backbone_path(run_id)
            if not path.exists():
                raise SSLBenchError(f"no backbone file at {path}: the run's artifacts were moved "
                                    "or deleted; set SSLBENCH_HOME to the folder holding runs/")
            payload = ckpt.load(path)
            ckpt.check_run(payload, path, run_id, TrainConfig)
            if not isinstance(payload.get("backbone"), dict):
                raise ckpt.DamagedCheckpoint(f"{path} is damaged (it holds no backbone weights): "
                                             "re-run the run's train command after deleting it")
            self._sources[run_id] = payload["backbone"]
        return self._sources[run_id]

    def dataset(self, cfg: EvalConfig, split: str) -> ImageDataset:
        from sslbench.data import load_dataset
        from sslbench.data.subset import subset

        key: CacheKey = (cfg.dataset, cfg.data_root, split, cfg.image_size, cfg.train_samples,
                         cfg.seed)
        if key not in self._datasets:
            ds = load_dataset(cfg.dataset, split, cfg.data_root or None, image_size=cfg.image_size)
            if split == "train" and cfg.train_samples:
                ds = subset(ds, cfg.train_samples, seed=cfg.seed)
            self._datasets[key] = ds
        return self._datasets[key]

    def backbone(self, cfg: EvalConfig) -> nn.Module:
        key: CacheKey = (cfg.source_run, cfg.backbone, cfg.cifar_stem, cfg.seed)
        if key not in self._backbones:
            self._backbones[key] = self._load_backbone(cfg)
        return self._backbones[key]

    def _load_backbone(self, cfg: EvalConfig) -> nn.Module:
        from sslbench.device import module_to_device
        from sslbench.models import build_backbone

        torch.manual_seed(cfg.seed)
        net, _ = build_backbone(cfg.backbone, cifar_stem=cfg.cifar_stem)
        if cfg.source_run is not None:
            try:
                net.load_state_dict(self._source_weights(cfg.source_run))
            except RuntimeError as err:
                raise ckpt.DamagedCheckpoint(
                    f"{backbone_path(cfg.source_run)} does not fit a {cfg.backbone} backbone "
                    f"({str(err).splitlines()[0][:160]})") from None
        return module_to_device(net, self.device).eval()

    def features(self, cfg: EvalConfig, split: str, *, mirror: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, ImageDataset]:
        """(features, labels, dataset) of ``split``'s centre crops through the frozen backbone;
        with ``mirror``, of the centre crops mirrored left-right."""
        from sslbench.data.augment import eval_transform

        ds = self.dataset(cfg, split)
        key: CacheKey = (cfg.source_run, cfg.backbone, cfg.cifar_stem, cfg.seed, cfg.dataset,
                         split, cfg.image_size, cfg.train_samples if split == "train" else 0)
        key += ("mirror",) if mirror else ()
        if key not in self._features:
            source = cfg.source_run
            disk = self._disk_path(cfg, key)  # None exactly when source is None
            cached = self._read(disk, source) if disk and source is not None else None
            if cached is None:
                centre = eval_transform(image_size=cfg.image_size, mean=ds.mean, std=ds.std)
                transform: Callable[[torch.Tensor], torch.Tensor] = (
                    (lambda images: centre(images).flip(3)) if mirror else centre)
                cached = extract_features(self.backbone(cfg), ds, transform, self.device)
                if disk and source is not None:
                    try:
                        self._write(disk, source, cached)
                    except ckpt.CheckpointWriteError:
                        pass  # a cache: a full disk only costs the next command the speed-up
            self._features[key] = cached
        x, y = self._features[key]
        return x, y, ds

    @staticmethod
    def _disk_path(cfg: EvalConfig, key: CacheKey) -> Path | None:
        if cfg.source_run is None:
            return None  # random-init features are cheap to recompute and seed-dependent
        import hashlib

        from sslbench.config import canonical_json

        digest = hashlib.sha256(canonical_json(list(key)).encode()).hexdigest()[:12]
        return paths.run_dir(cfg.source_run) / "features" / f"{key[5]}-{digest}.pt"

    @staticmethod
    def _read(path: Path, source_run: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        if not path.exists():
            return None
        try:
            blob = ckpt.load(path)
        except ckpt.DamagedCheckpoint:
            return None  # a cache: extract again (and overwrite it)
        if blob.get("backbone_sha256") != ckpt.sha256_of(backbone_path(source_run)):
            return None  # the checkpoint changed since: extract again
        features, labels = blob.get("features"), blob.get("labels")
        if not isinstance(features, torch.Tensor) or not isinstance(labels, torch.Tensor):
            return None
        return features, labels

    @staticmethod
    def _write(path: Path, source_run: str, cached: tuple[torch.Tensor, torch.Tensor]) -> None:
        ckpt.save({"features": cached[0], "labels": cached[1],
                   "backbone_sha256": ckpt.sha256_of(backbone_path(source_run))}, path)
