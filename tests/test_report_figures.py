"""Figures (PNG / SVG) and the one-file HTML report: files that parse, images that are not
blank, no external resource, and (when Debian's ``chromium`` is installed) the page opened in a
real headless browser with its tables and decoded images checked in the live DOM."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from test_report_tables import Builder, fill_paper_store

from sslbench.db import Store
from sslbench.errors import ConfigError
from sslbench.report import REPORTS, build_report, write_html, write_report
from sslbench.report.html import HTML_NAME
from sslbench.report.registry import FIGURES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    path = tmp_path_factory.mktemp("figures") / "s.sqlite"
    with Store.open(f"sqlite:///{path}") as store:
        fill_paper_store(store)
        yield store


@pytest.fixture(scope="module")
def html_file(paper, tmp_path_factory) -> Path:
    return write_html(paper, tmp_path_factory.mktemp("html"))


def _png_pixels(data: bytes) -> np.ndarray:
    from matplotlib.image import imread

    return imread(io.BytesIO(data), format="png")


@pytest.mark.parametrize("name", FIGURES)
def test_png_and_svg_figures(paper, tmp_path, name):
    report = build_report(name, paper)
    png = Path(write_report(report, "png", tmp_path))
    assert png == tmp_path / f"{name}.png"
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC)
    pixels = _png_pixels(data)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 300
    assert pixels[..., :3].std() > 0.05  # not a blank canvas
    svg = Path(write_report(report, "svg", tmp_path / "figure.svg"))
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg") and len(list(root.iter())) > 50
    assert write_report(report, "svg", tmp_path / "again.svg") and (
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


def test_html_report_is_one_self_contained_file(html_file):
    assert html_file.name == HTML_NAME and list(html_file.parent.iterdir()) == [html_file]
    text = html_file.read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    sections = [a["id"] for a in page.all("section")]
    assert sections == list(REPORTS)
    images = page.all("img")
    assert len(images) == len(FIGURES)
    for image in images:
        head, payload = image["src"].split(",", 1)
        assert head == "data:image/png;base64"
        assert _png_pixels(base64.b64decode(payload))[..., :3].std() > 0.05
    assert len(page.all("table")) >= len(REPORTS)  # every report built; figures' in <details>
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text)
    assert "<script" not in text and "<link" not in text
    assert "Table S5: online top-1" in "".join(page.text)


def test_html_report_lists_what_is_missing(tmp_path):
    with Store.open(f"sqlite:///{tmp_path / 's.sqlite'}") as store:
        Builder(store).pretrain("vicreg", "2048-d", 256, 0, 50.0)
        text = write_html(store, tmp_path / "out").read_text(encoding="utf-8")
    built = ("table-s5", "fig1", "fig-s6", "hparams")
    assert text.count("Not available:") == len(REPORTS) - len(built)
    assert "sslbench eval RUN_ID --protocol knn" in text and text.count("<img") == 2


def test_single_report_html(paper, tmp_path):
    text = write_report(build_report("cka", paper), "html", tmp_path / "cka.html")
    assert text.startswith("<!DOCTYPE html>") and text.count("data:image/png;base64,") == 1
    assert (tmp_path / "cka.html").read_text(encoding="utf-8") == text


_PROBE = """<script>
window.addEventListener('load', () => {
  for (const img of document.images) {
    img.setAttribute('data-natural', img.naturalWidth + 'x' + img.naturalHeight);
  }
  document.body.setAttribute('data-loaded', 'yes');
});
</script></body>"""


def test_html_report_in_headless_chromium(html_file, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    # A copy with a probe script that records each image's decoded size in the DOM; the report
    # itself carries no script.
    probed = tmp_path / "probed.html"
    probed.write_text(html_file.read_text(encoding="utf-8").replace("</body>", _PROBE),
                      encoding="utf-8")
    done = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    page = _Page()
    page.feed(done.stdout)
    assert page.all("body")[0].get("data-loaded") == "yes"
    assert len(page.all("table")) >= len(REPORTS)
    sizes = [img.get("data-natural", "0x0") for img in page.all("img")]
    assert len(sizes) == len(FIGURES)
    for size in sizes:
        width, height = map(int, size.split("x"))
        assert width > 300 and height > 200, sizes
    headers = [attrs for attrs in page.all("th")]
    assert len(headers) > 50
