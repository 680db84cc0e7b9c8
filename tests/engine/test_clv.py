"""CLV: published CDNOW estimates, recovery from simulation, kernels vs a plain log-likelihood."""

import json
import math

import numpy as np
import polars as pl
import pytest
from scipy.special import betaln, gammaln

from segmint.engine.analytics.clv import (PARAM_LIMIT, fit_bgnbd, fit_clv, fit_gamma_gamma, fit_nbd, p_alive,
                                          predict_clv)
from segmint.engine.analytics.clv_simulate import simulate_bgnbd, simulate_nbd, simulate_spend
from segmint.engine.config import ClvConfig, Columns, RunConfig
from segmint.engine.errors import ConfigError
from segmint.engine.pipeline import compute_clv, compute_feature_table
from tests.fixtures import DATA
from tests.reference import gamma_gamma_ll_ref

SAMPLE_COLUMNS = Columns(customer="customer_id", time="date", time_format="%Y%m%d", amount="dollars")
CALIBRATION = RunConfig(columns=SAMPLE_COLUMNS, as_of="1997-09-30", clv=ClvConfig(time_unit="week"))


def _sig3(x: float) -> float:
    return float(f"{x:.3g}")


def test_cdnow_weekly_summary_matches_reference(cdnow_sample, tmp_path):
    compute_feature_table([cdnow_sample], tmp_path / "f", CALIBRATION)
    table = pl.read_parquet(tmp_path / "f" / "features")
    ref = pl.read_parquet(DATA / "cdnow_sample_summary_weeks.parquet").rename({"ID": "customer_id"})
    got = table.join(ref, on="customer_id")
    assert got.height == ref.height == 2357
    assert (got["lt_frequency"] == got["frequency_right"]).all()
    np.testing.assert_allclose(got["lt_recency"] / 7, got["recency"], atol=0.005)
    np.testing.assert_allclose(got["lt_T"] / 7, got["T"], atol=0.005)


def test_clv_params_reproduce_published_cdnow_estimates(cdnow_sample, tmp_path):
    params = compute_clv([cdnow_sample], tmp_path / "clv", CALIBRATION).clv
    # Fader, Hardie & Lee (2005) BG/NBD; Fader & Hardie (2013) Gamma-Gamma.
    assert [_sig3(v) for v in (params.r, params.alpha, params.a, params.b)] == [0.243, 4.41, 0.793, 2.43]
    assert [_sig3(v) for v in (params.p, params.q, params.v)] == [6.25, 3.74, 15.4]
    assert params.log_likelihood == pytest.approx(-9582.4, abs=0.1)
    assert (params.n, params.n_gg) == (2357, 946)
    written = json.loads((tmp_path / "clv" / "clv_params.json").read_text())
    assert set(written) >= {"r", "alpha", "a", "b", "p", "q", "v", "log_likelihood", "n"}
    clv = pl.read_parquet(tmp_path / "clv" / "clv")
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


@pytest.mark.parametrize("unit", [15_000.0, 1e-7])
def test_gamma_gamma_is_the_same_model_in_any_currency_unit(unit):
    # v is money: spend in rupiah (lines of 200,000) put it past its bound of 1e5, and the fit was "degenerate"
    # (segmint clv exit 3; run skipped CLV). The same spend in another unit is the same model, v in that unit.
    rng = np.random.default_rng(2)
    x = rng.integers(1, 12, 5_000).astype(float)
    m = simulate_spend(rng, x, 5.0, 4.0, 20.0)
    p, q, v, ll = fit_gamma_gamma(x, m)
    p2, q2, v2, ll2 = fit_gamma_gamma(x, m * unit)
    np.testing.assert_allclose([p2, q2, v2 / unit], [p, q, v], rtol=1e-6)
    # The density of m * unit is that of m divided by unit, once per customer.
    assert ll2 == pytest.approx(ll - x.size * np.log(unit), rel=1e-9)
    assert v2 > PARAM_LIMIT if unit > 1 else v2 < 1 / PARAM_LIMIT


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


def test_gamma_gamma_fit_maximises_the_textbook_likelihood():
    rng = np.random.default_rng(3)
    x = rng.integers(1, 12, 2000).astype(float)
    m = simulate_spend(rng, x, 5.0, 4.0, 20.0)
    p, q, v, ll = fit_gamma_gamma(x, m)

    def textbook(params):
        return sum(gamma_gamma_ll_ref(xi, mi, *params) for xi, mi in zip(x, m, strict=True))

    assert ll == pytest.approx(textbook((p, q, v)), rel=1e-10)
    for bump in np.eye(3) * 0.01:
        assert textbook(np.array([p, q, v]) * (1 + bump)) < ll
        assert textbook(np.array([p, q, v]) * (1 - bump)) < ll


def test_p_alive_closed_form():
    params = (0.25, 4.0, 0.8, 2.5)
    x, tx, T = np.array([0.0, 2.0]), np.array([0.0, 10.0]), np.array([30.0, 30.0])
    expected = 1 / (1 + 0.8 / (2.5 + 1) * ((4 + 30) / (4 + 10)) ** (0.25 + 2))
    np.testing.assert_allclose(p_alive(params, x, tx, T), [1.0, expected])


