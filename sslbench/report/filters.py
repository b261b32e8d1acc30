"""Which runs a report uses: ``--sweep``, ``--dataset``, ``--backbone``, ``--epochs``, ``--tag``,
``--since``, ``--until``.

Filters apply to pretraining runs. Evaluations are matched through their pretraining run (an
evaluation of a kept run is kept); random-init baselines, which have no pretraining run, are
kept when their dataset and backbone match (sweep, tag, epochs and dates do not apply to them).
Dates are calendar days in UTC, both ends included.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields

import pandas as pd

from sslbench.db.values import JOB_TAG
from sslbench.errors import ConfigError

SWEEP_TAG_PREFIX = "sweep:"


@dataclass(frozen=True)
class ReportFilters:
    """Conditions every run of a report must meet (None: no condition)."""

    sweep: str | None = None
    dataset: str | None = None
    backbone: str | None = None
    epochs: int | None = None
    tag: str | None = None
    since: dt.date | None = None
    until: dt.date | None = None

    def __post_init__(self) -> None:
        if self.since and self.until and self.since > self.until:
            raise ConfigError(f"--since {self.since} is after --until {self.until}: swap them")
        if self.epochs is not None and (isinstance(self.epochs, bool) or self.epochs <= 0):
            raise ConfigError(f"--epochs must be a positive integer, got {self.epochs!r}")
        if self.tag is not None and self.tag.startswith(JOB_TAG):
            raise ConfigError(f"--tag {self.tag}: a Slurm job tag records where runs ran, and "
                              "reports group runs by what they are: use --sweep NAME (runs "
                              "watch --sweep NAME shows each run's job)")

    @classmethod
    def from_options(cls, **options: object) -> ReportFilters:
        """Filters from CLI-style values: dates may be ``YYYY-MM-DD`` text, epochs text or int;
        None and "" mean "not given"."""
        given = {k: v for k, v in options.items() if v is not None and v != ""}
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(given) - names)
        if unknown:
            raise ConfigError(f"unknown report filter {unknown[0]!r}: use "
                              f"{', '.join(sorted(names))}")
        for key in ("since", "until"):
            if key in given:
                given[key] = parse_date(key, given[key])
        if "epochs" in given:
            try:
                given["epochs"] = int(str(given["epochs"]))
            except ValueError:
                raise ConfigError(f"--epochs must be an integer, got {given['epochs']!r}") from None
        return cls(**given)  # type: ignore[arg-type]

    @property
    def tags(self) -> tuple[str, ...]:
        """The tags a run must carry (the sweep's tag and ``--tag``)."""
        return tuple(t for t in ((f"{SWEEP_TAG_PREFIX}{self.sweep}" if self.sweep else None),
                                 self.tag) if t)

    def describe(self) -> str:
        """``"sweep s1; dataset cifar10"``; ``""`` when nothing is filtered."""
        parts = [f"{f.name} {getattr(self, f.name)}" for f in fields(self)
                 if getattr(self, f.name) is not None]
        return "; ".join(parts)

    def keep(self, runs: pd.DataFrame) -> pd.Series:
        """Boolean mask over a frame with columns dataset, backbone, epochs, tags and (with
        ``since`` or ``until``) created_at."""
        mask = pd.Series(True, index=runs.index)
        if runs.empty:
            return mask
        if self.dataset is not None:
            mask &= runs["dataset"] == self.dataset
        if self.backbone is not None:
            mask &= runs["backbone"] == self.backbone
        if self.epochs is not None:
            mask &= runs["epochs"] == self.epochs
        for tag in self.tags:
            mask &= runs["tags"].map(lambda tags, t=tag: t in (tags or ()))
        if self.since is None and self.until is None:
            return mask
        day = runs["created_at"].dt.tz_convert("UTC").dt.date
        if self.since is not None:
            mask &= day >= self.since
        if self.until is not None:
            mask &= day <= self.until
        return mask

    def keep_baselines(self, runs: pd.DataFrame) -> pd.Series:
        """Mask for random-init baselines: dataset and backbone only."""
        mask = pd.Series(True, index=runs.index)
        if self.dataset is not None:
            mask &= runs["dataset"] == self.dataset
        if self.backbone is not None:
            mask &= runs["backbone"] == self.backbone
        return mask


def parse_date(name: str, value: object) -> dt.date:
    """A ``YYYY-MM-DD`` text (or a date) as a date; ConfigError otherwise."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(f"--{name} {value!r} is not a date: use YYYY-MM-DD") from None
