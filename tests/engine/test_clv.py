"""CLV: published CDNOW estimates, recovery from simulation, kernels vs a plain log-likelihood."""

import json
import math

import numpy as np
import polars as pl
import pytest
from scipy.special import betaln, gammaln

from segmint.bench.clv_fit import simulate_bgnbd, simulate_spend
from segmint.engine.analytics.clv import fit_bgnbd, fit_gamma_gamma, p_alive
from segmint.engine.config import ClvConfig, Columns, RunConfig
from segmint.engine.pipeline import compute_clv, compute_feature_table
from tests.conftest import SHARED

SAMPLE_COLUMNS = Columns(customer="customer_id", time="date", time_format="%Y%m%d", amount="dollars")
CALIBRATION = RunConfig(columns=SAMPLE_COLUMNS, as_of="1997-09-30", clv=ClvConfig(time_unit="week"))


def _sig3(x: float) -> float:
    return float(f"{x:.3g}")


def test_cdnow_weekly_summary_matches_reference(cdnow_sample, tmp_path):
    table = compute_feature_table([cdnow_sample], tmp_path / "f.parquet", CALIBRATION)
    ref = pl.read_csv(SHARED / "cdnow_customers_summary.csv").rename({"ID": "customer_id"})
    got = table.join(ref, on="customer_id")
    assert got.height == ref.height == 2357
    assert (got["lt_frequency"] == got["frequency_right"]).all()
    np.testing.assert_allclose(got["lt_recency"] / 7, got["recency"], atol=0.005)
    np.testing.assert_allclose(got["lt_T"] / 7, got["T"], atol=0.005)


def test_clv_params_reproduce_published_cdnow_estimates(cdnow_sample, tmp_path):
    params = compute_clv([cdnow_sample], tmp_path / "clv", CALIBRATION)
    # Fader, Hardie & Lee (2005) BG/NBD; Fader & Hardie (2013) Gamma-Gamma.
    assert [_sig3(v) for v in (params.r, params.alpha, params.a, params.b)] == [0.243, 4.41, 0.793, 2.43]
    assert [_sig3(v) for v in (params.p, params.q, params.v)] == [6.25, 3.74, 15.4]
    assert params.log_likelihood == pytest.approx(-9582.4, abs=0.1)
    assert (params.n, params.n_gg) == (2357, 946)
    written = json.loads((tmp_path / "clv" / "clv_params.json").read_text())
    assert set(written) >= {"r", "alpha", "a", "b", "p", "q", "v", "log_likelihood", "n"}
    clv = pl.read_parquet(tmp_path / "clv" / "clv.parquet")
    assert clv.height == 2357
    assert clv["p_alive"].is_between(0, 1).all() and (clv["clv"] >= 0).all()
    # Customers who never repeated are certainly alive in BG/NBD.
    assert (clv.filter(pl.col("lt_frequency") == 0)["p_alive"] == 1).all()


def test_bgnbd_recovers_simulated_parameters():
    truth = (0.5, 6.0, 0.9, 3.0)
    x, tx, T = simulate_bgnbd(np.random.default_rng(0), 60_000, *truth)
    r, alpha, a, b, _ = fit_bgnbd(x, tx, T)
    # Normal relative errors at this size: under 5%.
    np.testing.assert_allclose([r, alpha, a, b], truth, rtol=0.12)


def test_gamma_gamma_recovers_simulated_parameters():
    rng = np.random.default_rng(1)
    p, q, v = 5.0, 4.0, 20.0
    x = rng.integers(1, 12, 40_000).astype(float)
    got = fit_gamma_gamma(x, simulate_spend(rng, x, p, q, v))[:3]
    np.testing.assert_allclose(got, (p, q, v), rtol=0.08)


def _bgnbd_ll_ref(params, x, tx, T):
    r, alpha, a, b = params
    total = 0.0
    for xi, txi, Ti in zip(x, tx, T, strict=True):
        base = gammaln(r + xi) - gammaln(r) + r * math.log(alpha)
        l1 = betaln(a, b + xi) - betaln(a, b) + base - (r + xi) * math.log(alpha + Ti)
        if xi > 0:
            l2 = betaln(a + 1, b + xi - 1) - betaln(a, b) + base - (r + xi) * math.log(alpha + txi)
            total += np.logaddexp(l1, l2)
        else:
            total += l1
    return total


def test_bgnbd_fit_maximises_the_textbook_likelihood():
    x, tx, T = simulate_bgnbd(np.random.default_rng(2), 3000, 0.3, 5.0, 0.8, 2.5)
    r, alpha, a, b, ll = fit_bgnbd(x, tx, T)
    assert ll == pytest.approx(_bgnbd_ll_ref((r, alpha, a, b), x, tx, T), rel=1e-10)
    for bump in np.eye(4) * 0.01:
        moved = np.array([r, alpha, a, b]) * (1 + bump)
        assert _bgnbd_ll_ref(moved, x, tx, T) < ll


def test_p_alive_closed_form():
    params = (0.25, 4.0, 0.8, 2.5)
    x, tx, T = np.array([0.0, 2.0]), np.array([0.0, 10.0]), np.array([30.0, 30.0])
    expected = 1 / (1 + 0.8 / (2.5 + 1) * ((4 + 30) / (4 + 10)) ** (0.25 + 2))
    np.testing.assert_allclose(p_alive(params, x, tx, T), [1.0, expected])


def test_run_adds_clv_and_assign_reuses_the_params(small_run):
    from segmint.engine.model import Model

    a = pl.read_parquet(small_run / "assignments")
    assert {"p_alive", "expected_purchases", "expected_avg_value", "clv"} <= set(a.columns)
    model = Model.load(small_run)
    assert model.clv is not None and model.clv_config == RunConfig().clv
    prof = pl.read_parquet(small_run / "profiles.parquet")
    assert prof["clv_total"].sum() == pytest.approx(a["clv"].sum())
    assert "clv_mean" in prof.columns and "p_alive_mean" in prof.columns
