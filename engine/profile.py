"""Segment profiles: exact KPIs, per-feature distributions, and names that the numbers bear out.

KPIs (exact over every customer, summed bucket by bucket): ``customers``, ``share``,
``revenue`` (sum of monetary_total), ``revenue_share``, ``aov_kpi`` (revenue /
orders), ``orders_per_customer``, ``repurchase_rate`` (two or more purchase days),
the share of each activity status, ``outliers`` (customers farther from the centroid
than the segment's 99.5th percentile), and with CLV ``clv_total``.

Per numeric feature, from the profile sample (every customer up to
``sampling.profile_customers``, else that many customers of lowest hash):
``_mean``, ``_median``, ``_std``, ``_p10``, ``_p90``, ``_zlift`` ((segment mean -
population mean) / the population's sample std, n - 1) and ``_median_pct``: the population percentile
of the segment's median (mid-rank, 0-100). Statistics run in NumPy over the sample in
customer-id order, so they are the same bits on every run and for any bucket count.

Names are built from robust statistics (``NAME_RULES``; tests check every word
against the profile): a stage word, a frequency word, a spend word, and
``returns-heavy`` where it applies; segments that would share a name are told apart
by the feature in which they differ most.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from segmint.engine import exact
from segmint.engine.features.lifecycle import STATUSES
from segmint.engine.quantiles import linear_quantile
from segmint.engine.runtime import map_threads
from segmint.engine.sorting import sorted_floats

__all__ = ["KpiPartials", "kpi_partials", "build_profiles", "micro_profiles", "segment_name", "sorted_stats",
           "SUMMARY_FEATURES", "NAME_RULES", "NON_FEATURES", "word_holds",
           "name_holds", "keep_names", "KEEP_MARGIN"]

SUMMARY_FEATURES = ("recency_days", "frequency", "aov")
NON_FEATURES = ("customer_id", "segment", "distance", "margin", "outlier", "micro_segment", "__hash")
# Each word of a name and the condition on the segment's profile row that it states.
NAME_RULES = {
    "New": "new_rate >= 0.5",
    "Recent": "recency_days_median_pct <= 30",
    "Dormant": "recency_days_median_pct >= 70",
    "Lapsing": "50 < recency_days_median_pct < 70",
    "Steady": "30 < recency_days_median_pct <= 50",
    "one-time": "frequency_median == 1 and repurchase_rate < 0.5",
    "frequent": "frequency_median_pct >= 75",
    "occasional": "frequency_median_pct <= 35",
    "regular": "35 < frequency_median_pct < 75",
    "high spend": "aov_median_pct >= 75",
    "low spend": "aov_median_pct <= 25",
    "mid spend": "25 < aov_median_pct < 75",
    "returns-heavy": "refund_share_median >= 0.1",
}
# A name kept from the previous run keeps a word while its percentile stays within this many points of the
# word's band: without it, a stable segment was renamed 4 times in 5 months by 1-2 point moves (29.2 <-> 30.4).
KEEP_MARGIN = 5.0
# A name takes one word of each group, the first whose rule holds (segment_name).
_WORD_GROUPS = (("New", "Recent", "Dormant", "Lapsing", "Steady"), ("one-time", "frequent", "occasional", "regular"),
                ("high spend", "low spend", "mid spend"))
# The words of a group in the order of their statistic: a kept word must not sit on the far side of another's.
_ORDERED = {"recency_days_median_pct": ("Recent", "Steady", "Lapsing", "Dormant"),
            "frequency_median_pct": ("occasional", "regular", "frequent"),
            "aov_median_pct": ("low spend", "mid spend", "high spend")}
_STATS = ("mean", "median", "std", "p10", "p90", "zlift", "median_pct")
# How a twin's distinguishing feature reads, higher / lower than its twins.
_LABELS = {"recency_days": ("less recent", "more recent"), "tenure_days": ("longer tenure", "shorter tenure"),
           "ipt_mean_days": ("longer gaps", "shorter gaps"), "category_entropy": ("broader baskets", "narrower baskets"),
           "category_count": ("more categories", "fewer categories"), "refund_share": ("more returns", "fewer returns"),
           "monetary_total": ("higher total spend", "lower total spend"), "frequency": ("more orders", "fewer orders"),
           "aov": ("bigger baskets", "smaller baskets"), "clv": ("higher CLV", "lower CLV"),
           "p_alive": ("more likely active", "less likely active")}


@dataclass
class KpiPartials:
    """Per-segment sums that add up across buckets (revenue and CLV as exact partials), in ``ids`` order."""

    ids: tuple[int, ...]
    customers: list[int] = field(default_factory=list)
    orders: list[int] = field(default_factory=list)
    repurchasers: list[int] = field(default_factory=list)
    status: dict[str, list[int]] = field(default_factory=dict)
    revenue: list[list[float]] = field(default_factory=list)
    clv: list[list[float]] | None = None
    inertia: list[float] = field(default_factory=list)
    outliers: list[int] = field(default_factory=list)

    def add(self, other: KpiPartials) -> None:
        for name in ("customers", "orders", "repurchasers", "outliers"):
            setattr(self, name, [a + b for a, b in zip(getattr(self, name), getattr(other, name), strict=True)])
        self.status = {s: [a + b for a, b in zip(self.status[s], other.status[s], strict=True)] for s in self.status}
        self.revenue = [a + b for a, b in zip(self.revenue, other.revenue, strict=True)]
        if self.clv is not None and other.clv is not None:
            self.clv = [a + b for a, b in zip(self.clv, other.clv, strict=True)]
        self.inertia = self.inertia + other.inertia


def kpi_partials(table: pl.DataFrame, ids: tuple[int, ...]) -> KpiPartials:
    """KPI partials of one bucket's assigned customers (segment, distance, features)."""
    k = len(ids)
    row = np.full(max(ids) + 1, -1, np.int64)
    row[list(ids)] = np.arange(k)
    seg = row[table["segment"].to_numpy().astype(np.int64)]

    def among(rows: np.ndarray) -> list[int]:   # customers per segment among ``rows`` (a mask)
        return np.bincount(seg[rows], minlength=k).tolist()

    status = _status_codes(table["activity_status"])
    known = status >= 0
    by_status = np.bincount(seg[known] * len(STATUSES) + status[known], minlength=k * len(STATUSES))
    distance = table["distance"].to_numpy().astype(np.float64)
    # The exact sums are serial kernels that release the GIL: side by side, the same partials.
    sums = [(seg, table["monetary_total"].to_numpy(), k), (np.zeros(seg.size, np.int64), distance * distance, 1)]
    if "clv" in table.columns:
        sums.append((seg, table["clv"].to_numpy(), k))
    revenue, inertia, *clv = map_threads(lambda args: exact.partials(*args), sums)
    return KpiPartials(
        ids=ids,
        customers=np.bincount(seg, minlength=k).tolist(),
        orders=np.bincount(seg, weights=table["frequency"].to_numpy(), minlength=k).astype(np.int64).tolist(),
        repurchasers=among(table["lt_frequency"].to_numpy() >= 1),
        status={s: by_status[i::len(STATUSES)].tolist() for i, s in enumerate(STATUSES)},
        revenue=revenue,
        clv=clv[0] if clv else None,
        inertia=[v for part in inertia for v in part],
        outliers=among(table["outlier"].to_numpy()) if "outlier" in table.columns else [0] * k,
    )


