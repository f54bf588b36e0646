"""Open an eval report (report.html) in headless Chromium and save a full-page screenshot.

    .venv/bin/python benchmarks/screenshot_report.py /path/to/report.html report.png

Prints how many images the page has and how many of them decoded (naturalWidth > 0); exits 1 if any did not.
"""

from __future__ import annotations

import sys
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def screenshot(page_path: Path, png: Path, width: int = 1200) -> tuple[int, int, list[str]]:
    """(images, images decoded, requests that left the file) after loading the page; writes the screenshot."""
    from playwright.sync_api import sync_playwright

    url = page_path.resolve().as_uri()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            outside: list[str] = []
            page.on("request", lambda r: None if r.url.startswith(("file:", "data:")) else outside.append(r.url))
            page.goto(url)
            page.wait_for_load_state("load")
            sizes = page.eval_on_selector_all("img", "els => els.map(e => e.complete ? e.naturalWidth : 0)")
            page.screenshot(path=str(png), full_page=True)
        finally:
            browser.close()
    return len(sizes), sum(1 for s in sizes if s > 0), outside


if __name__ == "__main__":
    n, ok, outside = screenshot(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"{ok}/{n} images decoded; requests outside the file: {len(outside)}; screenshot: {sys.argv[2]}")
    sys.exit(0 if n and ok == n and not outside else 1)
