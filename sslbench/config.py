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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from sslbench.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

RUN_ID_LENGTH = 12
ConfigT = TypeVar("ConfigT", bound="DataclassInstance")


def _exec(default: Any) -> Any:
    """A field that does not enter the run identity."""
    return field(default=default, metadata={"identity": False})


def _added(default: Any, *, absent: Any) -> Any:
    """A field added after runs were stored: a stored config without it reads as ``absent``
    (what those runs computed), and the field enters the run identity only when its value is
    not ``absent`` -- so the ids of stored runs stay what they were."""
    return field(default=default, metadata={"absent": absent})


def _identity(cfg: Any, name: str, value: Any) -> bool:
    meta = next(f.metadata for f in dataclasses.fields(cfg) if f.name == name)
    return meta.get("identity", True) and not ("absent" in meta and value == meta["absent"])


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
    probe_lr: float = 1e-2
    # The online probe: representations standardised by a BatchNorm without affine parameters
    # (an affine map, so the classifier stays linear; the offline probes standardise the same
    # way), and its lr following the backbone's warmup + cosine schedule, so that it converges
    # within short budgets and its last-epoch accuracy is not one noisy step. Stored runs from
    # before these fields trained a plain linear layer at a constant lr 1e-3.
    probe_standardize: bool = _added(True, absent=False)
    probe_schedule: str = _added("cosine", absent="constant")
    # What the online probe learns from: "views", the step's two augmented views (the paper's
    # online probe), or "offline", one more view of each batch with the offline probes' training
    # augmentation (the dataset's, as fast-linear and linear use), encoded without gradient by
    # the backbone in eval mode, as the test images are. The backbone trains identically either
    # way (the extra view is drawn after the step's two); "offline" costs one more forward pass.
    probe_view: str = _added("views", absent="views")
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
    # CPU intra-op threads (0: sslbench.numerics' default). They change the numbers, so the count
    # of the run's first start is recorded with the run and every later attempt uses it.
    threads: int = _exec(0)

    kind = "pretrain"

    def identity(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)
                if _identity(self, f.name, getattr(self, f.name))}

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @property
    def run_id(self) -> str:
        return run_id_of(self.kind, self.identity())


EVAL_PROTOCOLS = ("fast-linear", "knn", "linear", "analysis")
#: The headline metrics each evaluation protocol stores (what ``sslbench tune`` may optimise);
#: ``tests/test_tune.py`` checks them against what the protocols really store.
PROTOCOL_METRICS: dict[str, tuple[str, ...]] = {
    "fast-linear": ("fast_linear_top1", "fast_linear_train_top1"),
    "knn": ("knn_top1",),
    "linear": ("linear_top1", "linear_train_top1"),
    "analysis": ("rankme_repr", "rankme_emb", "neg_cos_mean", "neg_cos_var"),
}
#: Metrics every pretraining run stores at the end of each epoch (besides its criterion's own
#: ``epoch_<term>`` means): the online probe's top-1 and the mean loss.
EPOCH_METRICS = ("online_top1", "epoch_loss")
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
    """A config from its ``to_dict()`` (derived keys such as ``random_init`` are ignored); a
    field added since the config was stored takes the value that run computed with."""
    fields = dataclasses.fields(cls)
    known = {f.name for f in fields}
    absent = {f.name: f.metadata["absent"] for f in fields
              if "absent" in f.metadata and f.name not in data}
    return replace(cls(), **absent, **{k: v for k, v in data.items() if k in known})


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
        raise ConfigError(f"projector spec {spec!r} has a layer of width 0: every width must be "
                          ">= 1")
    return widths


def embedding_dim(projector: str, dim: int, representation_dim: int) -> int:
    widths = parse_projector(projector, dim)
    return widths[-1] if widths else representation_dim


# --------------------------------------------------------------------------- validation

# Seeds and every other integer end up in SQLite INTEGER columns and torch generators, both
# signed 64-bit: a larger value fails deep inside the store or torch instead of here.
INT64_MAX = 2**63 - 1


def flag_of(name: str) -> str:
    """The command-line spelling of a config key: ``weight_decay`` -> ``--weight-decay``."""
    return "--" + name.replace("_", "-")


