"""Every evaluation protocol in one registry: what it computes and which settings name its run.

``sslbench eval``, ``sslbench duality`` and ``sslbench compare`` all produce evaluation runs. So
that each gets the same life -- identity, reuse of a completed run, ownership, numerics,
heartbeats, failures, all in :func:`sslbench.evaluate.run.evaluate` -- a protocol is only what
differs between them: a name, the config fields that enter its run id beyond those every
evaluation has, and a function from its config and the command's :class:`FeatureCache` to a
:class:`ProtocolResult`. The function never touches the store.

Configs: :class:`~sslbench.config.EvalConfig` for the protocols that look at one network;
``cka`` compares several, so it has its own config (:class:`sslbench.evaluate.compare.CKAConfig`).
Both satisfy :class:`EvalTarget`, which is all ``evaluate`` reads of a config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sslbench import paths
from sslbench.config import EvalConfig, require_choice
from sslbench.data.augment import PROBE_AUGMENT_SETTINGS
from sslbench.evaluate.features import FeatureCache
from sslbench.evaluate.knn import best_cell, knn_sweep
from sslbench.evaluate.linear import (
    HeadRecipe,
    offline_linear_probe,
    train_linear_probe,
)


@dataclass(frozen=True)
class ProtocolResult:
    """What a protocol measured: final scalars, per-index series (spectra, histograms) and
    files it wrote, as ``(artifact kind, path)``."""

    metrics: dict[str, float]
    series: dict[str, list[float]] = field(default_factory=dict)
    artifacts: list[tuple[str, Path]] = field(default_factory=list)


class EvalTarget(Protocol):
    """What :func:`~sslbench.evaluate.run.evaluate` reads of a protocol's config."""

    @property
    def protocol(self) -> str: ...
    @property
    def run_id(self) -> str: ...
    @property
    def source_run(self) -> str | None: ...  # the parent run in the store
    @property
    def method(self) -> str: ...
    @property
    def dataset(self) -> str: ...
    @property
    def device(self) -> str: ...
    def to_dict(self) -> dict[str, Any]: ...


RunProtocol = Callable[[Any, FeatureCache], ProtocolResult]


def _itself(cfg: EvalConfig) -> tuple[EvalConfig, ...]:
    return (cfg,)


@dataclass(frozen=True)
class EvalProtocol:
    """One protocol. ``id_fields``: the EvalConfig fields that enter its run id besides the
    network's (``EvalConfig.PROTOCOL_FIELDS``, the rule ``EvalConfig.identity`` applies).
    ``inputs``: the networks whose files and data are checked before anything is written."""

    name: str
    id_fields: tuple[str, ...]
    run: RunProtocol
    inputs: Callable[[Any], tuple[EvalConfig, ...]] = _itself


def _register(name: str, run: RunProtocol,
              inputs: Callable[[Any], tuple[EvalConfig, ...]] = _itself) -> EvalProtocol:
    # The id fields come from the config, which computes the ids: one source, never two lists.
    return EvalProtocol(name, EvalConfig.PROTOCOL_FIELDS[name], run, inputs)


def protocol_named(name: str) -> EvalProtocol:
    require_choice("protocol", name, tuple(PROTOCOLS))
    return PROTOCOLS[name]


# --------------------------------------------------------------------------- the protocols

def _fast_linear(cfg: EvalConfig, cache: FeatureCache) -> ProtocolResult:
    train_x, train_y, ds = cache.features(cfg, "train")
    test_x, test_y, _ = cache.features(cfg, "test")
    flip_p = PROBE_AUGMENT_SETTINGS[cfg.probe_augment][1]
    mirror_x = cache.features(cfg, "train", mirror=True)[0].to(cache.device) if flip_p else None
    on = cache.device
    res = train_linear_probe(train_x.to(on), train_y.to(on), test_x.to(on), test_y.to(on),
                             ds.num_classes, _recipe(cfg), mirror_x=mirror_x, flip_p=flip_p)
    return ProtocolResult({"fast_linear_top1": res["top1"],
                           "fast_linear_train_top1": res["train_top1"]})


def _knn(cfg: EvalConfig, cache: FeatureCache) -> ProtocolResult:
    train_x, train_y, ds = cache.features(cfg, "train")
    test_x, test_y, _ = cache.features(cfg, "test")
    grid = knn_sweep(train_x, train_y, test_x, test_y, ds.num_classes)
    (k, t), top1 = best_cell(grid)
    metrics = {"knn_top1": top1, "knn_k": float(k), "knn_temperature": t}
    metrics.update({f"knn_top1/k{kk}_t{tt:g}": v for (kk, tt), v in grid.items()})
    return ProtocolResult(metrics)


def _offline_linear(cfg: EvalConfig, cache: FeatureCache) -> ProtocolResult:
    train_ds, test_ds = cache.dataset(cfg, "train"), cache.dataset(cfg, "test")
    res = offline_linear_probe(cache.backbone(cfg), train_ds, test_ds, image_size=cfg.image_size,
                               recipe=_recipe(cfg), augment=cfg.probe_augment,
                               device=cache.device)
    return ProtocolResult({"linear_top1": res["top1"], "linear_train_top1": res["train_top1"]})


def _recipe(cfg: EvalConfig) -> HeadRecipe:
    return HeadRecipe(epochs=cfg.linear_epochs, batch_size=cfg.batch_size, base_lr=cfg.lr,
                      seed=cfg.seed, standardize=cfg.probe_standardize)


# The protocols below live in their own modules, imported when run: the analysis module may
# move (this is its one import), and duality / compare import the lifecycle that imports this.

def _analysis(cfg: EvalConfig, cache: FeatureCache) -> ProtocolResult:
    from sslbench.evaluate.analysis.protocol import analyse

    metrics, series, figures = analyse(cfg, cache, paths.run_dir(cfg.run_id))
    return ProtocolResult(metrics, series, figures)


def _duality(cfg: EvalConfig, cache: FeatureCache) -> ProtocolResult:
    from sslbench.evaluate.duality import duality_protocol

    return duality_protocol(cfg, cache)


def _cka(cfg: Any, cache: FeatureCache) -> ProtocolResult:
    from sslbench.evaluate.compare import cka_protocol

    return cka_protocol(cfg, cache)


def _networks(cfg: Any) -> tuple[EvalConfig, ...]:
    return tuple(cfg.networks)


PROTOCOLS: dict[str, EvalProtocol] = {p.name: p for p in (
    _register("fast-linear", _fast_linear),
    _register("knn", _knn),
    _register("linear", _offline_linear),
    _register("analysis", _analysis),
    _register("duality", _duality),
    _register("cka", _cka, inputs=_networks),
)}