def build_profiles(sample: pl.DataFrame, kpis: KpiPartials) -> pl.DataFrame:
    """One row per segment (0..k-1), with a ``name`` column.

    ``sample`` holds the profile sample's customers (segment and features), in customer-id order.
    """
    n = sum(kpis.customers)
    revenue = [exact.finite_total([p], "revenue of a segment") for p in kpis.revenue]
    total_revenue = exact.finite_total(kpis.revenue, "revenue of all customers")
    cols: dict[str, list] = {
        "segment": list(kpis.ids),
        "customers": kpis.customers,
        "share": [c / n for c in kpis.customers],
        "revenue": revenue,
        # Refunds beyond purchases leave no revenue to share out: a segment's -44% of -340 read as a share.
        "revenue_share": [r / total_revenue if total_revenue > 0 else None for r in revenue],
        # A segment without customers (a model's segment no customer of an assigned batch falls in) has no
        # orders, rates or order value: null, not 0.0, which read as customers who never came back.
        "aov_kpi": [r / o if o else None for r, o in zip(revenue, kpis.orders, strict=True)],
        "orders_per_customer": [o / c if c else None for o, c in zip(kpis.orders, kpis.customers, strict=True)],
        "repurchase_rate": [r / c if c else None for r, c in zip(kpis.repurchasers, kpis.customers, strict=True)],
        **{f"{s}_rate": [v / c if c else None for v, c in zip(kpis.status[s], kpis.customers, strict=True)]
           for s in STATUSES},
    }
    if kpis.clv is not None:
        cols["clv_total"] = [exact.finite_total([p], "CLV of a segment") for p in kpis.clv]
    cols["outliers"] = kpis.outliers
    # Each segment's rows as one slice, in sample order within the segment (a stable sort).
    seg = sample["segment"].to_numpy()
    order = _stable_order(seg)
    bounds = np.searchsorted(seg[order], np.asarray(kpis.ids), side="left"), np.searchsorted(
        seg[order], np.asarray(kpis.ids), side="right")
    def stats(name: str) -> dict[str, list]:
        values = sample[name].to_numpy().astype(np.float64, copy=False)
        return _feature_stats(name, values, values[order], bounds)

    for part in map_threads(stats, _numeric(sample)):   # features apart: their sorts run side by side
        cols.update(part)
    rates = ("revenue_share", "aov_kpi", "orders_per_customer", "repurchase_rate", *(f"{s}_rate" for s in STATUSES))
    prof = pl.DataFrame(cols, schema_overrides=dict.fromkeys(rates, pl.Float64))
    prof = prof.with_columns(pl.col("segment").cast(pl.Int32))
    names = _disambiguate(prof, [segment_name(row) for row in prof.iter_rows(named=True)])
    return prof.with_columns(name=pl.Series(names, dtype=pl.String)).select("segment", "name", pl.exclude("segment", "name"))


