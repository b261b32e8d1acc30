"""Resolving a training configuration against the registries, before anything is written.

``resolve_train_config`` is the one place where defaults, automatic values (image size, stem,
augmentation recipe, warm-up, loss hyperparameters) and explicit options meet. It raises a
one-line ConfigError for anything a user can get wrong, so a bad command writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sslbench.config import (
    TrainConfig,
    default_warmup,
    replace,
    require_choice,
    require_finite,
    validate_train,
)
from sslbench.errors import ConfigError

if TYPE_CHECKING:
    from sslbench.data.base import DatasetSpec

# Options whose automatic value depends on others; ``None`` in the options means "automatic".
AUTO_KEYS = ("image_size", "cifar_stem", "augment", "warmup_epochs")


def _dataset_spec(name: str) -> DatasetSpec:
    from sslbench.data import DATASETS

    require_choice("dataset", name, list(DATASETS))
    return DATASETS[name]


def default_augment(dataset: str) -> str:
    spec = _dataset_spec(dataset)
    if getattr(spec, "embedded", False):
        return "small"
    if (spec.image_size or 224) <= 64:
        return "cifar"
    return "byol"


def resolve_loss(method: str, overrides: Mapping[str, Any], batch_size: int) -> dict[str, Any]:
    from sslbench.losses import CRITERIA, build_criterion, criterion_defaults

    require_choice("method", method, list(CRITERIA))
    spec = CRITERIA[method]
    defaults = criterion_defaults(method)
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        valid = ", ".join(sorted(defaults)) or "none"
        raise ConfigError(f"--{unknown[0].replace('_', '-')} does not apply to method {method!r} "
                          f"(its hyperparameters: {valid})")
    for key, value in overrides.items():
        require_finite(key, value)  # by flag name, before the criterion's own wording
    loss = {**defaults, **overrides}
    build_criterion(method, **loss)  # type-checks the values with the criterion's own rules
    if batch_size < spec.min_batch_size:
        raise ConfigError(f"--batch-size {batch_size} is too small for {method}, which needs batch "
                          f"statistics: use --batch-size {max(spec.min_batch_size, 2)} or more")
    return loss


def resolve_train_config(options: Mapping[str, Any],
                         loss_overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """The resolved TrainConfig: defaults, then ``options["preset"]``, then explicit ``options``
    (None values mean "not given"), then automatic values for what is still unset."""
    explicit = {k: v for k, v in options.items() if v is not None}
    preset_loss: dict[str, Any] = {}
    if explicit.get("preset"):
        from sslbench.presets import preset_values

        values = preset_values(explicit["preset"], explicit.get("method", TrainConfig.method),
                               explicit.get("dim"))
        preset_loss = dict(values.pop("loss", {}))
        explicit = {**values, **explicit}
    cfg = replace(TrainConfig(), **{k: v for k, v in explicit.items() if k not in AUTO_KEYS})
    # Explicit automatic keys are checked too: --image-size 0 is an error, not "automatic".
    validate_train(replace(cfg, **{k: v for k, v in explicit.items() if k in AUTO_KEYS}))
    from sslbench.models import backbone_names

    require_choice("backbone", cfg.backbone, backbone_names())
    spec = _dataset_spec(cfg.dataset)
    image_size = explicit.get("image_size", spec.image_size or 224)
    auto = {
        "image_size": image_size,
        "cifar_stem": explicit.get("cifar_stem", image_size <= 64),
        "augment": explicit.get("augment") or default_augment(cfg.dataset),
        "warmup_epochs": explicit.get("warmup_epochs", default_warmup(cfg.epochs)),
    }
    from sslbench.data.augment import RECIPES

    require_choice("augmentation recipe", auto["augment"], list(RECIPES))
    if auto["warmup_epochs"] > cfg.epochs:
        raise ConfigError(f"--warmup-epochs {auto['warmup_epochs']} exceeds --epochs {cfg.epochs}: "
                          "lower the warm-up")
    from sslbench.losses import criterion_defaults

    applicable = {k: v for k, v in preset_loss.items() if k in criterion_defaults(cfg.method)}
    loss = resolve_loss(cfg.method, {**applicable, **(loss_overrides or {})}, cfg.batch_size)
    cfg = replace(cfg, loss=loss, **auto)
    validate_train(cfg)
    return cfg
