"""``sslbench report dims``: top-1 of each method across embedding dimensions.

Rows are (dataset, backbone, method, projector); columns are the embedding dimensions present,
sorted; each cell holds ``mean``, ``std`` and ``n`` over the seeds (completed runs only):

* metric ``online_*`` (e.g. ``online_top1``): the pretraining run's final summary;
* any other metric (``linear_top1``, ``knn_top1``): the latest completed evaluation child of each
  completed pretraining run (linked by ``parent_id``, else by its ``source_run`` param);
* a ``random init`` row per (dataset, backbone) for evaluation metrics: completed evaluations of
  an untrained backbone (``random_init`` true). It has no projector and does not depend on the
  embedding dimension, so the same value is shown in every column, as a reference line.

The query returns a DataFrame only; :func:`sslbench.report.render.render` formats it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from sslbench.report.base import EmptyReportError, Report
from sslbench.report.render import STATS

if TYPE_CHECKING:
    from sslbench.db import Store

ROW_LEVELS = ("dataset", "backbone", "method", "projector")
BASELINE_METHOD = "random init"
BASELINE_PROJECTOR = "-"
PROTOCOLS = {
    "online_top1": "online linear probe trained during pretraining (final epoch)",
    "linear_top1": "linear probe on the frozen backbone",
    "knn_top1": "k-NN classifier on the frozen backbone",
}


def embedding_dim(projector: Any, dim: Any) -> int | None:
    """The output width of a projector spec: its last layer, where ``d`` stands for ``dim``.

    ``("2048-d", 128) -> 128``; ``("512-512-64", 128) -> 64``; no projector -> ``dim``.
    """
    last = str(projector or "").strip().lower().split("-")[-1]
    if last.isdigit():
        return int(last)
    try:
        return int(dim)
    except (TypeError, ValueError):
        return None


def dims_frame(store: Store, *, metric: str = "linear_top1", dataset: str | None = None,
               methods: Sequence[str] | None = None) -> pd.DataFrame:
    """The dims table as a stat frame (see the module docstring); EmptyReportError if no run
    matches."""
    online = metric.startswith("online_")
    pre = store.runs_frame(kind="pretrain", status="completed", dataset=dataset,
                           method=list(methods) if methods else None,
                           params=("dim", "projector", "backbone"),
                           summaries=(metric,) if online else ())
    where = _where(dataset, methods)
    if pre.empty:
        raise EmptyReportError(f"no completed pretraining runs{where} in the store "
                               f"{store.display_url}: run `sslbench demo` or `sslbench train` "
                               "first")
    evals = None if online else store.runs_frame(
        kind="eval", status="completed", dataset=dataset,
        params=("random_init", "source_run", "backbone"), summaries=(metric,))
    cells = _cell_values(pre, evals, metric)
    if cells.empty:
        hint = ("run `sslbench train` to completion" if online else
                "evaluate them with `sslbench eval`, or pass --metric online_top1")
        raise EmptyReportError(f"no completed pretraining run{where} has a value for {metric!r}: "
                               f"{hint}")
    stats = cells.groupby(list(ROW_LEVELS) + ["dim"])["value"].agg(
        mean="mean", std="std", n="count")  # std: sample (ddof=1), NaN for one seed
    baseline = None if evals is None else _baseline(evals, metric)
    frame = _wide(stats.reset_index(), baseline, list(methods or ()))
    frame.attrs.update(metric=metric, protocol=PROTOCOLS.get(metric, metric))
    return frame


def dims_report(store: Store, *, metric: str = "linear_top1", dataset: str | None = None,
                methods: Sequence[str] | None = None) -> Report:
    """:func:`dims_frame` with its title and caption."""
    frame = dims_frame(store, metric=metric, dataset=dataset, methods=methods)
    title = f"{metric} (%) by embedding dimension"
    caption = (f"Protocol: {PROTOCOLS.get(metric, metric)}. Rows: method x projector; columns: "
               "embedding dimension. Cells: mean ± std over seeds (n runs), completed runs only.")
    if (frame.index.get_level_values("method") == BASELINE_METHOD).any():
        caption += (f" '{BASELINE_METHOD}': an untrained backbone with the same protocol; it has "
                    "no projector, so its value is repeated in every column.")
    return Report(frame=frame, title=title, caption=caption, notes=dict(frame.attrs))


def _where(dataset: str | None, methods: Sequence[str] | None) -> str:
    parts = ([f"dataset {dataset}"] if dataset else []) + (
        [f"method {', '.join(methods)}"] if methods else [])
    return f" ({'; '.join(parts)})" if parts else ""


def _is_random(evals: pd.DataFrame) -> pd.Series:
    flag = evals["param.random_init"].map(lambda v: v is True or v == 1)
    no_source = evals["parent_id"].isna() & evals["param.source_run"].isna()
    return flag | (evals["param.random_init"].isna() & no_source)


def _cell_values(pre: pd.DataFrame, evals: pd.DataFrame | None, metric: str) -> pd.DataFrame:
    """One row per completed pretraining run with a value: ROW_LEVELS, dim, value."""
    if evals is None:
        value = pre[f"final.{metric}"]
    else:
        value = pre["run_id"].map(_latest_child_values(evals, metric))
    cells = pd.DataFrame({
        "dataset": pre["dataset"].fillna("?").astype(str),
        "backbone": pre["param.backbone"].fillna("?").astype(str),
        "method": pre["method"].fillna("?").astype(str),
        "projector": pre["param.projector"].fillna("none").astype(str),
        "dim": [embedding_dim(p, d) for p, d in zip(pre["param.projector"], pre["param.dim"])],
        "value": value.astype("float64"),
    })
    return cells.dropna(subset=["dim", "value"]).astype({"dim": "int64"})


def _latest_child_values(evals: pd.DataFrame, metric: str) -> pd.Series:
    """``{parent run id: value of its latest completed evaluation that has the metric}``."""
    children = evals[~_is_random(evals)]
    parent = children["parent_id"].fillna(children["param.source_run"])
    children = children.assign(parent=parent, value=children[f"final.{metric}"])
    children = children.dropna(subset=["parent", "value"])
    children = children.sort_values(["ended_at", "created_at", "run_id"], na_position="first")
    return children.groupby("parent")["value"].last()


def _baseline(evals: pd.DataFrame, metric: str) -> pd.DataFrame:
    """``dataset, backbone, mean, std, n`` of the random-init evaluations."""
    random = evals[_is_random(evals)].assign(value=lambda f: f[f"final.{metric}"])
    random = random.dropna(subset=["value"])
    keys = [random["dataset"].fillna("?").astype(str).rename("dataset"),
            random["param.backbone"].fillna("?").astype(str).rename("backbone")]
    stats = random.groupby(keys)["value"].agg(
        mean="mean", std="std", n="count")
    return stats.reset_index()


def _method_key(order: list[str]) -> Any:
    return lambda method: (order.index(method) if method in order else len(order), method)


def _wide(stats: pd.DataFrame, baseline: pd.DataFrame | None, order: list[str]) -> pd.DataFrame:
    """Long per-cell stats (+ baseline) -> rows ROW_LEVELS, columns (dim, stat)."""
    dims = sorted(stats["dim"].unique().tolist())
    columns = pd.MultiIndex.from_product([dims, STATS], names=["dim", "stat"])
    by_row: dict[tuple[str, ...], dict[tuple[int, str], float]] = {}
    for rec in stats.to_dict("records"):
        key = tuple(rec[level] for level in ROW_LEVELS)
        by_row.setdefault(key, {}).update({(rec["dim"], s): rec[s] for s in STATS})
    method_key = _method_key(order)
    rows = sorted(by_row, key=lambda k: (k[0], k[1], method_key(k[2]), k[3]))
    if baseline is not None:
        for rec in baseline.to_dict("records"):
            groups = [i for i, k in enumerate(rows) if k[:2] == (rec["dataset"], rec["backbone"])]
            if not groups:
                continue  # no pretraining run to compare with
            key = (rec["dataset"], rec["backbone"], BASELINE_METHOD, BASELINE_PROJECTOR)
            by_row[key] = {(d, s): rec[s] for d in dims for s in STATS}
            rows.insert(groups[-1] + 1, key)
    index = pd.MultiIndex.from_tuples(rows, names=list(ROW_LEVELS))
    frame = pd.DataFrame([[by_row[r].get(c, float("nan")) for c in columns] for r in rows],
                         index=index, columns=columns, dtype="float64")
    n_columns = [c for c in columns if c[1] == "n"]
    frame[n_columns] = frame[n_columns].fillna(0).astype("int64")
    return frame
