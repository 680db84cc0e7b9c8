"""The report's charts, drawn by Matplotlib as inline SVG: vector, no JavaScript, no network, same bytes.

Why SVG from Matplotlib: the page must open offline and stay small, so the charts
are markup inside the HTML rather than a charting script; text stays text
(``svg.fonttype = "none"``), which keeps each chart to a few tens of kilobytes and
crisp at any zoom. Matplotlib writes the same bytes for the same figure once its
id salt is fixed and the date left out; each chart's ids are prefixed with its name,
so the ids of several SVGs in one page never clash. Figures are built with the object API
(``Figure``), never pyplot, so no global state or GUI backend is involved.
"""

from __future__ import annotations

import functools
import html
import io
import re
from collections.abc import Callable, Sequence

import matplotlib
import numpy as np
from matplotlib.colors import LinearSegmentedColormap, to_hex
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, PercentFormatter

from segmint.engine.report.numfmt import money, share

__all__ = ["segment_colors", "sizes_chart", "rfm_heatmap", "lifecycle_chart", "funnel_chart", "clv_chart",
           "cohort_heatmap", "migration_heatmap", "STATUS_COLORS", "MAX_COHORTS", "WIDTH"]

# DejaVu Sans ships with Matplotlib, so text is laid out with the same metrics on every machine.
_RC = {
    "svg.fonttype": "none",
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.edgecolor": "#9aa3ad",
    "axes.labelcolor": "#333",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "xtick.color": "#444",
    "ytick.color": "#444",
    "legend.frameon": False,
    "figure.facecolor": "white",
    # Text as written: a grid label "$$ spenders" failed the report (exit 1) as unparsable maths, and
    # "$5-$10 buyers" was drawn as maths ("5−10 buyers").
    "text.parse_math": False,
}
# By measure, not by place: without revenue bars (no revenue to share out) CLV took revenue's blue.
_MEASURE_COLORS = {"customers": "#9aa3ad", "revenue": "#2171b5", "predicted value": "#41ab5d"}
STATUS_COLORS = {"new": "#4c9be8", "active": "#2ca25f", "at_risk": "#f2a93b", "lapsed": "#b8bec6"}
_SHEET = LinearSegmentedColormap.from_list("segmint", ["#f4f8fc", "#9ecae1", "#2171b5", "#08306b"])
WIDTH = 11.0              # inches of a full-width chart: 1,056 px at the page's 96 px per inch
MAX_COHORTS = 36          # most recent cohorts drawn, and months since first purchase; the caption says so
_DIGITS = re.compile(r"(\d\.\d\d)\d+")
_INDENT = re.compile(r"\n\s+")
_IDS = re.compile(r'(id="|url\(#|href="#)')
_ANNOTATE_CELLS = 900     # heatmaps with more cells are left unannotated: the numbers would not fit


