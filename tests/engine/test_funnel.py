"""Event features and funnel stages against hand-computed values; the segment mix against plain counts."""

import dataclasses
import datetime as dt

import polars as pl
import pytest

from segmint.engine.analytics.attributes import attach, segment_mix
from segmint.engine.analytics.funnel import event_features, funnel_table
from segmint.engine.config import EventSource
from segmint.engine.errors import InputContractError
from segmint.engine.io.clean import clean_events

AS_OF = dt.datetime(2024, 3, 1)
T = dt.datetime


def _events():
    return pl.DataFrame({
        "cid": [1, 1, 1, 1, 2, 2, 3, 3, None, 4, 5],
        "when": [T(2024, 2, 1, 10), T(2024, 2, 1, 10, 5), T(2024, 2, 1, 10, 9), T(2024, 2, 20),
                 T(2024, 2, 25), T(2024, 2, 25, 1), T(2024, 2, 27), T(2024, 2, 28), T(2024, 2, 1),
                 T(2024, 4, 1), T(2024, 2, 2)],
        "kind": ["visit", "product_view", "purchase", "visit", "visit", "add_to_cart", "visit", "visit",
                 "visit", "visit", None],
        "sess": ["a", "a", "a", "b", "c", "c", "d", None, "x", "y", "z"],
    })


def _clean():
    src = EventSource(paths=("x",), customer="cid", time="when", event_type="kind", session="sess")
    return clean_events(_events(), src, AS_OF, future_after=None)


def test_event_rejects_are_counted_with_reasons():
    ev = _clean()
    assert ev.rows_in == 11 and ev.events.height == 8
    assert ev.rejected == {"null_customer_id": 1, "null_timestamp": 0, "unparseable_timestamp": 0,
                           "null_event_type": 1, "ancient_timestamp": 0, "future_timestamp": 0, "after_as_of": 1}


def test_event_features_by_hand():
    f = {r["customer_id"]: r for r in event_features(_clean().events, AS_OF).iter_rows(named=True)}
    assert (f[1]["sessions"], f[1]["page_views"], f[1]["conversion_rate"]) == (2, 1, 0.5)
    assert f[1]["days_since_last_visit"] == pytest.approx(10.0)
    assert (f[2]["sessions"], f[2]["conversion_rate"], f[2]["considered"]) == (1, 0.0, True)
    # A null session falls back to the calendar day: customer 3 has sessions "d" and 2024-02-28.
    assert f[3]["sessions"] == 2 and f[3]["considered"] is False


def test_funnel_stages_cover_buyers_and_prospects():
    features = pl.DataFrame({"customer_id": [1, 6, 7], "frequency": [1, 3, 2]})
    funnel = funnel_table(features, event_features(_clean().events, AS_OF), pl.Series([5], dtype=pl.Int64))
    stage = dict(funnel.select("customer_id", pl.col("funnel_stage").cast(pl.String)).iter_rows())
    assert stage == {1: "purchase", 2: "consideration", 3: "awareness", 6: "repurchase", 7: "repurchase"}
    assert funnel.filter(pl.col("customer_id") == 6)["sessions"].item() == 0


def test_a_customer_rejected_whole_is_in_no_funnel_stage():
    # Customer 3 only returned: its events made it a prospect ("awareness") in funnel/ and run.json.
    features = pl.DataFrame({"customer_id": [1], "frequency": [1]})
    funnel = funnel_table(features, event_features(_clean().events, AS_OF), pl.Series([3], dtype=pl.Int64))
    assert funnel["customer_id"].to_list() == [1, 2]


def test_a_blank_session_is_a_null_one_and_a_session_named_like_a_day_is_not_that_day():
    # A Parquet "" (or " ") was one session across every day, where a CSV's empty cell (null) is one per day;
    # an id "2024-02-05" was the same session as the null-session events of that day.
    events = pl.DataFrame({"cid": [1, 1, 1, 2, 2, 3, 3], "kind": ["visit", "visit", "purchase", "visit", "purchase",
                                                                  "visit", "visit"],
                           "when": [T(2024, 2, 1), T(2024, 2, 2), T(2024, 2, 3), T(2024, 2, 5), T(2024, 2, 5, 9),
                                    T(2024, 2, 6), T(2024, 2, 6, 9)],
                           "sess": ["", "", None, "2024-02-05", None, " ", None]})
    src = EventSource(paths=("x",), customer="cid", time="when", event_type="kind", session="sess")
    f = {r["customer_id"]: r for r in event_features(clean_events(events, src, AS_OF, future_after=None).events,
                                                     AS_OF).iter_rows(named=True)}
    assert (f[1]["sessions"], f[1]["conversion_rate"]) == (3, pytest.approx(1 / 3))
    assert (f[2]["sessions"], f[2]["conversion_rate"]) == (2, 0.5)
    assert f[3]["sessions"] == 1


