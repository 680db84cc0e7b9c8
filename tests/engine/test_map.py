"""The map's kernels against the plain reference (tests/reference_map.py) on random dirty rows, and
against themselves when the rows come in other chunks."""

from __future__ import annotations

import datetime as dt
import itertools

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from segmint.engine.config import Columns, FeatureConfig, RunConfig
from segmint.engine.errors import InputContractError
from segmint.engine.features.build import map_lines, tables_read
from segmint.engine.features.table import features_of
from segmint.engine.io.clean import reason_column
from tests.reference_map import reference_map

NOW = dt.datetime(2024, 6, 1)
START = dt.datetime(2024, 1, 1)


def _dirty(seed: int, *, text_ids: bool, order: str, text: bool, n: int = 3000) -> pl.DataFrame:
    """Rows with every kind of trouble: missing ids, times and amounts, NaN and text that is not a number,
    future times, returns, customers with only returns or amounts beyond the float range, repeats, ties."""
    rng = np.random.default_rng(seed)
    cid = rng.integers(0, 300, n)
    ids = [None if r < 0.01 else (f"c{x:03d}" if text_ids else int(x)) for x, r in zip(cid, rng.random(n))]
    minutes = rng.integers(0, 60 * 24 * 120, n)
    minutes[rng.random(n) < 0.3] //= 1440   # many lines at one instant: ties
    ts = [None if r < 0.01 else START + dt.timedelta(minutes=int(m)) for m, r in zip(minutes, rng.random(n))]
    ts = [t if t is None or r > 0.01 else NOW + dt.timedelta(days=30) for t, r in zip(ts, rng.random(n))]
    amount = np.round(rng.lognormal(3, 1, n), 2) * np.where(rng.random(n) < 0.2, -1, 1)
    amount = [None if r < 0.01 else (float("nan") if r < 0.02 else a) for a, r in zip(amount, rng.random(n))]
    for c in (7, 8):                                   # returns only
        amount = [-abs(a) if x == c and a is not None else a for a, x in zip(amount, cid)]
    amount = [1.5e308 if x == 9 and a is not None else a for a, x in zip(amount, cid)]   # overflow
    oid = rng.integers(0, 900, n)
    orders = {"int": [None if r < 0.1 else int(o) for o, r in zip(oid, rng.random(n))],
              "text": [None if r < 0.1 else f"o{o}" for o, r in zip(oid, rng.random(n))]}
    frame = pl.DataFrame({
        "cid": pl.Series(ids, dtype=pl.String if text_ids else pl.Int64),
        "t": pl.Series(ts, dtype=pl.Datetime("us")), "amt": pl.Series(amount, dtype=pl.Float64),
        **({"o": pl.Series(orders[order], dtype=pl.String if order == "text" else pl.Int64)} if order != "none" else {}),
        "ch": pl.Series([None if r < 0.05 else ["web", "store", "app", "mail"][int(r * 4) % 4]
                         for r in rng.random(n)], dtype=pl.String),
        "cat": pl.Series([None if r < 0.05 else f"k{int(r * 7)}" for r in rng.random(n)], dtype=pl.String),
    })
    frame = pl.concat([frame, frame.sample(200, seed=seed)])   # repeats
    if text:
        frame = frame.with_columns(pl.col("t").dt.strftime("%Y-%m-%d %H:%M"),
                                   pl.when(pl.int_range(pl.len()) % 97 == 0).then(pl.lit("n/a"))
                                   .otherwise(pl.col("amt").cast(pl.String)).alias("amt"))
    return frame


def _cfg(frame: pl.DataFrame, order: str, text: bool, **more) -> RunConfig:
    cols = Columns(customer="cid", time="t", time_format="%Y-%m-%d %H:%M" if text else None, amount="amt",
                   order="o" if order != "none" else None, channel="ch", category="cat")
    return RunConfig(columns=cols, max_reject_share=1.0, **more)


CASES = [(seed, text_ids, order, text) for seed, (text_ids, order, text) in enumerate([
    (False, "int", False), (True, "text", False), (False, "none", False), (True, "int", True), (False, "text", True),
])]


