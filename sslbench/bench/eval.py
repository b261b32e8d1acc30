"""The fast evaluation protocol against the paper's offline protocol, on the embedded data.

A tiny pretraining run (the demo's SimCLR at d = 64: ``--preset tiny``, 10 epochs) is made in a
temporary SSLBENCH_HOME; then, each from a cold start (no cached features), the ``fast-linear``
protocol (extract the centre-crop features once, train the linear layer on them in memory) and the
paper's ``linear`` protocol (every epoch re-augments and re-encodes the images through the frozen
backbone) are timed. Both train the same head with the same recipe and batch order; the only
difference is the augmentation of the training images, ``probe_augment`` (the dataset's unless
given: flip only on ``shapes``; ``crop-flip`` measures the paper's crop there)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def _temporary_home() -> Iterator[str]:
    from sslbench.paths import environ

    with tempfile.TemporaryDirectory(prefix="sslbench-bench-") as home, \
            environ({"SSLBENCH_HOME": home}):
        yield home


def run(*, pretrain_epochs: int = 10, linear_epochs: int = 100, probe_augment: str = "auto",
        device: str = "auto") -> dict[str, Any]:
    from sslbench.config import replace
    from sslbench.db import Store
    from sslbench.device import resolve_device
    from sslbench.evaluate.features import FeatureCache
    from sslbench.evaluate.run import eval_config_for, evaluate
    from sslbench.train.loop import pretrain
    from sslbench.train.setup import resolve_train_config

    with _temporary_home() as home:
        store = Store.open(f"sqlite:///{home}/bench.sqlite")
        cfg = resolve_train_config(dict(preset="tiny", epochs=pretrain_epochs, device=device))
        pretrain(cfg, store, command=["sslbench", "bench", "eval"], progress=False)
        base = eval_config_for(store, cfg.run_id, linear_epochs=linear_epochs,
                               probe_augment=probe_augment, device=device)
        timings, top1 = {}, {}
        for protocol, key in (("fast-linear", "fast_linear_top1"), ("linear", "linear_top1")):
            cache = FeatureCache(resolve_device(device))
            t0 = time.perf_counter()
            result = evaluate(replace(base, protocol=protocol), store,
                              command=["sslbench", "bench", "eval"], cache=cache)
            timings[protocol] = time.perf_counter() - t0
            top1[protocol] = result.summary[key]
        store.close()
    return {"dataset": cfg.dataset, "backbone": cfg.backbone, "pretrain_epochs": pretrain_epochs,
            "linear_epochs": linear_epochs, "probe_augment": base.probe_augment,
            "fast_s": round(timings["fast-linear"], 2), "paper_s": round(timings["linear"], 2),
            "speedup": round(timings["linear"] / timings["fast-linear"], 1),
            "fast_top1": round(top1["fast-linear"], 2), "paper_top1": round(top1["linear"], 2),
            "top1_delta": round(top1["fast-linear"] - top1["linear"], 2),
            "target_speedup": 20.0, "target_delta": 1.0}
