"""The report page: one HTML document with inline CSS and SVG, no script, nothing fetched.

Every section has a stable id (``SECTIONS``) and is always present: a section
whose data the run lacks (no events, no CLV, no cohort or migration table) says
what is missing and how to get it, so a reader never wonders whether it was
forgotten. All text from the data is escaped.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import polars as pl

from segmint.engine.analytics.clv import NO_DROPOUT
from segmint.engine.analytics.funnel import FUNNEL_STAGES
from segmint.engine.analytics.migration import kept_ids
from segmint.engine.config import LifecycleConfig
from segmint.engine.features.lifecycle import STATUSES
from segmint.engine.profile import KEEP_MARGIN
from segmint.engine.report import charts
from segmint.engine.report import numfmt
from segmint.engine.report.inputs import RunData
from segmint.engine.report.traits import TRAIT_DISTANCE, kpi_sentence, name_reasons, traits

__all__ = ["render_page", "SECTIONS"]


class _Escaped:
    """numfmt's numbers as HTML, for the page's cells and sentences: a share under 0.1% reads "<0.1%", which
    went into cells raw. Where a caller escapes again (``_figure``'s caption), numfmt is called instead."""

    def __getattr__(self, name: str) -> Callable[..., str]:
        plain = getattr(numfmt, name)
        return lambda *args, **kwargs: html.escape(plain(*args, **kwargs))


fmt = _Escaped()

SECTIONS = {
    "segments": "Segments: size and value",
    "traits": "What sets each segment apart",
    "rfm": "RFM grid",
    "lifecycle": "Lifecycle",
    "funnel": "Funnel",
    "clv": "Customer lifetime value",
    "cohorts": "Cohort retention",
    "migration": "Segment migration",
    "quality": "Data quality",
}

_ARRIVED, _LOST = "new customers", "lost"
_CSS = """
:root{--ink:#1b2733;--muted:#5b6670;--line:#e3e7eb;--card:#f7f9fb;--accent:#2171b5}
*{box-sizing:border-box}
body{margin:0;font:14px/1.5 "DejaVu Sans",system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--ink);
background:#fff}
main{max-width:1120px;margin:0 auto;padding:24px 28px 48px}
header h1{font-size:26px;margin:0 0 4px}
header p{margin:0;color:var(--muted)}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid var(--line);padding:8px 0;margin:16px 0 8px;
z-index:1;display:flex;flex-wrap:wrap;gap:2px 16px}
nav a{color:var(--accent);text-decoration:none;font-size:13px;white-space:nowrap}
section{padding-top:12px;margin-top:18px;border-top:1px solid var(--line)}
h2{font-size:19px;margin:6px 0 8px}
h3{font-size:15px;margin:0 0 4px}
.lead{color:var(--muted);margin:0 0 10px}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:10px;margin-top:16px}
.tile{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 12px}
.tile b{display:block;font-size:20px}
.tile span{color:var(--muted);font-size:12px}
figure{margin:8px 0 12px}
figure svg{max-width:100%;height:auto;display:block}
figcaption{color:var(--muted);font-size:12.5px;margin-top:4px}
table{border-collapse:collapse;width:100%;font-size:13px;margin:6px 0 10px}
th,td{padding:5px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{background:var(--card);font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.num{white-space:nowrap}
table.segs td:nth-child(2){min-width:17em}
table.compact{width:auto;min-width:60%}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:12px;align-items:start}
.card{border:1px solid var(--line);border-left:6px solid var(--seg);border-radius:8px;padding:10px 14px;
background:#fff}
.card p{margin:2px 0 6px;color:var(--muted);font-size:13px}
.card ul{margin:4px 0 6px;padding-left:18px}
.card li{margin:1px 0}
.why{font-size:12.5px;color:var(--muted)}
.why dt{display:inline;font-weight:600;color:var(--ink)}
.why dd{display:inline;margin:0}
.why dd::after{content:"";display:block}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;background:var(--seg);margin-right:6px}
.note{background:var(--card);border:1px dashed #c5ccd3;border-radius:8px;padding:10px 14px;color:var(--muted)}
footer{margin-top:32px;color:var(--muted);font-size:12px}
@media print{nav{position:static}section{break-inside:avoid-page}}
"""


def render_page(run: RunData, *, cohorts: pl.DataFrame | None, migration: pl.DataFrame | None,
                version: str, settings_differ: Sequence[str] = ()) -> str:
    """The whole document for one run."""
    m, prof = run.manifest, run.profiles
    rows = prof.to_dicts()
    colors = dict(zip(prof["segment"].to_list(), charts.segment_colors(run.k), strict=True))
    labels = [f"{r['segment']} · {r['name']}" for r in rows]
    body = [
        _header(run, rows),
        "<nav>" + "".join(f'<a href="#{sid}">{html.escape(title)}</a>' for sid, title in SECTIONS.items()) + "</nav>",
        _section("segments", _segments(run, rows, labels, colors)),
        # A run with --previous keeps a name's word within KEEP_MARGIN of its band; assign keeps the model's names.
        _section("traits", _traits(rows, run.ranks, colors,
                                   KEEP_MARGIN if (m.get("clustering") or {}).get("matching") else 0.0,
                                   m.get("command") == "assign")),
        _section("rfm", _rfm(run)),
        _section("lifecycle", _lifecycle(m, prof, labels)),
        _section("funnel", _funnel(m)),
        _section("clv", _clv(run, rows, labels, colors)),
        _section("cohorts", _cohorts(cohorts)),
        _section("migration", _migration(migration, {str(r["segment"]): r["name"] for r in rows}, settings_differ)),
        _section("quality", _quality(m)),
        f"<footer>Written by segmint {html.escape(version)} from run {html.escape(m['run_id'])}. Every number "
        f"comes from the run directory: profiles.parquet, run.json and aggregates of assignments/.</footer>",
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>segmint report: {html.escape(m['run_id'])}</title>\n<style>{_CSS}</style>\n</head>\n"
            "<body>\n<main>\n" + "\n".join(body) + "\n</main>\n</body>\n</html>\n")


def _header(run: RunData, rows: list[dict]) -> str:
    m = run.manifest
    customers = sum(r["customers"] for r in rows)
    revenue = math.fsum(r["revenue"] for r in rows)
    orders = sum(round(r["orders_per_customer"] * r["customers"]) for r in rows if r["customers"])
    tiles = [(fmt.count(customers), "customers"), (str(run.k), "segments"), (fmt.money(revenue), "revenue"),
             (fmt.money(revenue / orders) if orders else "n/a", "revenue per order")]
    if "clv_total" in run.profiles.columns:
        tiles.append((fmt.money(math.fsum(r["clv_total"] for r in rows)), "predicted value (CLV)"))
    # Rows after a given --as-of were left out by choice (a back-test's later months), not for their quality:
    # as in --max-reject-share, they are not part of the share ("93% rejected" read as bad data).
    # Whatever their reason (a null amount after the as-of is after it too); a run.json before that count: by reason.
    later = m["rows"].get("after_as_of", m["rows"]["rejected_by_reason"].get("after_as_of", 0))
    judged = m["rows"]["in"] - later
    tiles.append((fmt.share((m["rows"]["rejected"] - later) / judged) if judged else "n/a", "input rows rejected"))
    if later:
        tiles.append((fmt.count(later), "rows after the as-of, left out"))
    start, end = (m.get("time_range") or [None, None])[:2]
    span = f"orders from {_day(start)} to {_day(end)}, " if start and end else ""
    return ("<header><h1>Customer segments</h1>"
            f"<p>{fmt.count(customers)} customers in {run.k} segments; {span}as of {html.escape(_day(m['as_of']))}. "
            f"Run {html.escape(m['run_id'])} (segmint {html.escape(m['command'])}).</p>"
            '<div class="tiles">' + "".join(f"<div class=\"tile\"><b>{v}</b><span>{html.escape(t)}"
                                              f"</span></div>" for v, t in tiles) + "</div></header>")


def _section(sid: str, inner: str) -> str:
    return f'<section id="{sid}">\n<h2>{html.escape(SECTIONS[sid])}</h2>\n{inner}\n</section>'


def _segments(run: RunData, rows: list[dict], labels: list[str], colors: dict[int, str]) -> str:
    measures = {"customers": [r["share"] for r in rows]}
    if all(r["revenue_share"] is not None for r in rows):   # none where the revenue of all is not positive
        measures["revenue"] = [r["revenue_share"] for r in rows]
    has_clv = "clv_total" in run.profiles.columns
    if has_clv:
        total = math.fsum(r["clv_total"] for r in rows)
        measures["predicted value"] = [r["clv_total"] / total if total else 0.0 for r in rows]
    headers = ["segment", "name", "customers", "share", "revenue", "revenue share", "revenue per order",
               "orders per customer", "repurchase rate"] + (["predicted value (CLV)"] if has_clv else [])
    body = [[_swatch(colors[r["segment"]]) + str(r["segment"]), html.escape(r["name"]), fmt.count(r["customers"]),
             fmt.share(r["share"]), fmt.money(r["revenue"]), fmt.value("share", r["revenue_share"]),
             fmt.value("currency", r["aov_kpi"]), fmt.value("orders", r["orders_per_customer"]),
             fmt.value("share", r["repurchase_rate"]),
             *([fmt.money(r["clv_total"])] if has_clv else [])]
            for r in rows]
    values = [v for v in ("revenue", "predicted value") if v in measures]
    lead = (f"Each segment's share of customers next to its share of {' and of '.join(values)}: a segment whose "
            f"value bar is longer than its customer bar is worth more than its size." if values else
            "Each segment's share of customers.")
    if "revenue" not in measures:
        lead += " Refunds match or exceed purchases over all customers: there is no revenue to share out."
    return (f"<p class=\"lead\">{lead}</p>"
            + _figure(charts.sizes_chart(labels, measures))
            + _table(headers, body, numeric=set(range(2, len(headers))), kind="segs"))


def _traits(rows: list[dict], ranks: dict[int, dict[str, tuple[float, float]]], colors: dict[int, str],
            margin: float, batch: bool) -> str:
    total = sum(r["customers"] for r in rows)
    cards = []
    for r in rows:
        if not r["customers"]:   # an assigned batch none of whose customers is in it: no numbers to judge by
            items, why = "<li>no customer of this batch is in this segment</li>", ""
        else:
            found = traits(r, ranks[r["segment"]])
            items = "".join(f"<li>{html.escape(t)}</li>" for t in found) or \
                "<li>close to the population on every feature</li>"
            why = "".join(f"<dt>{html.escape(w)}</dt><dd>: {html.escape(reason)}</dd>"
                          for w, reason in name_reasons(r, margin, batch))
        cards.append(f'<div class="card" style="--seg:{colors[r["segment"]]}"><h3>{r["segment"]} · '
                     f'{html.escape(r["name"])}</h3><p>{html.escape(kpi_sentence(r, total))}</p><ul>{items}</ul>'
                     f'<dl class="why">{why}</dl></div>')
    return (f"<p class=\"lead\">Traits compare the segment's typical (median) customer with all customers, for "
            f"the features where that customer sits at least {TRAIT_DISTANCE:.0f} percentile points from the "
            f"middle, strongest first; the percentages count the customers strictly below (or above) that median. "
            f"Below them, why each word of the name holds, or that it no longer does where the name was kept from "
            f"an earlier run."
            + (" The customers and percentiles are this batch's, judged among its own customers; the names are the "
               "model's, given among all of its run's customers." if batch else "")
            + "</p>"
            f'<div class="cards">{"".join(cards)}</div>')


def _rfm(run: RunData) -> str:
    return ("<p class=\"lead\">Customers by recency score (rows) and frequency score (columns), quintiles over all "
            "customers; each cell shows customers, their share and the RFM segment of the run's grid.</p>"
            + _figure(charts.rfm_heatmap(run.rfm, run.rfm_names)))


def _lifecycle(m: dict, prof: pl.DataFrame, labels: list[str]) -> str:
    rates = {s: prof[f"{s}_rate"].fill_null(0.0).to_list() for s in STATUSES}   # an empty segment: no bar
    lc = LifecycleConfig(**(m.get("config", {}).get("features", {}).get("lifecycle") or {}))
    return (f"<p class=\"lead\">Activity status of each segment's customers: <b>new</b> first ordered within "
            f"{lc.new_days:g} days; repeat buyers are <b>active</b> while the days since their last order are at "
            f"most {lc.at_risk_ratio:g} times their typical gap between purchases, <b>at risk</b> up to "
            f"{lc.lapsed_ratio:g} times, <b>lapsed</b> beyond; one-time buyers are active within "
            f"{lc.one_time_active_days:g} days; anyone silent for over {lc.lapsed_days:g} days is lapsed.</p>"
            + _figure(charts.lifecycle_chart(labels, rates)))


def _funnel(m: dict) -> str:
    funnel = (m.get("events") or {}).get("funnel")
    if not funnel:
        return _note("This run had no web/app events, so there is no funnel. Pass them to the run with "
                     "<code>segmint run ... --events EVENTS</code>.")
    return ("<p class=\"lead\">Every customer seen in transactions or events, by the furthest stage reached: "
            "<b>awareness</b> (visits only), <b>consideration</b> (viewed a product or added to cart), "
            "<b>purchase</b> (one order), <b>repurchase</b> (two or more orders).</p>"
            + _figure(charts.funnel_chart({s: funnel.get(s, 0) for s in FUNNEL_STAGES})))


def _clv(run: RunData, rows: list[dict], labels: list[str], colors: dict[int, str]) -> str:
    if run.clv is None:
        skipped = (run.manifest.get("clv") or {}).get("skipped")
        why = f"CLV was skipped: {html.escape(skipped)}." if skipped else "This run has no CLV."
        return _note(f"{why} It is fitted by default when the data allow it (README: CLV).")
    h = run.clv
    clv = run.manifest.get("clv") or {}
    headers = ["segment", "name", "predicted value (CLV)", "mean", "p10", "median", "p90", "median chance still active"]
    body = [[_swatch(colors[r["segment"]]) + str(r["segment"]), html.escape(r["name"]), fmt.money(r["clv_total"]),
             *[fmt.money(r[f"clv_{s}"]) if r[f"clv_{s}"] is not None else "n/a"
               for s in ("mean", "p10", "median", "p90")],
             fmt.value("probability", r.get("p_alive_median"))] for r in rows]
    # Plain numbers: _figure escapes its caption.
    missing = f" {numfmt.count(h.missing)} customers have no CLV value." if h.missing else ""
    caption = (f"Customers per CLV bin (log scale), stacked by segment; values below {numfmt.money(h.edges[0])} are in "
               f"the first bar.{missing}")
    if clv.get("purchase_model") == "nbd" and str(clv.get("note", "")).startswith(NO_DROPOUT):
        purchases = ("NBD expected purchases (<b>no dropout detected in the window</b>: no customer is seen to "
                     "stop buying, so every one counts as still active, chance 100%, buying at the rate their "
                     "history suggests; churn needs a longer history to show)")
    elif clv.get("purchase_model") == "nbd":   # asked for ([clv] purchase_model), not detected: said so
        purchases = ("NBD expected purchases (<b>as the configuration asks</b>: every customer counts as still "
                     "active, chance 100%, buying at the rate their history suggests)")
    else:
        purchases = "BG/NBD expected purchases"
    return (f"<p class=\"lead\">Predicted customer value: {purchases} times Gamma-Gamma expected "
            f"spend, discounted over the horizon (time unit: {html.escape(str(clv.get('time_unit', 'week')))}), "
            f"fitted on {fmt.count(clv.get('fitted_on', 0))} customers.</p>"
            + _figure(charts.clv_chart(h.edges, h.counts, list(colors.values()), labels), caption)
            + _table(headers, body, numeric=set(range(2, len(headers))), kind="segs"))


def _cohorts(cohorts: pl.DataFrame | None) -> str:
    if cohorts is None:
        return _note("No cohort table was given. Cohorts need the transactions, not the run: write them with "
                     "<code>segmint cohorts INPUT --out DIR</code> and pass "
                     "<code>segmint report RUN --cohorts DIR/cohorts.parquet</code>.")
    table = cohorts.with_columns(
        pl.when(pl.col("complete_month")).then(pl.col("retention")).otherwise(None).alias("retention"))
    names = table["cohort"].unique(maintain_order=True).to_list()
    shown = names[-charts.MAX_COHORTS:]
    months = int(table["months_since_first"].max()) + 1
    table = table.filter(pl.col("cohort").is_in(shown), pl.col("months_since_first") < charts.MAX_COHORTS)
    grid = np.full((len(shown), min(months, charts.MAX_COHORTS)), np.nan)
    index = {c: i for i, c in enumerate(shown)}
    for c, offset, v in table.select("cohort", "months_since_first", "retention").iter_rows():
        grid[index[c], offset] = np.nan if v is None else v
    sizes = None
    if "cohort_size" in table.columns:
        sizes = table.unique("cohort", keep="first", maintain_order=True)["cohort_size"].to_list()
    older = len(names) - len(shown)
    caption = ("Share of each acquisition-month cohort (first purchase in that month; size in brackets) buying "
               "again n months later, in %. Month 0 is 100% by definition; the incomplete as-of month is left "
               "blank so a half month does not read as a drop."
               + (f" The {older} oldest cohorts are not drawn." if older else "")
               + (f" Months after {charts.MAX_COHORTS - 1} are not drawn." if months > charts.MAX_COHORTS else ""))
    return _figure(charts.cohort_heatmap([_month(c) for c in shown], sizes, grid), caption)


def _migration(migration: pl.DataFrame | None, names: dict[str, str], settings_differ: Sequence[str]) -> str:
    if migration is None:
        return _note("No migration table was given: it compares this run's segments with an earlier run's "
                     "(old_segment, new_segment, customers, revenue).")
    # Segment ids as text: null old = arrived since the earlier run, null new = gone from this one.
    table = migration.select(pl.col("old_segment").cast(pl.String).fill_null(_ARRIVED),
                             pl.col("new_segment").cast(pl.String).fill_null(_LOST), "customers", "revenue")
    old = sorted(set(table["old_segment"]) - {_ARRIVED}, key=_natural)
    new = sorted(set(table["new_segment"]) - {_LOST}, key=_natural)
    rows = old + ([_ARRIVED] if _ARRIVED in set(table["old_segment"]) else [])
    cols = new + ([_LOST] if _LOST in set(table["new_segment"]) else [])
    grid = np.zeros((len(rows), len(cols)), np.int64)
    for o, n, c in table.select("old_segment", "new_segment", "customers").iter_rows():
        grid[rows.index(o), cols.index(n)] += c
    moves = table.filter(pl.col("old_segment") != pl.col("new_segment"))
    top = moves.sort(["customers", "old_segment", "new_segment"], descending=[True, False, False]).head(10)
    body = [[html.escape(o), html.escape(f"{n} · {names[n]}" if n in names else n), fmt.count(c),
             fmt.money(v) if v is not None else "n/a"] for o, n, c, v in top.iter_rows()]
    stayed = int(table.filter(pl.col("old_segment") == pl.col("new_segment"))["customers"].sum())
    ids = kept_ids(migration)
    held = (f" Of the {fmt.count(ids['customers_in_both'])} customers in both runs, {fmt.share(ids['kept_share'])} "
            f"kept their segment id; an optimal relabelling of the segments would have kept "
            f"{fmt.share(ids['optimal_share'])}: a gap means the ids moved more than the customers did."
            if ids["customers_in_both"] else "")
    # As compare says it: moves a setting made (orders grouped otherwise, another CLV model) read as customers'.
    differ = _note(f"The runs' settings differ, so part of these moves is theirs, not the customers' "
                   f"({html.escape('; '.join(settings_differ))}).") if settings_differ else ""
    return (differ + f"<p class=\"lead\">{fmt.count(stayed)} customers stayed in their segment and "
            f"{fmt.count(int(moves['customers'].sum()))} moved, arrived or left.{held} Colour is the share of the "
            f"previous segment; numbers are customers.</p>"
            + _figure(charts.migration_heatmap(rows, cols, grid))
            + "<h3>Largest moves</h3>"
            + _table(["from", "to", "customers", "revenue"], body, numeric={2, 3}, kind="compact"))


def _quality(m: dict) -> str:
    rows = m["rows"]
    amounts = rows.get("rejected_amount_by_reason", {})
    body = [["rows in", fmt.count(rows["in"]), "", ""], ["rows used", fmt.count(rows["used"]),
                                                         fmt.share(rows["used"] / rows["in"]) if rows["in"] else "",
                                                         ""]]
    zero = []
    for reason, n in rows["rejected_by_reason"].items():
        if n:
            what = "left out: after --as-of" if reason == "after_as_of" else f"rejected: {html.escape(reason)}"
            body.append([what, fmt.count(n), fmt.share(n / rows["in"]),
                         fmt.value("currency", amounts.get(reason, 0.0))])
        else:
            zero.append(reason)
    parts = [_table(["input rows", "rows", "share", "amount"], body, numeric={1, 2, 3}, kind="compact")]
    notes = [f"No rows were rejected for {html.escape(', '.join(zero))}." if zero else "",
             f"{fmt.count(rows.get('repeats_on_mapped_columns', 0))} rows repeat an earlier row on every mapped "
             f"column; they are kept as separate purchases (--dedupe-on rejects them)."]
    events = (m.get("events") or {}).get("rows")
    if events:
        notes.append(f"Events: {fmt.count(events['in'])} in, {fmt.count(events['used'])} used, "
                     f"{fmt.count(events['rejected'])} rejected"
                     + "".join(f"; {html.escape(r)} {fmt.count(n)}" for r, n in events["rejected_by_reason"].items()
                               if n) + "."
                     + (f" {fmt.count(aside)} events are of customers rejected whole (in rejects/), in no output."
                        if (aside := events.get("of_customers_set_aside")) else ""))
    if "customers_table" in m:
        table = m["customers_table"]
        note = f"Customers table: {fmt.count(table['without_a_row'])} customers have no row"
        if left := table.get("rows_left_out"):   # not in runs made before it was counted
            note += (f"; {fmt.count(left['no_usable_transaction'])} of its rows are of no customer with a purchase, "
                     f"{fmt.count(left['no_customer_id'])} have no customer id")
        notes.append(note + ".")
    clustering = m.get("clustering") or {}
    if clustering.get("note"):
        notes.append(f"Clustering: {html.escape(clustering['note'])}.")
    if m.get("profiles_note"):
        notes.append(f"Profiles: {html.escape(m['profiles_note'])}.")
    parts.append("".join(f"<p>{n}</p>" for n in notes if n))
    return "".join(parts)


def _figure(svg: str, caption: str | None = None) -> str:
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f"<figure>{svg}{cap}</figure>"


def _table(headers: Sequence[str], body: Iterable[Sequence[str]], *, numeric: set[int], kind: str = "") -> str:
    """Cells are HTML already (escaped by the caller); headers are escaped here."""
    cls = lambda i: ' class="num"' if i in numeric else ""  # noqa: E731
    head = "".join(f"<th{cls(i)}>{html.escape(h)}</th>" for i, h in enumerate(headers))
    rows = "".join("<tr>" + "".join(f"<td{cls(i)}>{c}</td>" for i, c in enumerate(r)) + "</tr>" for r in body)
    return f"<table{f' class={kind}' if kind else ''}><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>'


def _swatch(color: str) -> str:
    return f'<span class="swatch" style="--seg:{color}"></span>'


def _day(iso: str) -> str:
    return iso[:10]


def _month(value) -> str:
    return value.strftime("%Y-%m") if hasattr(value, "strftime") else str(value)


def _natural(v: str) -> tuple:
    return (0, int(v), "") if v.lstrip("-").isdigit() else (1, 0, v)