@pytest.mark.parametrize(("seed", "text_ids", "order", "text"), CASES)
@pytest.mark.parametrize("as_of", [None, dt.datetime(2024, 3, 15)])
def test_the_map_matches_the_reference(seed, text_ids, order, text, as_of):
    frame = _dirty(seed, text_ids=text_ids, order=order, text=text)
    cfg = _cfg(frame, order, text)
    got = features_of(frame, cfg, as_of=as_of, now=NOW, channels=None)
    want = reference_map(frame, cfg, as_of=as_of, now=NOW)
    assert got.as_of == want["as_of"]
    assert got.rejected == want["rejected"] and got.rows_used == want["rows_used"]
    assert got.rejected["returns_only"] > 0 and got.rejected["amount_overflow"] > 0
    assert got.repeats == want["repeats"] > 0
    # Rejects: the rows as read, in input order, each with its reason.
    column = reason_column(frame.columns)
    positions = [i for i, why in enumerate(want["reason"]) if why is not None]
    assert got.rejects[column].to_list() == [want["reason"][i] for i in positions]
    assert got.rejects.drop(column).equals(frame[positions])
    _assert_same_table(got.table, want["table"])


@pytest.mark.parametrize("text", [False, True])
def test_dedupe_keeps_the_first_of_rows_alike_in_the_named_columns(text):
    frame = _dirty(7, text_ids=False, order="int", text=text)
    for columns in (("cid",), ("cid", "t"), ("cid", "amt", "o"), ("cid", "ch", "cat")):
        cfg = _cfg(frame, "int", text, dedupe_on=columns)
        got = features_of(frame, cfg, as_of=None, now=NOW, channels=None)
        want = reference_map(frame, cfg, as_of=None, now=NOW)
        assert got.rejected == want["rejected"] and got.rejected["duplicate"] > 0, columns
        _assert_same_table(got.table, want["table"])


def test_dedupe_on_quantity_compares_quantities_not_amounts():
    # qty 2 x price 5 and qty 1 x price 10 are one amount but not one quantity; the named columns decide.
    t = [START + dt.timedelta(days=d) for d in range(4)]
    frame = pl.DataFrame({"cid": [1, 1, 1, 1], "t": t, "qty": [2.0, 1.0, 1.0, 2.0], "price": [5.0, 10.0, 20.0, 5.0]})
    cols = Columns(customer="cid", time="t", amount=None, quantity="qty", price="price", order=None, channel=None,
                   category=None)
    for named, duplicates in ((("cid", "qty"), 2), (("cid", "price"), 1), (("cid", "qty", "price"), 1)):
        cfg = RunConfig(columns=cols, max_reject_share=1.0, dedupe_on=named)
        got = features_of(frame, cfg, as_of=None, now=NOW, channels=None)
        want = reference_map(frame, cfg, as_of=None, now=NOW)
        assert got.rejected["duplicate"] == want["rejected"]["duplicate"] == duplicates, named
        _assert_same_table(got.table, want["table"])


def test_float_order_ids_nan_is_no_order_id():
    # A NaN order id is missing: each such line is an order of its own, not one order of all of them.
    t = [START + dt.timedelta(days=d) for d in (0, 5, 9)]
    frame = pl.DataFrame({"cid": [1, 1, 1], "t": t, "amt": [10.0, 20.0, 30.0], "o": [float("nan"), float("nan"), 1.0]})
    cols = Columns(customer="cid", time="t", amount="amt", order="o", channel=None, category=None)
    got = features_of(frame, RunConfig(columns=cols), as_of=None, now=NOW, channels=None).table
    assert got["frequency"].item() == 3 and got["ipt_mean_days"].item() == 4.5


