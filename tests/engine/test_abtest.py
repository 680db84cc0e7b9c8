"""A/B split determinism and ratio; evaluation against a hand-computed example; bad outcome files."""

import numpy as np
import polars as pl
import pytest

from segmint.engine.analytics.abtest import evaluate, split_groups
from segmint.engine.errors import ConfigError, InputContractError


def _assignments(n=20_000, k=4):
    return pl.DataFrame({"customer_id": list(range(n)), "segment": [i % k for i in range(n)]})


def test_split_is_deterministic_and_balanced_per_segment():
    a = _assignments()
    g1 = split_groups(a, 0.1, "spring")
    g2 = split_groups(a.reverse(), 0.1, "spring").reverse()
    assert g1.equals(g2)  # depends on the customer only, not on row order
    shares = g1.group_by("segment").agg((pl.col("group") == "holdout").mean().alias("h"))["h"]
    assert shares.is_between(0.09, 0.11).all()
    other = split_groups(a, 0.1, "autumn")
    assert not other["group"].equals(g1["group"])
    # The same customer in another segment lands in the same group.
    moved = split_groups(a.with_columns(pl.col("segment") + 1), 0.1, "spring")
    assert moved["group"].equals(g1["group"])


def test_split_rejects_bad_ratio():
    with pytest.raises(ConfigError, match="--ratio"):
        split_groups(_assignments(10), 1.5, "s")


def test_evaluate_matches_hand_computation():
    groups = pl.DataFrame({"customer_id": [str(i) for i in range(10)], "segment": [0] * 10,
                           "group": ["treatment"] * 6 + ["holdout"] * 4})
    outcomes = pl.DataFrame({"customer_id": ["0", "1", "2", "6"], "converted": [1, 1, 1, 1],
                             "revenue": [10.0, 20.0, 30.0, 5.0]})
    row = evaluate(groups, outcomes, 2.0).row(0, named=True)
    # Treatment 3/6 converted, 60 revenue; holdout 1/4, 5 revenue.
    assert (row["n_t"], row["n_h"]) == (6, 4)
    assert row["conv_t"] == 0.5 and row["conv_h"] == 0.25
    assert row["abs_lift"] == 0.25 and row["rel_lift"] == 1.0
    # pooled p = 0.4; z = 0.25 / sqrt(0.4 * 0.6 * (1/6 + 1/4)) = 0.790569; p = 2 (1 - Phi(z))
    assert row["p_value"] == pytest.approx(0.429195, abs=1e-6)
    # Newcombe's hybrid score interval from the Wilson intervals of 3/6 and 1/4 (scipy's, independently).
    assert (row["ci95_low"], row["ci95_high"]) == pytest.approx(_newcombe(3, 6, 1, 4), abs=1e-12)
    assert row["incremental_revenue"] == pytest.approx((10 - 1.25) * 6)
    assert row["cost"] == 12.0 and row["roi_pct"] == pytest.approx((52.5 - 12) / 12 * 100)
    # Without a revenue column the revenue measures are unknown, not 0 (an ROI of -100% beside this lift).
    blind = evaluate(groups, outcomes.drop("revenue"), 2.0)
    assert blind.row(0, named=True)["abs_lift"] == 0.25 and blind["cost"].to_list() == [12.0, 12.0]
    for measure in ("rev_per_customer_t", "rev_per_customer_h", "incremental_revenue", "roi_pct"):
        assert blind[measure].null_count() == blind.height, measure


