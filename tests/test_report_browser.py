"""The one-file HTML report: one file that loads nothing from anywhere, and the page in a real
browser (Debian's headless ``chromium``): it is
screenshotted, and every section is cut out of the screenshot at the place the live DOM puts
it and checked to hold something drawn; every figure is decoded, not blank, and shown at its
natural size (so its text stays as readable as in the PNG); no text on the page is a raw JSON
document."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from test_report_figures import _Page, _png_pixels
from test_report_tables import fill_paper_store
from test_report_terminal import KNOWN, fill_small_runs

from sslbench.db import Store
from sslbench.report import REPORTS, write_html
from sslbench.report.html import HTML_NAME
from sslbench.report.registry import FIGURES

# Its tests share one rendered page: one xdist worker runs them all (--dist loadgroup). A real
# browser is end-to-end: slow.
pytestmark = [pytest.mark.xdist_group("browser"), pytest.mark.slow]

WINDOW = 1600  # CSS pixels; the report's body is at most 1480 wide
# Records where each section and image landed, and each image's decoded size, in the DOM
# (the report itself carries no script: a copy gets this one).
_PROBE = """<script>
window.addEventListener('load', () => {
  const box = (el) => { const r = el.getBoundingClientRect();
    return [r.left + scrollX, r.top + scrollY, r.width, r.height].map(Math.round).join(','); };
  for (const el of document.querySelectorAll('section, img')) el.setAttribute('data-box', box(el));
  for (const img of document.images)
    img.setAttribute('data-natural', img.naturalWidth + 'x' + img.naturalHeight);
  document.body.setAttribute('data-height', document.documentElement.scrollHeight);
});
</script></body>"""


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    return found


def _run(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
         "--virtual-time-budget=5000", *args], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


class _Dom(HTMLParser):
    """Sections with their boxes, images with their boxes and sizes, text by section."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, tuple[int, ...]] = {}
        self.images: list[dict[str, str]] = []
        self.text: dict[str, list[str]] = {}
        self.body: dict[str, str] = {}
        self._section = ""
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body":
            self.body = attrs
        elif tag == "section":
            self._section = attrs["id"]
            self.sections[self._section] = tuple(map(int, attrs["data-box"].split(",")))
        elif tag == "img":
            self.images.append({**attrs, "section": self._section})
        elif tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip -= 1

    def handle_data(self, data):
        if self._section and not self._skip and data.strip():
            self.text.setdefault(self._section, []).append(data.strip())


@pytest.fixture(scope="module")
def report_file(tmp_path_factory) -> Path:
    """``report all`` of a store with every kind of row."""
    folder = tmp_path_factory.mktemp("browser")
    with Store.open(f"sqlite:///{folder / 's.sqlite'}") as store:
        fill_paper_store(store)
        fill_small_runs(store, folder / "runs")
        return write_html(store, folder / "out")


def test_html_report_is_one_self_contained_file(report_file):
    assert report_file.name == HTML_NAME and list(report_file.parent.iterdir()) == [report_file]
    text = report_file.read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    assert [a["id"] for a in page.all("section")] == list(REPORTS)
    images = page.all("img")
    assert len(images) == len([f for f in FIGURES if f in KNOWN])
    for image in images:
        head, payload = image["src"].split(",", 1)
        assert head == "data:image/png;base64"
        assert _png_pixels(base64.b64decode(payload))[..., :3].std() > 0.05
    assert len(page.all("table")) >= len(KNOWN)  # every report built; figures' in <details>
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text)
    assert "<script" not in text and "<link" not in text
    assert "Table S5: online top-1" in "".join(page.text)


@pytest.fixture(scope="module")
def page(report_file):
    """(DOM, screenshot pixels) of the report in headless Chromium."""
    folder, report = report_file.parent.parent, report_file
    probed = folder / "probed.html"
    probed.write_text(report.read_text(encoding="utf-8").replace("</body>", _PROBE),
                      encoding="utf-8")
    dom = _Dom()
    dom.feed(_run([f"--window-size={WINDOW},1000", "--dump-dom", probed.as_uri()],
                  folder / "profile").stdout)
    height = int(dom.body["data-height"])
    shot = folder / "page.png"
    _run([f"--window-size={WINDOW},{height}", f"--screenshot={shot}", report.as_uri()],
         folder / "profile")
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (height, WINDOW)  # one CSS pixel, one screenshot pixel
    return dom, pixels


def _cut(pixels: np.ndarray, box: tuple[int, ...]) -> np.ndarray:
    left, top, width, height = box
    return pixels[top:top + height, left:left + width]


def test_every_section_is_rendered_in_the_screenshot(page):
    dom, pixels = page
    assert list(dom.sections) == list(REPORTS)
    for name, box in dom.sections.items():
        region = _cut(pixels, box)
        assert box[2] > 300 and box[3] > 40, (name, box)
        # Something is drawn: dark text on the white page, not a blank band.
        assert (region.min(axis=2) < 0.3).mean() > 0.002, name
        assert dom.text.get(name), name


def test_every_figure_is_drawn_at_its_natural_size(page):
    dom, pixels = page
    assert sorted(image["section"] for image in dom.images) == sorted(
        f for f in FIGURES if f in KNOWN)
    for image in dom.images:
        natural = tuple(map(int, image["data-natural"].split("x")))
        box = tuple(map(int, image["data-box"].split(",")))
        assert natural[0] > 400 and natural[1] > 300, image["section"]
        # Shown pixel for pixel: never scaled down into unreadable text.
        assert box[2:] == natural, (image["section"], box, natural)
        region = _cut(pixels, box)
        assert region.std() > 0.05, image["section"]  # not a blank image
        assert (region.min(axis=2) < 0.5).mean() > 0.005, image["section"]


def test_no_text_on_the_page_is_raw_json(page):
    dom, _ = page
    for text in (t for texts in dom.text.values() for t in texts):
        if text[:1] in "{[":
            with pytest.raises(ValueError):
                json.loads(text)
    # The captions are there, as prose.
    assert any("Δ = ours − paper" in t for t in dom.text["table-s5"])