def test_run_adds_clv_and_assign_reuses_the_params(small_data, small_run, tmp_path):
    from segmint.engine.model import Model
    from segmint.engine.pipeline import assign_customers

    a = pl.read_parquet(small_run / "assignments")
    clv_columns = ["p_alive", "expected_purchases", "expected_avg_value", "clv"]
    assert set(clv_columns) <= set(a.columns)
    model = Model.load(small_run)
    assert model.clv is not None and model.clv_config == RunConfig().clv
    prof = pl.read_parquet(small_run / "profiles.parquet")
    assert prof["clv_total"].sum() == pytest.approx(a["clv"].sum())
    assert "clv_mean" in prof.columns and "p_alive_mean" in prof.columns

    # assign scores every tenth customer with the saved parameters: each gets the CLV the run gave them.
    few_ids = a["customer_id"].sort().gather_every(10)
    tx = pl.read_parquet(small_data / "transactions")
    tx.filter(pl.col("customer_id").is_in(few_ids.implode())).write_parquet(tmp_path / "few.parquet")
    as_of = json.loads((small_run / "run.json").read_text())["as_of"]  # the same as-of, so the same features
    assign_customers(small_run, [tmp_path / "few.parquet"], tmp_path / "scored", RunConfig(as_of=as_of))
    scored = pl.read_parquet(tmp_path / "scored" / "assignments").sort("customer_id")
    trained = a.filter(pl.col("customer_id").is_in(few_ids.implode())).sort("customer_id")
    assert scored["customer_id"].equals(trained["customer_id"]) and scored.height == few_ids.len()
    for column in clv_columns:
        np.testing.assert_allclose(scored[column], trained[column], rtol=1e-9, err_msg=column)
    # A fit on those customers alone gives other parameters, so the check above tells a refit apart.
    compute_clv([tmp_path / "few.parquet"], tmp_path / "refit", RunConfig(as_of=as_of))
    refit = json.loads((tmp_path / "refit" / "clv_params.json").read_text())
    assert abs(refit["r"] / model.clv.r - 1) > 0.01


def _expected_alive_series(r, alpha, a, b, t, x, T):
    """Eq. 10's bracket by direct summation of the Gauss series 2F1(r + x, b + x; c; z), c = a + b + x - 1."""
    c = a + b + x - 1
    z = t / (alpha + T + t)
    term, total, n = 1.0, 1.0, 0
    while abs(term) > 1e-17 * abs(total) or n < 5:
        term *= (r + x + n) * (b + x + n) / ((c + n) * (n + 1)) * z
        total += term
        n += 1
    return c / (a - 1) * (1 - (1 - z) ** (r + x) * total)


def _expected_alive_integral(r, alpha, a, b, t, x, T):
    """The same expectation as a Beta mixture over the dropout probability, by quadrature."""
    from scipy.integrate import quad
    from scipy.special import beta as beta_fn

    def f(p):  # the Beta density's p^(a-1) (1-p)^(b+x-1) is quad's algebraic weight
        g = (1 - ((alpha + T) / (alpha + T + p * t)) ** (r + x)) / p if p > 0 else (r + x) * t / (alpha + T)
        return g / beta_fn(a, b + x)
    return quad(f, 0, 1, weight="alg", wvar=(a - 1, b + x - 1), limit=400, epsabs=0, epsrel=1e-11)[0]


@pytest.mark.parametrize("a", [0.05, 0.3, 0.9, 2.5])
@pytest.mark.parametrize("b", [0.15, 0.6, 2.0])
def test_expected_purchases_matches_series_summation_including_a_plus_b_below_one(a, b):
    from segmint.engine.analytics.clv import expected_purchases

    r, alpha = 0.8, 3.0
    x = np.array([0.0, 0.0, 1.0, 5.0, 20.0])
    T = np.array([5.0, 40.0, 30.0, 40.0, 60.0])
    tx = np.array([0.0, 0.0, 10.0, 35.0, 50.0])
    for t in (10.0, 52.0):
        got = expected_purchases((r, alpha, a, b), t, x, tx, T)
        assert np.isfinite(got).all() and (got >= 0).all()
        alive = np.array([_expected_alive_series(r, alpha, a, b, t, xi, Ti) for xi, Ti in zip(x, T)])
        np.testing.assert_allclose(got, alive * p_alive((r, alpha, a, b), x, tx, T), rtol=1e-8)


@pytest.mark.parametrize(("a", "b"), [(1.0, 0.7), (1.0 + 1e-9, 2.0), (0.4, 0.6), (0.4, 0.6 + 1e-9)])
def test_expected_purchases_at_removable_singularities(a, b):
    # a = 1 (c / (a - 1) is 0 / 0) and a + b = 1 for one-time buyers (2F1 has a pole at c = 0).
    from segmint.engine.analytics.clv import expected_purchases

    r, alpha, t = 0.8, 3.0, 52.0
    x, tx, T = np.array([0.0, 3.0]), np.array([0.0, 20.0]), np.array([30.0, 30.0])
    got = expected_purchases((r, alpha, a, b), t, x, tx, T)
    alive = np.array([_expected_alive_integral(r, alpha, a, b, t, xi, Ti) for xi, Ti in zip(x, T)])
    np.testing.assert_allclose(got, alive * p_alive((r, alpha, a, b), x, tx, T), rtol=1e-6)


def test_clv_is_finite_for_every_customer_when_the_fit_gives_a_plus_b_below_one():
    from segmint.engine.analytics.clv import ClvParams, predict_clv

    params = ClvParams(0.96, 5.2, 0.078, 0.35, 14.4, 1.53, 3.5, 0.0, 0.0, 4, 2, "week", 3.5 * 14.4 / 0.53, "model")
    assert params.a + params.b < 1
    table = pl.DataFrame({"lt_frequency": [0, 0, 1, 7], "lt_recency": [0.0, 0.0, 14.0, 300.0],
                          "lt_T": [3.0, 200.0, 100.0, 350.0], "lt_monetary": [0.0, 0.0, 20.0, 55.0]})
    out = predict_clv(table, params, ClvConfig())
    assert all(np.isfinite(out[c].to_numpy()).all() for c in out.columns)
    assert (out["clv"] > 0).all()


