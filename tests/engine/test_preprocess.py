"""The clustering matrix: fit_scaler's statistics and transform's values as plain NumPy computes them."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from segmint.engine.preprocess import fit_scaler


def _signed_log(v):
    return np.sign(v) * np.log1p(np.abs(v))


@pytest.mark.parametrize("rows", [1, 8191, 8192, 8193, 30_001, 140_001])
def test_scaler_and_matrix_match_numpy_across_row_blocks_and_chunks(rows):
    rng = np.random.default_rng(rows)
    frame = pl.DataFrame({"a": rng.lognormal(0, 2, rows) * rng.choice([-1, 1], rows),
                          "b": rng.integers(0, 50, rows), "c": rng.normal(0, 1, rows)})
    half = rows // 2
    table = pl.concat([frame.slice(0, half), frame.slice(half)], rechunk=False)   # two chunks, as gathered
    scaler = fit_scaler(table, ["a", "b", "c"], ["a", "b"])
    raw = np.column_stack([_signed_log(frame["a"].to_numpy()), _signed_log(frame["b"].to_numpy().astype(float)),
                           frame["c"].to_numpy()])
    std = raw.std(axis=0)
    std[std == 0] = 1.0
    assert scaler.mean == tuple(raw.mean(axis=0).tolist())
    assert scaler.std == tuple(std.tolist())
    x = scaler.transform(table)
    assert x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_array_equal(x, ((raw - raw.mean(axis=0)) / std).astype(np.float32))


@pytest.mark.parametrize("bad", [None, float("nan"), 1e300])
def test_a_missing_or_overflowing_cluster_feature_is_refused_with_the_customers_counted(bad):
    # No centroid is nearest to a NaN row: it would have landed in a segment at random, with exit 0.
    from segmint.engine.errors import ConfigError

    frame = pl.DataFrame({"customer_id": [10, 11, 12], "a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, 6.0]})
    scaler = fit_scaler(frame, ["a", "b"], [])
    broken = frame.with_columns(pl.Series("b", [4.0, bad, 6.0], dtype=pl.Float64))
    with pytest.raises(ConfigError, match="cluster feature 'b' is missing or not a finite number for 1 cu"):
        scaler.transform(broken)
    assert np.isfinite(scaler.transform(frame)).all()
    # Fitted on such a column: its mean was NaN, and every customer was counted (buyers without events for
    # days_since_last_visit: 40 of 40 where 3 had no events).
    if bad is None or bad != bad:   # a value past float32 is finite until scaled into the matrix
        with pytest.raises(ConfigError, match="cluster feature 'b' is missing or not a finite number for 1 cu"):
            fit_scaler(broken, ["a", "b"], [])


def test_nulls_booleans_wide_integers_and_text_in_cluster_features_convert_as_polars_casts_them():
    """Integers and floats NumPy holds, without nulls, are converted by NumPy; the rest goes through Polars'
    cast, as before: a null integer is NaN (refused, customers counted), booleans are 0/1, a 128-bit integer
    is a number, text is refused."""
    from segmint.engine.errors import ConfigError

    frame = pl.DataFrame({"customer_id": [1, 2, 3], "n": [3, 5, 7], "flag": [True, False, True],
                          "wide": pl.Series([2, -4, 9], dtype=pl.Int128), "t": ["x", "y", "z"]})
    scaler = fit_scaler(frame, ["n", "flag", "wide"], ["n"])
    x = scaler.transform(frame)
    for j, values in ((1, np.array([1.0, 0.0, 1.0])), (2, np.array([2.0, -4.0, 9.0]))):
        assert scaler.mean[j] == values.mean()
        np.testing.assert_array_equal(x[:, j], ((values - values.mean()) / values.std()).astype(np.float32))
    with pytest.raises(ConfigError, match="cluster feature 'n' is missing .* for 1 customer"):
        fit_scaler(frame, ["n"], ["n"]).transform(frame.with_columns(pl.Series("n", [3, None, 7])))
    with pytest.raises(ConfigError, match=r"\['t'\] are not numeric features"):
        fit_scaler(frame, ["t"], [])


@pytest.mark.parametrize("value", [1.0, 0.1, 7.3, 1e6])
def test_a_constant_feature_gets_std_one_though_its_computed_std_is_rounding_noise(value):
    # frequency 1 for every customer (log1p): the std came out 1.2e-15, not 0, so a new customer with two
    # orders sat 3e14 standard deviations from every centroid and went to segment 0, the first of equal ties.
    frame = pl.DataFrame({"f": np.full(1000, value), "g": np.linspace(0.0, 1.0, 1000)})
    scaler = fit_scaler(frame, ["f", "g"], ["f"])
    assert scaler.std[0] == 1.0 and scaler.std[1] != 1.0
    new = pl.DataFrame({"f": [value, value + 1.0], "g": [0.5, 0.5]})
    scaled = scaler.transform(new)[:, 0]   # float32, as clustering takes it
    assert scaled[0] == 0.0
    assert scaled[1] == pytest.approx(np.log1p(value + 1.0) - np.log1p(value), rel=1e-6)


def test_a_missing_feature_is_refused_with_a_fix_that_fits_fitting_or_scoring():
    # Scoring with a model told the batch to "cluster on features every customer has", which scoring cannot do.
    from segmint.engine.errors import ConfigError

    gap = pl.DataFrame({"f": [1.0, None, 3.0], "g": [1.0, 2.0, 3.0]})
    with pytest.raises(ConfigError, match=r"'f' is missing .* for 1 customer\(s\); cluster on features every "):
        fit_scaler(gap, ["f", "g"], [])
    scaler = fit_scaler(gap.fill_null(2.0), ["f", "g"], [])
    with pytest.raises(ConfigError, match=r"for 1 customer\(s\); the model clusters on it: cluster on features every "):
        scaler.transform(gap)
