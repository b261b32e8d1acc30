"""The published numbers shipped in sslbench/report/published: identical to the shared reference
CSVs cell for cell, equal to PAPER.md's tables (spot checks typed from the paper by hand), and
parsed correctly."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from sslbench.report import published as P

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "spec" / "reference"
NAMES = ("table_s5_online_top1.csv", "table_s2_s3_online_offline.csv",
         "table_s4_norm_bounds.csv", "table_s6_hparams.csv", "fig_s2_cka.csv")


def _cells(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


@pytest.mark.parametrize("name", NAMES)
def test_shipped_csv_equals_the_reference_cell_for_cell(name):
    if not (REFERENCE / name).exists():
        pytest.skip(f"reference folder {REFERENCE} is absent")
    shipped = Path(P.__file__).parent / "published" / name
    assert _cells(shipped) == _cells(REFERENCE / name)


def test_table_s5_spot_checks_from_the_paper():
    s5 = P.table_s5()
    assert len(s5) == 100
    # Typed from PAPER.md Table S5.
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
    online = [table[(*k, "online")] for k in keys]
    offline = [table[(*k, "offline")] for k in keys]
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


def test_table_s6_rows_and_lookup():
    assert len(P.table_s6()) == 9
    assert P.s6_row("VICReg", 256)["cov"] == "4"
    assert P.s6_row("VICReg", 8192)["cov"] == "0.5"
    assert P.s6_row("VICReg", 384) is None
    assert P.s6_row("VICReg-exp", 512)["base_lr"] == "0.5"
    assert P.s6_row("VICReg-exp", 8192)["base_lr"] == "0.8"
    assert P.s6_row("VICReg-ctr", 64)["tau"] == "0.15"
    tuned = P.s6_row("SimCLR-Tuned", 2048)
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