def require_finite(name: str, value: Any, flag: str | None = None) -> None:
    """NaN and infinities pass every ``<`` / ``<=`` test, so they are refused by name first."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{flag or flag_of(name)} must be a finite number, got {value}")


def require_positive(name: str, value: float, flag: str | None = None) -> None:
    flag = flag or flag_of(name)
    require_finite(name, value, flag)
    if value <= 0:
        raise ConfigError(f"{flag} must be positive, got {value}")


def require_non_negative(name: str, value: float, flag: str | None = None) -> None:
    flag = flag or flag_of(name)
    require_finite(name, value, flag)
    if value < 0:
        raise ConfigError(f"{flag} must be >= 0, got {value}")


def require_seed(name: str, value: Any, flag: str | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= INT64_MAX:
        raise ConfigError(f"{flag or flag_of(name)} must be an integer in 0 .. 2**63-1 "
                          f"({INT64_MAX}), got {value}")


def require_choice(name: str, value: str, choices: list[str] | tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(
            f"unknown {name} {value!r}: choose one of {', '.join(sorted(choices))}")


def _check_numbers(cfg: Any, positive: tuple[str, ...], non_negative: tuple[str, ...]) -> None:
    """Every float finite and every integer within 64 bits, by name; then the bounds."""
    require_seed("seed", cfg.seed)  # first: its message says the whole range
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        require_finite(f.name, value)
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT64_MAX:
            raise ConfigError(f"{flag_of(f.name)} {value} is too large: use at most "
                              f"{INT64_MAX} (2**63-1)")
    for name in positive:
        require_positive(name, getattr(cfg, name))
    for name in non_negative:
        require_non_negative(name, getattr(cfg, name))
    if cfg.train_samples < 0:
        raise ConfigError(f"--train-samples must be >= 0 (0 = all), got {cfg.train_samples}")


OPTIMIZERS = ("sgd", "lars", "adamw")
#: The online probe's lr: constant, or following the backbone's warmup + cosine schedule.
PROBE_SCHEDULES = ("constant", "cosine")
#: What the online probe learns from (see TrainConfig.probe_view).
PROBE_VIEWS = ("views", "offline")
TRAIN_POSITIVE = ("epochs", "batch_size", "dim", "lr", "image_size", "probe_lr", "log_every")
TRAIN_NON_NEGATIVE = ("weight_decay", "momentum", "warmup_epochs", "num_workers", "threads")
EVAL_POSITIVE = ("linear_epochs", "batch_size", "lr", "samples", "image_size")
EVAL_NON_NEGATIVE = ("dim", "num_workers")


def validate_train(cfg: TrainConfig) -> None:
    """Checks that need no registry: numbers (finite, in range, by flag name), optimiser name,
    projector syntax, loss hyperparameters finite."""
    _check_numbers(cfg, TRAIN_POSITIVE, TRAIN_NON_NEGATIVE)
    for key, value in cfg.loss.items():
        require_finite(key, value)
    require_choice("optimizer", cfg.optimizer, OPTIMIZERS)
    require_choice("probe_schedule", cfg.probe_schedule, PROBE_SCHEDULES)
    require_choice("probe_view", cfg.probe_view, PROBE_VIEWS)
    parse_projector(cfg.projector, cfg.dim)


def validate_eval(cfg: EvalConfig) -> None:
    """The same checks for an evaluation config (the probe augmentation is resolved, and
    checked, where ``auto`` becomes the dataset's choice)."""
    _check_numbers(cfg, EVAL_POSITIVE, EVAL_NON_NEGATIVE)
    parse_projector(cfg.projector, cfg.dim)


def default_warmup(epochs: int) -> int:
    """The paper's 10 warm-up epochs of 100, scaled down for short runs."""
    return min(10, epochs // 10)


def replace(cfg: ConfigT, **changes: Any) -> ConfigT:
    """``dataclasses.replace`` that names unknown keys in a one-line ConfigError."""
    known = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(unknown)}: valid keys are "
                          f"{', '.join(sorted(known))}")
    return dataclasses.replace(cfg, **changes)
