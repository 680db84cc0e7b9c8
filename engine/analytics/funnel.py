"""Event behaviour features and the purchase funnel.

Per customer with events (as_of is the run's):
- ``sessions``: distinct session ids; without a session column (or for events
  with a null session), distinct UTC calendar days with events;
- ``page_views``: events of type ``page_view`` or ``product_view``;
- ``days_since_last_visit``: as_of - time of the last event, in days;
- ``conversion_rate``: sessions containing a ``purchase`` event / sessions.

``funnel_stage`` covers every customer seen in transactions or events:
``repurchase`` (two or more orders), ``purchase`` (one order),
``consideration`` (a ``product_view`` or ``add_to_cart`` event, no order),
``awareness`` (other events only, e.g. visits).
Event types are compared lower-cased.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from segmint.engine.errors import InputContractError

__all__ = ["FUNNEL_STAGES", "EVENT_FEATURES", "event_features", "funnel_table"]

FUNNEL_STAGES = ("awareness", "consideration", "purchase", "repurchase")
EVENT_FEATURES = ("sessions", "page_views", "days_since_last_visit", "conversion_rate")
_DAY_US = 86_400_000_000


def event_features(events: pl.DataFrame, as_of: dt.datetime) -> pl.DataFrame:
    """customer_id, the EVENT_FEATURES and ``considered`` (bool), one row per customer, sorted."""
    day = pl.col("ts").dt.date().cast(pl.String)
    session = day.alias("__session")
    if "session_id" in events.columns:   # an id, or a day: apart (an id '2026-03-05' was that day's null sessions)
        session = pl.struct(pl.col("session_id").is_not_null().alias("id"),
                            pl.coalesce(pl.col("session_id"), day).alias("key")).alias("__session")
    kind = pl.col("event_type")
    return (events.with_columns(session)
            .group_by("customer_id")
            .agg(pl.col("__session").n_unique().alias("sessions"),
                 kind.is_in(["page_view", "product_view"]).sum().cast(pl.Int64).alias("page_views"),
                 pl.col("ts").max().alias("__last"),
                 pl.col("__session").filter(kind == "purchase").n_unique().alias("__buying"),
                 kind.is_in(["product_view", "add_to_cart"]).any().alias("considered"))
            .select("customer_id",
                    pl.col("sessions").cast(pl.Int64),
                    "page_views",
                    ((pl.lit(as_of) - pl.col("__last")).dt.total_microseconds() / _DAY_US)
                    .alias("days_since_last_visit"),
                    (pl.col("__buying") / pl.col("sessions")).alias("conversion_rate"),
                    "considered")
            .sort("customer_id"))


def funnel_table(features: pl.DataFrame, behaviour: pl.DataFrame, set_aside: pl.Series) -> pl.DataFrame:
    """Every customer of either table but those ``set_aside`` (rejected whole, as a returns-only customer:
    their events made them one who never bought): customer_id, funnel_stage, frequency and the event features."""
    left, right = features.schema["customer_id"], behaviour.schema["customer_id"]
    if left != right:
        msg = (f"event customer ids are {right} but transaction customer ids are {left}; "
               f"map id columns of the same type (--event-customer-col)")
        raise InputContractError(msg)
    behaviour = behaviour.filter(~pl.col("customer_id").is_in(set_aside.implode()))
    both = features.select("customer_id", "frequency").join(behaviour, on="customer_id", how="full",
                                                            coalesce=True)
    stage = (pl.when(pl.col("frequency") >= 2).then(pl.lit("repurchase"))
             .when(pl.col("frequency") == 1).then(pl.lit("purchase"))
             .when(pl.col("considered")).then(pl.lit("consideration"))
             .otherwise(pl.lit("awareness")).cast(pl.Enum(FUNNEL_STAGES)))
    return (both.with_columns(funnel_stage=stage,
                              frequency=pl.col("frequency").fill_null(0),
                              sessions=pl.col("sessions").fill_null(0),
                              page_views=pl.col("page_views").fill_null(0),
                              conversion_rate=pl.col("conversion_rate").fill_null(0.0))
            .select("customer_id", "funnel_stage", "frequency", *EVENT_FEATURES)
            .sort("customer_id"))
