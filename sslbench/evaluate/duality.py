"""The paper's duality analysis (Theorem 3.3, Lemma 3.4, Table S4) on real embeddings."""

from __future__ import annotations

import torch

from sslbench import paths
from sslbench.config import replace
from sslbench.errors import SSLBenchError
from sslbench.train import checkpoint as ckpt


def duality_of_random(n: int, m: int, *, seed: int = 0) -> dict:
    """The analysis on an (n, m) matrix of standard Gaussian embeddings."""
    from sslbench.losses.duality import duality_report

    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, m, generator=g, dtype=torch.float64)
    return {"source": "gaussian", **duality_report(z)}


@torch.no_grad()
def run_embeddings(store, run_id: str, samples: int, device: torch.device) -> torch.Tensor:
    """Embeddings (samples, M) of the first ``samples`` test images through a run's model."""
    from sslbench.data import iterate_batches, load_dataset
    from sslbench.data.augment import eval_transform
    from sslbench.device import memory_format, to_device
    from sslbench.models import build_model

    record = store.get_run(run_id)
    if record.kind != "pretrain" or record.status != "completed":
        raise SSLBenchError(f"run {record.run_id} is a {record.status} {record.kind} run: the "
                            "duality analysis needs a completed pretraining run")
    c = record.config
    path = paths.run_dir(record.run_id) / ckpt.CHECKPOINT
    if not path.exists():
        raise SSLBenchError(f"no checkpoint at {path}: set SSLBENCH_HOME to the folder holding "
                            "runs/")
    model = build_model(c["backbone"], c["projector"], c["dim"], cifar_stem=c["cifar_stem"])
    model.load_state_dict(ckpt.load(path)["model"])
    model = model.to(device, memory_format=memory_format(device)).eval()
    ds = load_dataset(c["dataset"], "test", c.get("data_root") or None,
                      image_size=c["image_size"])
    transform = eval_transform(image_size=c["image_size"], mean=ds.mean, std=ds.std)
    out, have = [], 0
    for images, _ in iterate_batches(ds, min(samples, 512), shuffle=False, drop_last=False):
        x = transform(to_device(images, device)).contiguous(memory_format=memory_format(device))
        out.append(model(x)[1].float().cpu())
        have += len(images)
        if have >= samples:
            break
    return torch.cat(out)[:samples].double()


def duality_of_run(store, run_id: str, *, samples: int, device: str, command: list[str]) -> dict:
    """The analysis on a batch of a run's embeddings, stored as an eval run (protocol duality)."""
    from sslbench.device import device_names, resolve_device
    from sslbench.evaluate.run import eval_config_for
    from sslbench.losses.duality import duality_report
    from sslbench.runs.environment import capture

    dev = resolve_device(device)
    cfg = replace(eval_config_for(store, run_id, device=device), protocol="duality",
                  samples=samples)
    z = run_embeddings(store, cfg.source_run, samples, dev)
    report = duality_report(z)
    store.upsert_run(run_id=cfg.run_id, kind="eval", config=cfg.to_dict(), command=command,
                     env=capture(device_names(dev)), parent_id=cfg.source_run,
                     method=cfg.method, dataset=cfg.dataset)
    store.set_status(cfg.run_id, "running")
    store.log_metrics(cfg.run_id, 0, {k: float(v) for k, v in report.items()})
    store.set_status(cfg.run_id, "completed")
    return {"run_id": cfg.source_run, "eval_run_id": cfg.run_id, **report}
