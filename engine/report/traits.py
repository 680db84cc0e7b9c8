"""Each segment in plain words: what sets it apart from all customers, and why it bears its name.

Traits come from the ``_median_pct`` columns: the population percentile of the
segment's median. A feature is a trait when that percentile is at least
``TRAIT_DISTANCE`` from 50; the strongest ``MAX_TRAITS`` are kept, e.g. "typical
order value higher than 82% of customers (median 83.51)", where 82% is the share of
all customers strictly below that median (counted by engine.report.inputs). Name reasons restate
``profile.NAME_RULES`` with the segment's own numbers, so they cannot drift from
the rules that made the name.
"""

from __future__ import annotations

import re

from segmint.engine.profile import NAME_RULES, word_holds
from segmint.engine.profile_columns import describe, describe_feature
from segmint.engine.report import numfmt as fmt

__all__ = ["candidates", "traits", "name_reasons", "kpi_sentence", "TRAIT_DISTANCE", "MAX_TRAITS"]

TRAIT_DISTANCE = 25.0
MAX_TRAITS = 5
# These restate recency, frequency and spend in other units (lifetimes' columns, RFM quintile scores,
# the parts of CLV), so as traits they would repeat the same fact several times.
_RESTATEMENTS = ("lt_frequency", "lt_recency", "lt_T", "lt_monetary", "r_score", "f_score", "m_score",
                 "ipt_std_days", "expected_purchases", "expected_avg_value")
_SUFFIX = "_median_pct"
_TOKEN = re.compile(r"[a-z][a-z_]*[a-z]")
_NUMBERED = re.compile(r"(.*?)(?: (#\d+))?$")
_OPERATORS = {">=": "≥", "<=": "≤", "==": "="}
# The percentile bands' edges in NAME_RULES: 25, 30, 35, 50, 70, 75.
_EDGES = {float(n) for rule in NAME_RULES.values() if _SUFFIX in rule for n in re.findall(r"\b\d+\b", rule)}


def candidates(row: dict) -> list[tuple[str, float]]:
    """(feature, median percentile) of the segment's traits, strongest first: at most MAX_TRAITS features
    whose median lies at least TRAIT_DISTANCE percentile points from the population's middle."""
    found = []
    for column, pct in row.items():
        feature = column[: -len(_SUFFIX)] if column.endswith(_SUFFIX) else None
        if feature is None or feature in _RESTATEMENTS or pct is None or abs(pct - 50) < TRAIT_DISTANCE:
            continue
        found.append((feature, pct))
    found.sort(key=lambda t: -abs(t[1] - 50))  # stable: ties keep the profile's column order
    return found[:MAX_TRAITS]


def traits(row: dict, ranks: dict[str, tuple[float, float]]) -> list[str]:
    """One sentence per candidate, e.g. "typical order value higher than 82% of customers (median 83.51)".

    ``ranks[feature]`` holds the shares of all customers strictly below and strictly above the segment's
    median; the sentence quotes the strict share, so ties (many customers at 0) are never counted as
    lower or higher.
    """
    out = []
    for feature, pct in candidates(row):
        below, above = ranks[feature]
        col = describe_feature(feature)
        side = f"higher than {100 * below:.0f}%" if pct >= 50 else f"lower than {100 * above:.0f}%"
        out.append(f"typical {col.label} {side} of customers (median {fmt.value(col.unit, row[f'{feature}_median'])})")
    return out


def name_reasons(row: dict, margin: float = 0.0, batch: bool = False) -> list[tuple[str, str]]:
    """(word, reason) for each word of the segment's name: its rule with this segment's numbers. A name kept
    from an earlier run (an assigned batch takes the model's names, a run with --previous keeps matched
    segments' names) may state what no longer holds here: such a word says so, not why it holds. ``margin``:
    a run with --previous keeps a word within that many percentile points of its band (KEEP_MARGIN), and
    such a word says so; assign keeps the model's names whatever the numbers, so its report has none.
    ``batch``: the row is an assigned batch's, whose percentiles are among the batch's customers, not the
    model's population: a batch of one segment's customers (or of one customer) puts its medians near the 50th
    percentile, so a word that does not hold says that, not that the customers changed."""
    fresh = row["name"].endswith(" (new)")   # commands._kept_names: a fresh name equal to a kept one
    name, number = _NUMBERED.match(row["name"].removesuffix(" (new)")).groups()  # _disambiguate's " #<id>"
    reasons = []
    for word in name.split(" · "):
        if word in NAME_RULES:
            rule = _TOKEN.sub(lambda m: _term(m.group(0), row), _plain_ops(NAME_RULES[word]))
            if word_holds(word, row):   # (an assigned batch's empty segment gets no reasons: html._traits)
                reasons.append((word, rule))
            elif margin and word_holds(word, row, margin):
                reasons.append((word, f"not quite ({rule} does not hold), but within {margin:g} percentile points: a "
                                      f"name kept from the previous run keeps a word that close to its band"))
            elif batch:
                reasons.append((word, f"not so among this batch ({rule} does not hold, percentiles among the "
                                      f"batch's customers): the name is the model's, given where the percentiles "
                                      f"were among all of its run's customers"))
            else:
                reasons.append((word, f"not so here ({rule} does not hold): the name was given in an earlier run "
                                      f"(the model's, or the one --previous named) where it held"))
        else:
            reasons.append((word, "where this segment differs most from the segments that share the rest of "
                                  "its name"))
    if number:
        reasons.append((number, "a number, added because another segment has the same name"))
    if fresh:
        reasons.append(("(new)", "a mark: when the name was given, another segment had kept the same name from "
                                 "the run before"))
    return reasons


def kpi_sentence(row: dict, total_customers: int) -> str:
    """Size, value and habits in one line."""
    parts = [f"{fmt.count(row['customers'])} of {fmt.count(total_customers)} customers ({fmt.share(row['share'])})",
             f"{fmt.value('share', row['revenue_share'])} of revenue",
             f"{fmt.value('orders', row['orders_per_customer'])} orders per customer",
             f"{fmt.value('currency', row['aov_kpi'])} revenue per order",
             f"{fmt.value('share', row['repurchase_rate'])} bought on two or more days"]
    return "; ".join(parts)


def _percentile(v: float) -> str:
    for digits in (2, 4, 6):
        text = f"{v:.{digits}f}".rstrip("0").rstrip(".")
        if float(text) != v and float(text) in _EDGES:
            continue
        return text
    return repr(v)


def _plain_ops(rule: str) -> str:
    for op, sign in _OPERATORS.items():
        rule = rule.replace(op, sign)
    return rule


def _term(token: str, row: dict) -> str:
    """A column of a rule in words with its value here; other words ("and") stay."""
    if token not in row:
        return token
    v = row[token]
    if token.endswith(_SUFFIX):
        label = describe_feature(token[: -len(_SUFFIX)]).label
        # To the hundredth, not whole: 35.25 read "35 < ... (here 35) < 75"; closer yet to a band's edge, as
        # many digits as tell them apart (74.996 read "(here 75) >= 75" beside "does not hold").
        here = "n/a" if v is None else _percentile(v)
        return f"percentile of median {label} (here {here})"
    col = describe(token)
    here = "n/a" if v is None else f"{v:.2f}" if col.unit == "share" else fmt.value(col.unit, v)
    return f"{'median ' if token.endswith('_median') else ''}{col.label} (here {here})"
