"""The run directory: layout, determinism, atomicity, assign round trip, privacy, RFM and lifecycle."""

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from segmint.engine.config import ClusterConfig, Columns, RunConfig
from segmint.engine.errors import ConfigError, OutputExistsError
from segmint.engine.model import Model
from segmint.engine.pipeline import assign_customers, run


def _digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*.parquet"))}


def test_run_directory_layout(small_run):
    names = {p.name for p in small_run.iterdir()}
    assert names == {"assignments", "profiles.parquet", "profiles.json", "model", "rejects",
                     "run.json", "_SUCCESS"}
    segs = sorted(p.name for p in (small_run / "assignments").iterdir())
    assert segs == [f"segment={i}" for i in range(6)]
    a = pl.read_parquet(small_run / "assignments")
    assert a.columns[:4] == ["customer_id", "segment", "distance", "margin"]
    assert a["customer_id"].is_unique().all()
    # Segment 0 is the largest; ids follow decreasing size.
    sizes = a.group_by("segment").len().sort("segment")["len"].to_list()
    assert sizes == sorted(sizes, reverse=True)
    manifest = json.loads((small_run / "run.json").read_text())
    rows = manifest["rows"]
    assert rows["in"] == rows["used"] + rows["rejected"]
    assert manifest["customers"] == a.height
    assert manifest["clustering"]["n_train"] <= a.height
    assert set(manifest["stages"]) >= {"scan", "clean", "features", "cluster", "assign", "profile"}


def test_same_input_seed_threads_give_identical_assignments(small_data, small_cfg, small_run, tmp_path):
    again = tmp_path / "again"
    run([small_data / "transactions"], again, small_cfg)
    assert _digest(small_run / "assignments") == _digest(again / "assignments")


def test_assign_round_trip_reproduces_training_segments(small_data, small_run, tmp_path):
    scored = tmp_path / "scored"
    assign_customers(small_run, [small_data / "transactions"], scored, RunConfig())
    trained = pl.read_parquet(small_run / "assignments").sort("customer_id")
    again = pl.read_parquet(scored / "assignments").sort("customer_id")
    same = ["customer_id", "segment", "r_score", "rfm_segment", "p_alive", "clv"]
    assert trained.select(same).equals(again.select(same))
    np.testing.assert_allclose(trained["distance"], again["distance"], rtol=1e-6)
    assert not (scored / "model").exists()


def test_existing_output_needs_overwrite(small_data, small_cfg, small_run):
    with pytest.raises(OutputExistsError, match="--overwrite"):
        run([small_data / "transactions"], small_run, small_cfg)


