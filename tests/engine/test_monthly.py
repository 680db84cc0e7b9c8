"""The monthly loop: what changed between runs, micro-segments, outliers."""

import dataclasses
import json

import numpy as np
import polars as pl
import pytest

from segmint.engine.config import ClusterConfig, RunConfig
from segmint.engine.pipeline import assign_customers, run
from segmint.engine.pipeline.compare import compare_runs


def test_compare_counts_every_customer_once_and_flags_drift(two_runs):
    root, gone, newcomers = two_runs
    doc = compare_runs(root / "a", root / "b", root / "cmp")
    moves = pl.read_parquet(root / "cmp" / "migration.parquet")
    a = pl.read_parquet(root / "a" / "assignments")
    b = pl.read_parquet(root / "b" / "assignments")
    assert moves.filter(pl.col("old_segment").is_not_null())["customers"].sum() == a.height
    assert moves.filter(pl.col("new_segment").is_not_null())["customers"].sum() == b.height
    assert moves.filter(pl.col("new_segment").is_null())["customers"].sum() == gone.len()
    assert moves.filter(pl.col("old_segment").is_null())["customers"].sum() == newcomers.len()
    # Each cell against a plain join.
    both = a.select("customer_id", old="segment").join(b.select("customer_id", "monetary_total", new="segment"),
                                                       on="customer_id")
    plain = both.group_by("old", "new").agg(pl.len(), pl.col("monetary_total").sum()).sort("old", "new")
    kept = moves.drop_nulls().sort("old_segment", "new_segment")
    assert kept["customers"].to_list() == plain["len"].to_list()
    np.testing.assert_allclose(kept["revenue"], plain["monetary_total"], rtol=1e-12)
    drift = dict(pl.read_parquet(root / "cmp" / "drift.parquet").select("feature", "band").iter_rows())
    assert drift["monetary_total"] == "major" and drift["aov"] == "major"
    assert drift["recency_days"] == "stable"
    segments = pl.read_parquet(root / "cmp" / "segments.parquet")
    assert (segments["customers_change"] == segments["customers_new"] - segments["customers_old"]).all()
    assert json.loads((root / "cmp" / "compare.json").read_text())["migration"] == doc["migration"]


def test_runs_whose_features_mean_other_things_are_refused_as_previous_and_flagged_in_compare(two_runs, tmp_path):
    # Lines not grouped into orders (--order-col ''), or a CLV of another horizon where the clustering uses
    # it: --previous kept every id and name over other quantities, and compare read the change as the customers'.
    import dataclasses

    from segmint.engine.config import ClvConfig, Columns, FeatureConfig
    from segmint.engine.errors import ConfigError

    root, _, _ = two_runs
    assert "settings_differ" not in compare_runs(root / "a", root / "b", tmp_path / "same")
    lines = RunConfig(cluster=ClusterConfig(k=5, seed=0), columns=Columns(order=None))
    with pytest.raises(ConfigError, match=r"--previous was made with other settings than this run \(orders: lines "
                                          r"grouped by an order column against each line an order"):
        run([root / "later.parquet"], tmp_path / "o", dataclasses.replace(lines, previous=str(root / "a")))
    assert not (tmp_path / "o").exists()
    run([root / "later.parquet"], tmp_path / "lines", lines)
    doc = compare_runs(root / "a", tmp_path / "lines", tmp_path / "c")
    assert doc["settings_differ"] == ["orders: lines grouped by an order column against each line an order "
                                      "(no --order-col)"]
    on_clv = RunConfig(cluster=ClusterConfig(k=4, seed=0),
                       features=FeatureConfig(cluster_features=("recency_days", "frequency", "aov", "clv")))
    run([root / "later.parquet"], tmp_path / "h52", on_clv)
    with pytest.raises(ConfigError, match=r"\(CLV: 52 weeks, 10% a year, bgnbd against 520 weeks, 10% a year, "
                                          r"bgnbd\)"):
        run([root / "later.parquet"], tmp_path / "h520",
            dataclasses.replace(on_clv, clv=ClvConfig(horizon=520), previous=str(tmp_path / "h52")))
    # Without clustering on it, the CLV's horizon changes no centroid: the same run goes through.
    run([root / "later.parquet"], tmp_path / "h520", RunConfig(cluster=ClusterConfig(k=5, seed=0),
                                                           clv=ClvConfig(horizon=520), previous=str(root / "a")))
    assert compare_runs(root / "a", tmp_path / "h520", tmp_path / "c2")["settings_differ"] == [
        "CLV: 52 weeks, 10% a year, bgnbd against 520 weeks, 10% a year, bgnbd"]
    # assign scores with its model's CLV settings, and its run.json says them: it said the CLI's defaults, so
    # compare read a 520-week model's batch as scored at 52.
    assign_customers(tmp_path / "h520", [root / "later.parquet"], tmp_path / "scored", RunConfig())
    assert json.loads((tmp_path / "scored" / "run.json").read_text())["config"]["clv"]["horizon"] == 520
    assert "settings_differ" not in compare_runs(tmp_path / "h520", tmp_path / "scored", tmp_path / "c3")


