"""Run configurations: typed frozen dataclasses, validation, and the run identity.

A configuration is resolved in one place (defaults, then a preset, then explicit values) and is
never mutated afterwards. Fields are either *identity* fields, which define the experiment and
enter the run id, or *execution* fields (``identity=False`` in the field metadata), which say
where and how it runs (data path, device, workers) and may change between attempts of one run.

This module is the bottom layer: it imports neither torch nor any other sslbench package.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from sslbench.errors import ConfigError

RUN_ID_LENGTH = 12


def _exec(default: Any) -> Any:
    """A field that does not enter the run identity."""
    return field(default=default, metadata={"identity": False})


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines one pretraining run (see ``sslbench train --help``)."""

    method: str = "simclr"
    dataset: str = "shapes"
    backbone: str = "small"
    cifar_stem: bool = True
    projector: str = "2048-d"
    dim: int = 128
    epochs: int = 10
    batch_size: int = 256
    lr: float = 0.3
    optimizer: str = "lars"
    weight_decay: float = 1e-6
    momentum: float = 0.9
    warmup_epochs: int = 1
    augment: str = "small"
    image_size: int = 32
    loss: Mapping[str, Any] = field(default_factory=dict)
    probe_lr: float = 1e-3
    sync_bn: bool = False
    train_samples: int = 0
    seed: int = 0
    # Execution settings: they do not change what is computed, only where and how fast.
    preset: str = _exec("")
    data_root: str = _exec("")
    device: str = _exec("auto")
    num_workers: int = _exec(0)
    compile: bool = _exec(False)
    log_every: int = _exec(10)

    kind = "pretrain"

    def identity(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)
                if f.metadata.get("identity", True)}

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @property
    def run_id(self) -> str:
        return run_id_of(self.kind, self.identity())


EVAL_PROTOCOLS = ("fast-linear", "knn", "linear", "analysis")
# Training-image augmentation of the linear probes (sslbench.evaluate.linear): the paper's random
# resized crop (scale 0.08-1) + horizontal flip, flip only, or none. "auto" (the default) resolves
# to the dataset's own choice (DatasetSpec.probe_augment) when the config is built.
PROBE_AUGMENTS = ("crop-flip", "flip", "none")


