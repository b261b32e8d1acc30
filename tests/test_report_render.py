"""Renderers on hand-built frames: round trips, LaTeX rules and escaping, cell formatting."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pandas as pd
import pytest

from sslbench.errors import ConfigError
from sslbench.report.render import FORMATS, format_cell, latex_escape, records, render


def _stat_frame() -> pd.DataFrame:
    """Rows (method, projector); columns (dim, stat); one empty cell, one single-seed cell."""
    index = pd.MultiIndex.from_tuples([("sim_clr & co", "2048-d"), ("vicreg", "d-d-d")],
                                      names=["method", "projector"])
    columns = pd.MultiIndex.from_product([[16, 256], ["mean", "std", "n"]], names=["dim", "stat"])
    data = [[70.125, 1.5, 3, 71.0, float("nan"), 1],
            [72.0, 0.25, 2, float("nan"), float("nan"), 0]]
    frame = pd.DataFrame(data, index=index, columns=columns)
    n_cols = [c for c in columns if c[1] == "n"]
    frame[n_cols] = frame[n_cols].astype("int64")
    return frame


def _tidy_reference() -> pd.DataFrame:
    """The expected long form, written out by hand."""
    return pd.DataFrame([
        {"method": "sim_clr & co", "projector": "2048-d", "dim": 16, "mean": 70.125, "std": 1.5,
         "n": 3},
        {"method": "sim_clr & co", "projector": "2048-d", "dim": 256, "mean": 71.0,
         "std": float("nan"), "n": 1},
        {"method": "vicreg", "projector": "d-d-d", "dim": 16, "mean": 72.0, "std": 0.25, "n": 2},
    ])


def test_csv_round_trip_with_pandas():
    back = pd.read_csv(io.StringIO(render(_stat_frame(), "csv")))
    pd.testing.assert_frame_equal(back, _tidy_reference(), check_dtype=False)
    assert back["dim"].dtype.kind == "i" and back["n"].dtype.kind == "i"


def test_json_round_trip_with_pandas_and_numbers_as_numbers():
    text = render(_stat_frame(), "json")
    raw = json.loads(text)
    assert raw[0]["mean"] == 70.125 and isinstance(raw[0]["n"], int)
    assert isinstance(raw[0]["dim"], int) and raw[1]["std"] is None
    back = pd.read_json(io.StringIO(text), orient="records")
    pd.testing.assert_frame_equal(back, _tidy_reference(), check_dtype=False)


def test_latex_booktabs_and_escaping():
    text = render(_stat_frame(), "latex", title="top_1 50% & more", caption="costs $5 #1 ~^\\")
    lines = text.splitlines()
    top, mid, bottom = (lines.index(rule) for rule in (r"\toprule", r"\midrule", r"\bottomrule"))
    assert top < mid < bottom
    assert lines[top + 1] == r"method & projector & 16 & 256 \\"
    assert r"\begin{tabular}{llrr}" in lines
    assert lines[mid + 1] == r"sim\_clr \& co & 2048-d & 70.12 $\pm$ 1.50 (3) & 71.00 \\"
    assert lines[mid + 2] == r"vicreg & d-d-d & 72.00 $\pm$ 0.25 (2) & -- \\"
    caption = next(line for line in lines if line.startswith(r"\caption"))
    assert caption == (r"\caption{top\_1 50\% \& more. costs \$5 \#1 "
                       r"\textasciitilde{}\textasciicircum{}\textbackslash{}.}")


def test_latex_escape_every_special():
    assert latex_escape(r"\&%$#_{}~^") == (r"\textbackslash{}\&\%\$\#\_\{\}\textasciitilde{}"
                                           r"\textasciicircum{}")
    assert latex_escape("plain text 123") == "plain text 123"


def test_format_cell():
    assert format_cell(70.125, 1.5, 3) == "70.12 ± 1.50 (3)"
    assert format_cell(71.0, float("nan"), 1) == "71.00"
    assert format_cell(71.0, 0.3, 1) == "71.00"  # a single run never shows a spread
    assert format_cell(float("nan"), float("nan"), 0) == "–"
    assert format_cell(1.0 / 3, 0.0, 2, digits=3) == "0.333 ± 0.000 (2)"


def test_markdown_and_table_text():
    md = render(_stat_frame(), "markdown", title="T", caption="C")
    lines = md.splitlines()
    assert lines[0] == "**T**" and lines[-1] == "C"
    assert "| method | projector | 16 | 256 |" in lines
    assert "| --- | --- | ---: | ---: |" in lines
    assert "| vicreg | d-d-d | 72.00 ± 0.25 (2) | – |" in lines
    table = render(_stat_frame(), "table", title="T")
    assert "\x1b[" not in table  # no ANSI codes in a string
    assert "70.12 ± 1.50 (3)" in table and "sim_clr & co" in table


def test_markdown_escapes_pipes():
    frame = pd.DataFrame({"name": ["a|b"], "value": [1.0]})
    assert "| a\\|b | 1.00 |" in render(frame, "markdown")


def test_unknown_format_lists_the_valid_ones():
    with pytest.raises(ConfigError) as info:
        render(_stat_frame(), "yaml")
    message = str(info.value)
    assert "yaml" in message and all(fmt in message for fmt in FORMATS) and "\n" not in message


def test_plain_frames_in_every_format():
    frame = pd.DataFrame({"run_id": ["abc", "def"], "dim": pd.array([64, None], dtype="Int64"),
                          "top1": [51.234, float("nan")], "done": [True, False],
                          "created_at": pd.to_datetime(["2024-01-02 03:04", "2024-01-02 05:06"],
                                                       utc=True)})
    assert records(frame)[1] == {"run_id": "def", "dim": None, "top1": None, "done": False,
                                 "created_at": "2024-01-02T05:06:00+00:00"}
    assert json.loads(render(frame, "json"))[0]["dim"] == 64
    back = pd.read_csv(io.StringIO(render(frame, "csv")))
    assert back["top1"].iloc[0] == 51.234 and math.isnan(back["top1"].iloc[1])
    md = render(frame, "markdown")
    assert "| abc | 64 | 51.23 | True | 2024-01-02 03:04 |" in md
    assert "| --- | ---: | ---: | --- | --- |" in md
    assert r"run\_id & dim & top1 & done & created\_at \\" in render(frame, "latex")
    assert "51.23" in render(frame, "table")


def test_numpy_scalars_become_json_numbers():
    frame = pd.DataFrame({"x": np.array([1, 2], dtype=np.int32), "y": np.float32([0.5, 1.5])})
    assert json.loads(render(frame, "json")) == [{"x": 1, "y": 0.5}, {"x": 2, "y": 1.5}]


def _sourced_frame() -> pd.DataFrame:
    """Ours (two settings), the paper's row and a Δ row, as ``with_paper`` lays them out."""
    index = pd.MultiIndex.from_tuples([
        ("ours", "shapes", "tiny", 5, "VICReg"), ("ours", "imagefolder", "resnet50", 100, "VICReg"),
        ("paper", "ImageNet-1k", "ResNet-50", 100, "VICReg"),
        ("Δ ours − paper", "imagefolder", "resnet50", 100, "VICReg")],
        names=["source", "dataset", "backbone", "epochs", "method"])
    columns = pd.MultiIndex.from_product([[16, 256], ["mean", "std", "n"]], names=["dim", "stat"])
    nan = float("nan")
    data = [[40.0, nan, 1, nan, nan, 0], [nan, nan, 0, 66.0, 0.5, 2],
            [nan, nan, 0, 65.01, nan, 1], [nan, nan, 0, 0.99, nan, 2]]
    frame = pd.DataFrame(data, index=index, columns=columns)
    n_cols = [c for c in columns if c[1] == "n"]
    frame[n_cols] = frame[n_cols].astype("int64")
    return frame


