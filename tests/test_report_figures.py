"""Figures (PNG / SVG) and the one-file HTML report: files that parse, images that are not
blank, no external resource (the page in a real browser: test_report_browser.py)."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from test_report_tables import Builder, fill_paper_store
from test_report_terminal import built, fill_small_runs

from sslbench.db import Store
from sslbench.errors import ConfigError
from sslbench.report import REPORTS, build_report, write_html, write_report
from sslbench.report.registry import FIGURES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    folder = tmp_path_factory.mktemp("figures")
    with Store.open(f"sqlite:///{folder / 's.sqlite'}") as store:
        fill_paper_store(store)
        fill_small_runs(store, folder)
        yield store


def _png_pixels(data: bytes) -> np.ndarray:
    from matplotlib.image import imread

    return imread(io.BytesIO(data), format="png")


@pytest.mark.parametrize("name", FIGURES)
def test_png_figures(paper, tmp_path, name):
    report = built(paper, name)
    png = Path(write_report(report, "png", tmp_path))
    assert png == tmp_path / f"{name}.png"
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC)
    pixels = _png_pixels(data)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 300
    assert pixels[..., :3].std() > 0.05  # not a blank canvas


def test_svg_figure_parses_and_is_reproducible(paper, tmp_path):
    """One figure (SVG of the many-panel ones is slow to write; the writer is the same)."""
    report = build_report("spectra", paper)
    svg = Path(write_report(report, "svg", tmp_path / "figure.svg"))
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg") and len(list(root.iter())) > 50
    assert write_report(build_report("spectra", paper), "svg", tmp_path / "again.svg") and (
        (tmp_path / "again.svg").read_bytes() == svg.read_bytes())  # reproducible: no date


def test_figure_errors(paper, tmp_path):
    with pytest.raises(ConfigError, match="is a table, it has no figure"):
        write_report(build_report("table-s5", paper), "png", tmp_path)
    with pytest.raises(ConfigError, match="pass --out FILE.svg"):
        write_report(build_report("cka", paper), "svg", None)
    with pytest.raises(ConfigError, match="unknown report format 'gif'"):
        write_report(build_report("cka", paper), "gif", tmp_path)


def test_text_formats_are_written_when_out_is_given(paper, tmp_path):
    report = build_report("hparams", paper)
    text = write_report(report, "markdown", tmp_path)
    assert (tmp_path / "hparams.md").read_text(encoding="utf-8") == text
    write_report(report, "csv", tmp_path / "sub" / "h.csv")
    assert (tmp_path / "sub" / "h.csv").read_text(encoding="utf-8").startswith("source,dataset,")


class _Page(HTMLParser):
    """Tags, attributes and text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def all(self, tag: str) -> list[dict[str, str]]:
        return [attrs for t, attrs in self.tags if t == tag]


def test_html_report_lists_what_is_missing(tmp_path):
    with Store.open(f"sqlite:///{tmp_path / 's.sqlite'}") as store:
        Builder(store).pretrain("vicreg", "2048-d", 256, 0, 50.0)
        text = write_html(store, tmp_path / "out").read_text(encoding="utf-8")
    built = ("table-s5", "fig1", "fig-s6", "fig-s7", "hparams")
    assert text.count("Not available:") == len(REPORTS) - len(built)
    assert "sslbench eval RUN_ID --protocol knn" in text and text.count("<img") == 3


def test_single_report_html(paper, tmp_path):
    text = write_report(build_report("cka", paper), "html", tmp_path / "cka.html")
    assert text.startswith("<!DOCTYPE html>") and text.count("data:image/png;base64,") == 1
    assert (tmp_path / "cka.html").read_text(encoding="utf-8") == text
