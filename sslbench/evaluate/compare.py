"""Linear CKA between runs (Figure S2), including a random-init network of the same design."""

from __future__ import annotations

from sslbench.config import replace, run_id_of
from sslbench.errors import ConfigError
from sslbench.evaluate.analysis import cka_matrix


def cka_between(store, run_ids: list[str], *, samples: int, random_baseline: bool,
                device: str, command: list[str]) -> dict:
    """CKA of the runs' test-split representations; stored as an eval run (protocol cka)."""
    from sslbench.device import device_names, resolve_device
    from sslbench.evaluate.features import FeatureCache
    from sslbench.evaluate.run import eval_config_for
    from sslbench.runs.environment import capture

    if len(run_ids) + int(random_baseline) < 2:
        raise ConfigError("CKA needs at least two runs (or one run and --random)")
    configs = [eval_config_for(store, r, device=device, train_samples=samples) for r in run_ids]
    first = configs[0]
    for cfg in configs[1:]:
        if (cfg.dataset, cfg.image_size) != (first.dataset, first.image_size):
            raise ConfigError(f"runs {first.source_run} and {cfg.source_run} were trained on "
                              f"different data ({first.dataset}/{first.image_size}px vs "
                              f"{cfg.dataset}/{cfg.image_size}px): CKA needs the same inputs")
    labels = [f"{c.method}-{c.dim}-{c.source_run}" for c in configs]
    ids = [c.source_run for c in configs]
    if random_baseline:
        configs.append(replace(first, source_run=None, method="random"))
        labels.append("random")
        ids.append("random")
    cache = FeatureCache(resolve_device(device))
    feats = [cache.features(c, "test")[0][:samples] for c in configs]
    matrix = cka_matrix(feats)
    identity = {"protocol": "cka", "runs": ids, "samples": samples, "dataset": first.dataset}
    eval_id = run_id_of("eval", identity)
    store.upsert_run(run_id=eval_id, kind="eval", config={**identity, "labels": labels},
                     command=command, env=capture(device_names(cache.device)),
                     method="cka", dataset=first.dataset)
    store.set_status(eval_id, "running")
    store.log_metrics(eval_id, 0, {f"cka/{i}/{j}": float(matrix[i, j])
                                   for i in range(len(ids)) for j in range(i, len(ids))})
    store.set_status(eval_id, "completed")
    return {"eval_run_id": eval_id, "runs": ids, "labels": labels, "matrix": matrix.tolist()}