def test_evaluate_matches_scipy_on_a_large_sample():
    # 180,000 customers in three segments: a planted lift, none, and a larger one; holdout 20%.
    # Only converters are in the outcomes (everyone else counts as not converted).
    from scipy.stats import chi2_contingency

    rng = np.random.default_rng(0)
    rates = {0: (0.12, 0.10), 1: (0.05, 0.05), 2: (0.30, 0.25)}  # segment: (treatment, holdout)
    n = 60_000
    segment = np.repeat(np.arange(3), n)
    holdout = rng.random(3 * n) < 0.2
    p_true = np.array([rates[s][1] if h else rates[s][0] for s, h in zip(segment, holdout, strict=True)])
    converted = rng.random(3 * n) < p_true
    groups = pl.DataFrame({"customer_id": np.arange(3 * n), "segment": segment,
                           "group": np.where(holdout, "holdout", "treatment")})
    outcomes = pl.DataFrame({"customer_id": np.flatnonzero(converted), "converted": 1})
    res = evaluate(groups, outcomes, 1.0)
    assert res["segment"].to_list() == [0, 1, 2, None]
    for row in res.iter_rows(named=True):
        mine = np.ones(3 * n, bool) if row["segment"] is None else segment == row["segment"]
        t, h = mine & ~holdout, mine & holdout
        x_t, n_t, x_h, n_h = int(converted[t].sum()), int(t.sum()), int(converted[h].sum()), int(h.sum())
        assert (row["n_t"], row["n_h"]) == (n_t, n_h)
        assert row["conv_t"] == pytest.approx(x_t / n_t, rel=1e-12)
        assert row["conv_h"] == pytest.approx(x_h / n_h, rel=1e-12)
        # The pooled two-proportion z-test is the chi-square test of the 2x2 table without correction.
        table = [[x_t, n_t - x_t], [x_h, n_h - x_h]]
        assert row["p_value"] == pytest.approx(chi2_contingency(table, correction=False).pvalue, rel=1e-6)
        low, high = _newcombe(x_t, n_t, x_h, n_h)
        assert row["ci95_low"] == pytest.approx(low, rel=1e-9)
        assert row["ci95_high"] == pytest.approx(high, rel=1e-9)
    by_segment = {row["segment"]: row for row in res.iter_rows(named=True)}
    # With this many customers the planted lifts are found and the null segment is not.
    assert by_segment[0]["p_value"] < 1e-4 and by_segment[2]["p_value"] < 1e-4
    assert by_segment[1]["p_value"] > 0.01
    for segment, (t_rate, h_rate) in rates.items():
        assert by_segment[segment]["ci95_low"] < t_rate - h_rate < by_segment[segment]["ci95_high"]


def _newcombe(x_t, n_t, x_h, n_h):
    """Newcombe (1998) method 10 for the difference of two rates, from scipy's Wilson score intervals."""
    from scipy.stats import binomtest

    (lt, ut), (lh, uh) = (binomtest(x, n).proportion_ci(0.95, method="wilson") for x, n in ((x_t, n_t), (x_h, n_h)))
    pt, ph = x_t / n_t, x_h / n_h
    return pt - ph - np.hypot(pt - lt, uh - ph), pt - ph + np.hypot(ut - pt, ph - lh)


@pytest.mark.parametrize(("x_t", "n_t", "x_h", "n_h", "published"), [
    (56, 70, 48, 80, (0.0524, 0.3339)), (9, 10, 3, 10, (0.1705, 0.8090)),   # Newcombe 1998, table II
    (300, 1_000, 0, 2, None), (0, 100, 0, 100, None), (1_000, 1_000, 2, 2, None)])
