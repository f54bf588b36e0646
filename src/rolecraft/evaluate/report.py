"""Reports people would rather look at than read: Markdown plus one self-contained HTML file.

A report is a title, a few key numbers, and sections of text, tables and figures. Figures are matplotlib PNGs:
written next to the Markdown file and embedded in the HTML as data URIs (inline CSS, nothing fetched), so the
HTML can be mailed or opened offline as one file.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..paths import atomic_write_bytes, atomic_write_text
from .stats import Interval

PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]


@dataclass
class Figure:
    name: str  # file stem, e.g. "apc-bars"
    png: bytes
    caption: str = ""


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    table: tuple[list[str], list[list[str]]] | None = None
    figures: list[Figure] = field(default_factory=list)


@dataclass
class Report:
    title: str
    summary: list[tuple[str, str]] = field(default_factory=list)  # key numbers shown as tiles: (label, value)
    sections: list[Section] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # caveats printed at the end

    def write(self, folder: Path, stem: str = "report") -> tuple[Path, Path]:
        """Writes `<stem>.md` (figures in `figures/`) and the self-contained `<stem>.html`."""
        folder = Path(folder)
        for s in self.sections:
            for f in s.figures:
                atomic_write_bytes(folder / "figures" / f"{f.name}.png", f.png)
        md, page = folder / f"{stem}.md", folder / f"{stem}.html"
        atomic_write_text(md, self.markdown())
        atomic_write_text(page, self.html())
        return md, page

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        if self.summary:
            out += [f"- **{k}**: {v}" for k, v in self.summary] + [""]
        for s in self.sections:
            out += [f"## {s.title}", ""]
            for p in s.paragraphs:
                out += [p, ""]
            if s.table:
                head, rows = s.table
                out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                out += ["| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in r) + " |" for r in rows]
                out.append("")
            for f in s.figures:
                out += [f"![{f.caption or f.name}](figures/{f.name}.png)", ""]
                if f.caption:
                    out += [f"*{f.caption}*", ""]
        if self.notes:
            out += ["## Notes", ""] + [f"- {n}" for n in self.notes] + [""]
        return "\n".join(out)

    def html(self) -> str:
        e = html.escape
        parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{e(self.title)}</title>"
                 f"<meta name=viewport content='width=device-width,initial-scale=1'><style>{_CSS}</style></head>"
                 f"<body><main><h1>{e(self.title)}</h1>"]
        if self.summary:
            parts.append("<div class=tiles>" + "".join(
                f"<div class=tile><div class=v>{e(v)}</div><div class=k>{e(k)}</div></div>"
                for k, v in self.summary) + "</div>")
        for s in self.sections:
            parts.append(f"<section><h2>{e(s.title)}</h2>")
            for f in s.figures:
                data = base64.b64encode(f.png).decode("ascii")
                parts.append(f"<figure><img alt='{e(f.caption or f.name)}' src='data:image/png;base64,{data}'>"
                             f"<figcaption>{e(f.caption)}</figcaption></figure>")
            parts += [f"<p>{e(p)}</p>" for p in s.paragraphs]
            if s.table:
                head, rows = s.table
                parts.append("<div class=scroll><table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in head)
                             + "</tr></thead><tbody>" + "".join(
                                 "<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
                             + "</tbody></table></div>")
            parts.append("</section>")
        if self.notes:
            parts.append("<section class=notes><h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in self.notes)
                         + "</ul></section>")
        parts.append("</main></body></html>")
        return "".join(parts)


_CSS = (
    "body{font:15px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f6f7f9;color:#1d2330}"
    "main{max-width:1060px;margin:0 auto;padding:24px}h1{font-size:26px;margin:0 0 16px}"
    "h2{font-size:19px;margin:0 0 10px}section{background:#fff;border-radius:10px;padding:18px 20px;"
    "margin:16px 0;box-shadow:0 1px 3px rgba(0,0,0,.08)}.tiles{display:flex;flex-wrap:wrap;gap:12px}"
    ".tile{background:#fff;border-radius:10px;padding:12px 16px;min-width:150px;box-shadow:0 1px 3px rgba(0,0,0,.08)}"
    ".tile .v{font-size:22px;font-weight:600}.tile .k{color:#5b6475;font-size:13px}"
    "figure{margin:0 0 12px}figure img{max-width:100%;height:auto;display:block}"
    "figcaption{color:#5b6475;font-size:13px}.scroll{overflow-x:auto}"
    "table{border-collapse:collapse;font-size:13px;width:100%}th,td{border-bottom:1px solid #e3e6eb;"
    "padding:5px 8px;text-align:left;vertical-align:top}th{background:#f0f2f5}.notes li{color:#5b6475}"
)


# -- plots ----------------------------------------------------------------------------------------------
def _png(fig: object) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    return buf.getvalue()


def _plt():  # noqa: ANN202 - matplotlib is imported only when a report is drawn
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bars_with_intervals(groups: Sequence[str], series: dict[str, Sequence[Interval]], ylabel: str, title: str,
                        zero_line: bool = False) -> bytes:
    """Grouped bars (one group per character/dimension, one bar per method) with interval whiskers."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 + 1.3 * len(groups) * max(1, len(series)) * 0.45), 3.8))
    width = 0.8 / max(1, len(series))
    for j, (label, cells) in enumerate(series.items()):
        xs = [i - 0.4 + width * (j + 0.5) for i in range(len(groups))]
        means = [c.mean if c.n else math.nan for c in cells]
        lo = [max(0.0, c.mean - c.low) if c.n else 0.0 for c in cells]
        hi = [max(0.0, c.high - c.mean) if c.n else 0.0 for c in cells]
        ax.bar(xs, means, width * 0.92, yerr=[lo, hi], capsize=3, label=label, color=PALETTE[j % len(PALETTE)])
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if zero_line:
        ax.axhline(0, color="#333", lw=0.8)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(4, len(series)), frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    return _png(fig)