def test_funnel_refuses_mismatched_id_types():
    features = pl.DataFrame({"customer_id": ["1"], "frequency": [1]})
    with pytest.raises(InputContractError, match="same type"):
        funnel_table(features, event_features(_clean().events, AS_OF), pl.Series([], dtype=pl.String))


def test_segment_mix_lifts_are_among_known_values_and_missing_is_its_own_level():
    from segmint.engine.pipeline.score import _mix

    table = pl.DataFrame({"customer_id": range(8), "segment": [0, 0, 0, 1, 1, 1, 1, 1]})
    customers = pl.DataFrame({"id": range(7), "region": ["n", "n", "s", "s", "s", "n", None]})
    attached = attach(table, customers, "id", ["region"])
    joined = attached.table
    assert attached.without_a_row == 1 and joined["customer_id"].to_list() == list(range(8))
    mix = {(r["segment"], r["value"]): r for r in segment_mix(_mix(joined, ("region",))).iter_rows(named=True)}
    # Known values: n 3/6, s 3/6 of the population. Segment 0 (all known): n 2/3.
    assert mix[(0, "n")]["customers"] == 2 and mix[(0, "n")]["share"] == pytest.approx(2 / 3)
    assert mix[(0, "n")]["lift"] == pytest.approx((2 / 3) / (3 / 6))
    # Segment 1 has 2 of 5 without a value (population 2 of 8); its known values are n 1/3, s 2/3.
    assert mix[(1, None)]["customers"] == 2 and mix[(1, None)]["lift"] == pytest.approx((2 / 5) / (2 / 8))
    assert mix[(1, "s")]["share"] == pytest.approx(2 / 3) and mix[(1, "s")]["lift"] == pytest.approx((2 / 3) / (3 / 6))
    # Customers without a value do not inflate the others: a segment mirroring the population's
    # known mix has lift 1, however many of its values are missing.
    even = segment_mix({(0, "r", "a"): 1, (0, "r", "b"): 1, (0, "r", None): 8, (1, "r", "a"): 5, (1, "r", "b"): 5})
    assert even.filter(pl.col("value").is_not_null())["lift"].to_list() == pytest.approx([1.0] * 4)


def test_empty_texts_in_events_are_empty_cells():
    # A Parquet "" id was a customer of its own in the funnel, and a "" event type a type of its own; so were
    # texts of whitespace only.
    events = pl.DataFrame({"cid": ["1", "", "2", "3", " ", "4"],
                           "when": ["2024-02-01", "2024-02-02", "", "2024-02-03", "2024-02-04", "\t"],
                           "kind": ["visit", "visit", "visit", "", "visit", "visit"]})
    src = EventSource(paths=("x",), customer="cid", time="when", event_type="kind", session=None)
    ev = clean_events(events, src, AS_OF, future_after=None)
    assert ev.events["customer_id"].to_list() == ["1"]
    assert ev.rejected == {"null_customer_id": 2, "null_timestamp": 2, "unparseable_timestamp": 0,
                           "null_event_type": 1, "ancient_timestamp": 0, "future_timestamp": 0, "after_as_of": 0}


def test_events_dated_before_1901_are_placeholders_not_events():
    events = pl.DataFrame({"cid": ["1", "2", "3"], "when": ["0001-01-01", "1900-01-01", "1901-01-01"],
                           "kind": ["visit"] * 3})
    src = EventSource(paths=("x",), customer="cid", time="when", event_type="kind", session=None)
    ev = clean_events(events, src, AS_OF, future_after=None)
    assert ev.events["customer_id"].to_list() == ["3"] and ev.rejected["ancient_timestamp"] == 2


def test_a_nan_attribute_is_a_missing_value():
    table = pl.DataFrame({"customer_id": [1, 2, 3], "segment": [0, 0, 1]})
    joined = attach(table, pl.DataFrame({"id": [1, 2, 3], "score": [0.5, float("nan"), None]}), "id", ["score"]).table
    assert joined["score"].to_list() == [0.5, None, None]


def test_customers_table_with_repeated_ids_is_refused():
    table = pl.DataFrame({"customer_id": [1, 2], "segment": [0, 1]})
    with pytest.raises(InputContractError, match=r"more than one row for a customer \(1 such customer"):
        attach(table, pl.DataFrame({"id": [1, 1], "region": ["a", "b"]}), "id", ["region"])


def test_blank_ids_in_the_customers_table_are_no_ids():
    # Two rows of " " stopped the run as "more than one row for customer  ".
    table = pl.DataFrame({"customer_id": ["a", "b"], "segment": [0, 1]})
    attached = attach(table, pl.DataFrame({"id": ["a", " ", " ", "", "b", None, "c"], "region": list("xyzwvut")}),
                      "id", ["region"])
    assert attached.table["region"].to_list() == ["x", "v"] and attached.without_a_row == 0
    # Every row of the table is used or counted: 4 without an id, "c" of no customer of the features.
    assert (attached.rows_without_id, attached.rows_unmatched) == (4, 1)