def test_the_interval_of_the_lift_has_width_where_a_group_has_no_variance(x_t, n_t, x_h, n_h, published):
    # The Wald interval had none for a group of rate 0 or 1: 300 of 1,000 treated against 0 of 2 held out gave
    # [0.272, 0.328], excluding 0, beside a p-value of 0.355; two groups of rate 0 gave [0, 0].
    groups = pl.DataFrame({"customer_id": [str(i) for i in range(n_t + n_h)], "segment": [0] * (n_t + n_h),
                           "group": ["treatment"] * n_t + ["holdout"] * n_h})
    converted = [str(i) for i in range(x_t)] + [str(n_t + i) for i in range(x_h)]
    # One customer who did not convert, named as such: a file with no row is refused.
    last = str(n_t + n_h - 1)
    outcomes = pl.DataFrame({"customer_id": [*converted, *([last] if last not in converted else [])]}
                            ).with_columns(converted=pl.col("customer_id").is_in(converted).cast(pl.Int64))
    row = evaluate(groups, outcomes, 1.0).row(0, named=True)
    low, high = row["ci95_low"], row["ci95_high"]
    assert (low, high) == pytest.approx(_newcombe(x_t, n_t, x_h, n_h), abs=1e-12)
    if published:
        assert (round(low, 4), round(high, 4)) == published
    assert low < row["abs_lift"] < high or row["abs_lift"] in (low, high) and high - low > 0
    if row["p_value"] is not None and row["p_value"] > 0.05:
        assert low < 0 < high   # no evidence of a lift: the interval holds none


def test_outcome_ids_written_as_floats_are_the_customers_of_those_integers():
    """pandas writes integer ids with a null among them as floats: 7.0 was read as "7.0", refused as unknown."""
    groups = split_groups(_assignments(100, 2), 0.5, "s")
    as_ints = pl.DataFrame({"customer_id": list(range(0, 100, 3)), "converted": [1] * 34})
    as_floats = as_ints.with_columns(pl.col("customer_id").cast(pl.Float64))
    assert evaluate(groups, as_floats, 1.0).equals(evaluate(groups, as_ints, 1.0))


def test_evaluate_overall_row_and_segments():
    groups = split_groups(_assignments(4000, 2), 0.5, "s").with_columns(pl.col("customer_id").cast(pl.String))
    outcomes = groups.filter(pl.col("group") == "treatment").head(500).select(
        "customer_id", pl.lit(True).alias("converted"))
    res = evaluate(groups, outcomes, 1.0)
    assert res["segment"].to_list() == [0, 1, None]
    overall = res.row(2, named=True)
    assert overall["n_t"] + overall["n_h"] == 4000
    assert overall["conv_h"] == 0.0 and overall["rev_per_customer_t"] is None   # no revenue column: unknown
    assert overall["p_value"] < 1e-10


@pytest.mark.parametrize(("outcomes", "match"), [
    (pl.DataFrame({"customer_id": ["0", "999999"], "converted": [1, 0]}), "1 of the 2 customer\\(s\\) in the outcomes"),
    (pl.DataFrame({"customer_id": ["0"], "bought": [1]}), "lacks column 'converted'"),
    (pl.DataFrame({"customer_id": ["0", "0"], "converted": [1, 1]}), "more than once"),
    (pl.DataFrame({"customer_id": ["0"], "converted": [3]}), "must be 0/1"),
    # Read as "not converted", and a NaN revenue nulled every measure it touched: both with exit 0.
    (pl.DataFrame({"customer_id": ["0", "1"], "converted": [1, None]}), "must be 0/1 .* empty"),
    (pl.DataFrame({"customer_id": ["0", "1"], "converted": [1, 0], "revenue": [5.0, float("nan")]}),
     "'revenue' has 1 empty, NaN, infinite"),
    (pl.DataFrame({"customer_id": ["0"], "converted": [1], "revenue": [None]},
                  schema_overrides={"revenue": pl.Float64}), "'revenue' has 1 empty"),
    # No rows: every customer "not converted", an ROI of -100%, with exit 0. A blank id: a TypeError.
    (pl.DataFrame(schema={"customer_id": pl.Int64, "converted": pl.Int64}), "outcomes file has no rows"),
    (pl.DataFrame({"customer_id": [None, "0"], "converted": [1, 0]}, schema_overrides={"customer_id": pl.String}),
     "1 row\\(s\\) without a customer_id"),
    # Text that is no number: a strict cast failed with exit 1, quoting the cells.
    (pl.DataFrame({"customer_id": ["0"], "converted": ["1"], "revenue": ["$5"]}), "1 empty, NaN, infinite or non-n"),
    (pl.DataFrame({"customer_id": ["0", "1"], "converted": ["yes", "no"]}), "must be 0/1"),
    # Revenues whose mean passes the float range were written as null, exit 0.
    (pl.DataFrame({"customer_id": ["0", "1", "2", "3"], "converted": [1, 1, 1, 1], "revenue": [1e308] * 4}),
     "sums beyond the float range"),
    (pl.DataFrame({"customer_id": [0.0, 1.5], "converted": [1, 1]}), "not whole numbers"),
])
def test_bad_outcome_files_are_clear_errors(outcomes, match):
    groups = split_groups(_assignments(100), 0.5, "s")
    with pytest.raises(InputContractError, match=match):
        evaluate(groups, outcomes, 1.0)


