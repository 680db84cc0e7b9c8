"""A plain reference for the map (engine.features.build): Polars expressions and Python loops, slow and obvious.

``reference_map(raw, cfg, as_of, now)`` cleans the mapped source rows and computes every customer's
features the way docs/reference.md defines them, one rule at a time: reasons in their order,
duplicates (the named columns as read, first in input order kept), customers without a purchase or beyond the
float range, repeats as rows identical as read, orders netted exactly, lines in line order
(order id, time, input position; lines without an order id last), orders by time then position.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import polars as pl

from segmint.engine.config import RunConfig, parse_as_of
from segmint.engine.features.build import channel_columns, top_channels
from segmint.engine.io.clean import REASONS
from segmint.engine.io.ids import customer_expr
from segmint.engine.io.times import timestamp_expr
from segmint.kernels.sequence import ORDER_FEATURES
from tests.reference import DAY_US, line_features_ref, order_features_ref

_INTEGER = ("frequency", "lt_frequency", "category_count")


def reference_map(raw: pl.DataFrame, cfg: RunConfig, *, as_of: dt.datetime | None, now: dt.datetime) -> dict[str, Any]:
    c = cfg.columns
    schema = raw.schema
    amount = _number(schema, c.amount) if c.amount else _number(schema, c.quantity) * _number(schema, c.price)
    text = [n for n in ([c.amount] if c.amount else [c.quantity, c.price]) if schema[n] == pl.String]
    unparseable = pl.any_horizontal([pl.col(n).is_not_null() & _number(schema, n).is_null() for n in text]) \
        if text else pl.lit(False)
    df = raw.with_row_index("__pos").with_columns(
        __cid=customer_expr(schema, c.customer), __ts=timestamp_expr(c.time, schema[c.time], c.time_format),
        __amount=amount, __bad=unparseable)
    future = now if cfg.as_of is None else None
    if as_of is None and cfg.as_of is not None:
        as_of = parse_as_of(cfg.as_of)
    rows = df.to_dicts()
    reason: list[str | None] = []
    for r in rows:
        a = r["__amount"]
        reason.append(
            "null_customer_id" if r["__cid"] is None else
            "null_timestamp" if r[c.time] is None else
            "unparseable_timestamp" if r["__ts"] is None else
            "unparseable_amount" if r["__bad"] else
            "non_finite_amount" if a is None or not math.isfinite(a) else
            "ancient_timestamp" if r["__ts"] < dt.datetime(1901, 1, 1) else
            "future_timestamp" if future is not None and r["__ts"] > future else
            "after_as_of" if as_of is not None and r["__ts"] > as_of else None)
    usable = [r for r, why in zip(rows, reason, strict=True) if why is None]
    derived = as_of is None
    if derived:
        as_of = max((r["__ts"] for r in usable), default=now)
    channel_counts: dict[str, int] = {}
    if c.channel is not None:
        for r in usable:
            if r[c.channel] is not None:
                key = str(r[c.channel])
                channel_counts[key] = channel_counts.get(key, 0) + 1
    if cfg.dedupe_on:
        seen: set[tuple] = set()
        for i, r in enumerate(rows):
            if reason[i] is None:
                key = (r["__cid"], *(r[name] for name in cfg.dedupe_on))   # the named columns as read
                if key in seen:
                    reason[i] = "duplicate"
                seen.add(key)
    by_customer: dict[Any, list[dict]] = {}
    for i, r in enumerate(rows):
        if reason[i] is None:
            by_customer.setdefault(r["__cid"], []).append(r)
    for cid, lines in by_customer.items():
        gross = 0.0
        for r in lines:
            gross += abs(r["__amount"])
        orders = _orders(lines, c)
        why = "amount_overflow" if not math.isfinite(gross) else (
            None if any(o["amount"] >= 0 for o in orders) else "returns_only")
        if why:
            for r in lines:
                reason[r["__pos"]] = why
    channels = top_channels(channel_counts, cfg.features.max_channels)
    clean = {cid: lines for cid, lines in by_customer.items() if reason[lines[0]["__pos"]] is None}
    categories = sorted({str(r[c.category]) for r in rows if c.category and r[c.category] is not None})
    table = _features(clean, c, as_of, channels, categories)
    rejected = {name: sum(1 for why in reason if why == name) for name in REASONS}
    return {"as_of": as_of, "rejected": rejected, "reason": reason, "repeats": raw.height - raw.n_unique(),
            "table": table, "channels": channels,
            "rows_used": sum(1 for why in reason if why is None)}


def _orders(lines: list[dict], c) -> list[dict]:
    """The customer's orders, each with its lines in line order, the orders by (time, first position)."""
    ordered = sorted(lines, key=lambda r: _line_key(r, c))
    orders: list[dict] = []
    for r in ordered:
        same = orders and c.order is not None and r[c.order] is not None and \
            orders[-1]["id"] is not None and orders[-1]["id"] == r[c.order]
        if same:
            orders[-1]["lines"].append(r)
        else:
            orders.append({"id": r[c.order] if c.order is not None else None, "lines": [r]})
    for o in orders:
        first = o["lines"][0]
        o.update(ts=first["__ts"], pos=first["__pos"], channel=first[c.channel] if c.channel else None,
                 amount=order_net([r["__amount"] for r in o["lines"]]))
    return sorted(orders, key=lambda o: (o["ts"], o["pos"]))


