"""column_moments against NumPy's x.mean(axis=0) and x.std(axis=0), bit for bit."""

import numpy as np
import pytest

from segmint.kernels.moments import column_moments


@pytest.mark.parametrize("seed", range(6))
def test_column_moments_are_numpys_bits(seed):
    rng = np.random.default_rng(seed)
    for n in (1, 2, 3, 17, 1000, 70_001):
        d = int(rng.integers(2, 20))
        x = rng.standard_normal((n, d)) * rng.uniform(0.1, 1e4, d) + rng.uniform(-5, 5, d)
        x[:, 0] = -0.0                               # NumPy's sums start at +0.0
        x[:, 1] = 7.25                               # a constant column
        if seed % 2:
            x[rng.integers(0, n), d - 1] = [np.nan, np.inf, -np.inf][seed % 3]
        mean, std = column_moments(x)
        with np.errstate(invalid="ignore"):
            want_mean, want_std = x.mean(axis=0), x.std(axis=0)
        assert mean.tobytes() == want_mean.tobytes() and std.tobytes() == want_std.tobytes()


def test_a_fitted_scaler_has_numpys_statistics():
    import polars as pl

    from segmint.engine.preprocess import fit_scaler

    rng = np.random.default_rng(9)
    table = pl.DataFrame({"a": rng.exponential(50, 5000), "b": rng.normal(0, 3, 5000), "c": rng.integers(0, 9, 5000)})
    scaler = fit_scaler(table, ["a", "b", "c"], ["a"])
    raw = np.column_stack([np.log1p(table["a"].to_numpy()), table["b"].to_numpy(), table["c"].to_numpy()])
    assert scaler.mean == tuple(raw.mean(axis=0)) and scaler.std == tuple(raw.std(axis=0))
    one = fit_scaler(table, ["b"], [])   # a single column: NumPy's own (pairwise) sums
    assert one.mean == (table["b"].to_numpy().mean(),) and one.std == (table["b"].to_numpy().std(),)