def test_bad_assignment_files_and_costs_are_clear_errors():
    from segmint.engine.errors import ConfigError

    groups = split_groups(_assignments(100), 0.5, "s")
    outcomes = pl.DataFrame({"customer_id": ["0"], "converted": [1]})
    # Customers of another group were in neither measure; a customer twice was counted twice.
    relabelled = groups.with_columns(pl.when(pl.int_range(pl.len()) < 10).then(pl.lit("control"))
                                     .otherwise(pl.col("group")).alias("group"))
    with pytest.raises(InputContractError, match="group\\(s\\) \\['control'\\]"):
        evaluate(relabelled, outcomes, 1.0)
    with pytest.raises(InputContractError, match="more than once"):
        evaluate(pl.concat([groups, groups.head(3)]), outcomes, 1.0)
    for cost in (float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="must be a number > 0"):
            evaluate(groups, outcomes, cost)


def test_abtest_outputs_inside_their_inputs_are_refused_and_the_inputs_kept(small_run, tmp_path):
    # split wrote Parquet over the run's model.json (and a file among its assignments), with exit 0.
    import shutil

    from segmint.engine.pipeline.abtests import abtest_evaluate, abtest_split

    run = shutil.copytree(small_run, tmp_path / "run")
    model = (run / "model" / "model.json").read_bytes()
    for out in (run / "model" / "model.json", run / "assignments" / "segment=0" / "holdout.parquet"):
        with pytest.raises(ConfigError, match="overlaps the input"):
            abtest_split(run, out, ratio=0.1, salt="s", overwrite=True)
    assert (run / "model" / "model.json").read_bytes() == model
    assert not (run / "assignments" / "segment=0" / "holdout.parquet").exists()
    groups = tmp_path / "groups.parquet"
    abtest_split(run, groups, ratio=0.1, salt="s")
    written = groups.read_bytes()
    with pytest.raises(ConfigError, match="overlaps the input .*--assignments"):
        abtest_evaluate(groups, groups, groups, cost_per_contact=1.0, overwrite=True)
    assert groups.read_bytes() == written


