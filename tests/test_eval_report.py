"""Reports: Markdown with figure files, and one self-contained HTML file that a real browser (headless Chromium
through Playwright) renders with every plot decoded; the screenshot is kept ($ROLECRAFT_SCREENSHOT)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from rolecraft.evaluate import report as rp
from rolecraft.evaluate.stats import bootstrap_ci, rate_ci

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
CHROMIUM = "/usr/bin/chromium"


def sample_report() -> rp.Report:
    chars = ["Alice", "Bob", "Eve"]
    series = {"all statements": [bootstrap_ci([0.5, 1.0, 1.5]), bootstrap_ci([0.2, 0.4]), bootstrap_ci([-1.0, 2.0])],
              "RAG top-k": [bootstrap_ci([1.0, 1.2]), bootstrap_ci([0.9, 1.5]), bootstrap_ci([0.1, 0.3])]}
    rep = rp.Report("Sample <report> & co", summary=[("characters", "3"), ("wall time", "1.0 min")])
    sec = rp.Section("ΔAPC", paragraphs=["Means with <intervals>."],
                     table=(["method"] + chars, [[k] + [c.fmt() for c in v] for k, v in series.items()]))
    sec.figures.append(rp.Figure("bars", rp.bars_with_intervals(chars, series, "ΔAPC", "per method", True), "bars"))
    sec.figures.append(rp.Figure("drift", rp.lines_per_turn({"Alice": [0.8, 0.7, 0.75], "Bob": [0.6, 0.5, 0.4]},
                                                            "APC", "drift"), "drift"))
    sec.figures.append(rp.Figure("radar", rp.radar(["memory", "values", "personality", "hallucination", "stability"],
                                                   {"single": [3, 4, 5, 2, float("nan")]}, "radar"), "radar"))
    sec.figures.append(rp.Figure("rates", rp.rate_bars(["a", "b"], [rate_ci([True, False]), rate_ci([])], "ooc"),
                                 "rates"))
    rep.sections.append(sec)
    rep.notes.append("A note | with a pipe.")
    return rep


def test_markdown_and_self_contained_html(tmp_path: Path) -> None:
    md, page = sample_report().write(tmp_path)
    text, html = md.read_text(encoding="utf-8"), page.read_text(encoding="utf-8")
    assert "![bars](figures/bars.png)" in text and (tmp_path / "figures" / "bars.png").read_bytes()[:4] == b"\x89PNG"
    assert "| all statements |" in text and "A note \\| with a pipe." not in text  # notes are list items
    assert html.count("src='data:image/png;base64,") == 4
    assert "Sample &lt;report&gt; &amp; co" in html  # escaped
    assert "http://" not in html and "https://" not in html  # nothing to fetch


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing")
def test_report_opens_in_headless_chromium_with_its_plots(tmp_path: Path) -> None:
    pytest.importorskip("playwright.sync_api")
    from screenshot_report import screenshot

    _, page = sample_report().write(tmp_path)
    shot = tmp_path / "report.png"
    images, decoded, outside = screenshot(page, shot)
    assert images == 4 and decoded == 4 and outside == []
    assert shot.stat().st_size > 20_000
    if os.environ.get("ROLECRAFT_SCREENSHOT"):
        shutil.copy(shot, os.environ["ROLECRAFT_SCREENSHOT"])