def probe_augment_used(protocol: str, augment: str) -> str:
    """The augmentation ``protocol`` applies when ``augment`` is asked for: fast-linear replays
    the flips but never the crops, so its crop-flip is flip (same computation, same run id)."""
    return "flip" if protocol == "fast-linear" and augment == "crop-flip" else augment


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation protocol applied to a pretrained run (or to a random-init network).

    Protocols: ``fast-linear`` (linear probe on cached frozen features), ``knn`` (the paper's
    k-NN sweep), ``linear`` (the paper's offline protocol: re-augmented images, frozen backbone),
    ``analysis`` (spectra, RankMe, Table S4 bounds, negative-pair cosines), ``duality`` and
    ``cka`` (written by `sslbench duality` and `sslbench compare`).
    """

    source_run: str | None = None
    protocol: str = "fast-linear"
    method: str = "random"
    dataset: str = "shapes"
    backbone: str = "small"
    cifar_stem: bool = True
    projector: str = "none"
    dim: int = 0
    image_size: int = 32
    linear_epochs: int = 100
    batch_size: int = 256
    lr: float = 0.25
    probe_augment: str = "auto"
    probe_standardize: bool = True
    samples: int = 1024
    train_samples: int = 0
    seed: int = 0
    data_root: str = _exec("")
    device: str = _exec("auto")
    num_workers: int = _exec(0)

    kind = "eval"
    # Fields that only some protocols read; the others reset them, so they stay out of the id.
    PROTOCOL_FIELDS = {"fast-linear": ("linear_epochs", "batch_size", "lr", "probe_standardize",
                                       "probe_augment"),
                       "knn": (),
                       "linear": ("linear_epochs", "batch_size", "lr", "probe_standardize",
                                  "probe_augment"),
                       "analysis": ("samples",), "duality": ("samples",), "cka": ("samples",)}

    @property
    def random_init(self) -> bool:
        return self.source_run is None

    # Fields added later are left out of the ids of the protocols that do not read them, so
    # those ids stay what they were (a test pins some).
    ABSENT_WHEN_UNUSED = ("probe_augment", "probe_standardize")

    def identity(self) -> dict[str, Any]:
        used = self.PROTOCOL_FIELDS.get(self.protocol, ())
        specific = {name for names in self.PROTOCOL_FIELDS.values() for name in names}
        defaults = EvalConfig()
        ident = {}
        for f in dataclasses.fields(self):
            if not f.metadata.get("identity", True):
                continue
            value = getattr(self, f.name)
            if f.name in specific and f.name not in used:
                if f.name in self.ABSENT_WHEN_UNUSED:
                    continue
                value = getattr(defaults, f.name)
            if f.name == "probe_augment":
                value = probe_augment_used(self.protocol, value)
            ident[f.name] = _plain(value)
        ident["random_init"] = self.random_init
        return ident

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        out["random_init"] = self.random_init
        return out

    @property
    def run_id(self) -> str:
        return run_id_of(self.kind, self.identity())


def from_dict(cls: type, data: Mapping[str, Any]) -> Any:
    """A config from its ``to_dict()`` (derived keys such as ``random_init`` are ignored)."""
    known = {f.name for f in dataclasses.fields(cls)}
    return replace(cls(), **{k: v for k, v in data.items() if k in known})


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in sorted(value.items())}
    return value


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal configs give equal bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def run_id_of(kind: str, identity: Mapping[str, Any]) -> str:
    """The run id: a prefix of the SHA-256 of the canonical identity (kind included)."""
    digest = hashlib.sha256(canonical_json({"kind": kind, **identity}).encode()).hexdigest()
    return digest[:RUN_ID_LENGTH]


# --------------------------------------------------------------------------- projector specs

_SPEC_RE = re.compile(r"^(\d+|d)(-(\d+|d))*$")


def parse_projector(spec: str, dim: int) -> list[int]:
    """Layer widths of a projector spec in the paper's notation.

    ``"8192-8192-d"`` with ``dim=512`` gives ``[8192, 8192, 512]``; ``"d-d-d"``, ``"2048-d"`` and
    literal widths such as ``"512-512-128"`` work alike. ``"none"`` (or ``""``) means no projector:
    the embeddings are the representations. Raises ConfigError on malformed specs.
    """
    text = spec.strip().lower()
    if text in ("", "none", "identity"):
        return []
    if not _SPEC_RE.match(text):
        raise ConfigError(
            f"malformed projector spec {spec!r}: use widths separated by '-', where 'd' stands for "
            "--dim, e.g. 8192-8192-d, d-d-d, 2048-d or 512-512-128")
    widths = [dim if part == "d" else int(part) for part in text.split("-")]
    if any(w <= 0 for w in widths):
        raise ConfigError(f"projector spec {spec!r} has a layer of width 0: every width must be >= 1")
    return widths


def embedding_dim(projector: str, dim: int, representation_dim: int) -> int:
    widths = parse_projector(projector, dim)
    return widths[-1] if widths else representation_dim


# --------------------------------------------------------------------------- validation

def require_positive(name: str, value: float, flag: str | None = None) -> None:
    flag = flag or "--" + name.replace("_", "-")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{flag} must be a finite number, got {value}")
    if value <= 0:
        raise ConfigError(f"{flag} must be positive, got {value}")


def require_choice(name: str, value: str, choices: list[str] | tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(
            f"unknown {name} {value!r}: choose one of {', '.join(sorted(choices))}")


OPTIMIZERS = ("sgd", "lars", "adamw")


def validate_train(cfg: TrainConfig) -> None:
    """Checks that need no registry: numbers, optimiser name, projector syntax."""
    for name in ("epochs", "batch_size", "dim", "lr", "image_size", "probe_lr"):
        require_positive(name, getattr(cfg, name))
    if cfg.weight_decay < 0:
        raise ConfigError(f"--weight-decay must be >= 0, got {cfg.weight_decay}")
    if cfg.warmup_epochs < 0:
        raise ConfigError(f"--warmup-epochs must be >= 0, got {cfg.warmup_epochs}")
    if cfg.train_samples < 0:
        raise ConfigError(f"--train-samples must be >= 0 (0 = all), got {cfg.train_samples}")
    require_choice("optimizer", cfg.optimizer, OPTIMIZERS)
    parse_projector(cfg.projector, cfg.dim)


def default_warmup(epochs: int) -> int:
    """The paper's 10 warm-up epochs of 100, scaled down for short runs."""
    return min(10, epochs // 10)


def replace(cfg: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` that names unknown keys in a one-line ConfigError."""
    known = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(unknown)}: valid keys are "
                          f"{', '.join(sorted(known))}")
    return dataclasses.replace(cfg, **changes)