def micro_profiles(sample: pl.DataFrame, counts: dict[str, tuple[int, list[float]]]) -> pl.DataFrame:
    """One row per micro-segment: its segment, exact customers, share of the segment and revenue
    (from ``counts``), and the sample's medians of the summary features."""
    rows = pl.DataFrame({"micro_segment": list(counts), "customers": [n for n, _ in counts.values()],
                         "revenue": [exact.finite_total([p], "revenue of a micro-segment") for _, p in counts.values()]},
                        schema={"micro_segment": pl.String, "customers": pl.Int64, "revenue": pl.Float64})
    medians = sample.group_by("micro_segment").agg(
        *[pl.col(f).median().alias(f"{f}_median") for f in SUMMARY_FEATURES])
    return (rows.with_columns(segment=pl.col("micro_segment").str.split(".").list.first().cast(pl.Int32))
            .with_columns(share_of_segment=pl.col("customers") / pl.col("customers").sum().over("segment"))
            .join(medians, on="micro_segment", how="left")
            .select("segment", "micro_segment", "customers", "share_of_segment", "revenue",
                    *[f"{f}_median" for f in SUMMARY_FEATURES])
            .sort("segment", "micro_segment"))


def segment_name(row: dict) -> str:
    """The words of NAME_RULES that hold for a profile row, e.g. ``Recent · frequent · high spend``: of
    each group the first that holds (New before Recent, one-time before occasional), and returns-heavy
    where it holds."""
    words = [next(w for w in group if word_holds(w, row)) for group in _WORD_GROUPS]
    if word_holds("returns-heavy", row):
        words.append("returns-heavy")
    return " · ".join(words)


def keep_names(rows: list[dict], fresh: list[str], kept: list[str | None]) -> tuple[list[str], list[bool]]:
    """The names of a run matched to a previous one: ``rows`` the profile rows, ``fresh`` their own names,
    ``kept`` the previous run's name of each matched segment (None: none). A kept name stays where every
    word holds within KEEP_MARGIN and no word held only by the margin contradicts another segment's name
    ("high spend" at the 71st percentile beside a "mid spend" at the 73rd); the others are named afresh.
    Returns the names, all distinct, and which were kept."""
    keep = [k if k is not None and name_holds(k, r, KEEP_MARGIN) else None for k, r in zip(kept, rows, strict=True)]
    while True:
        names = _distinct_names(fresh, keep, [r["segment"] for r in rows])
        wrong = [i for i, k in enumerate(keep) if k is not None and _contradicts(i, rows, names)]
        if not wrong:
            return names, [k is not None for k in keep]
        for i in wrong:
            keep[i] = None