@pytest.mark.parametrize(("seed", "text_ids", "order", "text"), CASES[:3])
def test_chunks_do_not_change_anything(seed, text_ids, order, text):
    # The same rows in one table, or cut into chunks of every size, their values made on the calling thread or
    # on a helper and the caller's, out of order (a bucket's scratch files): the same features, rejects and counts.
    frame = _dirty(seed, text_ids=text_ids, order=order, text=text)
    cfg = _cfg(frame, order, text)
    whole = features_of(frame, cfg, as_of=None, now=NOW, channels=None)
    table = frame.to_arrow()
    for size, helper in itertools.product((1, 7, 500), (False, True)):
        chunks = [table.slice(i, size) for i in range(0, table.num_rows, size)]
        cut = map_lines(tables_read(chunks, helper), table.num_rows, dict(frame.schema), cfg, as_of=None, now=NOW,
                        channels=None, mode="features", reread=lambda positions: table.take(pa.array(positions)),
                        reason_column="reason")
        assert cut.table.equals(whole.table) and cut.rejects.equals(whole.rejects)
        assert (cut.rejected, cut.repeats, cut.as_of) == (whole.rejected, whole.repeats, whole.as_of)
        assert (cut.latest, cut.channel_counts) == (whole.latest, whole.channel_counts)


@pytest.mark.parametrize(("positions", "message"), [((0, 4), "fewer rows"), ((0, 3), "more rows")])
def test_rows_not_where_the_plan_put_them_stop_the_map(positions, message):
    # A file that changed while being read: a chunk shorter than planned leaves its rows' places unwritten, one
    # longer would write over the next chunk's; either stops the map, not a run on rows the kernels never wrote.
    frame = _dirty(0, text_ids=False, order="int", text=False).head(6)
    table = frame.to_arrow()
    parts = [table.slice(0, 3), table.slice(3, 3)]

    def read(made):
        return (made(t, at) for t, at in zip(parts, positions, strict=True))

    with pytest.raises(InputContractError, match=f"holds {message}"):
        map_lines(read, 7 if message == "fewer rows" else 5, dict(frame.schema), _cfg(frame, "int", False),
                  as_of=None, now=NOW, channels=None, mode="features",
                  reread=lambda p: table.take(pa.array(p)), reason_column="reason")


def test_buckets_mapped_one_after_another_reuse_line_records_without_a_trace():
    # Within records_reused each map hands its line records to the next: a smaller bucket takes a slice of
    # them, a larger one new records. Whatever the records held (every byte set at first, then the last
    # bucket's lines), the results are those of a map on fresh records; the records are dropped when it ends.
    import gc
    import weakref

    from segmint.engine.features import build

    cases = ((0, False, "int", False, 3000), (2, False, "none", False, 800), (1, True, "text", False, 900),
             (3, True, "int", True, 4000))
    frames = [(_dirty(seed, text_ids=ids, order=order, text=text, n=n), _cfg(None, order, text))
              for seed, ids, order, text, n in cases]
    fresh = [features_of(frame, cfg, as_of=None, now=NOW, channels=None) for frame, cfg in frames]
    with build.records_reused():
        build._REUSE.spare.buffer = np.full(5000 * build._ROW_BYTES, 255, np.uint8)
        reused = [features_of(frame, cfg, as_of=None, now=NOW, channels=None) for frame, cfg in frames]
        spare = weakref.ref(build._REUSE.spare.buffer)
        # The last (largest) map's records and codes.
        assert spare() is not None and spare().size >= 4000 * build._ROW_BYTES
    gc.collect()
    assert spare() is None and getattr(build._REUSE, "spare", None) is None
    for got, want in zip(reused, fresh, strict=True):
        assert got.table.equals(want.table) and got.rejects.equals(want.rejects)
        assert (got.rejected, got.repeats, got.rows_used) == (want.rejected, want.repeats, want.rows_used)


