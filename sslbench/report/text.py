"""Text views of runs for the terminal (``sslbench runs show``, ``duality``, ``bench``): plain
text from plain data, no store access."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from typing import Any


def _to_text(renderable: Any, width: int = 120) -> str:
    from rich.console import Console

    console = Console(width=width, record=True, file=_Null(), color_system=None)
    console.print(renderable)
    return console.export_text().rstrip()


class _Null(io.StringIO):  # a text stream (what rich's Console takes) that keeps nothing
    def write(self, _: str) -> int:
        return 0

    def flush(self) -> None:
        pass


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def run_details(data: Mapping[str, Any]) -> str:
    """A readable page about one run."""
    lines = [f"run {data['run_id']}  ({data.get('kind')}, {data.get('status')})"]
    for key in ("method", "dataset", "parent_id", "created_at", "started_at", "ended_at"):
        if data.get(key):
            lines.append(f"  {key:<11} {data[key]}")
    lines.append("config:")
    lines += [f"  {k:<15} {json.dumps(v)}" for k, v in sorted((data.get("config") or {}).items())]
    if data.get("numerics"):
        lines.append("numerics (recorded at the first start, applied on every attempt):")
        lines += [f"  {k:<15} {json.dumps(v)}" for k, v in sorted(data["numerics"].items())]
    summary = data.get("summary") or {}
    if summary:
        lines.append("final metrics:")
        lines += [f"  {k:<24} {_fmt(v)}" for k, v in sorted(summary.items())
                  if not k.startswith("knn_top1/")]
    if data.get("artifacts"):
        lines.append("artifacts:")
        lines += [f"  {a.get('kind', '-'):<11} {a.get('path')} ({a.get('size') or '?'} bytes)"
                  for a in data["artifacts"]]
    if data.get("error"):  # a pruned run's is why its study stopped it, not an error
        lines.append("pruned:" if data.get("status") == "pruned" else "error:")
        lines.append("  " + str(data["error"]).strip().replace("\n", "\n  "))
    return "\n".join(lines)


def records_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Any list of flat records (benchmark rows) as an aligned table."""
    from rich.table import Table

    if not rows:
        return "(no rows)"
    table = Table(show_edge=False, pad_edge=False)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    for col in columns:
        table.add_column(col)
    for r in rows:
        table.add_row(*(_fmt(r.get(c)) for c in columns))
    return _to_text(table, width=160)


def duality_table(report: Mapping[str, Any]) -> str:
    """Theorem 3.3 both sides and the Table S4 bounds, one quantity per line."""
    lines = [f"embedding matrix: N={report['n']} samples x M={report['m']} dims"
             + (f" (run {report['run_id']})" if report.get("run_id") else "")]
    lines += [f"  {k:<28} {_fmt(v)}" for k, v in report.items()
              if k not in ("n", "m", "run_id", "eval_run_id")]
    return "\n".join(lines)