def name_holds(name: str, row: dict, margin: float = 0.0) -> bool:
    """Whether every word of NAME_RULES in ``name`` holds for a profile row, its percentile bands widened by
    ``margin`` points (``word_holds``)."""
    return all(word_holds(w, row, margin) for w in _rule_words(name))


def word_holds(word: str, row: dict, margin: float = 0.0) -> bool:
    """Whether the rule of one word of NAME_RULES holds for a profile row; with ``margin``, a percentile
    band is that many points wider on each side (KEEP_MARGIN, for a name kept from the previous run). A
    statistic a segment lacks (an empty segment has no medians) counts as the population's middle."""
    row = {key: value for key, value in row.items() if value is not None}
    recency = row.get("recency_days_median_pct", 50.0)
    freq_pct = row.get("frequency_median_pct", 50.0)
    aov = row.get("aov_median_pct", 50.0)
    m = margin
    rules = {
        "New": lambda: row.get("new_rate", 0.0) >= 0.5,
        "Recent": lambda: recency <= 30 + m,
        "Dormant": lambda: recency >= 70 - m,
        # 50 is the middle: where every customer ties (all bought at the as-of), not Lapsing, margin or not
        "Lapsing": lambda: 50 - m < recency < 70 + m and recency != 50,
        "Steady": lambda: 30 - m < recency <= 50 + m,
        "one-time": lambda: row.get("frequency_median") == 1 and row.get("repurchase_rate", 1.0) < 0.5,
        "frequent": lambda: freq_pct >= 75 - m,
        "occasional": lambda: freq_pct <= 35 + m,
        "regular": lambda: 35 - m < freq_pct < 75 + m,
        "high spend": lambda: aov >= 75 - m,
        "low spend": lambda: aov <= 25 + m,
        "mid spend": lambda: 25 - m < aov < 75 + m,
        "returns-heavy": lambda: (row.get("refund_share_median") or 0.0) >= 0.1,
    }
    return rules[word]()


def sorted_stats(s: np.ndarray) -> tuple[float, float, float]:
    """Median, p10 and p90 of a sorted, non-empty float64 array, to the bit what ``np.median`` and
    ``np.quantile`` (method "linear") give: one sort serves all three, where each NumPy call partitions
    the array again."""
    h = s.size // 2
    median = float(np.mean(s[h - 1 + s.size % 2:h + 1]))   # as np.median: the mean of the middle one or two
    return (median, *(linear_quantile(s.__getitem__, s.size, q) for q in (0.1, 0.9)))


def _rule_words(name: str) -> list[str]:
    """The words of NAME_RULES in a name: a twin's distinguishing words (" · more app"), its last-resort
    " #<id>" and the " (new)" of a fresh name equal to a kept one state no rule ("high spend (new)" went
    unchecked, and was kept every month after)."""
    return [w for w in name.removesuffix(" (new)").rsplit(" #", 1)[0].split(" · ") if w in NAME_RULES]


def _distinct_names(fresh: list[str], kept: list[str | None], segments: list[int]) -> list[str]:
    """Kept names, without the " (new)" marker where no other kept name has the same base (it marked a clash in
    the run that gave it, and stayed for good); fresh names marked " (new)" where they equal a kept one, and
    numbered where even that is taken (two segments were both "X (new)")."""
    bases = [k.removesuffix(" (new)") if k is not None else None for k in kept]
    names = [None if k is None else b if bases.count(b) == 1 else k for k, b in zip(kept, bases, strict=True)]
    taken = set(names) | set(bases)
    names = [n if n is not None else f if f not in taken else f"{f} (new)" for n, f in zip(names, fresh, strict=True)]
    return [f"{n} #{s}" if k is None and names.count(n) > 1 else n
            for n, k, s in zip(names, kept, segments, strict=True)]