def test_failed_run_leaves_previous_output_intact(small_data, small_cfg, tmp_path, monkeypatch):
    out = tmp_path / "out"
    cfg = dataclasses.replace(small_cfg, cluster=ClusterConfig(k=3))
    run([small_data / "transactions"], out, cfg)
    before = _digest(out)

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("segmint.engine.model.Model.save", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        run([small_data / "transactions"], out, dataclasses.replace(cfg, overwrite=True))
    assert _digest(out) == before
    assert (out / "_SUCCESS").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging directory left behind


def test_pseudonymized_ids_never_expose_raw_ids_or_key(small_data, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGMINT_ID_KEY", "s3cret-key-value")
    out = tmp_path / "p"
    run([small_data / "transactions"], out, RunConfig(cluster=ClusterConfig(k=3), pseudonymize_ids=True))
    ids = pl.read_parquet(out / "assignments")["customer_id"]
    assert ids.dtype == pl.String and ids.str.len_chars().unique().to_list() == [64]
    raw = set(pl.read_parquet(small_data / "personas.parquet")["customer_id"].cast(pl.String))
    assert not raw & set(ids)
    for path in out.rglob("*"):
        if path.is_file():
            assert b"s3cret-key-value" not in path.read_bytes()


def test_pseudonymize_without_key_fails_before_work(small_data, tmp_path, monkeypatch):
    monkeypatch.delenv("SEGMINT_ID_KEY", raising=False)
    with pytest.raises(ConfigError, match="SEGMINT_ID_KEY"):
        run([small_data / "transactions"], tmp_path / "x", RunConfig(pseudonymize_ids=True))
    assert not (tmp_path / "x").exists()


def test_only_mapped_columns_are_read_and_written(tmp_path):
    df = pl.DataFrame({"cid": [1, 1, 2, 3], "t": ["2024-01-01", "2024-02-01", "2024-01-05", "2024-01-09"],
                       "amt": [5.0, 6.0, 7.0, float("nan")], "email": ["x@y.z"] * 4})
    df.write_parquet(tmp_path / "in.parquet")
    cols = Columns(customer="cid", time="t", time_format="%Y-%m-%d", amount="amt")
    out = tmp_path / "out"
    run([tmp_path / "in.parquet"], out, RunConfig(columns=cols, cluster=ClusterConfig(k=2)))
    for path in out.rglob("*.parquet"):
        assert "email" not in pl.read_parquet_schema(path)
    rejects = pl.read_parquet(out / "rejects")
    assert rejects.columns == ["cid", "t", "amt", "reason"]
    assert rejects["reason"].to_list() == ["non_finite_amount"]


def test_rfm_scores_match_plain_polars_quintiles(small_run):
    a = pl.read_parquet(small_run / "assignments")
    cuts = Model.load(small_run).rfm_cuts

    def score(col, qs):
        return sum(((pl.col(col) > q).cast(pl.Int8)) for q in qs)

    q = [0.2, 0.4, 0.6, 0.8]
    ref = a.select(
        (5 - score("recency_days", [a["recency_days"].quantile(x, "linear") for x in q])).alias("r"),
        (1 + score("frequency", [a["frequency"].quantile(x, "linear") for x in q])).alias("f"),
        (1 + score("monetary_total", [a["monetary_total"].quantile(x, "linear") for x in q])).alias("m"),
    )
    assert a["r_score"].cast(pl.Int32).to_list() == ref["r"].cast(pl.Int32).to_list()
    assert a["f_score"].cast(pl.Int32).to_list() == ref["f"].cast(pl.Int32).to_list()
    assert a["m_score"].cast(pl.Int32).to_list() == ref["m"].cast(pl.Int32).to_list()
    assert cuts.recency == tuple(a["recency_days"].quantile(x, "linear") for x in q)
    champions = a.filter(pl.col("rfm_segment") == "Champions")
    assert champions.height > 0
    assert (champions["r_score"] == 5).all() and champions["f_score"].is_in([4, 5]).all()


def test_activity_status_follows_documented_rules(small_run):
    a = pl.read_parquet(small_run / "assignments")
    cfg = RunConfig().features.lifecycle

    def expected(r):
        if r["tenure_days"] <= cfg.new_days:
            return "new"
        if r["recency_days"] > cfg.lapsed_days:
            return "lapsed"
        if r["lt_frequency"] >= 1:
            ratio = r["recency_days"] / max(r["ipt_mean_days"], 1.0)
            return "active" if ratio <= cfg.at_risk_ratio else "at_risk" if ratio <= cfg.lapsed_ratio else "lapsed"
        return "active" if r["recency_days"] <= cfg.one_time_active_days else "at_risk"

    got = a["activity_status"].cast(pl.String).to_list()
    assert got == [expected(r) for r in a.iter_rows(named=True)]
    assert set(got) == {"new", "active", "at_risk", "lapsed"}


def test_profiles_reconcile_with_assignments(small_run):
    a = pl.read_parquet(small_run / "assignments")
    p = pl.read_parquet(small_run / "profiles.parquet")
    assert p["customers"].sum() == a.height
    assert p["share"].sum() == pytest.approx(1.0)
    assert p["revenue_share"].sum() == pytest.approx(1.0)
    assert p["name"].is_unique().all()
    seg0 = a.filter(pl.col("segment") == 0)
    row = p.filter(pl.col("segment") == 0).row(0, named=True)
    assert row["aov_mean"] == pytest.approx(seg0["aov"].mean())
    assert row["recency_days_p90"] == pytest.approx(seg0["recency_days"].quantile(0.9, "linear"))
    z = (seg0["frequency"].mean() - a["frequency"].mean()) / a["frequency"].std()
    assert row["frequency_zlift"] == pytest.approx(z)
    assert json.loads((small_run / "profiles.json").read_text())[0]["name"] == row["name"]


def test_model_round_trips_exactly(small_run, tmp_path):
    model = Model.load(small_run)
    model.save(tmp_path / "m")
    again = Model.load(tmp_path / "m")
    np.testing.assert_array_equal(model.centroids, again.centroids)
    assert again.scaler == model.scaler and again.rfm_cuts == model.rfm_cuts
    assert again.columns == model.columns and again.features == model.features
    assert "SEGMINT_ID_KEY" not in os.environ or os.environ["SEGMINT_ID_KEY"] not in (
        tmp_path / "m" / "model.json").read_text()


def test_rfm_grid_from_config_overrides_the_default(tmp_path, small_data):
    from segmint.engine.config import load_toml
    from segmint.engine.pipeline import compute_feature_table

    cells = "\n".join(f'[[features.rfm_grid]]\nname = "{name}"\nr = {list(rs)}\nf = [1, 2, 3, 4, 5]'
                      for name, rs in (("Recent", (4, 5)), ("Middle", (3,)), ("Old", (1, 2))))
    (tmp_path / "grid.toml").write_text(cells + "\n")
    cfg = load_toml(tmp_path / "grid.toml")
    table = compute_feature_table([small_data / "transactions"], tmp_path / "f.parquet", cfg)
    seg = table.select(pl.col("rfm_segment").cast(pl.String), "r_score")
    assert set(seg["rfm_segment"]) == {"Recent", "Middle", "Old"}
    assert (seg.filter(pl.col("rfm_segment") == "Recent")["r_score"] >= 4).all()
    (tmp_path / "bad.toml").write_text('[[features.rfm_grid]]\nname = "All"\nr = [1]\nf = [1]\n')
    with pytest.raises(ConfigError, match="25"):
        load_toml(tmp_path / "bad.toml")


@pytest.mark.parametrize("id_type", [pl.Int64, pl.String])
def test_order_lines_collapse_and_missing_order_ids_stay_separate(tmp_path, id_type):
    from segmint.engine.pipeline import compute_feature_table

    df = pl.DataFrame({
        "customer_id": ["b", "a", "a", "a", "a", "b"] if id_type == pl.String else [2, 1, 1, 1, 1, 2],
        "ts": ["2024-01-05", "2024-01-01", "2024-01-01", "2024-01-03", "2024-01-04", "2024-01-06"],
        "amount": [5.0, 10.0, 2.5, -2.5, 7.0, 1.0],
        "order_id": ["o9", "o1", "o1", "o1", None, None],
    })
    df.write_parquet(tmp_path / "t.parquet")
    cfg = RunConfig(columns=Columns(time_format="%Y-%m-%d"))
    t = compute_feature_table([tmp_path / "t.parquet"], tmp_path / "f.parquet", cfg)
    rows = {r["customer_id"]: r for r in t.iter_rows(named=True)}
    a, b = rows["a" if id_type == pl.String else 1], rows["b" if id_type == pl.String else 2]
    # a: order o1 (three lines, one a later refund) + one line without an order id = 2 orders.
    assert (a["frequency"], a["monetary_total"], a["aov"]) == (2, 17.0, 8.5)
    assert a["refund_share"] == pytest.approx(2.5 / 19.5)
    assert (b["frequency"], b["monetary_total"]) == (2, 6.0)
    assert t["customer_id"].to_list() == sorted(t["customer_id"].to_list())


def test_features_do_not_depend_on_how_ids_are_spelled(small_data):
    # Compact integer ids take the lookup-table path of the customer grouping; sparse
    # ones (spanning int64) and strings take the sorting path. Same customers, same features.
    from segmint.engine.features.table import compute_features
    from segmint.engine.io.clean import clean
    from segmint.engine.io.scan import read_input

    cfg = RunConfig()
    raw, columns = read_input([small_data / "transactions"], cfg.columns)
    cleaned = clean(raw, dataclasses.replace(cfg, columns=columns))
    want = compute_features(cleaned.lines, cleaned.as_of, cfg.features).table
    ids = pl.col("customer_id")
    spellings = {"sparse": ids * 10**12 - 5 * 10**18 + ids % 2 * 10**18,
                 "string": pl.format("c{}", ids.cast(pl.String))}
    for name, expr in spellings.items():
        mapping = cleaned.lines.select(original=ids, customer_id=expr).unique()
        got = compute_features(cleaned.lines.with_columns(customer_id=expr), cleaned.as_of, cfg.features).table
        got = got.join(mapping, on="customer_id").sort("original").drop("customer_id").rename(
            {"original": "customer_id"}).select(want.columns)
        assert got.equals(want), name