def test_a_spend_near_the_float_range_names_its_customer_not_the_fit():
    # assign's batch with an amount of 1e308: the message blamed the fit's parameters and named a config
    # setting assign does not take, and NumPy's overflow warning broke the --json event stream.
    import warnings

    from segmint.engine.analytics.clv import ClvFitError, ClvParams

    params = ClvParams(0.96, 5.2, 0.078, 0.35, 14.4, 1.53, 3.5, 0.0, 0.0, 4, 2, "week", 3.5 * 14.4 / 0.53, "model")
    table = pl.DataFrame({"customer_id": [7, 8], "lt_frequency": [1, 2], "lt_recency": [14.0, 30.0],
                          "lt_T": [100.0, 100.0], "lt_monetary": [20.0, 1e308]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        beyond = "CLV of 1 customer\\(s\\) is beyond the float range: .* reaches 1e\\+308"
        with pytest.raises(ClvFitError, match=beyond):
            predict_clv(table, params, ClvConfig())


def test_gamma_gamma_without_a_population_mean_uses_the_observed_mean(monkeypatch):
    import segmint.engine.analytics.clv as clv

    table = pl.DataFrame({"lt_frequency": [0, 1, 2, 3, 1], "lt_recency": [0.0, 7.0, 14.0, 21.0, 7.0],
                          "lt_T": [30.0, 30.0, 30.0, 30.0, 30.0], "lt_monetary": [0.0, 10.0, 20.0, 30.0, 40.0]})
    monkeypatch.setattr(clv, "fit_gamma_gamma", lambda x, m: (2.0, 0.8, 5.0, -1.0))  # q <= 1: no mean
    monkeypatch.setattr(clv, "fit_purchases",
                        lambda x, tx, T, choice: clv.PurchaseFit("bgnbd", 0.5, 4.0, 0.8, 2.5, -1.0, None, None))
    params = clv.fit_clv(table, ClvConfig(time_unit="day"))
    assert params.population_mean == pytest.approx(25.0) and params.population_mean_source != "model"
    out = clv.predict_clv(table, params, ClvConfig(time_unit="day"))
    assert out["expected_avg_value"][0] == pytest.approx(25.0)
    assert np.isfinite(out["clv"].to_numpy()).all()


def test_degenerate_fits_are_refused_not_returned():
    from segmint.engine.analytics.clv import ClvFitError, fit_clv

    # Identical repeat customers: the heterogeneity parameters run off to infinity.
    table = pl.DataFrame({"lt_frequency": [2] * 50, "lt_recency": [70.0] * 50, "lt_T": [140.0] * 50,
                          "lt_monetary": [25.0] * 50})
    with pytest.raises(ClvFitError, match=r"degenerate \(purchase model: .*near-identical customers"):
        fit_clv(table, ClvConfig())
    # Mean spends as spread as the model's population, but none varying with the number of orders: the
    # likelihood rises with p without a maximum. The spend model is named, not the customers' sameness
    # (segmint generate's customers, mean spends from 14 to 369, read "near-identical").
    rng = np.random.default_rng(0)
    x = rng.geometric(0.3, 1000).astype(np.float64)
    with pytest.raises(ClvFitError, match=r"degenerate \(spend model, Gamma-Gamma: p=.*do not fit the Gamma"):
        fit_gamma_gamma(x, 400 / rng.gamma(5, 1, 1000))
    too_few = table.head(2)
    with pytest.raises(ClvFitError, match="at least 3 repeat customers"):
        fit_clv(too_few, ClvConfig())


def _spend_alike(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Repeat counts and mean spends of 2,000 customers whose every line is U(10, 90): no heterogeneity."""
    rng = np.random.default_rng(seed)
    x = rng.geometric(0.4, 2000).astype(np.float64)
    return x, np.array([rng.uniform(10, 90, int(k)).mean() for k in x])


def test_gamma_gamma_of_spend_without_heterogeneity_is_refused_wherever_the_optimiser_stops():
    from segmint.engine.analytics.clv import ClvFitError

    # The likelihood rises along q -> inf: 5 of these 20 fits stopped short of the bound (q = 6,013 to 55,882)
    # and were returned, as were CLV numbers from them.
    for seed in range(20):
        with pytest.raises(ClvFitError, match=r"degenerate \(spend model, Gamma-Gamma: q=1e\+05\): customers' mean "
                                              r"spends vary too little"):
            fit_gamma_gamma(*_spend_alike(seed))


def test_a_stop_short_of_the_optimum_goes_on_to_it(monkeypatch):
    from segmint.engine.analytics import clv

    ends = []
    maximise = clv._maximise
    def spy(neg, names, n):
        theta, ll, at_edge = maximise(neg, names, n)
        ends.append(at_edge)
        return theta, ll, at_edge
    monkeypatch.setattr(clv, "_maximise", spy)
    with pytest.raises(clv.ClvFitError):
        fit_gamma_gamma(*_spend_alike(6))
    # On v's bound in the spend's unit, then (in tens) L-BFGS-B stopped at q = 6,013 with 1e-3 of log-likelihood
    # per customer still to gain per unit of log p, and the optimum was returned: it goes on to q's bound.
    assert ends == [["v=1e+05"], ["q=1e+05"]]


def test_default_horizon_spans_the_same_days_in_either_unit():
    assert ClvConfig(time_unit="week").horizon_units * 7 == ClvConfig(time_unit="day").horizon_units == 364
    assert ClvConfig(time_unit="day", horizon=30).horizon_units == 30
    # Up to 100 years for a fit to come: 100,000 weeks took 930 MB under --memory-limit 700MB and minutes,
    # deaf to SIGTERM. A saved model's longer one is still read (it was refused on construction).
    ClvConfig(time_unit="week", horizon=5_217.8).check_horizon()
    with pytest.raises(ConfigError, match=r"--horizon 100000 weeks is beyond 100 years \(5217.86 weeks\)"):
        ClvConfig(time_unit="week", horizon=100_000).check_horizon()
    with pytest.raises(ConfigError, match=r"--horizon 36526 days is beyond 100 years"):
        ClvConfig(time_unit="day", horizon=36_526).check_horizon()


def test_a_horizon_beyond_100_years_stops_a_fit_before_any_work_and_an_older_model_of_one_still_scores(
        small_data, small_run, tmp_path):
    import dataclasses as dc

    from segmint.engine.model import Model

    with pytest.raises(ConfigError, match="beyond 100 years"):
        compute_clv([small_data / "transactions"], tmp_path / "c", RunConfig(clv=ClvConfig(horizon=1e6)))
    assert not (tmp_path / "c").exists()
    model = Model.load(small_run)
    long = dc.replace(model, clv_config=dc.replace(model.clv_config, horizon=7_830.0))
    long.save(tmp_path / "m")
    assert Model.load(tmp_path / "m").clv_config.horizon == 7_830.0


def test_nbd_fit_maximises_the_negative_binomial_likelihood():
    from scipy.stats import nbinom

    x, _, T, _ = simulate_nbd(np.random.default_rng(4), 3000, 0.7, 5.0)

    def counts(r, alpha):  # x ~ NB(r, alpha / (alpha + T)): SciPy's, not ours
        return nbinom.logpmf(x, r, alpha / (alpha + T)).sum()

    r, alpha, ll = fit_nbd(x, T)
    # The timing likelihood we maximise is the count likelihood times T^x / x!, free of parameters.
    assert ll == pytest.approx(counts(r, alpha) - (x * np.log(T) - gammaln(x + 1)).sum(), rel=1e-10)
    for bump in np.eye(2) * 0.01:
        assert counts(*(np.array([r, alpha]) * (1 + bump))) < counts(r, alpha)
        assert counts(*(np.array([r, alpha]) * (1 - bump))) < counts(r, alpha)


def test_nbd_objective_summed_per_distinct_T_is_the_per_customer_one_and_its_gradient(monkeypatch):
    # fit_nbd sums -(r + x) log(alpha + T) per distinct T (over the customers there and their purchases): its value
    # is the per-customer sum's, its gradient that of central differences, at points away from the optimum too.
    import segmint.engine.analytics.clv as clv

    rng = np.random.default_rng(9)
    x = rng.integers(0, 12, 4000).astype(np.float64)
    T = rng.integers(1, 60, 4000).astype(np.float64)   # many customers to each T
    seen = []
    real = clv._maximise
    monkeypatch.setattr(clv, "_maximise", lambda neg, names, n: seen.append(neg) or real(neg, names, n))
    fit_nbd(x, T)
    neg = seen[0]

    def per_customer(theta):
        r, alpha = np.exp(theta)
        return -float(np.sum(gammaln(r + x) - gammaln(r) + r * np.log(alpha) - (r + x) * np.log(alpha + T))) / x.size

    for theta in (np.log([0.5, 3.0]), np.log([2.0, 20.0]), np.log([0.05, 0.7])):
        value, grad = neg(theta)
        assert value == pytest.approx(per_customer(theta), rel=1e-12)
        h = 1e-6
        central = [(per_customer(theta + h * e) - per_customer(theta - h * e)) / (2 * h) for e in np.eye(2)]
        np.testing.assert_allclose(grad, central, rtol=1e-5, atol=1e-9)


def test_nbd_is_the_bgnbd_without_dropout():
    x, tx, T, _ = simulate_nbd(np.random.default_rng(6), 500, 0.7, 5.0)
    r, alpha, ll = fit_nbd(x, T)
    # The textbook BG/NBD likelihood as a -> 0, whatever b: no customer ever drops out.
    for b in (0.5, 3.0):
        assert _bgnbd_ll_ref((r, alpha, 1e-10, b), x, tx, T) == pytest.approx(ll, rel=1e-8)


def _weeks_table(x, tx, T, m) -> pl.DataFrame:
    return pl.DataFrame({"lt_frequency": x, "lt_recency": tx * 7, "lt_T": T * 7, "lt_monetary": m})


def test_no_dropout_gives_the_nbd_limit_against_its_closed_form_and_the_simulation():
    rng = np.random.default_rng(5)
    r, alpha, horizon = 0.6, 4.0, 26.0
    x, tx, T, rate = simulate_nbd(rng, 40_000, r, alpha, t_range=(20.0, 60.0))
    m = np.zeros_like(x)
    m[x > 0] = simulate_spend(rng, x[x > 0], 5.0, 4.0, 20.0)
    table, cfg = _weeks_table(x, tx, T, m), ClvConfig(horizon=horizon)
    params = fit_clv(table, cfg)
    assert params.purchase_model == "nbd" and params.a is None and params.b is None
    assert params.note.startswith("no dropout detected in the window") and params.likelihood_ratio < 5.991
    np.testing.assert_allclose([params.r, params.alpha], [r, alpha], rtol=0.06)
    out = predict_clv(table, params, cfg)
    assert (out["p_alive"] == 1).all()
    # Closed form: the posterior rate is Gamma(r + x, alpha + T), its mean times the horizon.
    rate_mean = (params.r + x) / (params.alpha + T)
    np.testing.assert_allclose(out["expected_purchases"], rate_mean * horizon, rtol=1e-12)
    # Discounted as the BG/NBD path: 30-day steps (the last one partial), 10% a year compounded per step.
    step, q = 30 / 7, 1.1 ** (-30 / 365)
    n = math.ceil(horizon / step)
    weight = step * q * (1 - q ** (n - 1)) / (1 - q) + (horizon - (n - 1) * step) * q ** n
    np.testing.assert_allclose(out["clv"], rate_mean * out["expected_avg_value"] * weight, rtol=1e-10)
    # Against the simulation: the same customers' purchases in the next 26 weeks, by repeat count.
    future = rng.poisson(rate * horizon)
    for lo, hi in ((0, 0), (1, 2), (3, 6), (7, 10_000)):
        group = (x >= lo) & (x <= hi)
        se = future[group].std() / math.sqrt(group.sum())
        assert abs(out["expected_purchases"].to_numpy()[group].mean() - future[group].mean()) < 4 * se + 0.03 * future[group].mean()


def test_dropout_in_the_window_keeps_the_bgnbd():
    rng = np.random.default_rng(7)
    x, tx, T = simulate_bgnbd(rng, 20_000, 0.6, 4.0, 0.8, 2.5)
    m = np.zeros_like(x)
    m[x > 0] = simulate_spend(rng, x[x > 0], 5.0, 4.0, 20.0)
    table = _weeks_table(x, tx, T, m)
    params = fit_clv(table, ClvConfig())
    assert params.purchase_model == "bgnbd" and params.note is None and params.likelihood_ratio > 100
    assert params.a == pytest.approx(0.8, rel=0.15)
    forced = fit_clv(table, ClvConfig(purchase_model="nbd"))
    assert forced.purchase_model == "nbd" and forced.likelihood_ratio is None


def test_predictions_are_the_same_bits_scored_at_once_or_bucket_by_bucket():
    import segmint.engine.analytics.clv as clv

    rng = np.random.default_rng(9)
    x, tx, T = simulate_bgnbd(rng, 6_000, 0.6, 4.0, 0.8, 2.5)
    m = np.zeros_like(x)
    m[x > 0] = simulate_spend(rng, x[x > 0], 5.0, 4.0, 20.0)
    table = _weeks_table(x, tx, np.round(T * 7) / 7, m)   # whole days: pairs recur across parts
    cfg = ClvConfig()
    bgnbd = clv.ClvParams(0.6, 4.0, 0.8, 2.5, 5.0, 4.0, 20.0, 0.0, 0.0, 6_000, 3_000, "week", 26.7, "model")
    nbd = clv.ClvParams(0.7, 5.0, None, None, 5.0, 4.0, 20.0, 0.0, 0.0, 6_000, 3_000, "week", 26.7, "model", "nbd")
    clv._GRID = clv._PairGrid()
    for params in (bgnbd, nbd, bgnbd):   # each set of parameters replaces the grid the one before left
        whole = clv.predict_clv(table, params, cfg)
        clv._GRID = clv._PairGrid()
        # Parts of every size, each meeting pairs the parts before met and pairs of its own.
        parts = [table[lo:hi] for lo, hi in ((0, 1), (1, 2_000), (2_000, 2_001), (2_001, 5_000), (5_000, 6_000))]
        scored = pl.concat([clv.predict_clv(part, params, cfg) for part in parts])
        assert 0 < clv._GRID._pairs.n < table.height
        for name in whole.columns:
            assert scored[name].to_numpy().tobytes() == whole[name].to_numpy().tobytes(), name


@pytest.mark.parametrize("params", [(0.6, 4.0, 0.8, 2.5), (0.5, 3.0, 0.3, 0.4), (0.7, 5.0, 1.0, 2.0),
                                    (0.1443, 0.5627, 52075.24, 75060.71)])
def test_expectations_cut_in_pieces_on_threads_are_the_same_bits_as_in_one(params, monkeypatch):
    """A large grid's closed form is cut in pieces, one per thread: every element the same bits as evaluated in
    one piece, the fallbacks' included (a + b < 1 with c = 0 on the first rows; a = 1; the last parameters'
    closed form is not finite)."""
    import segmint.engine.analytics.clv as clv

    rng = np.random.default_rng(4)
    n = 5_001
    x = rng.integers(0, 40, n).astype(np.float64)
    x[:3] = max(1 - params[2] - params[3], 0.0)   # where a + b < 1, c = 0: averaged either side
    T = rng.uniform(0.0, 80.0, n)
    t = rng.choice([1.0, 4.3, 52.0], n)
    monkeypatch.setattr(clv, "_PARALLEL_ELEMENTS", 10**12)
    whole = clv._expected_alive(*params, t, x, T)
    monkeypatch.setattr(clv, "_PARALLEL_ELEMENTS", 1)
    monkeypatch.setattr(clv, "thread_budget", lambda: 3)
    cut = clv._expected_alive(*params, t, x, T)
    assert np.isfinite(whole).all() and cut.tobytes() == whole.tobytes()


def test_a_run_without_dropout_says_so_in_run_json_profiles_and_report(tmp_path):
    from segmint.engine.config import ClusterConfig
    from segmint.engine.pipeline import run
    from segmint.engine.report import write_report

    # 1,500 customers buying at Gamma(0.8, 3)-distributed weekly rates for 2 to 40 weeks, never dropping out.
    rng = np.random.default_rng(8)
    n, as_of = 1500, np.datetime64("2026-06-30T12:00:00.000")
    age = rng.uniform(2, 40, n)
    repeats = rng.poisson(rng.gamma(0.8, 1 / 3.0, n) * age)
    customer = np.repeat(np.arange(n), repeats + 1)
    weeks_before = np.repeat(age, repeats + 1) * np.concatenate([[1.0, *rng.random(k)] for k in repeats])
    ts = as_of - (weeks_before * 7 * 86400e3).astype("timedelta64[ms]")
    pl.DataFrame({"customer_id": customer, "ts": ts, "amount": rng.gamma(4.0, 10.0, customer.size)}).write_parquet(
        tmp_path / "tx.parquet")
    result = run([tmp_path / "tx.parquet"], tmp_path / "run", RunConfig(cluster=ClusterConfig(k=3)))
    clv = result.manifest["clv"]
    assert clv["purchase_model"] == "nbd" and clv["a"] is None
    assert clv["note"].startswith("no dropout detected in the window")
    profiles = json.loads((tmp_path / "run" / "profiles.json").read_text())
    assert profiles["clv"] == {"purchase_model": "nbd", "note": clv["note"]}
    assignments = pl.read_parquet(tmp_path / "run" / "assignments")
    assert (assignments["p_alive"] == 1).all() and (assignments["clv"] > 0).all()
    page = write_report(tmp_path / "run", tmp_path / "r.html").read_text(encoding="utf-8")
    assert "no dropout detected in the window" in page
    from segmint.engine.model import Model

    scored = Model.load(tmp_path / "run").predict(pl.read_parquet(tmp_path / "tx.parquet"), as_of="2026-06-30")
    assert (scored["p_alive"] == 1).all()


def _beta_mixture(r, alpha, a, b, t, x, T):
    """E[purchases in (T, T + t] | alive] as the Beta(a, b + x) mixture over the dropout probability, p = e^-s,
    by the trapezoid rule on a geometric grid of s: the density in logs, p^a (1-p)^(b+x-1) ds, neither
    underflows where a and b are tens of thousands nor overflows where a is 0.0004."""
    s = np.geomspace(1e-9, 1e6, 400_001)
    p = np.exp(-s)
    log_w = -a * s + (b + x - 1) * np.log1p(-p)
    w = np.exp(log_w - log_w.max())
    # Below 1e-200 g is its limit at 0 to the last bit (and log1p of a subnormal p t / (alpha + T) is not).
    tiny = p < 1e-200
    g = np.where(tiny, (r + x) * t / (alpha + T),
                 -np.expm1(-(r + x) * np.log1p(p * t / (alpha + T))) / np.where(tiny, 1.0, p))
    return np.trapezoid(g * w, s) / np.trapezoid(w, s)


@pytest.mark.parametrize(("r", "alpha", "a", "b"), [
    # a and b of tens of thousands: every customer drops out with one probability (a fit accepted, then the
    # score stopped with exit 3, "not finite": the quadrature's weight underflowed, 1 / B(a, b + x) overflowed)
    (0.1443, 0.5627, 52075.24208018502, 75060.7067709207),
    # a BG/NBD optimum found on 48 near-identical customers (a hostile input of issue #20), where the clv command
    # once wrote NaN for every customer with exit 0, then refused: its expectations are finite, and now given
    (11953.828961368401, 98757.08640175001, 0.00043966172661338653, 1484.7092157764753),
    # r of tens of thousands, a and b moderate: quad on the Beta density returned 4.97e41 (x = 64, T = 9.3) and
    # 40.944 (x = 92, T = 283) for 1.236 and 40.787, exit 0
    (11033.06, 0.015495, 407.164, 31.9953), (78668.998, 1.6769e-4, 10.9769, 304.9468)])
def test_expectations_are_finite_and_right_where_the_closed_form_is_not(r, alpha, a, b):
    from segmint.engine.analytics.clv import ClvParams, _expected_alive, predict_clv

    x, T = np.array([0.0, 1.0, 3.0, 10.0, 64.0, 92.0]), np.array([5.0, 10.0, 20.0, 30.0, 9.3223, 283.327])
    for t in (1.0, 4.3, 52.0):
        got = _expected_alive(r, alpha, a, b, t, x, T)
        want = [_beta_mixture(r, alpha, a, b, t, xi, Ti) for xi, Ti in zip(x, T, strict=True)]
        np.testing.assert_allclose(got, want, rtol=1e-7)
    params = ClvParams(r=r, alpha=alpha, a=a, b=b, p=28.0, q=36190.8, v=81903.9, log_likelihood=-448.0,
                       gg_log_likelihood=-160.0, n=48, n_gg=48, time_unit="week", population_mean=63.4,
                       population_mean_source="model")
    table = pl.DataFrame({"lt_frequency": [3, 3], "lt_recency": [150.0, 150.0], "lt_T": [152.0, 197.0],
                          "lt_monetary": [60.0, 61.0]})
    assert all(predict_clv(table, params, ClvConfig())[c].is_finite().all() for c in ("p_alive", "clv"))


@pytest.mark.parametrize("n", [0, 1, 3_000])
def test_distinct_pairs_index_every_customer_back_to_its_own_values(n):
    from segmint.engine.analytics.clv import _PairGrid

    grid, seen = _PairGrid(), set()
    for part in range(3):   # pairs met in an earlier call keep their rows
        rng = np.random.default_rng(n + part)
        x = rng.integers(0, 30, n).astype(np.float64)
        T = rng.integers(0, 200, n) / 7.0          # weeks: T is any float, x a whole number
        T[: n // 10] *= -0.0                       # zeros of both signs are one value
        rows, row = grid.rows("key", x, T, lambda xu, Tu: np.stack([xu, Tu], axis=1))
        assert np.array_equal(rows[row, 0], x) and np.array_equal(rows[row, 1], T)
        seen |= set(zip(x.tolist(), (T + 0.0).tolist(), strict=True))
        assert grid._pairs.n == len(seen) == len({tuple(r) for r in rows[: grid._pairs.n].tolist()})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_distinct_values_are_numpys_unique(seed):
    # The fits' distinct values (a hash coding, then a sort of the distinct ones) are np.unique's: values
    # ascending, each element's index, counts; ties, -0.0 beside 0.0, NaNs and an empty array included
    # (a zero comes back +0.0 where np.unique may keep -0.0: array_equal takes them as equal, as the fits do).
    from segmint.engine.analytics.clv import _distinct

    rng = np.random.default_rng(seed)
    v = np.round(rng.exponential(30, 5000), 1) / 7
    v[rng.random(v.size) < 0.05] = -0.0
    v[rng.random(v.size) < 0.05] = 0.0
    v[rng.random(v.size) < 0.01 * seed] = np.nan
    for values in (v, v[:1], v[:0], np.full(10, 3.5), np.tile(v, 40)):   # the last across coding slices
        got = _distinct(values)
        want = np.unique(values, return_inverse=True, return_counts=True)
        assert np.array_equal(got[0], want[0], equal_nan=True)
        assert got[1].dtype == np.int32 and got[1].tolist() == want[1].tolist()
        assert got[2].tolist() == want[2].tolist()


def test_a_fit_whose_likelihood_no_longer_tells_points_apart_stops_within_two_short_line_searches():
    """Near the optimum a step gains less than the log-likelihood's rounding: every line search fails there, and
    L-BFGS-B tries twice before it stops. A quadratic whose value is noise below a floor (its gradient exact)
    stands in: with SciPy's 20 steps a line search it asked 30 times past the floor, 9 times with 6."""
    import zlib

    from segmint.engine.analytics.clv import _maximise

    hessian = np.array([[4.0, 1.9, 0.5, 0.1], [1.9, 1.0, 0.2, 0.0], [0.5, 0.2, 2.0, 1.3], [0.1, 0.0, 1.3, 1.0]])
    optimum = np.array([0.3, -1.2, 2.0, 0.7])
    floor = 1e-10
    past_floor = []

    def neg(theta: np.ndarray) -> tuple[float, np.ndarray]:
        d = theta - optimum
        q = 0.5 * d @ hessian @ d
        past_floor.append(q <= floor)
        noise = np.random.default_rng(zlib.crc32(theta.tobytes())).random() * floor
        return 21.9 + max(q, floor) + noise, hessian @ d

    theta, _, at_edge = _maximise(neg, ("r", "alpha", "a", "b"), 1)
    assert not at_edge and np.abs(hessian @ (theta - optimum)).max() < 1e-6
    assert 0 < sum(past_floor) <= 12


def test_a_point_asked_again_is_not_evaluated_again_and_hands_out_a_copy_of_its_gradient():
    from segmint.engine.analytics.clv import _remembered

    evaluated = []

    def neg(theta: np.ndarray) -> tuple[float, np.ndarray]:
        evaluated.append(theta.copy())
        return float(theta.sum()), theta * 2.0

    remembered = _remembered(neg)
    value, grad = remembered(np.array([0.5, 1.5]))
    grad[0] = 99.0   # the optimiser may write into what it is handed
    assert remembered(np.array([0.5, 1.5])) == (value, pytest.approx([1.0, 3.0]))
    assert len(evaluated) == 1
    remembered(np.array([0.5, np.nextafter(1.5, 2.0)]))   # a point one bit apart is another point
    assert len(evaluated) == 2


def test_a_fit_evaluates_each_point_once_and_lands_where_evaluating_every_ask_does(monkeypatch):
    """L-BFGS-B asks again for points it has had (its line search restarting near the optimum). Each point is
    evaluated once, and the optimum is the same bits as when every ask is evaluated. Whether this fit's own path
    asks again hangs on the last bits of its sums, which differ by CPU (on the AMD EPYC of 2026-12-07 it asked 24
    points once each, and the test failed where it had passed): every point is asked twice here, as L-BFGS-B asks
    some."""
    import scipy.optimize

    import segmint.engine.analytics.clv as clv

    x, tx, T = simulate_bgnbd(np.random.default_rng(0), 4_000, 0.5, 6.0, 0.9, 3.0)
    asked: list[bytes] = []
    minimize = scipy.optimize.minimize

    def counted(fun, x0, **kw):
        def ask(theta):
            for _ in range(2):
                asked.append(np.asarray(theta).tobytes())
                answer = fun(theta)
            return answer
        return minimize(ask, x0, **kw)

    evaluated = []
    sums = clv.bgnbd_triple_sums
    monkeypatch.setattr(clv, "bgnbd_triple_sums", lambda *a: (evaluated.append(a[7:11]), sums(*a))[1])
    monkeypatch.setattr(scipy.optimize, "minimize", counted)
    remembered = fit_bgnbd(x, tx, T)
    assert len(evaluated) == len(set(asked)) == len(asked) // 2   # each point is evaluated once
    monkeypatch.setattr(clv, "_remembered", lambda neg: neg)
    assert fit_bgnbd(x, tx, T) == remembered


@pytest.mark.parametrize(("r", "alpha", "a", "b"), [(0.5, 3.0, 0.05, 0.15), (11953.8, 98757.1, 0.00044, 1484.7),
                                                    (0.1443, 0.5627, 52075.2, 75060.7)])
def test_the_adaptive_beta_mixture_agrees_with_the_one_summed_in_logs(r, alpha, a, b):
    # The fallback's fallback, where two Gauss-Hermite rules disagree: one adaptive quadrature per customer.
    from segmint.engine.analytics.clv import _beta_mixture_by_rule, _expected_alive_by_quadrature

    for x, T, t in ((0.0, 5.0, 1.0), (3.0, 20.0, 4.3), (64.0, 9.3, 52.0)):
        # The series where b is small (the grid in logs starts at p = 1 - 1e-9, and Beta(a, 0.15) has mass beyond).
        want = _expected_alive_series(r, alpha, a, b, t, x, T) if b < 1 else _beta_mixture(r, alpha, a, b, t, x, T)
        assert _expected_alive_by_quadrature(r, alpha + T, a, b + x, x, t) == pytest.approx(want, rel=1e-7)
        # The rules are taken only where 64 and 128 nodes agree: then they are right.
        coarse, fine = (_beta_mixture_by_rule(r, np.array([alpha + T]), a, np.array([b + x]), np.array([x]),
                                              np.array([t]), n)[0] for n in (64, 128))
        assert abs(coarse - fine) > 1e-9 * abs(fine) or fine == pytest.approx(want, rel=1e-7)



def _lifetimes_table(seed: int, n: int, spend=None) -> pl.DataFrame:
    """n customers simulated by BG/NBD (weeks) and their repeaters' mean spends by Gamma-Gamma, or by
    ``spend(rng, x)`` of their repeat counts."""
    rng = np.random.default_rng(seed)
    x, tx, T = simulate_bgnbd(rng, n, 0.5, 6.0, 0.9, 3.0)
    m = np.zeros(n)
    rep = x > 0
    m[rep] = simulate_spend(rng, x[rep], 5.0, 4.0, 20.0) if spend is None else spend(rng, x[rep])
    return pl.DataFrame({"lt_frequency": x.astype(np.int64), "lt_recency": tx * 7, "lt_T": T * 7, "lt_monetary": m})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_models_fitted_side_by_side_are_the_same_bits_as_one_after_the_other(seed, monkeypatch):
    import threading

    from segmint.engine.analytics import clv
    from segmint.engine.runtime import parallel_kernels_side_by_side

    threads = set()
    fit_gg = clv.fit_gamma_gamma
    def spy(*args):
        threads.add(threading.current_thread().name)
        return fit_gg(*args)
    monkeypatch.setattr(clv, "fit_gamma_gamma", spy)
    monkeypatch.setattr("segmint.engine.runtime.thread_budget", lambda: 2)   # on a runner of one CPU too
    table = _lifetimes_table(seed, 5_000 * (seed + 1))
    cfg = ClvConfig(time_unit="week")
    alone = fit_clv(table, cfg)
    assert threads == {threading.current_thread().name}
    assert fit_clv(table, cfg, side_by_side=True) == alone
    # On a helper thread, where the thread budget has two and the threading layer allows it.
    assert ("segmint-map" in threads) == parallel_kernels_side_by_side()


def test_side_by_side_the_purchase_models_error_comes_first_as_one_after_the_other(monkeypatch):
    from segmint.engine.analytics.clv import ClvFitError

    # Identical repeat customers (the purchase model is degenerate) of identical spends (so is the spend
    # model): the purchase model's error, as when it fits first.
    same = pl.DataFrame({"lt_frequency": [2] * 60, "lt_recency": [70.0] * 60, "lt_T": [140.0] * 60,
                         "lt_monetary": [25.0] * 60})
    # The purchases fit; mean spends of lines all U(10, 90) have no heterogeneity: the spend model's error.
    alike = _lifetimes_table(3, 4_000, spend=lambda rng, x: np.array([rng.uniform(10, 90, int(k)).mean() for k in x]))
    monkeypatch.setattr("segmint.engine.runtime.thread_budget", lambda: 2)
    for side in (False, True):
        with pytest.raises(ClvFitError, match=r"purchase model"):
            fit_clv(same, ClvConfig(), side_by_side=side)
        with pytest.raises(ClvFitError, match=r"spend model, Gamma-Gamma: q="):
            fit_clv(alike, ClvConfig(time_unit="week"), side_by_side=side)


def test_a_run_fits_the_models_side_by_side_only_where_its_memory_budget_holds_both(small_data, tmp_path,
                                                                                     monkeypatch):
    from segmint.engine.analytics import clv
    from segmint.engine.pipeline import fit, run
    from segmint.engine.runtime import parallel_kernels_side_by_side

    import threading

    if not parallel_kernels_side_by_side():
        pytest.skip("Numba's threading layer here is workqueue: the fits run one after the other")
    side = []
    fit_gg = clv.fit_gamma_gamma
    def spy(*args):   # on a helper thread: beside the purchase model
        side.append(threading.current_thread() is not threading.main_thread())
        return fit_gg(*args)
    monkeypatch.setattr(clv, "fit_gamma_gamma", spy)
    monkeypatch.setattr("segmint.engine.runtime.thread_budget", lambda: 2)   # on a runner of one CPU too
    first = run([small_data / "transactions"], tmp_path / "a", RunConfig())
    # A budget that holds the fit but not the two models' arrays at once: 3,000 customers at 1 GB each.
    with monkeypatch.context() as m:
        m.setattr(fit, "SIDE_BY_SIDE_BYTES", 10**9)
        second = run([small_data / "transactions"], tmp_path / "b", RunConfig())
    # Numba's workqueue layer, which ends the process when two threads launch parallel kernels at once.
    monkeypatch.setattr(clv, "parallel_kernels_side_by_side", lambda: False)
    third = run([small_data / "transactions"], tmp_path / "c", RunConfig())
    assert side == [True, False, False]
    assert first.manifest["clv"] == third.manifest["clv"]
    assert first.manifest["clv"] == second.manifest["clv"]


@pytest.mark.parametrize("seed", [0, 1])
def test_the_bgnbds_triples_beside_the_nbd_fit_give_the_same_bits(seed, monkeypatch):
    """The BG/NBD's triples are numbered on a helper thread while the NBD is fitted on the calling one (their
    kernels are serial: no second thread launches parallel kernels); the fit is the same bits as one step after
    the other, and as the BG/NBD and the NBD fitted on their own."""
    import threading

    from segmint.engine.analytics import clv

    threads = []
    numbered = clv._bgnbd_triples
    def spy(*args):
        threads.append(threading.current_thread() is threading.main_thread())
        return numbered(*args)
    monkeypatch.setattr(clv, "_bgnbd_triples", spy)
    table = _lifetimes_table(seed, 4_000)
    x, tx, T, _ = clv._summary(table, ClvConfig(time_unit="week"))
    with monkeypatch.context() as m:
        m.setattr("segmint.engine.runtime.thread_budget", lambda: 2)   # on a runner of one CPU too
        beside = clv.fit_purchases(x, tx, T)
    with monkeypatch.context() as m:
        m.setattr("segmint.engine.runtime.thread_budget", lambda: 1)
        alone = clv.fit_purchases(x, tx, T)
    assert beside == alone and beside.model == "bgnbd"
    assert threads == [False, True]
    r, alpha, a, b, ll = fit_bgnbd(x, tx, T)
    assert (beside.r, beside.alpha, beside.a, beside.b, beside.log_likelihood) == (r, alpha, a, b, ll)
    assert beside.likelihood_ratio == max(2 * (ll - fit_nbd(x, T)[2]), 0.0)


def test_beside_the_nbd_fit_its_error_comes_before_the_triples(monkeypatch):
    """The NBD fit's error first, as when it ran before the BG/NBD's triples; the triples' own error where the NBD
    fits."""
    from segmint.engine.analytics import clv
    from segmint.engine.analytics.clv import ClvFitError

    def broken(*args):
        raise RuntimeError("the triples failed")
    monkeypatch.setattr(clv, "_bgnbd_triples", broken)
    monkeypatch.setattr("segmint.engine.runtime.thread_budget", lambda: 2)
    # Identical repeat customers: even the NBD is not identified.
    x, tx, T = np.full(60, 2.0), np.full(60, 10.0), np.full(60, 20.0)
    with pytest.raises(ClvFitError, match="purchase model"):
        clv.fit_purchases(x, tx, T)
    table = _lifetimes_table(0, 2_000)
    x, tx, T, _ = clv._summary(table, ClvConfig(time_unit="week"))
    with pytest.raises(RuntimeError, match="the triples failed"):
        clv.fit_purchases(x, tx, T)
