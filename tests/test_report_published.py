"""The published numbers sslbench ships in ``sslbench/report/published/``: each CSV is found as
package data, parses, has the table's shape, holds the paper's cells as printed (rows and spot
values typed from the paper's Tables S2-S6 and Figure S2 by hand, as literals below) and is
parsed correctly; an extra test compares them cell for cell with a reference copy of the tables
when a ``shared`` folder beside the checkout holds one (see ``REFERENCE``)."""

from __future__ import annotations

import csv
import math
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from sslbench.report import published as P

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "spec" / "reference"
_CKA_LABELS = ["V-1024", "V-2048", "V-8192", "Vexp-1024", "Vexp-2048", "Vexp-8192", "Vctr-1024",
               "Vctr-2048", "Vctr-8192", "S-1024", "S-2048", "S-8192", "Random"]
#: name -> (header, number of data rows), as the paper prints each table.
SHAPES = {
    "table_s5_online_top1.csv": (["method", "projector", "dim", "top1"], 100),
    "table_s2_s3_online_offline.csv": (["method", "projector", "dim", "online_top1",
                                        "offline_top1"], 10),
    "table_s4_norm_bounds.csv": (["experiment", "projector", *P.TABLE_S4_COLUMNS], 6),
    "table_s6_hparams.csv": (["method", "dims", "batch_size", "base_lr", "sim", "var", "cov",
                              "tau"], 9),
    "fig_s2_cka.csv": (["", *_CKA_LABELS], 13),
}
NAMES = tuple(SHAPES)
#: One row of each table, cell for cell as printed in the paper.
PRINTED_ROWS = [
    ("table_s5_online_top1.csv", ["VICReg-ctr", "2048-d", "256", "64.79"]),
    ("table_s5_online_top1.csv", ["SimCLR-Orig", "2048-2048-d", "8192", "65.70"]),
    ("table_s5_online_top1.csv", ["VICReg", "d-d-d", "512", "63.50"]),
    ("table_s2_s3_online_offline.csv", ["VICReg-exp", "8192-8192-d", "8192", "67.93", "68.18"]),
    ("table_s2_s3_online_offline.csv", ["VICReg", "8192-8192-d", "1024", "68.06", "67.96"]),
    ("table_s4_norm_bounds.csv", ["SimCLR", "8192-8192-8192", "128", "129.43", "1M", "65k",
                                  "113k", "67M"]),
    ("table_s6_hparams.csv", ["VICReg-ctr", "all", "1024", "0.6", "1", "1", "1", "0.15"]),
    ("table_s6_hparams.csv", ["SimCLR-Tuned", "all", "2048", "0.5", "", "", "", "0.15"]),
    ("fig_s2_cka.csv", ["VICReg-exp-2048", "0.91", "0.91", "0.91", "0.92", "1", "0.92", "0.9",
                        "0.9", "0.9", "0.88", "0.88", "0.88", "0.13"]),
]