def test_sources_are_panels_headed_by_what_they_are():
    md = render(_sourced_frame(), "markdown").splitlines()
    assert md == [
        "*ours: shapes, tiny, 5 epochs*", "",
        "| method | 16 |", "| --- | ---: |", "| VICReg | 40.00 |", "",
        "*ours: imagefolder, resnet50, 100 epochs*", "",
        "| method | 256 |", "| --- | ---: |", "| VICReg | 66.00 ± 0.50 (2) |", "",
        "*paper: ImageNet-1k, ResNet-50, 100 epochs*", "",
        "| method | 256 |", "| --- | ---: |", "| VICReg | 65.01 |", "",
        "*Δ ours − paper: imagefolder, resnet50, 100 epochs*", "",
        "| method | 256 |", "| --- | ---: |", "| VICReg | +0.99 |"]
    table = render(_sourced_frame(), "table", width=80)
    headings = [line for line in table.splitlines() if line[:1] not in "┏┃┡│└"]
    assert headings[:4] == ["ours: shapes, tiny, 5 epochs", "ours: imagefolder, resnet50, "
                            "100 epochs", "paper: ImageNet-1k, ResNet-50, 100 epochs",
                            "Δ ours − paper: imagefolder, resnet50, 100 epochs"]
    assert "+0.99" in table