def test_edge_customers():
    # Empty input, one line, one customer all rejected, identical lines, a cancelled order netting to 0.
    cfg = _cfg(pl.DataFrame(), "int", False)
    empty = pl.DataFrame(schema={"cid": pl.Int64, "t": pl.Datetime("us"), "amt": pl.Float64, "o": pl.Int64,
                                 "ch": pl.String, "cat": pl.String})
    got = features_of(empty, cfg, as_of=None, now=NOW, channels=None)
    assert got.table.height == 0 and got.rows_in == 0 and got.as_of == NOW
    t = START + dt.timedelta(days=3)
    rows = pl.DataFrame({"cid": [1, 2, 2, 3, 3, 4, 4], "t": [t] * 7, "amt": [5.0, 3.0, 3.0, 5.0, -5.0, None, 2.0],
                         "o": [1, 2, 2, 3, 3, 4, 5], "ch": ["web"] * 7, "cat": ["a"] * 7}, schema=empty.schema)
    got = features_of(rows, cfg, as_of=None, now=NOW, channels=None)
    want = reference_map(rows, cfg, as_of=None, now=NOW)
    assert got.repeats == 1 and got.customers == 4
    _assert_same_table(got.table, want["table"])
    netting = got.table.filter(pl.col("customer_id") == 3)
    assert netting["frequency"].item() == 1 and netting["monetary_total"].item() == 0.0


def test_an_orders_amount_is_the_exact_sum_of_its_lines_to_the_bit():
    """Each customer an order of one to six lines of magnitudes far apart, in shuffled input order: its
    monetary_total (that order's net) is math.fsum of the lines (tests/reference_map.py), bit for bit,
    where adding them up as floats is not; lines that cancel net to +0.0. (The map's reference test compares
    features to 1e-12 and would not see a last bit.)"""
    from tests.reference_map import order_net

    rng = np.random.default_rng(11)
    t = START + dt.timedelta(days=3)
    orders = []
    for c in range(600):
        k = 1 + c % 6
        values = (rng.choice([1e9, 1.0, 1e-4], k) * rng.random(k)).tolist()
        if c % 50 == 0:
            values = [0.1, 0.2, -0.3][:k] if k <= 3 else [0.3, -0.1, -0.2] + values[3:]
        if c % 97 == 0:
            values = [-0.0]
        orders.append(values)
    cid = [c for c, values in enumerate(orders) for _ in values]
    amt = [v for values in orders for v in values]
    where = rng.permutation(len(amt))
    # Every other customer has a later order of one line of 0.0: its first is summed as that one begins, the
    # others' at their end.
    later = list(range(0, len(orders), 2))
    rows = pl.DataFrame({"cid": [*np.array(cid)[where], *later], "amt": [*np.array(amt)[where], *[0.0] * len(later)],
                         "t": [t] * len(amt) + [t + dt.timedelta(1)] * len(later),
                         "o": [*np.array(cid)[where] + 1000, *(np.array(later) + 5000)]})
    rows = rows.with_columns(ch=pl.lit("web"), cat=pl.lit("a"))
    cfg = _cfg(rows, "int", False)
    got = features_of(rows, cfg, as_of=None, now=NOW, channels=None)
    buyers = [c for c, values in enumerate(orders) if order_net(values) >= 0 or c % 2 == 0]
    table = got.table.sort("customer_id")
    assert table["customer_id"].to_list() == buyers
    # Each customer's lines in input order, as the map sums them (one order id and time: line order is input order).
    lines = {c: [a for a, x in zip(np.array(amt)[where], np.array(cid)[where]) if x == c] for c in buyers}
    want = np.array([order_net(lines[c]) for c in buyers])
    naive = np.array([sum(lines[c]) for c in buyers])
    assert (naive.view(np.uint64) != want.view(np.uint64)).sum() > 20
    assert (want == 0.0).sum() >= 8 and not np.signbit(want).any()
    np.testing.assert_array_equal(table["monetary_total"].to_numpy().view(np.uint64), want.view(np.uint64))


