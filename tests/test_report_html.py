"""`snakemake --report report.html` on the mock Si results, opened in headless Chromium (Playwright driving
Debian's /usr/bin/chromium): every figure the run wrote is listed in the report and renders at its own
size, the κ table, the pw.x bill and the provenance are listed, and the captions are there."""
import os
import shutil
import struct
from pathlib import Path

import pytest

from conftest import copy_workflow, run_snakemake

pytestmark = pytest.mark.slow

CONFIG = "config/mock/si.yaml"  # as shipped
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# as the machine's notes advise for a closed network: no background connections, a fresh profile
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _browser_or_skip():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if CHROMIUM and sync_playwright:
        return sync_playwright
    if os.environ.get("KAPPAFLOW_REQUIRE_BROWSER") == "1":
        pytest.fail("KAPPAFLOW_REQUIRE_BROWSER=1 but Chromium (apt chromium) or Playwright (pip playwright) is missing")
    pytest.skip("needs Chromium (apt chromium) and Playwright (pip playwright)")


def png_width(path) -> int:
    """The width in a PNG's IHDR chunk (read here, not by the report)."""
    head = Path(path).read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">I", head[16:20])[0]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    work = copy_workflow(tmp_path_factory.mktemp("report"))
    run_snakemake(work, "--configfile", CONFIG)
    run_snakemake(work, "--report", "report.html", "--configfile", CONFIG)
    return work


def test_the_report_lists_and_renders_every_figure_with_its_caption(report, tmp_path):
    sync_playwright = _browser_or_skip()
    figures = sorted(str(p.relative_to(report)) for p in (report / "results/si").rglob("*.png"))
    assert len(figures) >= 7, figures  # report/ (3), analysis/ (4), the stability gate's dispersion
    tables = ["results/si/bte/kappa.csv", "results/si/dft/cost.csv", "results/si/bte/kappa.provenance.json"]
    url = (report / "report.html").as_uri()
    listed, rendered = {}, {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.wait_for_selector("li:text-is('Results')")
        # the menu entries after the "Results" heading: one per report category
        categories = page.evaluate(
            "() => { const h = Array.from(document.querySelectorAll('li')).find(e => e.textContent.trim() === 'Results');"
            " const out = []; for (let n = h.nextElementSibling; n; n = n.nextElementSibling) out.push(n.textContent.trim());"
            " return out; }")
        assert {"Thermal conductivity", "Where the heat is carried", "Phonons", "Provenance"} <= set(categories), categories
        def open_category(category):
            page.goto(url)
            page.click(f"li >> text={category}")
            page.wait_for_selector("tr:has(td)")

        for category in categories:
            open_category(category)
            for name in page.locator("tr:has(td) > td:first-child").all_inner_texts():
                listed[name.strip()] = category
        for name, category in listed.items():
            if not name.endswith(".png"):
                continue
            open_category(category)
            page.locator("tr", has_text=name).locator("a[iconname=eye]").click()
            img = page.locator(f"img[src*='filename={Path(name).name};']")
            img.wait_for()
            page.wait_for_function("e => e.complete && e.naturalWidth > 0", arg=img.element_handle())
            rendered[name] = img.evaluate("e => e.naturalWidth")
            if name.endswith("cumulative_kappa.png"):
                page.screenshot(path=str(tmp_path / "report_cumulative.png"))
        # a caption: the one of the cumulative-κ figure (workflow/report/analysis_cumulative.rst)
        open_category("Where the heat is carried")
        page.locator("tr", has_text="cumulative_kappa.png").locator("a[iconname=information-circle]").click()
        page.wait_for_selector("text=Each curve ends at the κ of the κ table")
        browser.close()
    print("report screenshot:", tmp_path / "report_cumulative.png")
    missing = [f for f in figures + tables if f not in listed]
    assert not missing, (missing, listed)
    for name in figures:  # each figure shown at the size of its own file
        assert rendered[name] == png_width(report / name), name
    assert listed["results/si/analysis/cumulative_kappa.png"] == "Where the heat is carried"
    assert listed["results/si/bte/kappa.provenance.json"] == "Provenance"