def _contradicts(i: int, rows: list[dict], names: list[str]) -> bool:
    """Whether a word that segment ``i``'s name holds only within the margin ranks it against another
    segment's word of the same group the other way round from their statistic."""
    for stat, order in _ORDERED.items():
        mine = [w for w in _rule_words(names[i]) if w in order and not word_holds(w, rows[i])]
        if not mine or rows[i].get(stat) is None:
            continue
        for j, other in enumerate(names):
            theirs = [w for w in _rule_words(other) if w in order]
            if j == i or not theirs or rows[j].get(stat) is None:
                continue
            if (order.index(mine[0]) - order.index(theirs[0])) * (rows[i][stat] - rows[j][stat]) < 0:
                return True
    return False


def _status_codes(status: pl.Series) -> np.ndarray:
    """Each row's index in STATUSES (-1: null), from Enum codes: no string per row."""
    codes = status.cast(pl.Enum(STATUSES)).to_physical()
    return np.where(codes.is_null().to_numpy(), -1, codes.fill_null(0).to_numpy().astype(np.int64))


def _stable_order(segments: np.ndarray) -> np.ndarray:
    """``np.argsort(segments, kind="stable")``. Segment ids are small non-negative numbers: as 8 or 16-bit keys
    NumPy's stable sort is a radix sort (bench M's 909 k customers: 0.031 -> 0.004 s), the same order."""
    if segments.size and segments.min() >= 0 and segments.max() < 1 << 16:
        segments = segments.astype(np.uint8 if segments.max() < 1 << 8 else np.uint16)
    return np.argsort(segments, kind="stable")


def _numeric(table: pl.DataFrame) -> list[str]:
    return [c for c, t in table.schema.items() if (t.is_numeric() or t == pl.Boolean) and c not in NON_FEATURES]


def _feature_stats(name: str, values: np.ndarray, by_segment: np.ndarray,
                   bounds: tuple[np.ndarray, np.ndarray]) -> dict[str, list]:
    """Per segment (``by_segment[bounds[0][i]:bounds[1][i]]``): mean, median, std, p10, p90, z-lift and
    the median's percentile in the population (``values``); NaN and infinities left out."""
    finite = np.isfinite(values)
    all_finite = bool(finite.all())
    parts = [by_segment[lo:hi] for lo, hi in zip(*bounds, strict=True)]
    if not all_finite:
        parts = [v[np.isfinite(v)] for v in parts]
    ordered = [sorted_floats(v) for v in parts]
    # The population's mean and std in the sample's order (customer ids': the same however the input was split),
    # its ranks counted in the segments' sorted values: no sort of the population (bench M: 24 features, 0.27 s
    # of the two threads' time merging the segments' runs).
    pop = values if all_finite else values[finite]
    ranked = _ranked(ordered, by_segment, bounds, pop.size)
    mean, std = (_mean(pop), _std(pop)) if pop.size > 1 else (_mean(pop) if pop.size else 0.0, 0.0)
    out: dict[str, list] = {f"{name}_{s}": [] for s in _STATS}
    stats = [_finite_sorted_stats(s) if s.size else None for s in ordered]
    # Each segment median's rank in the population, counted in every run at once: k searches, not k^2.
    medians = np.array([st[0] if st else 0.0 for st in stats])
    below = sum(np.searchsorted(r, medians, "left") for r in ranked)
    upto = sum(np.searchsorted(r, medians, "right") for r in ranked)
    for i, (v, st) in enumerate(zip(parts, stats, strict=True)):
        if st is None:
            for stat in _STATS:
                out[f"{name}_{stat}"].append(None)
            continue
        median, p10, p90 = st
        segment_mean = _mean(v)
        out[f"{name}_mean"].append(segment_mean)
        out[f"{name}_median"].append(median)
        out[f"{name}_std"].append(_std(v) if v.size > 1 else None)
        out[f"{name}_p10"].append(p10)
        out[f"{name}_p90"].append(p90)
        # No lift where the population's spread is beyond the float range (its std is None), not 0.0.
        with np.errstate(over="ignore", invalid="ignore"):
            lift = (segment_mean - mean) / std if std else (0.0 if std == 0.0 else math.nan)
        out[f"{name}_zlift"].append(lift if math.isfinite(lift) else None)
        out[f"{name}_median_pct"].append(100.0 * int(below[i] + upto[i]) / 2 / pop.size)
    return out


