"""Linear CKA between runs (Figure S2), including a random-init network of the same design.

A comparison is an evaluation like the others (protocol ``cka``, run by
:func:`sslbench.evaluate.run.evaluate`, so repeating it reuses the stored matrix), but it looks
at several networks, so it has its own config, :class:`CKAConfig`. Its run id and stored config
are those comparisons always had (the report ``cka`` reads them): the id hashes the protocol,
the ordered run ids (``"random"`` for the random-init network), ``samples`` and the dataset; the
config adds the networks' ``labels``; the run has method ``cka`` and no parent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sslbench.config import EvalConfig, replace, run_id_of
from sslbench.errors import ConfigError
from sslbench.evaluate.analysis.measures import cka_matrix

if TYPE_CHECKING:
    from sslbench.db import Store
    from sslbench.evaluate.features import FeatureCache
    from sslbench.evaluate.protocols import ProtocolResult

RANDOM = "random"


@dataclass(frozen=True)
class CKAConfig:
    """The networks compared (pretrained runs in the order given, then the random-init network
    if any) and the number of test images whose representations are compared."""

    networks: tuple[EvalConfig, ...]
    samples: int

    kind = "eval"

    @property
    def protocol(self) -> str:
        return "cka"

    @property
    def method(self) -> str:
        return "cka"  # how the store (and the report) tells comparisons apart

    @property
    def source_run(self) -> str | None:
        return None  # several parents: none is recorded

    @property
    def dataset(self) -> str:
        return self.networks[0].dataset

    @property
    def device(self) -> str:
        return self.networks[0].device

    @property
    def run_ids(self) -> list[str]:
        return [net.source_run or RANDOM for net in self.networks]

    @property
    def labels(self) -> list[str]:
        return [RANDOM if net.random_init else f"{net.method}-{net.dim}-{net.source_run}"
                for net in self.networks]

    def identity(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "runs": self.run_ids, "samples": self.samples,
                "dataset": self.dataset}

    @property
    def run_id(self) -> str:
        return run_id_of(self.kind, self.identity())

    def to_dict(self) -> dict[str, Any]:
        return {**self.identity(), "labels": self.labels}


def cka_config(store: Store, run_ids: list[str], *, samples: int, random_baseline: bool,
               device: str) -> CKAConfig:
    """The comparison of ``run_ids`` (and a random-init network of the first one's design)."""
    from sslbench.evaluate.run import eval_config_for

    if len(run_ids) + int(random_baseline) < 2:
        raise ConfigError("CKA needs at least two runs (or one run and --random)")
    configs = [eval_config_for(store, r, device=device, train_samples=samples) for r in run_ids]
    first = configs[0]
    for cfg in configs[1:]:
        if (cfg.dataset, cfg.image_size) != (first.dataset, first.image_size):
            raise ConfigError(f"runs {first.source_run} and {cfg.source_run} were trained on "
                              f"different data ({first.dataset}/{first.image_size}px vs "
                              f"{cfg.dataset}/{cfg.image_size}px): CKA needs the same inputs")
    if random_baseline:
        configs.append(replace(first, source_run=None, method=RANDOM))
    return CKAConfig(tuple(configs), samples)


def cka_protocol(cfg: CKAConfig, cache: FeatureCache) -> ProtocolResult:
    """The ``cka`` protocol: ``cka/<i>/<j>`` (i <= j) between the networks' representations of
    the first ``samples`` test images."""
    from sslbench.evaluate.protocols import ProtocolResult

    matrix = cka_matrix([cache.features(net, "test")[0][:cfg.samples] for net in cfg.networks])
    k = len(cfg.networks)
    return ProtocolResult({f"cka/{i}/{j}": float(matrix[i, j])
                           for i in range(k) for j in range(i, k)})


def cka_between(store: Store, run_ids: list[str], *, samples: int, random_baseline: bool,
                device: str, command: list[str]) -> dict[str, Any]:
    """The CKA matrix of the runs' test-split representations, as stored by the comparison's
    eval run (computed the first time); ``reused`` says whether it was already there."""
    from sslbench.evaluate.run import evaluate

    cfg = cka_config(store, run_ids, samples=samples, random_baseline=random_baseline,
                     device=device)
    result = evaluate(cfg, store, command=command)
    k = len(cfg.networks)
    matrix = [[result.summary[f"cka/{min(i, j)}/{max(i, j)}"] for j in range(k)]
              for i in range(k)]
    return {"eval_run_id": result.run_id, "runs": cfg.run_ids, "labels": cfg.labels,
            "matrix": matrix, "reused": result.reused}
