"""What each profile column means: its unit, a plain label and a one-line description.

The one place these definitions live: ``profiles.json`` carries them beside the
numbers, ``profiles.csv`` takes its rounding from the units, and the HTML report
words each segment's traits with the labels. A per-feature column
(``<feature>_<stat>``) is described from its feature and its statistic, so a new
feature needs one entry in ``FEATURES``; a numeric column nobody described (a
customer attribute, say) still gets a generic entry, never a gap.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Column", "KPIS", "FEATURES", "STATS", "describe", "describe_feature", "describe_columns", "feature_of", "UNITS"]


class Column(NamedTuple):
    unit: str
    label: str          # a few plain words, for sentences: "typical <label> higher than 82% of customers"
    description: str


# Units, and how a person reads a value of each.
UNITS = {
    "id": "segment number",
    "text": "free text",
    "customers": "a count of customers",
    "share": "a fraction between 0 and 1",
    "currency": "the input's amount unit (refunds subtract)",
    "orders": "a count of orders",
    "days": "days, fractional",
    "count": "a count",
    "score": "a score from 1 to 5",
    "nats": "Shannon entropy in nats (0 = one category)",
    "probability": "a probability between 0 and 1",
    "percentile": "a population percentile, 0 to 100",
    "std": "population standard deviations",
    "unknown": "as in the input",
}

KPIS = {
    "segment": Column("id", "segment", "Segment id; a run with --previous keeps the ids of the segments it "
                                       "matched to the earlier run's."),
    "name": Column("text", "name", "Automatic name; every word states a rule that holds for the segment "
                                   "(profile.NAME_RULES) in the run that named it, or within 5 percentile points "
                                   "for a name kept from the previous run (assign takes the model's)."),
    "customers": Column("customers", "customers", "Customers in the segment."),
    "share": Column("share", "share of customers", "Segment customers / all customers."),
    "revenue": Column("currency", "revenue", "Sum of the segment's net spend (monetary_total) over the whole "
                                             "history up to the as-of date."),
    "revenue_share": Column("share", "share of revenue", "Segment revenue / revenue of all customers; "
                            "null where that revenue is zero or negative (refunds beyond purchases)."),
    "aov_kpi": Column("currency", "revenue per order", "Segment revenue / segment orders (average order value "
                                                       "weighted by orders)."),
    "orders_per_customer": Column("orders", "orders per customer", "Segment orders / segment customers."),
    "repurchase_rate": Column("share", "repurchase rate", "Share of customers who bought on two or more "
                                                          "distinct days."),
    "new_rate": Column("share", "share new", "Share of customers whose first order is within the lifecycle's "
                                             "new_days of the as-of date."),
    "active_rate": Column("share", "share active", "Share of customers buying within their own rhythm "
                                                   "(activity_status active)."),
    "at_risk_rate": Column("share", "share at risk", "Share of customers overdue against their own rhythm "
                                                     "(activity_status at_risk)."),
    "lapsed_rate": Column("share", "share lapsed", "Share of customers silent for too long (activity_status "
                                                   "lapsed)."),
    "clv_total": Column("currency", "predicted value", "Sum of the customers' CLV: discounted expected spend over "
                                                       "the CLV horizon (BG/NBD, or its no-dropout NBD limit as "
                                                       "'clv' in this file says, + Gamma-Gamma)."),
    "outliers": Column("customers", "outliers", "Customers farther from the segment's centre than 99.5% of its "
                                                "members (wholesale accounts, data errors): worth a look."),
}

FEATURES = {
    "recency_days": Column("days", "days since last purchase", "Days from the last purchase to the as-of date."),
    "tenure_days": Column("days", "days since first purchase", "Days from the first purchase to the as-of date."),
    "frequency": Column("orders", "number of purchases", "Purchases: orders netting to 0 or more (lines of one order "
                                                          "count once; returns do not count)."),
    "monetary_total": Column("currency", "total spend", "Net spend over all orders (refunds subtract)."),
    "aov": Column("currency", "order value", "The customer's own average order value: monetary_total / "
                                             "frequency."),
    "ipt_mean_days": Column("days", "days between purchases", "Mean gap between distinct purchase days (one "
                                                              "purchase day: days since it)."),
    "ipt_std_days": Column("days", "spread of days between purchases", "Population standard deviation of the "
                                                                       "gaps between purchase days."),
    "lt_frequency": Column("count", "repeat purchase days", "Distinct purchase days - 1 (lifetimes' frequency)."),
    "lt_recency": Column("days", "days from first to last purchase", "Days from the first to the last purchase "
                                                                     "day (lifetimes' recency)."),
    "lt_T": Column("days", "customer age", "Days from the first purchase day to the as-of day (lifetimes' T)."),
    "lt_monetary": Column("currency", "repeat daily spend", "Mean daily spend excluding the first purchase day "
                                                            "(lifetimes' monetary_value)."),
    "refund_share": Column("share", "share of value returned", "Refunded value / purchased value, clipped to "
                                                               "[0, 1]."),
    "category_count": Column("count", "categories bought", "Distinct categories bought."),
    "category_entropy": Column("nats", "variety of categories", "Shannon entropy of the customer's lines over "
                                                                "categories."),
    "sessions": Column("count", "sessions", "Web/app sessions (without session ids: days with events)."),
    "page_views": Column("count", "page views", "Events of type page_view or product_view."),
    "days_since_last_visit": Column("days", "days since last visit", "Days from the last web/app event to the "
                                                                     "as-of date."),
    "conversion_rate": Column("share", "sessions with a purchase", "Sessions containing a purchase event / "
                                                                   "sessions."),
    "r_score": Column("score", "recency score", "Recency quintile score, 5 = most recent."),
    "f_score": Column("score", "frequency score", "Frequency quintile score, 5 = most orders."),
    "m_score": Column("score", "spend score", "Monetary quintile score, 5 = highest total spend."),
    "p_alive": Column("probability", "chance still active", "BG/NBD probability that the customer has not "
                                                            "churned (1 in the NBD limit: no dropout detected)."),
    "expected_purchases": Column("count", "expected purchases", "Expected purchases over the CLV horizon "
                                                                "(BG/NBD, or its NBD limit)."),
    "expected_avg_value": Column("currency", "expected spend per purchase day", "Gamma-Gamma expected spend per "
                                                                                "repeat purchase day (lt_monetary's "
                                                                                "unit)."),
    "clv": Column("currency", "predicted value (CLV)", "Discounted expected spend over the CLV horizon."),
}
_CHANNEL = "channel_share_"

# Per-feature statistics: (unit, or None for the feature's own unit; description template).
STATS = {
    "mean": (None, "Mean of {label} over the segment's customers."),
    "median": (None, "Median of {label} over the segment's customers."),
    "std": (None, "Sample standard deviation of {label} in the segment (null for one customer)."),
    "p10": (None, "10th percentile of {label} in the segment."),
    "p90": (None, "90th percentile of {label} in the segment."),
    "zlift": ("std", "(segment mean - population mean) / standard deviation of {label} over the profile "
                     "sample's customers (the sample one, n - 1, as _std)."),
    "median_pct": ("percentile", "Share of all customers (mid-rank, %) whose {label} is below the segment's "
                                 "median: 82 = the typical customer here is above 82% of customers."),
}


def feature_of(column: str) -> tuple[str, str] | None:
    """Split ``<feature>_<stat>`` into (feature, stat); None for a KPI or an unknown column."""
    for stat in sorted(STATS, key=len, reverse=True):  # "median_pct" before "median"
        if column.endswith("_" + stat):
            return column[: -len(stat) - 1], stat
    return None


def describe(column: str) -> Column:
    """The unit, label and description of one profile column: a KPI, or a statistic of a feature
    (``<feature>_<stat>``: a channel named ``web_std`` has the statistic ``channel_share_web_std_median``)."""
    if column in KPIS:
        return KPIS[column]
    split = feature_of(column)
    if split is None:
        return describe_feature(column)
    base = describe_feature(split[0])
    unit, template = STATS[split[1]]
    return Column(unit or base.unit, base.label, template.format(label=base.label))


def describe_feature(name: str) -> Column:
    """The unit, label and description of one feature (a column of the assignments)."""
    if name in FEATURES:
        return FEATURES[name]
    if name.startswith(_CHANNEL):
        channel = name[len(_CHANNEL):]
        return Column("share", f"share of orders via {channel}", f"Share of the customer's orders in the "
                                                                  f"{channel} channel.")
    # A numeric column the pipeline carried without a definition here, e.g. a customer attribute.
    return Column("unknown", name, f"Input column {name} as given (no definition in segmint).")


def describe_columns(columns: list[str]) -> dict[str, dict[str, str]]:
    """``{column: {"unit", "description"}}`` for every column, in the given order (profiles.json)."""
    return {c: {"unit": describe(c).unit, "description": describe(c).description} for c in columns}
