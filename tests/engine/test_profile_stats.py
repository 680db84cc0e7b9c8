"""Profile statistics read from one sort give NumPy's median and linear quantiles to the bit."""

import numpy as np
import pytest

from segmint.engine.profile import sorted_stats


def _numpy(v: np.ndarray) -> tuple[float, float, float]:
    return (float(np.median(v)), *np.quantile(v, [0.1, 0.9]).tolist())


def _bits(values: tuple[float, ...]) -> bytes:
    return np.asarray(values, np.float64).tobytes()   # -0.0 and 0.0 differ here, as in a Parquet file


@pytest.mark.parametrize("n", [*range(1, 25), 99, 100, 1001, 65_537])
def test_sorted_stats_match_numpy_bit_for_bit(n):
    rng = np.random.default_rng(n)
    samples = [
        rng.normal(size=n) * 10.0 ** rng.integers(-5, 8),
        rng.integers(0, 4, n).astype(np.float64),                                  # ties
        np.round(rng.exponential(30.0, n)),                                        # day counts
        rng.choice(np.array([-0.0, -1e308, 1e308, 5e-324, 1.0]), n),                # a signed zero, extremes
        np.full(n, -0.0),
    ]
    for v in samples:
        assert _bits(sorted_stats(np.sort(v))) == _bits(_numpy(v)), v[:10]


def test_sorted_stats_with_both_zeros_are_numpys_numbers():
    # -0.0 == 0.0: a sort and NumPy's partition may leave either at an index, so only the number is NumPy's.
    rng = np.random.default_rng(7)
    for n in range(1, 200):
        v = rng.choice(np.array([-0.0, 0.0, -2.0, 3.0]), n)
        assert sorted_stats(np.sort(v)) == _numpy(v)


@pytest.mark.parametrize("n", [1, 7, 5000])
@pytest.mark.parametrize("with_clv", [True, False])
def test_kpi_partials_count_and_sum_each_segment_as_a_plain_loop_does(n, with_clv):
    """Segment ids not in 0..k-1 order, statuses with nulls, outliers, and sums whose rounding depends
    on the order: the counts are a loop's, and the partials sum exactly to each segment's exact sum."""
    import math

    import polars as pl

    from segmint.engine.features.lifecycle import STATUSES
    from segmint.engine.profile import kpi_partials

    rng = np.random.default_rng(n)
    ids = (3, 0, 7)
    status = [None if rng.random() < 0.1 else STATUSES[i] for i in rng.integers(0, len(STATUSES), n)]
    table = pl.DataFrame({
        "segment": rng.choice(ids, n).astype(np.int32), "distance": rng.exponential(1.0, n).astype(np.float32),
        "frequency": rng.integers(0, 30, n), "lt_frequency": rng.integers(0, 4, n),
        "activity_status": pl.Series(status, dtype=pl.Enum(STATUSES)), "outlier": rng.random(n) < 0.2,
        "monetary_total": rng.normal(0, 1, n) * 10.0 ** rng.integers(-3, 12, n),
        "clv": rng.exponential(100.0, n) * 10.0 ** rng.integers(0, 9, n)})
    if not with_clv:
        table = table.drop("clv")
    got = kpi_partials(table, ids)
    rows = table.to_dicts()
    for j, s in enumerate(ids):
        mine = [r for r in rows if r["segment"] == s]
        assert got.customers[j] == len(mine)
        assert got.orders[j] == sum(r["frequency"] for r in mine)
        assert got.repurchasers[j] == sum(r["lt_frequency"] >= 1 for r in mine)
        assert got.outliers[j] == sum(r["outlier"] for r in mine)
        for st in STATUSES:
            assert got.status[st][j] == sum(r["activity_status"] == st for r in mine)
        assert math.fsum(got.revenue[j]) == math.fsum(r["monetary_total"] for r in mine)
        if with_clv:
            assert math.fsum(got.clv[j]) == math.fsum(r["clv"] for r in mine)
    assert got.clv is None if not with_clv else len(got.clv) == len(ids)
    distance = table["distance"].to_numpy().astype(np.float64)
    assert math.fsum(got.inertia) == math.fsum((distance * distance).tolist())