def test_compare_refuses_runs_whose_customers_cannot_be_joined(two_runs, small_data, tmp_path, monkeypatch):
    from segmint.engine.errors import InputContractError

    root, _, _ = two_runs
    source = small_data / "transactions"
    monkeypatch.setenv("SEGMINT_ID_KEY", "k" * 32)
    # The same customers as run a, pseudonymised: the migration read as all of them lost and all new.
    run([source], tmp_path / "hashed", RunConfig(cluster=ClusterConfig(k=3), pseudonymize_ids=True))
    for pair in ((root / "a", tmp_path / "hashed"), (tmp_path / "hashed", root / "a")):
        with pytest.raises(InputContractError, match="pseudonymises customer ids .* compare two runs made alike"):
            compare_runs(*pair, tmp_path / "cmp")
    # Two keys: no pseudonym in common either. run.json says which key, never the key itself.
    monkeypatch.setenv("SEGMINT_ID_KEY", "q" * 32)
    run([source], tmp_path / "hashed2", RunConfig(cluster=ClusterConfig(k=3), pseudonymize_ids=True))
    fingerprints = [json.loads((tmp_path / r / "run.json").read_text())["pseudonym_key"] for r in ("hashed", "hashed2")]
    assert len(set(fingerprints)) == 2 and all(len(f) == 16 and "qqqq" not in f for f in fingerprints)
    with pytest.raises(InputContractError, match="with two keys"):
        compare_runs(tmp_path / "hashed", tmp_path / "hashed2", tmp_path / "cmp")
    # Ids of another type: the join failed with an unexpected SchemaError.
    texts = pl.read_parquet(source).with_columns(pl.format("c{}", "customer_id").alias("customer_id"))
    texts.write_parquet(tmp_path / "texts.parquet")
    run([tmp_path / "texts.parquet"], tmp_path / "texts", RunConfig(cluster=ClusterConfig(k=3)))
    with pytest.raises(InputContractError, match="customer ids are Int64 in .* and String in .*cannot be joined"):
        compare_runs(root / "a", tmp_path / "texts", tmp_path / "cmp")
    assert not (tmp_path / "cmp").exists()


def test_compare_says_how_many_kept_their_id_and_what_a_relabelling_would_keep(two_runs):
    import itertools

    root, _, _ = two_runs
    ids = compare_runs(root / "a", root / "b", root / "ids")["ids"]
    a = pl.read_parquet(root / "a" / "assignments").select("customer_id", "segment")
    b = pl.read_parquet(root / "b" / "assignments").select("customer_id", "segment")
    both = a.join(b, on="customer_id")
    size = int(max(both["segment"].max(), both["segment_right"].max())) + 1
    table = np.zeros((size, size), np.int64)
    np.add.at(table, (both["segment"].to_numpy(), both["segment_right"].to_numpy()), 1)
    best = max(sum(table[i, j] for i, j in enumerate(p)) for p in itertools.permutations(range(size)))  # brute force
    kept = int((both["segment"] == both["segment_right"]).sum())
    assert ids == {"customers_in_both": both.height, "kept_id": kept, "optimal_relabelling": best,
                   "kept_share": kept / both.height, "optimal_share": best / both.height}
    assert ids["kept_share"] >= 0.99 * ids["optimal_share"]  # the second run kept ids with --previous


def test_compare_in_buckets_gives_the_same_tables(two_runs):
    root, _, _ = two_runs
    one = compare_runs(root / "a", root / "b", root / "one", RunConfig(buckets=1))
    many = compare_runs(root / "a", root / "b", root / "many", RunConfig(buckets=4))
    assert many["buckets"] == 4
    for name in ("ids", "migration", "segments", "drift"):
        assert many[name] == one[name]


def test_micro_segments_nest_in_segments_and_small_ones_merge(small_data, tmp_path):
    result = run([small_data / "transactions"], tmp_path / "m",
                 RunConfig(cluster=ClusterConfig(k=4, micro_k=3, min_segment_size=30)))
    a = pl.read_parquet(tmp_path / "m" / "assignments")
    assert (a["micro_segment"].str.split(".").list.first().cast(pl.Int64) == a["segment"]).all()
    assert a["micro_segment"].str.contains(r"^\d+\.\d{2}$").all()
    micro = pl.read_parquet(tmp_path / "m" / "micro_profiles.parquet")
    sizes = micro.group_by("segment").agg(pl.col("customers").sum()).sort("segment")
    assert sizes["customers"].to_list() == a.group_by("segment").len().sort("segment")["len"].to_list()
    assert result.manifest["micro"]["segments"][0]["k"] == 3
    merged = run([small_data / "transactions"], tmp_path / "n",
                 RunConfig(cluster=ClusterConfig(k=4, micro_k=3, min_segment_size=10_000)))
    assert merged.manifest["micro"]["merged"] == 8  # every micro-segment is too small: one left per segment
    assert pl.read_parquet(tmp_path / "n" / "assignments")["micro_segment"].str.ends_with(".00").all()


