"""``sslbench report NAME``: the paper's tables and figures, regenerated from the store.

Every report takes ``--select`` and the run filters; some take options of their own
(:func:`sslbench.report.report_options`). An option the named report does not take is refused
in one line naming it and the report, before the store is opened: silently ignoring it would
print a table that looks like an answer to a question that was not asked.
"""

from __future__ import annotations

from pathlib import Path

import typer

from sslbench.cli.common import Choices, app, flag, open_store, refuse
from sslbench.errors import ConfigError


def _reports() -> list[str]:
    from sslbench.report import REPORTS

    return list(REPORTS)


def _output_formats() -> tuple[str, ...]:
    from sslbench.report import OUTPUT_FORMATS

    return OUTPUT_FORMATS


def _selects() -> tuple[str, ...]:
    from sslbench.report.protocols import SELECTS

    return SELECTS


REPORTS = Choices("report", _reports, extra=("all",))
OUTPUT_FORMATS = Choices("--format", _output_formats)
SELECTS = Choices("--select", _selects)
#: The options below that only some reports take, by their name in report_options().
OWN_OPTIONS = ("metric", "dim", "run_id", "complete")
#: What `report all` writes, whatever --format says.
ALL_FORMAT = "html"


@app.command()
def report(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The report, or all (one HTML file, needs --out).",
                               callback=REPORTS.check),
    study: str | None = typer.Argument(None, help="tune: the study (default: every study "
                                       "in the store)."),
    fmt: str = typer.Option("table", "--format", help="Output (figures need --out).",
                            callback=OUTPUT_FORMATS.check),
    out: Path | None = typer.Option(None, help="File or folder to write to."),
    select: str = typer.Option("final", help="Which value of each run's metric: the final "
                               "or the best.",
                               callback=SELECTS.check),
    metric: str | None = typer.Option(None, help="dims: the metric to tabulate (default: "
                                      "fast_linear_top1)."),
    sweep: str | None = typer.Option(None, help="Only runs of this sweep."),
    dataset: str | None = typer.Option(None, help="Only this dataset."),
    backbone: str | None = typer.Option(None, help="Only this backbone."),
    epochs: int | None = typer.Option(None, help="Only runs of this many epochs."),
    tag: str | None = typer.Option(None, help="Only runs with this tag."),
    since: str | None = typer.Option(None, help="Only runs created on or after YYYY-MM-DD."),
    until: str | None = typer.Option(None, help="Only runs created on or before YYYY-MM-DD."),
    dim: int | None = typer.Option(None, help="spectra: only this embedding dim."),
    run_id: str | None = typer.Option(None, "--run-id", help="cka: this comparison run."),
    complete: bool | None = typer.Option(None, "--complete/--partial", help="Grid reports: "
                                         "for runs in the paper's setting, list the paper's "
                                         "whole grid [complete] or only cells with runs."),
) -> None:
    """Regenerate the paper's tables and figures from the store, beside the published values."""
    from sslbench.report import (
        ReportFilters,
        build_report,
        report_options,
        write_html,
        write_report,
    )

    takes = () if name == "all" else tuple(report_options(name))
    _refuse_other_options(ctx, name, takes)
    if study is not None and "study" not in takes:
        raise ConfigError(f"report {name} takes no STUDY argument ({study!r}): only report "
                          "tune names a study")
    filters = ReportFilters.from_options(sweep=sweep, dataset=dataset, backbone=backbone,
                                         epochs=epochs, tag=tag, since=since, until=until)
    if name == "all":
        if out is None:
            raise ConfigError("report all writes one HTML file: give --out DIR")
        path = write_html(open_store(create=False), out, filters=filters, select=select)
        typer.echo(f"wrote {path}")
        return
    # --dataset filters every report; dims also takes it as an option (its baseline rows).
    given = dict(metric=metric, dataset=dataset, dim=dim, run_id=run_id, complete=complete,
                 study=study)
    options = {k: v for k, v in given.items() if k in takes}
    result = build_report(name, open_store(create=False), select=select, filters=filters,
                          **options)
    text = write_report(result, fmt, out)
    typer.echo(text if out is None else f"wrote {text}")


def _refuse_other_options(ctx: typer.Context, name: str, takes: tuple[str, ...]) -> None:
    """A one-line error for an option of OWN_OPTIONS that report ``name`` does not take, and
    for a --format other than HTML with ``all``."""
    own = [flag(ctx, option) for option in OWN_OPTIONS if option in takes]
    which = f"its own options: {', '.join(own)}" if own else "it has no options of its own"
    refuse(ctx, [o for o in OWN_OPTIONS if o not in takes],
           f"does not apply to report {name} ({which})")
    if name == "all" and ctx.params["fmt"] != ALL_FORMAT:
        refuse(ctx, ["fmt"], f"does not apply to report all, which writes one {ALL_FORMAT} "
               "file")
