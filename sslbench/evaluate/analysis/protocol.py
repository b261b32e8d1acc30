"""The ``analysis`` protocol: what the paper measures beyond accuracy, on one batch of a run.

On ``samples`` training images (a fixed, seeded selection) it computes, for representations and
embeddings: singular-value spectra and RankMe (Figure S5), negative-pair cosine similarities
(Figure S4), the Theorem 3.3 / Lemma 3.4 quantities of Table S4 on the embeddings, and draws the
spectra and the covariance / Gram matrices (Figure S8) as PNG files.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from sslbench import checkpoint as ckpt
from sslbench.config import EvalConfig
from sslbench.errors import SSLBenchError
from sslbench.evaluate.analysis import measures as A

if TYPE_CHECKING:
    from sslbench.evaluate.features import FeatureCache

HIST_BINS = 80


@torch.no_grad()
def representations_and_embeddings(cfg: EvalConfig,
                                    cache: FeatureCache) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, z) of ``cfg.samples`` training images through the run's full model (eval mode)."""
    from sslbench import paths
    from sslbench.data import iterate_batches
    from sslbench.data.augment import eval_transform
    from sslbench.device import memory_format, module_to_device, to_device
    from sslbench.models import build_model

    torch.manual_seed(cfg.seed)
    projector = cfg.projector if cfg.dim > 0 else "none"
    model = build_model(cfg.backbone, projector, max(cfg.dim, 1), cifar_stem=cfg.cifar_stem)
    if cfg.source_run is not None:
        path = paths.run_dir(cfg.source_run) / ckpt.CHECKPOINT
        if not path.exists():
            raise SSLBenchError(f"no checkpoint at {path}: set SSLBENCH_HOME to the folder "
                                "holding runs/")
        from sslbench.config import TrainConfig

        payload = ckpt.load(path)
        ckpt.check_run(payload, path, cfg.source_run, TrainConfig)
        model.load_state_dict(payload["model"])
    device = cache.device
    model = module_to_device(model, device).eval()
    ds = cache.dataset(cfg, "train")
    transform = eval_transform(image_size=cfg.image_size, mean=ds.mean, std=ds.std)
    hs, zs, have = [], [], 0
    for images, _ in iterate_batches(ds, min(cfg.samples, 512), shuffle=True, drop_last=False,
                                     seed=cfg.seed):
        x = transform(to_device(images, device)).contiguous(memory_format=memory_format(device))
        h, z = model(x)
        hs.append(h.float().cpu())
        zs.append(z.float().cpu())
        have += len(images)
        if have >= cfg.samples:
            break
    return torch.cat(hs)[:cfg.samples].double(), torch.cat(zs)[:cfg.samples].double()


def analyse(cfg: EvalConfig, cache: FeatureCache, out_dir: Path
            ) -> tuple[dict[str, float], dict[str, list[float]], list[tuple[str, Path]]]:
    """(scalar metrics, series by key, [(artifact kind, png path)])."""
    from sslbench.losses.duality import duality_report

    h, z = representations_and_embeddings(cfg, cache)
    sv_h, sv_z = A.singular_values(h), A.singular_values(z)
    hist = A.cosine_histogram(z, bins=HIST_BINS)
    metrics = {"rankme_repr": A.effective_rank(sv_h), "rankme_emb": A.effective_rank(sv_z),
               "neg_cos_mean": hist["mean"], "neg_cos_var": hist["var"]}
    metrics.update({k: float(v) for k, v in duality_report(z).items()})
    series = {"sv_repr": sv_h.tolist(), "sv_emb": sv_z.tolist(), "neg_cos_hist": hist["counts"]}
    from sslbench.report.figures import run_matrices_figure, run_spectra_figure, save_figure

    out_dir.mkdir(parents=True, exist_ok=True)
    drawn = {"spectra.png": run_spectra_figure(sv_h.numpy(), sv_z.numpy()),
             "matrices.png": run_matrices_figure(A.covariance(z).numpy(), A.gram(z).numpy())}
    figures = []
    for name, figure in drawn.items():
        save_figure(figure, out_dir / name, "png")
        figures.append(("figure", out_dir / name))
    return metrics, series, figures
