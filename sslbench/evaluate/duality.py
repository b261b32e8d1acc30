"""The paper's duality analysis (Theorem 3.3, Lemma 3.4, Table S4) on real embeddings."""

from __future__ import annotations

import torch

from sslbench.config import replace


def duality_of_random(n: int, m: int, *, seed: int = 0) -> dict:
    """The analysis on an (n, m) matrix of standard Gaussian embeddings."""
    from sslbench.losses.duality import duality_report

    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, m, generator=g, dtype=torch.float64)
    return {"source": "gaussian", **duality_report(z)}


def duality_of_run(store, run_id: str, *, samples: int, device: str, command: list[str]) -> dict:
    """The analysis on a batch of a run's embeddings, stored as an eval run (protocol duality)."""
    from sslbench.device import device_names, resolve_device
    from sslbench.evaluate.analyse import representations_and_embeddings
    from sslbench.evaluate.features import FeatureCache
    from sslbench.evaluate.run import eval_config_for
    from sslbench.losses.duality import duality_report
    from sslbench.runs.environment import capture

    dev = resolve_device(device)
    cfg = replace(eval_config_for(store, run_id, device=device), protocol="duality",
                  samples=samples)
    _, z = representations_and_embeddings(cfg, FeatureCache(dev))
    report = duality_report(z)
    store.upsert_run(run_id=cfg.run_id, kind="eval", config=cfg.to_dict(), command=command,
                     env=capture(device_names(dev)), parent_id=cfg.source_run,
                     method=cfg.method, dataset=cfg.dataset)
    store.set_status(cfg.run_id, "running")
    store.log_metrics(cfg.run_id, 0, {k: float(v) for k, v in report.items()})
    store.set_status(cfg.run_id, "completed")
    return {"run_id": cfg.source_run, "eval_run_id": cfg.run_id, **report}