def _cells(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def _shipped(name: str) -> list[list[str]]:
    """The rows of a shipped CSV, read as package data the way the reports read it."""
    text = resources.files("sslbench.report").joinpath("published", name).read_text("utf-8")
    return list(csv.reader(text.splitlines()))


@pytest.mark.parametrize("name", NAMES)
def test_shipped_csv_has_the_tables_header_and_shape(name):
    header, rows = SHAPES[name]
    cells = _shipped(name)
    assert cells[0] == header
    assert len(cells) == 1 + rows
    assert all(len(row) == len(header) for row in cells)


@pytest.mark.parametrize("name, row", PRINTED_ROWS,
                         ids=[f"{n[:8]}-{r[0]}" for n, r in PRINTED_ROWS])
def test_shipped_csv_holds_the_papers_row_as_printed(name, row):
    assert row in _shipped(name)[1:]


def test_accuracies_are_printed_with_two_decimals():
    printed = re.compile(r"^\d\d\.\d\d$")  # every Table S2/S3/S5 accuracy, e.g. 68.00
    for name, first in (("table_s5_online_top1.csv", 3), ("table_s2_s3_online_offline.csv", 3)):
        for row in _shipped(name)[1:]:
            assert all(printed.match(cell) and 55 < float(cell) < 70 for cell in row[first:]), row


def test_shipped_csvs_equal_the_reference_copy_cell_for_cell():
    """Extra: only where a reference copy of the tables sits beside the checkout."""
    if not REFERENCE.is_dir():
        pytest.skip(f"no reference copy at {REFERENCE}: the shipped CSVs are checked above")
    for name in NAMES:
        assert _shipped(name) == _cells(REFERENCE / name), name


def test_table_s5_spot_checks_from_the_paper():
    s5 = P.table_s5()
    assert len(s5) == 100
    # Typed from the paper's Table S5 (Appendix K).
    assert s5[("VICReg", "d-d-d", 256)] == 61.36
    assert s5[("VICReg", "8192-8192-d", 2048)] == 68.07  # S2 prints 68.06 for the same cell
    assert s5[("VICReg-exp", "2048-d", 2048)] == 64.31
    assert s5[("VICReg-ctr", "8192-8192-d", 256)] == 67.72
    assert s5[("SimCLR-Orig", "8192-8192-d", 512)] == 66.33
    assert s5[("SimCLR-Tuned", "8192-8192-d", 8192)] == 68.68
    assert s5[("SimCLR-Tuned", "2048-2048-d", 8192)] == 67.65
    # The paper's own consistency: d-d-d at 8192 is 8192-8192-8192.
    for method in P.PAPER_METHODS:
        assert s5[(method, "d-d-d", 8192)] == s5[(method, "8192-8192-d", 8192)]
    assert {k[0] for k in s5} == set(P.PAPER_METHODS)
    assert {k[1] for k in s5} == set(P.PAPER_FAMILIES)
    assert {k[2] for k in s5} == set(P.PAPER_DIMS)


def test_tables_s2_s3_spot_checks_and_the_stated_regression():
    table = P.table_s2_s3()
    assert table[("VICReg", "8192-8192-d", 2048, "online")] == 68.06
    assert table[("VICReg", "8192-8192-d", 8192, "offline")] == 68.02
    assert table[("VICReg-exp", "8192-8192-d", 8192, "online")] == 67.93
    assert table[("VICReg-exp", "8192-8192-d", 8192, "offline")] == 68.18
    keys = sorted({k[:3] for k in table})
    online = [table[k + ("online",)] for k in keys]
    offline = [table[k + ("offline",)] for k in keys]
    slope, intercept = np.polyfit(online, offline, 1)
    r2 = np.corrcoef(online, offline)[0, 1] ** 2
    # The paper rounds these to slope 0.97, intercept 2.1, R² 1.0.
    assert round(slope, 2) == P.PAPER_REGRESSION["slope"]
    assert round(intercept, 1) == P.PAPER_REGRESSION["intercept"]
    assert round(r2, 1) == P.PAPER_REGRESSION["r2"]


def test_parse_number():
    assert P.parse_number("128.19") == 128.19
    assert P.parse_number("65k") == 65_000
    assert P.parse_number("1M") == 1_000_000
    assert P.parse_number("433.54") == 433.54
    assert math.isnan(P.parse_number(""))


def test_table_s4_values_and_exact_bounds():
    rows = {(r["experiment"], r["projector"]): r for r in P.table_s4()}
    assert len(rows) == 6
    vic = rows[("VICReg", "8192-8192-8192")]
    assert vic["sum_row4_colsnormalized"] == 128.19 and vic["sum_col4_rowsnormalized"] == 83_000
    assert vic["printed"]["n2"] == "1M" and vic["printed"]["m2"] == "67M"
    simclr = rows[("SimCLR", "8192-8192-512")]
    assert simclr["sum_col4_rowsnormalized"] == 433.54 and simclr["m"] == 512
    assert rows[("Random", "8192-8192-8192")]["sum_row4_colsnormalized"] == 361.34
    for row in rows.values():
        n, m = 1024, row["m"]
        assert row["n2_over_m"] == n * n / m and row["m2"] == m * m
        # Every printed bound is the exact bound truncated to its unit (65536 -> "65k").
        for key in ("n2_over_m", "n2", "m2_over_n", "m2"):
            printed = row["printed"][key]
            digits = printed.rstrip("kM")
            unit = P.parse_number(printed) / float(digits)
            assert float(digits) == math.floor(row[key] / unit)


def _s6(method: str, dim: int) -> dict[str, str]:
    row = P.s6_row(method, dim)
    assert row is not None, (method, dim)
    return row


def test_table_s6_rows_and_lookup():
    assert len(P.table_s6()) == 9
    assert _s6("VICReg", 256)["cov"] == "4"
    assert _s6("VICReg", 8192)["cov"] == "0.5"
    assert P.s6_row("VICReg", 384) is None
    assert _s6("VICReg-exp", 512)["base_lr"] == "0.5"
    assert _s6("VICReg-exp", 8192)["base_lr"] == "0.8"
    assert _s6("VICReg-ctr", 64)["tau"] == "0.15"
    tuned = _s6("SimCLR-Tuned", 2048)
    assert (tuned["batch_size"], tuned["base_lr"], tuned["tau"], tuned["sim"]) == (
        "2048", "0.5", "0.15", "")
    assert P.s6_row("SimCLR-Orig", 512) is None


def test_fig_s2_cka_is_symmetric_with_unit_diagonal():
    labels, matrix = P.fig_s2_cka()
    m = np.array(matrix)
    assert labels[0] == "VICReg-1024" and labels[-1] == "Random" and m.shape == (13, 13)
    assert np.array_equal(m, m.T) and np.all(np.diag(m) == 1)
    lookup = P.cka_lookup()
    assert lookup[("VICReg-exp-1024", "SimCLR-2048")] == 0.87
    assert lookup[("SimCLR-1024", "SimCLR-2048")] == 0.96
    assert lookup[("Random", "VICReg-2048")] == 0.15