@pytest.mark.parametrize("lines", [2, 6, 7, 16, 17, 60, 300])
@pytest.mark.parametrize("text", [False, True])
def test_repeats_among_the_lines_of_one_order(lines, text):
    # Lines sharing an order id and time are compared field by field up to 16 of them, through a hash
    # beyond: both count the lines identical to an earlier one, NaN amounts alike, a null not a NaN.
    # A line, then lines differing from it in one field each (amount, NaN, null, channel, category),
    # then the same again: every line after the first six repeats one of them.
    variants = [(5.0, "web", "a"), (7.5, "web", "a"), (float("nan"), "web", "a"), (None, "web", "a"),
                (5.0, "app", "a"), (5.0, "web", "b")]
    amt, ch, cat = zip(*(variants * lines)[:lines], strict=True)
    t = START + dt.timedelta(days=3)
    frame = pl.DataFrame({"cid": [1] * lines + [2], "t": [t] * (lines + 1), "amt": [*amt, 4.0],
                          "o": [9] * (lines + 1), "ch": [*ch, "web"], "cat": [*cat, "a"]},
                         schema={"cid": pl.Int64, "t": pl.Datetime("us"), "amt": pl.Float64, "o": pl.Int64,
                                 "ch": pl.String, "cat": pl.String})
    if text:
        frame = frame.with_columns(pl.col("t").dt.strftime("%Y-%m-%d %H:%M"),
                                   pl.col("amt").cast(pl.String).fill_null("n/a"))
    cfg = _cfg(frame, "int", text)
    got = features_of(frame, cfg, as_of=None, now=NOW, channels=None)
    want = reference_map(frame, cfg, as_of=None, now=NOW)
    assert got.repeats == want["repeats"] == max(0, lines - len(variants))
    assert got.rejected == want["rejected"]
    _assert_same_table(got.table, want["table"])