def _ranked(ordered: list[np.ndarray], by_segment: np.ndarray, bounds: tuple[np.ndarray, np.ndarray],
            finite: int) -> list[np.ndarray]:
    """Sorted runs that together hold the population's ``finite`` finite values: the segments' (``ordered``),
    and those of the rows of no segment, sorted, where there are any."""
    if sum(s.size for s in ordered) == finite:
        return ordered
    covered = np.zeros(by_segment.size, bool)
    for lo, hi in zip(*bounds, strict=True):
        covered[lo:hi] = True
    rest = by_segment[~covered]
    return [*ordered, sorted_floats(rest[np.isfinite(rest)])]


def _finite_sorted_stats(s: np.ndarray) -> tuple[float, float, float]:
    """``sorted_stats``; where a mean of two values or a step between them passes the float range (values near
    it), those of the values scaled by a power of two, scaled back (quantiles scale exactly)."""
    with np.errstate(over="ignore", invalid="ignore"):
        stats = sorted_stats(s)
    return stats if all(math.isfinite(x) for x in stats) else tuple(map(float, _scaled(s, sorted_stats)))


def _mean(v: np.ndarray) -> float:
    """NumPy's mean; where its sum passes the float range (values near it), the mean of the values scaled
    by a power of two (exactly), scaled back: finite, as every value is."""
    with np.errstate(over="ignore", invalid="ignore"):
        m = float(v.mean())
    return m if math.isfinite(m) else float(_scaled(v, np.mean))


def _std(v: np.ndarray) -> float | None:
    """NumPy's sample standard deviation; where its squares pass the float range (values beyond about
    1.3e154), that of the values scaled by a power of two, scaled back; None where even that is beyond it
    (profiles.json holds no Infinity: the run stopped with exit 1 writing it)."""
    with np.errstate(over="ignore", invalid="ignore"):
        s = float(v.std(ddof=1))
        if math.isfinite(s):
            return s
        s = float(_scaled(v, lambda w: w.std(ddof=1)))
    return s if math.isfinite(s) else None


def _scaled(v: np.ndarray, stat) -> np.ndarray:
    """``stat`` (a number or several) of ``v`` scaled by a power of two, scaled back: exact but for rounding in
    the subnormal range, and inf beyond the float range."""
    exponent = math.frexp(float(np.abs(v).max()))[1]
    with np.errstate(over="ignore", invalid="ignore"):
        return np.ldexp(np.asarray(stat(np.ldexp(v, -exponent)), np.float64), exponent)


def _disambiguate(prof: pl.DataFrame, names: list[str]) -> list[str]:
    """Twins (same name) get the feature in which each differs most from the others, then the id if needed."""
    out = list(names)
    pct = [c[: -len("_median_pct")] for c in prof.columns if c.endswith("_median_pct")]
    rows = prof.to_dicts()
    for name in set(names):
        twins = [i for i, nm in enumerate(names) if nm == name]
        if len(twins) < 2:
            continue
        for i in twins:
            others = [j for j in twins if j != i]
            best, gap = None, 0.0
            for f in pct:
                mine = rows[i][f"{f}_median_pct"]
                theirs = [rows[j][f"{f}_median_pct"] for j in others if rows[j][f"{f}_median_pct"] is not None]
                if mine is None or not theirs:
                    continue
                d = mine - float(np.mean(theirs))
                if abs(d) > abs(gap):
                    best, gap = f, d
            if best is not None:
                up, down = _LABELS.get(best, (f"higher {best}", f"lower {best}"))
                if best.startswith("channel_share_"):
                    channel = best[len("channel_share_"):]
                    up, down = f"more {channel}", f"less {channel}"
                out[i] = f"{name} · {up if gap > 0 else down}"
    seen: dict[str, int] = {}
    for nm in out:
        seen[nm] = seen.get(nm, 0) + 1
    return [nm if seen[nm] == 1 else f"{nm} #{seg}" for nm, seg in zip(out, prof["segment"], strict=True)]