def test_a_split_killed_before_its_rename_leaves_no_copy_once_written_again(small_run, tmp_path):
    # The temporary file, every customer's id and group, was left beside the output for good.
    import signal
    import subprocess
    import sys

    kill = ("import os, signal, sys\nos.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)\n"
            "from segmint.cli.app import main\nsys.exit(main())")
    args = ["abtest", "split", str(small_run), "--out", str(tmp_path / "g.parquet"), "--overwrite"]
    mine = tmp_path / "keep"   # files of the user's named like segmint's old-* folders: a file has none, left be
    mine.mkdir()
    (mine / ".g.parquet.old-jan").write_text("notes")
    (mine / ".g.parquet.old-v2").mkdir()
    killed = subprocess.run([sys.executable, "-c", kill, *args], capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert sorted(p.name for p in tmp_path.iterdir())[0].startswith(".g.parquet.staging-")
    again = subprocess.run([sys.executable, "-m", "segmint.cli.app", *args], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.parquet", "keep"]
    assert pl.read_parquet(tmp_path / "g.parquet").height > 0
    again = subprocess.run([sys.executable, "-m", "segmint.cli.app", *args[:4], str(mine / "g.parquet")],
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in mine.iterdir()) == [".g.parquet.old-jan", ".g.parquet.old-v2", "g.parquet"]


def test_an_outcomes_csv_is_read_whole_before_its_types_are_judged(small_run, tmp_path):
    """Types guessed from a CSV's first 100 rows refused a revenue of 12.5 or a converted of true after rows of
    0 (exit 3, a valid file)."""
    from segmint.engine.pipeline.abtests import abtest_evaluate, abtest_split

    groups = abtest_split(small_run, tmp_path / "groups.parquet", ratio=0.5, salt="s")
    ids = groups["customer_id"].cast(pl.String).to_list()
    rows = [f"{i},0,0" for i in ids[:150]] + [f"{ids[150]},true,12.5", f"{ids[151]},1,7"]
    (tmp_path / "outcomes.csv").write_text("customer_id,converted,revenue\n" + "\n".join(rows) + "\n")
    result = abtest_evaluate(tmp_path / "groups.parquet", tmp_path / "outcomes.csv", tmp_path / "ab",
                             cost_per_contact=1.0)
    treated = groups.filter(pl.col("group") == "treatment")["customer_id"].cast(pl.String).to_list()
    held = groups.filter(pl.col("group") == "holdout")["customer_id"].cast(pl.String).to_list()
    revenue = {ids[150]: 12.5, ids[151]: 7.0}
    overall = result.row(-1, named=True)
    assert overall["rev_per_customer_t"] == pytest.approx(sum(revenue.get(i, 0.0) for i in treated) / len(treated))
    assert overall["rev_per_customer_h"] == pytest.approx(sum(revenue.get(i, 0.0) for i in held) / len(held))
    assert overall["conv_t"] + overall["conv_h"] > 0


def test_outcomes_with_raw_ids_meet_the_split_of_a_pseudonymised_run(small_data, tmp_path, monkeypatch):
    """A pseudonymised run's split holds pseudonyms, and segmint gave no way to pseudonymise the outcomes
    (every customer "not in the assignments", exit 3)."""
    import hashlib
    import hmac

    from segmint.engine.config import ClusterConfig, RunConfig
    from segmint.engine.pipeline import run
    from segmint.engine.pipeline.abtests import abtest_evaluate, abtest_split

    key = "s3cret-key-value-of-32-characters"
    monkeypatch.setenv("SEGMINT_ID_KEY", key)
    run([small_data / "transactions"], tmp_path / "run", RunConfig(cluster=ClusterConfig(k=3), pseudonymize_ids=True))
    groups = abtest_split(tmp_path / "run", tmp_path / "groups.parquet", ratio=0.5, salt="s")
    raw = pl.read_parquet(small_data / "personas.parquet")["customer_id"].head(300)
    outcomes = pl.DataFrame({"customer_id": raw, "converted": [i % 2 for i in range(300)]})
    outcomes.write_parquet(tmp_path / "outcomes.parquet")
    with pytest.raises(InputContractError, match="300 of the 300 customer"):
        abtest_evaluate(tmp_path / "groups.parquet", tmp_path / "outcomes.parquet", tmp_path / "a", cost_per_contact=1)
    got = abtest_evaluate(tmp_path / "groups.parquet", tmp_path / "outcomes.parquet", tmp_path / "b",
                          cost_per_contact=1, pseudonymize_ids=True)
    by_hand = outcomes.with_columns(pl.col("customer_id").map_elements(
        lambda i: hmac.new(key.encode(), str(i).encode(), hashlib.sha256).hexdigest(), return_dtype=pl.String))
    assert got.equals(evaluate(groups, by_hand, 1.0))