def lines_per_turn(series: dict[str, Sequence[float]], ylabel: str, title: str) -> bytes:
    """One line per series over turn numbers (character drift over a long chat)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    for j, (label, values) in enumerate(series.items()):
        ax.plot(range(1, len(values) + 1), values, marker="o", ms=3, label=label, color=PALETTE[j % len(PALETTE)])
    ax.set_xlabel("turn")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return _png(fig)


def rate_bars(labels: Sequence[str], rates: Sequence[Interval], title: str, xlabel: str = "rate") -> bytes:
    """Horizontal bars of rates in [0, 1] with interval whiskers."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.0, 0.5 + 0.45 * max(2, len(labels))))
    ys = list(range(len(labels)))
    means = [r.mean if r.n else 0.0 for r in rates]
    err = [[max(0.0, r.mean - r.low) if r.n else 0 for r in rates], [max(0.0, r.high - r.mean) if r.n else 0
                                                                      for r in rates]]
    ax.barh(ys, means, xerr=err, capsize=3, color=[PALETTE[i % len(PALETTE)] for i in ys])
    ax.set_yticks(ys, list(labels))
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def radar(dimensions: Sequence[str], series: dict[str, Sequence[float]], title: str, lo: float = 1,
          hi: float = 7) -> bytes:
    """A radar chart of mean judge scores per dimension (needs three dimensions or more)."""
    plt = _plt()
    n = len(dimensions)
    angles = [2 * math.pi * i / n for i in range(n)] + [0.0]
    fig = plt.figure(figsize=(4.6, 4.2))
    ax = fig.add_subplot(111, polar=True)
    for j, (label, values) in enumerate(series.items()):
        vals = [v if not math.isnan(v) else lo for v in values]
        ax.plot(angles, vals + vals[:1], color=PALETTE[j % len(PALETTE)], label=label)
        ax.fill(angles, vals + vals[:1], color=PALETTE[j % len(PALETTE)], alpha=0.15)
    ax.set_xticks(angles[:-1], list(dimensions))
    ax.set_ylim(lo - 1 if lo > 0 else lo, hi)
    ax.set_title(title, pad=18)
    ax.legend(fontsize=8, frameon=False, loc="lower right", bbox_to_anchor=(1.25, -0.1))
    return _png(fig)