def test_feature_statistics_of_values_near_the_float_range_stay_finite():
    # Squares of values beyond ~1.3e154 pass the float range: the std was inf, and writing profiles.json stopped
    # the run with exit 1. Ordinary values keep NumPy's own bits.
    from segmint.engine.profile import _feature_stats

    rng = np.random.default_rng(0)
    ordinary = rng.gamma(2.0, 50.0, 1_000)
    for values in (ordinary, np.append(ordinary, 1e300), np.append(ordinary, [1.7e308, 1.7e308])):
        order = np.argsort(values % 3, kind="stable")   # three segments
        by = values[order]
        seg = (values % 3)[order]
        bounds = (np.searchsorted(seg, [0, 1, 2]), np.searchsorted(seg, [1, 2, 3]))
        stats = _feature_stats("m", values, by, bounds)
        for i, (lo, hi) in enumerate(zip(*bounds, strict=True)):
            v = by[lo:hi]
            assert all(s[i] is None or np.isfinite(s[i]) for s in stats.values())
            with np.errstate(over="ignore", invalid="ignore"):
                plain = np.isfinite(v.std(ddof=1)) and np.isfinite(v.mean())
            if plain:
                assert stats["m_std"][i] == v.std(ddof=1) and stats["m_mean"][i] == v.mean()
            else:   # against the same statistics of the values scaled down by hand
                with np.errstate(over="ignore"):
                    mean, std = (v / 2.0**1000).mean() * 2.0**1000, (v / 2.0**1000).std(ddof=1) * 2.0**1000
                assert stats["m_mean"][i] == pytest.approx(mean, rel=1e-12)
                assert stats["m_std"][i] == pytest.approx(std, rel=1e-12) if np.isfinite(std) else \
                    stats["m_std"][i] is None
    # A population spread beyond the float range: no std, and no lift (0.0 read as "typical").
    v = np.array([1.7e308, 1.6e308, -1.7e308, -1.6e308])
    stats = _feature_stats("f", v, v.copy(), (np.array([0, 2]), np.array([2, 4])))
    assert stats["f_zlift"] == [None, None] and stats["f_mean"] == pytest.approx([1.65e308, -1.65e308])
    assert stats["f_median"] == pytest.approx([1.65e308, -1.65e308])   # the mean of two values near the range
    assert all(x is None or np.isfinite(x) for column in stats.values() for x in column)


@pytest.mark.parametrize("high", [1, 8, 300, 70_000])
def test_segments_are_ordered_as_a_stable_argsort_orders_them(high):
    # Narrowed to 8 or 16 bits below 2^8 and 2^16 (a radix sort); ids beyond, and none at all, as they are.
    from segmint.engine.profile import _stable_order

    rng = np.random.default_rng(high)
    for seg in (rng.integers(0, high, 50_000, dtype=np.int32), np.zeros(0, np.int32),
                np.array([high - 1, 0, high - 1, 0], np.int32), rng.integers(-3, high, 1000).astype(np.int64)):
        assert _stable_order(seg).tolist() == np.argsort(seg, kind="stable").tolist()


@pytest.mark.parametrize("case", ["ordinary", "zeros", "nonfinite", "outside", "outside between", "outside nonfinite",
                                  "empty segment", "ties"])
def test_feature_statistics_are_plain_numpys_on_the_finite_values(case):
    # The population's mean and std are NumPy's on its finite values in the sample's order, and a median's
    # percentile counts the population below and up to it, though no sort of the population is made (its ranks
    # come from the segments' sorted values, and from the rows of no segment where there are any: "outside").
    from segmint.engine.profile import _feature_stats

    rng = np.random.default_rng(len(case))
    values = np.round(rng.gamma(2.0, 50.0, 20_000), 1 if case == "ties" else 12)
    if case == "zeros":
        values[rng.random(values.size) < 0.4] = 0.0
        values[rng.random(values.size) < 0.3] = -0.0
        values[rng.random(values.size) < 0.2] *= -1
    if case == "nonfinite":
        values[rng.random(values.size) < 0.05] = np.nan
        values[:3] = [np.inf, -np.inf, np.nan]
    seg = rng.integers(0, 5, values.size)
    if case == "empty segment":
        seg[seg == 2] = 3
    order = np.argsort(seg, kind="stable")
    by, sorted_seg = values[order], seg[order]
    ids = np.arange(5)
    lo, hi = np.searchsorted(sorted_seg, ids, "left"), np.searchsorted(sorted_seg, ids, "right")
    if case == "outside nonfinite":   # rows of no segment, every one of them NaN or infinite
        by[sorted_seg == 4] = np.where(rng.random(int((sorted_seg == 4).sum())) < 0.5, np.nan, np.inf)
        values = by[np.argsort(order)]
    if case.startswith("outside"):   # the last segment's rows are in no segment of the profile
        lo, hi = lo[:4], hi[:4]
    if case == "outside between":   # the rows of a segment between two others
        lo, hi = np.delete(lo, 2), np.delete(hi, 2)
    got = _feature_stats("f", values, by, (lo, hi))
    pop = values[np.isfinite(values)]
    mean, std = pop.mean(), pop.std(ddof=1)
    for i, (a, b) in enumerate(zip(lo, hi, strict=True)):
        v = by[a:b][np.isfinite(by[a:b])]
        if not v.size:
            assert all(got[f"f_{stat}"][i] is None for stat in ("mean", "median", "median_pct", "zlift"))
            continue
        median = np.median(v)
        assert np.float64(got["f_median"][i]).tobytes() == median.tobytes()
        assert [got["f_p10"][i], got["f_p90"][i]] == np.quantile(v, [0.1, 0.9]).tolist()
        assert got["f_mean"][i] == v.mean() and got["f_std"][i] == v.std(ddof=1)
        assert got["f_zlift"][i] == (v.mean() - mean) / std
        assert got["f_median_pct"][i] == 100.0 * ((pop < median).sum() + (pop <= median).sum()) / 2 / pop.size
    if case == "zeros":
        assert any(x is not None and x == 0.0 for x in got["f_median"] + got["f_p10"])