def _styled(draw: Callable[..., str]) -> Callable[..., str]:
    """Run a chart function under the report's rc settings: they apply when axes and texts are created."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs) -> str:
        with matplotlib.rc_context(_RC):
            return draw(*args, **kwargs)
    return wrapper


def segment_colors(k: int) -> list[str]:
    """One colour per segment, the same in every chart: tab10, then tab20's light shades (tab20 in its own
    order pairs each dark shade with its light one, which would make neighbouring segments look alike)."""
    if k <= 10:
        cmap = matplotlib.colormaps["tab10"]
        return [to_hex(cmap(i)) for i in range(k)]
    cmap = matplotlib.colormaps["tab20"]
    order = [*range(0, 20, 2), *range(1, 20, 2)]
    return [to_hex(cmap(order[i % 20])) for i in range(k)]


@_styled
def sizes_chart(labels: Sequence[str], measures: dict[str, Sequence[float]]) -> str:
    """Grouped horizontal bars: per segment, each measure's share (customers, revenue, CLV)."""
    k, m = len(labels), len(measures)
    fig = Figure(figsize=(WIDTH, 0.6 + 0.22 * k * m), layout="constrained")
    ax = fig.add_subplot()
    height = 0.8 / m
    y = np.arange(k)
    for j, (name, values) in enumerate(measures.items()):
        bars = ax.barh(y - 0.4 + height * (j + 0.5), values, height=height * 0.92, color=_MEASURE_COLORS[name],
                       label=name)
        ax.bar_label(bars, labels=[share(v) for v in values], padding=3, fontsize=7.5, color="#333")
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_xlim(0, max(max(v) for v in measures.values()) * 1.15)
    ax.grid(axis="x", color="#e6e9ed", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.legend(loc="lower right", ncols=m)
    return _svg(fig, "sizes", "Share of customers and of value per segment")


@_styled
def rfm_heatmap(grid: np.ndarray, names: dict[tuple[int, int], str]) -> str:
    """Customers per R score (rows, 5 on top) x F score, each cell with its count, share and RFM name."""
    fig = Figure(figsize=(7.6, 5.4), layout="constrained")
    ax = fig.add_subplot()
    rows = grid[::-1]  # R 5 first
    mesh = ax.pcolormesh(rows, cmap=_SHEET, edgecolors="white", linewidth=1.5)
    total = grid.sum() or 1
    for i in range(5):
        for j in range(5):
            n, r = rows[i, j], 5 - i
            dark = n > 0.55 * rows.max()
            text = f"{n:,}\n{n / total:.1%}"
            if (r, j + 1) in names:
                text += f"\n{names[(r, j + 1)]}"
            ax.text(j + 0.5, i + 0.5, text, ha="center", va="center", fontsize=8,
                    color="white" if dark else "#1b2733")
    ax.set_xticks(np.arange(5) + 0.5, [f"F{f}" for f in range(1, 6)])
    ax.set_yticks(np.arange(5) + 0.5, [f"R{r}" for r in range(5, 0, -1)])
    ax.set_xlabel("frequency score (5 = most orders)")
    ax.set_ylabel("recency score (5 = most recent)")
    ax.invert_yaxis()
    ax.tick_params(length=0)
    for side in ("left", "bottom"):
        ax.spines[side].set_visible(False)
    fig.colorbar(mesh, ax=ax, shrink=0.7, label="customers", format=FuncFormatter(lambda v, _: f"{v:,.0f}"))
    return _svg(fig, "rfm", "Customers by RFM recency and frequency score")


@_styled
def lifecycle_chart(labels: Sequence[str], rates: dict[str, Sequence[float]]) -> str:
    """100% stacked bars: activity status shares per segment."""
    k = len(labels)
    fig = Figure(figsize=(WIDTH, 0.9 + 0.34 * k), layout="constrained")
    ax = fig.add_subplot()
    left = np.zeros(k)
    for status, values in rates.items():
        values = np.asarray(values, dtype=np.float64)
        bars = ax.barh(np.arange(k), values, left=left, color=STATUS_COLORS[status], label=status.replace("_", " "),
                       height=0.72, edgecolor="white", linewidth=0.5)
        ax.bar_label(bars, labels=[share(v) if v >= 0.06 else "" for v in values], label_type="center",
                     fontsize=7.5, color="#1b2733")
        left += values
    ax.set_yticks(np.arange(k), labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=len(rates))
    return _svg(fig, "lifecycle", "Activity status of each segment's customers")


@_styled
def funnel_chart(stages: dict[str, int]) -> str:
    """Customers who reached at least each stage (bars), with those who went no further (labels)."""
    names = list(stages)
    reached = np.cumsum([stages[s] for s in names][::-1])[::-1]
    top = reached[0] or 1
    fig = Figure(figsize=(WIDTH, 0.6 + 0.48 * len(names)), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(names))
    ax.barh(y, reached, color="#2171b5", height=0.66)
    for i, s in enumerate(names):
        stopped = f"  ·  {stages[s]:,} went no further" if i < len(names) - 1 else ""
        ax.text(reached[i] + top * 0.01, i, f"{reached[i]:,} reached ({reached[i] / top:.0%}){stopped}",
                va="center", fontsize=8, color="#333")
    ax.set_yticks(y, [s.replace("_", " ") for s in names])
    ax.invert_yaxis()
    ax.set_xlim(0, top * 1.6)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_xlabel("customers")
    return _svg(fig, "funnel", "Customers reaching each funnel stage")


@_styled
def clv_chart(edges: np.ndarray, counts: np.ndarray, colors: Sequence[str], labels: Sequence[str]) -> str:
    """Histogram of predicted CLV on a log axis, stacked by segment."""
    fig = Figure(figsize=(WIDTH, 3.8), layout="constrained")
    ax = fig.add_subplot()
    bottom = np.zeros(counts.shape[1])
    for seg in range(counts.shape[0]):
        if counts[seg].any():  # one filled step patch per segment: a bar per bin would be 40 x k patches
            ax.stairs(bottom + counts[seg], edges, baseline=bottom, fill=True, color=colors[seg],
                      label=labels[seg], linewidth=0)
        bottom = bottom + counts[seg]
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: money(v) if v < 1 else f"{v:,.0f}"))
    ax.set_xlabel("predicted customer value (CLV), log scale")
    ax.set_ylabel("customers")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.grid(axis="y", color="#e6e9ed", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7.5)
    return _svg(fig, "clv", "Distribution of predicted customer value by segment")