def test_a_returns_only_customer_with_events_is_in_rejects_and_not_in_the_funnel(tmp_path):
    from segmint.engine.config import RunConfig
    from segmint.engine.pipeline import compute_feature_table

    pl.DataFrame({"customer_id": [1, 1, 2, 3], "ts": [T(2024, 2, 1), T(2024, 2, 9), T(2024, 2, 3), T(2024, 2, 4)],
                  "amount": [10.0, 5.0, 8.0, -7.0]}).write_parquet(tmp_path / "tx.parquet")
    pl.DataFrame({"customer_id": [3, 4], "ts": [T(2024, 2, 2), T(2024, 2, 2)],
                  "event_type": ["product_view", "visit"], "session_id": ["s", "t"]}
                 ).write_parquet(tmp_path / "ev.parquet")
    cfg = RunConfig(as_of="2024-03-01", events=EventSource(paths=(str(tmp_path / "ev.parquet"),)))
    result = compute_feature_table([tmp_path / "tx.parquet"], tmp_path / "out", cfg)
    assert pl.read_parquet(tmp_path / "out" / "rejects")["customer_id"].to_list() == [3]
    funnel = pl.read_parquet(tmp_path / "out" / "funnel").sort("customer_id")
    assert funnel["customer_id"].to_list() == [1, 2, 4]
    assert result.manifest["events"]["funnel"] == {"repurchase": 1, "purchase": 1, "awareness": 1}
    # Customer 3's event is in no output: counted apart, not as used (it was), nor as a reject.
    assert {k: v for k, v in result.manifest["events"]["rows"].items() if k != "rejected_by_reason"} == \
        {"in": 2, "used": 1, "rejected": 0, "of_customers_set_aside": 1}


def test_a_customer_every_row_of_whom_is_rejected_is_not_in_the_funnel_but_one_who_buys_after_the_as_of_is(tmp_path):
    # Customer 3's every amount is null: in rejects/ whole, and it was listed in funnel/ as a customer who had
    # considered and never bought (its events used, exit 0), where a returns-only customer is left out. Customer 5
    # bought only after the back-test's as-of: at that as-of it is a customer who has not bought yet, in the funnel;
    # customer 6 the same but for one bad row before the as-of: its data is bad there, left out.
    from segmint.engine.config import RunConfig
    from segmint.engine.pipeline import compute_feature_table

    pl.DataFrame({"customer_id": [1, 1, 2, 3, 3, 5, 6, 6],
                  "ts": [T(2024, 2, 1), T(2024, 2, 9), T(2024, 2, 3), T(2024, 2, 4), T(2024, 2, 5), T(2024, 3, 9),
                         T(2024, 2, 6), T(2024, 3, 9)],
                  "amount": [10.0, 5.0, 8.0, None, None, 9.0, None, 4.0]}).write_parquet(tmp_path / "tx.parquet")
    pl.DataFrame({"customer_id": [3, 4, 5, 6], "ts": [T(2024, 2, 2)] * 4,
                  "event_type": ["product_view", "visit", "product_view", "visit"], "session_id": list("stuv")}
                 ).write_parquet(tmp_path / "ev.parquet")
    cfg = RunConfig(as_of="2024-03-01", events=EventSource(paths=(str(tmp_path / "ev.parquet"),)))
    result = compute_feature_table([tmp_path / "tx.parquet"], tmp_path / "out", cfg)
    assert sorted(pl.read_parquet(tmp_path / "out" / "rejects")["customer_id"].to_list()) == [3, 3, 5, 6, 6]
    funnel = pl.read_parquet(tmp_path / "out" / "funnel").sort("customer_id")
    assert funnel["customer_id"].to_list() == [1, 2, 4, 5]
    assert funnel.filter(pl.col("customer_id") == 5)["funnel_stage"].to_list() == ["consideration"]
    assert {k: v for k, v in result.manifest["events"]["rows"].items() if k != "rejected_by_reason"} == \
        {"in": 4, "used": 2, "rejected": 0, "of_customers_set_aside": 2}
    # Without --as-of (the latest usable time, 2024-03-09): customers 5 and 6 bought; 3 is still left out.
    derived = dataclasses.replace(cfg, as_of=None)
    result = compute_feature_table([tmp_path / "tx.parquet"], tmp_path / "derived", derived)
    funnel = pl.read_parquet(tmp_path / "derived" / "funnel").sort("customer_id")
    assert funnel["customer_id"].to_list() == [1, 2, 4, 5, 6]
    assert result.manifest["events"]["rows"]["of_customers_set_aside"] == 1
