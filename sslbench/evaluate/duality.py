"""The paper's duality analysis (Theorem 3.3, Lemma 3.4, Table S4) on real or random embeddings.

On a run's embeddings it is the evaluation protocol ``duality`` (an eval run, reused when
repeated, see :mod:`sslbench.evaluate.protocols`); on random Gaussian embeddings it is a
calculation and nothing is stored: there is no network whose results it would describe (stored,
it would also pass for a random-init network's evaluation in the reports).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from sslbench.config import EvalConfig

if TYPE_CHECKING:
    from sslbench.db import Store
    from sslbench.evaluate.features import FeatureCache
    from sslbench.evaluate.protocols import ProtocolResult


def duality_of_random(n: int, m: int, *, seed: int = 0) -> dict[str, Any]:
    """The analysis on an (n, m) matrix of standard Gaussian embeddings."""
    from sslbench.losses.duality import duality_report

    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, m, generator=g, dtype=torch.float64)
    return {"source": "gaussian", **duality_report(z)}


def duality_protocol(cfg: EvalConfig, cache: FeatureCache) -> ProtocolResult:
    """The ``duality`` protocol: the analysis on ``cfg.samples`` embeddings of the run."""
    from sslbench.evaluate.analysis.protocol import representations_and_embeddings
    from sslbench.evaluate.protocols import ProtocolResult
    from sslbench.losses.duality import duality_report

    _, z = representations_and_embeddings(cfg, cache)
    return ProtocolResult({k: float(v) for k, v in duality_report(z).items()})


def duality_of_run(store: Store, run_id: str, *, samples: int, device: str,
                   command: list[str]) -> dict[str, Any]:
    """The analysis on a batch of a run's embeddings, as stored by its eval run (computed the
    first time); ``reused`` says whether the stored result was already there."""
    from sslbench.evaluate.run import eval_config_for, evaluate

    cfg = eval_config_for(store, run_id, device=device, protocol="duality", samples=samples)
    result = evaluate(cfg, store, command=command)
    return {"run_id": cfg.source_run, "eval_run_id": result.run_id,
            **in_report_order(result.summary), "reused": result.reused}


def in_report_order(summary: dict[str, float]) -> dict[str, float]:
    """The stored metrics (sorted by key) in the order ``duality_report`` gives them."""
    from sslbench.losses.duality import duality_report

    # The report of a 2 x 2 batch costs nothing and lists the keys as the analysis does.
    order = {key: i for i, key in enumerate(duality_report(torch.eye(2, dtype=torch.float64)))}
    return dict(sorted(summary.items(), key=lambda kv: order.get(kv[0], len(order))))