@_styled
def cohort_heatmap(cohorts: Sequence[str], sizes: Sequence[int] | None, retention: np.ndarray) -> str:
    """Retention by acquisition cohort (rows) and months since first purchase (columns); NaN cells blank."""
    n_rows, n_cols = retention.shape
    fig = Figure(figsize=(WIDTH, min(1.2 + 0.26 * n_rows, 11.0)), layout="constrained")
    ax = fig.add_subplot()
    masked = np.ma.masked_invalid(retention)
    mesh = ax.pcolormesh(masked, cmap=_SHEET, vmin=0, vmax=max(float(np.nanmax(retention[:, 1:], initial=0.0)),
                                                               0.05), edgecolors="white", linewidth=0.4)
    if n_rows * n_cols <= _ANNOTATE_CELLS:
        vmax = mesh.norm.vmax
        for i in range(n_rows):
            for j in range(n_cols):
                v = retention[i, j]
                if np.isfinite(v) and j > 0:
                    ax.text(j + 0.5, i + 0.5, f"{100 * v:.0f}", ha="center", va="center", fontsize=6.5,
                            color="white" if v > 0.55 * vmax else "#1b2733")
    row_labels = [f"{c}  ({n:,})" for c, n in zip(cohorts, sizes, strict=True)] if sizes is not None else cohorts
    ax.set_yticks(np.arange(n_rows) + 0.5, row_labels, fontsize=7)
    step = max(1, n_cols // 24)
    ax.set_xticks(np.arange(0, n_cols, step) + 0.5, [str(m) for m in range(0, n_cols, step)], fontsize=7)
    ax.set_xlabel("months since first purchase")
    ax.invert_yaxis()
    ax.tick_params(length=0)
    for side in ("left", "bottom"):
        ax.spines[side].set_visible(False)
    fig.colorbar(mesh, ax=ax, shrink=min(0.6, 3.0 / fig.get_figheight()), label="retention",
                 format=PercentFormatter(1.0, decimals=0))
    return _svg(fig, "cohorts", "Retention by acquisition cohort")


@_styled
def migration_heatmap(old: Sequence[str], new: Sequence[str], customers: np.ndarray) -> str:
    """Customers moving from each old segment (rows) to each new one (columns), coloured by row share."""
    n_rows, n_cols = customers.shape
    fig = Figure(figsize=(min(2.6 + 0.62 * n_cols, WIDTH), 1.4 + 0.36 * n_rows), layout="constrained")
    ax = fig.add_subplot()
    totals = customers.sum(axis=1, keepdims=True)
    shares = np.divide(customers, totals, out=np.zeros(customers.shape), where=totals > 0)
    mesh = ax.pcolormesh(shares, cmap=_SHEET, vmin=0, vmax=1, edgecolors="white", linewidth=1.0)
    if n_rows * n_cols <= _ANNOTATE_CELLS:
        for i in range(n_rows):
            for j in range(n_cols):
                if customers[i, j]:
                    ax.text(j + 0.5, i + 0.5, f"{customers[i, j]:,}", ha="center", va="center", fontsize=8,
                            color="white" if shares[i, j] > 0.55 else "#1b2733")
    ax.set_yticks(np.arange(n_rows) + 0.5, old)
    ax.set_xticks(np.arange(n_cols) + 0.5, new)
    ax.set_ylabel("previous segment")
    ax.set_xlabel("segment in this run")
    ax.xaxis.set_label_position("top")
    ax.xaxis.tick_top()
    ax.invert_yaxis()
    ax.tick_params(length=0)
    for side in ("left", "bottom"):
        ax.spines[side].set_visible(False)
    fig.colorbar(mesh, ax=ax, shrink=0.7, label="share of the previous segment",
                 format=PercentFormatter(1.0, decimals=0))
    return _svg(fig, "migration", "Customers moving between segments")


def _svg(fig: Figure, name: str, title: str) -> str:
    """The figure as an ``<svg>`` element for inline use: no XML prolog, no metadata, labelled. It keeps its
    natural size (so text is the same size in every chart) and the page's CSS shrinks it on narrow screens."""
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "segmint"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg "):]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    # Coordinates to 0.01 pt and no indentation: a third smaller, and nothing a reader could see.
    text = _INDENT.sub("\n", _DIGITS.sub(r"\1", text))
    # Ids (and the references to them) get the chart's name: several SVGs share one HTML id space.
    text = _IDS.sub(rf"\1{name}-", text)
    return text.replace("<svg ", f'<svg role="img" aria-label="{html.escape(title)}" ', 1)