@pytest.mark.parametrize("text", [False, True])
def test_repeats_of_values_written_differently(text):
    """Lines of one order at one time that differ only in how a value was written, or in what made a time
    unusable: 0.0 and -0.0; "5", "5.0" and "05"; a time missing (held as 0, as 1970-01-01 is), unparseable
    or in the future. The field-by-field comparison (up to 16 lines) and the hash sort (beyond) agree with the
    reference, and with each other: past the distinct lines, every further line is one repeat more."""
    t = START + dt.timedelta(days=3)
    if text:
        when, late = t.strftime("%Y-%m-%d %H:%M"), (NOW + dt.timedelta(days=9)).strftime("%Y-%m-%d %H:%M")
        variants = [(when, "5"), (when, "5.0"), (when, "05"), (when, "0"), (when, "-0"), (when, "-0.0"),
                    (None, "5"), ("not a time", "5"), ("1970-01-01 00:00", "5"), (late, "5"), (when, "n/a"),
                    (when, None)]
        schema = {"t": pl.String, "amt": pl.String}
    else:
        late = NOW + dt.timedelta(days=9)
        variants = [(t, 5.0), (t, 0.0), (t, -0.0), (t, float("nan")), (t, None), (None, 5.0),
                    (dt.datetime(1970, 1, 1), 5.0), (late, 5.0), (late, -0.0)]
        schema = {"t": pl.Datetime("us"), "amt": pl.Float64}
    extra = {}
    for lines in (len(variants) + 3, 40, 130):
        when_, amt = zip(*(variants * (lines // len(variants) + 1))[:lines], strict=True)
        frame = pl.DataFrame({"cid": [1] * lines, "t": list(when_), "amt": list(amt), "o": [9] * lines,
                              "ch": ["web"] * lines, "cat": ["a"] * lines},
                             schema={"cid": pl.Int64, **schema, "o": pl.Int64, "ch": pl.String, "cat": pl.String})
        cfg = _cfg(frame, "int", text)
        got = features_of(frame, cfg, as_of=None, now=NOW, channels=None)
        want = reference_map(frame, cfg, as_of=None, now=NOW)
        assert got.repeats == want["repeats"] and got.rejected == want["rejected"], lines
        _assert_same_table(got.table, want["table"])
        extra[lines] = got.repeats - lines
    assert len(set(extra.values())) == 1, extra


def _assert_same_table(got: pl.DataFrame, want: pl.DataFrame) -> None:
    got = got.drop("activity_status")
    assert got.columns == want.columns and got.height == want.height
    assert got["customer_id"].to_list() == want["customer_id"].to_list()
    for name in got.columns[1:]:
        a, b = got[name].to_numpy().astype(float), want[name].to_numpy().astype(float)
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-9, err_msg=name)


def test_features_of_clean_lines_follow_their_definitions():
    from segmint.engine.features.table import compute_features

    lines = pl.DataFrame({"customer_id": [1, 1, 2], "ts": [START, START + dt.timedelta(days=10), START],
                          "amount": [10.0, 30.0, 7.0]})
    table = compute_features(lines, START + dt.timedelta(days=20), FeatureConfig()).table
    one = table.row(0, named=True)
    assert (one["frequency"], one["monetary_total"], one["recency_days"], one["tenure_days"]) == (2, 40.0, 10.0, 20.0)
    assert one["ipt_mean_days"] == 10.0 and one["lt_monetary"] == 30.0


def test_a_customer_with_many_shuffled_lines_is_put_in_line_order():
    # Thousands of lines in random order: beyond insertion sort's budget, the stable sorts take over.
    rng = np.random.default_rng(3)
    n = 4000
    frame = pl.DataFrame({"cid": np.repeat([1, 2], n // 2), "t": [START + dt.timedelta(hours=int(h))
                                                                 for h in rng.integers(0, 2000, n)],
                          "amt": np.round(rng.normal(20, 15, n), 2), "o": rng.integers(0, 300, n),
                          "ch": rng.choice(["web", "app"], n), "cat": rng.choice(["a", "b", "c"], n)})
    frame = frame.sample(fraction=1.0, shuffle=True, seed=1)
    cfg = _cfg(frame, "int", False)
    got = features_of(frame, cfg, as_of=None, now=NOW, channels=None)
    _assert_same_table(got.table, reference_map(frame, cfg, as_of=None, now=NOW)["table"])


def test_decimal_ids_are_exact_beyond_two_to_the_53():
    # Decimal(20, 0) ids (Spark writes them) went through Float64: 2^53 and 2^53 + 1 became one customer.
    from decimal import Decimal

    ids = [2**53, 2**53 + 1, 123456789012345678]
    frame = pl.DataFrame({"cid": pl.Series([Decimal(i) for i in ids], dtype=pl.Decimal(20, 0)),
                          "t": [START + dt.timedelta(days=d) for d in range(3)], "amt": [1.0, 2.0, 3.0]})
    cfg = RunConfig(columns=Columns(customer="cid", time="t", amount="amt", order=None, channel=None, category=None))
    got = features_of(frame, cfg, as_of=None, now=NOW, channels=None).table
    assert got["customer_id"].to_list() == ids and got["monetary_total"].to_list() == [1.0, 2.0, 3.0]
    for bad in (Decimal("1.5"), Decimal(2**64)):   # fractional, or beyond int64: stop, never round
        frame = frame.with_columns(pl.Series("cid", [Decimal(1), Decimal(2), bad], dtype=pl.Decimal(38, 1)))
        with pytest.raises(InputContractError, match="not whole numbers"):
            features_of(frame, cfg, as_of=None, now=NOW, channels=None)


def test_a_null_among_a_dictionarys_values_is_a_missing_id_for_the_partition_and_the_map():
    from segmint.engine.io.canonical import usable_tally

    never = np.iinfo(np.int64).max
    times = [START, START + dt.timedelta(hours=1), START]   # the row of no id is the latest
    table = pa.table({"cid": pa.DictionaryArray.from_arrays(pa.array([0, 1, 0], pa.int32()), pa.array(["a", None])),
                      "t": pa.array(times, pa.timestamp("us")), "amt": [1.0, 2.0, 3.0],
                      "ch": ["web", "app", "web"]})
    cols = Columns(customer="cid", time="t", amount="amt", order=None, channel="ch", category=None)
    latest, channels = usable_tally(table, cols, True, never, never)
    assert latest == (START - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1)
    assert channels == {"web": 2}
    mapped = map_lines(tables_read([table]), 3, dict(pl.from_arrow(table).schema), RunConfig(columns=cols),
                       as_of=None, now=NOW, channels=None, mode="features",
                       reread=lambda positions: table.take(pa.array(positions)),
                       reason_column="reason")
    assert mapped.rejected["null_customer_id"] == 1 and mapped.rows_used == 2