def order_net(values: list[float]) -> float:
    """An order's net: the exact sum of its lines, 0 where that is within 2^-52 of their absolute sum (lines
    that cancel as written in decimal, 0.30 - 0.10 - 0.20, sum to -2.8e-17 as floats)."""
    try:
        net = math.fsum(values)
    except OverflowError:   # beyond the float range: the customer is quarantined anyway
        return math.inf
    gross = sum(abs(v) for v in values)
    return 0.0 if math.isfinite(gross) and abs(net) <= gross * 2.0 ** -52 else net


def _line_key(r: dict, c) -> tuple:
    if c.order is None:
        return (0, 0, r["__ts"], r["__pos"])
    order = r[c.order]
    if order is None:
        return (1, 0, 0, r["__pos"])
    return (0, order if isinstance(order, int) else str(order), r["__ts"], r["__pos"])


def _features(clean: dict, c, as_of: dt.datetime, channels: tuple[str, ...],
              categories: list[str]) -> pl.DataFrame:
    as_of_us = _us(as_of)
    rank = {name: i for i, name in enumerate(categories)}
    rows = []
    for cid in sorted(clean):
        lines = sorted(clean[cid], key=lambda r: _line_key(r, c))
        orders = _orders(lines, c)
        o = [(_us(x["ts"]), x["amount"], channels.index(str(x["channel"])) if x["channel"] is not None
              and str(x["channel"]) in channels else -1) for x in orders]
        row, shares = order_features_ref(o, as_of_us, len(channels))
        refund, count, entropy = line_features_ref(
            [(r["__amount"], rank[str(r[c.category])] if c.category and r[c.category] is not None else -1)
             for r in lines])
        rows.append({"customer_id": cid, **{f: row[f] for f in ORDER_FEATURES}, "refund_share": refund,
                     **({"category_count": count, "category_entropy": entropy} if c.category else {}),
                     **dict(zip(channel_columns(channels), shares, strict=True))})
    return pl.DataFrame(rows)


def _number(schema: pl.Schema, name: str) -> pl.Expr:
    col = pl.col(name)
    if schema[name] == pl.String:
        return col.str.strip_chars().cast(pl.Float64, strict=False)
    return col.cast(pl.Float64)


def _us(when: dt.datetime) -> int:
    return int((when - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1))


__all__ = ["reference_map", "DAY_US"]