def test_records_keep_the_source_of_every_cell():
    rows = records(_sourced_frame())
    assert [(r["source"], r["dataset"], r["dim"], r["mean"]) for r in rows] == [
        ("ours", "shapes", 16, 40.0), ("ours", "imagefolder", 256, 66.0),
        ("paper", "ImageNet-1k", 256, 65.01), ("Δ ours − paper", "imagefolder", 256, 0.99)]
    back = pd.read_csv(io.StringIO(render(_sourced_frame(), "csv")))
    assert list(back.columns) == ["source", "dataset", "backbone", "epochs", "method", "dim",
                                  "mean", "std", "n"]


def test_html_table_fragment():
    from html.parser import HTMLParser

    class Cells(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags, self.classes, self.text = [], [], []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)
            self.classes.append(dict(attrs).get("class", ""))

        def handle_data(self, data):
            self.text.append(data)

    text = render(_sourced_frame(), "html", title="T <1>", caption="a & b", tolerance=0.5)
    parser = Cells()
    parser.feed(text)
    assert parser.tags.count("table") == 4 and parser.tags.count("caption") == 4
    assert "T <1>" in parser.text and "a & b" in parser.text
    assert "paper: ImageNet-1k, ResNet-50, 100 epochs" in parser.text
    assert "num differ" in parser.classes  # +0.99 is not within 0.5 of the paper
    assert "&amp;" in text and "<1>" not in text
    agree = render(_sourced_frame(), "html", tolerance=1.0)
    assert 'class="num agree"' in agree and "differ" not in agree
    plain = render(pd.DataFrame({"a": [1.5], "b": ["x<y"]}), "html")
    assert "<td>x&lt;y</td>" in plain and '<td class="num">1.50</td>' in plain


def test_unnamed_index_labels_are_shown():
    """`sslbench compare` renders its CKA matrix with the networks as an unnamed index."""
    frame = pd.DataFrame([[1.0, 0.5], [0.5, 1.0]], index=["VICReg-64", "Random"],
                         columns=["VICReg-64", "Random"])
    md = render(frame, "markdown").splitlines()
    assert md[0] == "|  | VICReg-64 | Random |"
    assert md[2] == "| VICReg-64 | 1.00 | 0.50 |" and md[3] == "| Random | 0.50 | 1.00 |"
    assert "│ Random    │      0.50 │   1.00 │" in render(frame, "table")


def test_large_values_print_without_decimals():
    assert format_cell(1048576.0, float("nan"), 1) == "1,048,576"
    assert format_cell(83000.0, 1500.0, 2) == "83,000 ± 1500.00 (2)"
    assert format_cell(128.19, float("nan"), 1) == "128.19"
    assert format_cell(-12.5, float("nan"), 1, signed=True) == "-12.50"