def test_outliers_are_the_farthest_half_percent_of_each_segment(small_run):
    from segmint.engine.model import Model

    a = pl.read_parquet(small_run / "assignments")
    model = Model.load(small_run)
    limit = dict(zip(model.segment_ids, model.outlier_distance, strict=True))
    # Each segment's limit is the 99.5th percentile of its own customers' distances (the profile
    # sample holds every customer of this small run), computed here with plain Polars.
    own = dict(a.group_by("segment").agg(pl.col("distance").cast(pl.Float64).quantile(0.995, "linear")).iter_rows())
    assert set(own) == set(limit) and len(own) == 6
    for segment, distance in own.items():
        assert limit[segment] == pytest.approx(distance, rel=1e-6), segment
    over = a.with_columns(limit=pl.col("segment").replace_strict(limit, return_dtype=pl.Float64))
    assert (over["outlier"] == (over["distance"] > over["limit"])).all()
    assert 0.002 < a["outlier"].mean() < 0.01
    profiles = pl.read_parquet(small_run / "profiles.parquet")
    assert profiles["outliers"].sum() == a["outlier"].sum()


def test_drift_gives_a_point_mass_its_own_bin():
    # With 90% of the old customers at 0, the bin [0, inf) held every customer of both runs: a share that went
    # from 0 to 0.21 on average had a PSI of 0 ("stable"), and 4.65 ("major") with the runs swapped.
    from segmint.engine.pipeline.compare import _bin, _deciles, _drift

    rng = np.random.default_rng(0)
    old = np.where(rng.random(5000) < 0.95, 0.0, rng.random(5000))
    new = np.where(rng.random(5000) < 0.4, 0.0, rng.random(5000))

    def band(a, b):
        cuts, masses = _deciles(pl.DataFrame({"f": a}).lazy(), ["f"], a.size)["f"]
        bins = np.stack([np.bincount(_bin(v, cuts, masses), minlength=cuts.size + 1 + masses.size) for v in (a, b)])
        return _drift({"f": bins})["band"][0]

    assert band(old, new) == "major" and band(new, old) == "major" and band(old, old) == "stable"
    # A feature without ties keeps the decile bins [e_i, e_i+1) it had.
    values = rng.normal(size=5000)
    cuts, masses = _deciles(pl.DataFrame({"f": values}).lazy(), ["f"], values.size)["f"]
    assert masses.size == 0 and (_bin(values, cuts, masses) == np.searchsorted(cuts, values, side="right")).all()


def test_a_clv_model_auto_chose_otherwise_than_the_previous_run_is_refused_and_flagged(tmp_path):
    """purchase_model "auto" chooses on each month's data: the NBD on a short history where nobody has stopped
    buying yet, the BG/NBD a year on. Clustering on the CLV, --previous warm-started from centroids of the
    other model's CLVs, and compare listed no difference (exit 0 both); the same models named were refused."""
    import datetime as dt

    from segmint.engine.config import FeatureConfig
    from segmint.engine.errors import ConfigError

    rng = np.random.default_rng(5)
    rows, start = [], dt.datetime(2025, 1, 1)
    rate, spend, first = rng.gamma(1.5, 1 / 40, 1500), rng.gamma(4, 10, 1500), rng.uniform(0, 60, 1500)
    stop = np.where(rng.random(1500) < 0.6, rng.uniform(120, 200, 1500), 1e9)   # 60% stop after day 120-200
    for i in range(1500):
        t = first[i]
        while t < 365 and t <= stop[i]:
            rows.append((1000 + i, start + dt.timedelta(days=float(t)), float(round(rng.gamma(6, spend[i] / 6), 2)),
                         len(rows)))
            t += rng.exponential(1 / rate[i])
    pl.DataFrame(rows, schema=["customer_id", "ts", "amount", "order_id"], orient="row").write_parquet(
        tmp_path / "tx.parquet")
    cfg = RunConfig(cluster=ClusterConfig(k=4, seed=0),
                    features=FeatureConfig(cluster_features=("recency_days", "frequency", "aov", "clv")))
    early = run([tmp_path / "tx.parquet"], tmp_path / "april", dataclasses.replace(cfg, as_of="2025-04-30"))
    assert early.manifest["clv"]["purchase_model"] == "nbd"
    later = dataclasses.replace(cfg, as_of="2025-12-31")
    with pytest.raises(ConfigError, match=r"\(CLV: nbd against bgnbd \(purchase_model 'auto' chose it on this "
                                          r"run's data; pin it with \[clv\] purchase_model = \"nbd\""):
        run([tmp_path / "tx.parquet"], tmp_path / "dec", dataclasses.replace(later, previous=str(tmp_path / "april")))
    assert not (tmp_path / "dec").exists()
    run([tmp_path / "tx.parquet"], tmp_path / "dec", later)
    assert compare_runs(tmp_path / "april", tmp_path / "dec", tmp_path / "c")["settings_differ"] == [
        "CLV: 52 weeks, 10% a year, nbd against 52 weeks, 10% a year, bgnbd"]
