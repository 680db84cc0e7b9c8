"""Stable segment ids: matched to a previous run on the customers both share (centroids where they cannot be
joined), a permuted previous model followed, new segments get ids never used before."""

import dataclasses
import json
import shutil

import numpy as np
import polars as pl
import pytest

from segmint.engine.config import ClusterConfig, RunConfig
from segmint.engine.errors import ConfigError
from segmint.engine.model import Model
from segmint.engine.pipeline import run


def _ids(path):
    return pl.read_parquet(path / "assignments").select("customer_id", "segment")


def _kept(a, b):
    both = a.join(b, on="customer_id")
    return float((both["segment"] == both["segment_right"]).mean())


def test_another_seed_with_previous_keeps_ids_and_names(small_data, tmp_path):
    # At k=5 these customers segment the same way from any seed (ARI 0.998 between seeds 0 and 7).
    tx = [small_data / "transactions"]
    run(tx, tmp_path / "a", RunConfig(cluster=ClusterConfig(k=5, seed=0)))
    names_a = dict(pl.read_parquet(tmp_path / "a" / "profiles.parquet").select("segment", "name").iter_rows())
    for out, warm in (("c", None), ("d", False)):  # --previous starts from its centroids unless told not to
        matched = run(tx, tmp_path / out, RunConfig(cluster=ClusterConfig(k=5, seed=7), previous=str(tmp_path / "a"),
                                                    warm_start=warm))
        assert _kept(_ids(tmp_path / "a"), _ids(tmp_path / out)) >= 0.99
        names = dict(pl.read_parquet(tmp_path / out / "profiles.parquet").select("segment", "name").iter_rows())
        assert names == names_a  # matched segments keep their names
        report = matched.manifest["clustering"]["matching"]
        assert report["warm_start"] is (warm is None) and report["method"] == "customers"
        assert report["new_ids"] == [] and report["vanished_ids"] == []
        assert all(p["by"] == "customers" and p["name_kept"] for p in report["pairs"])
        shared = report["shared_customers"]
        assert shared["customers"] == 3000 and shared["kept_share"] == shared["optimal_share"] >= 0.99
    # The warm start keeps the previous number of segments whatever --k says.
    warm = run(tx, tmp_path / "w", RunConfig(cluster=ClusterConfig(k=3, seed=7), previous=str(tmp_path / "a")))
    assert warm.manifest["k"] == 5 and _kept(_ids(tmp_path / "a"), _ids(tmp_path / "w")) >= 0.99
    assert warm.manifest["clustering"]["n_train"] == 3000 and "k=5 kept" in warm.manifest["clustering"]["note"]


def _permuted(run_dir, out, perm: dict[int, int]):
    """A copy of ``run_dir`` whose segment ids are renumbered by ``perm`` in its model and assignments."""
    shutil.copytree(run_dir, out)
    doc = json.loads((out / "model" / "model.json").read_text())
    doc["segment_ids"] = [perm[i] for i in doc["segment_ids"]]
    doc["next_segment_id"] = max(perm.values()) + 1
    (out / "model" / "model.json").write_text(json.dumps(doc))
    folders = out / "assignments"
    for i in perm:
        (folders / f"segment={i}").rename(folders / f"tmp={i}")
    for i, j in perm.items():
        (folders / f"tmp={i}").rename(folders / f"segment={j}")


def test_a_permuted_previous_model_keeps_its_ids(small_data, tmp_path):
    tx = [small_data / "transactions"]
    run(tx, tmp_path / "a", RunConfig(cluster=ClusterConfig(k=5, seed=0)))
    perm = {0: 12, 1: 10, 2: 14, 3: 11, 4: 13}
    _permuted(tmp_path / "a", tmp_path / "p", perm)
    expected = _ids(tmp_path / "a").with_columns(pl.col("segment").replace_strict(perm, return_dtype=pl.Int64))
    for out, warm in (("b", None), ("c", False)):
        result = run(tx, tmp_path / out, RunConfig(cluster=ClusterConfig(k=5, seed=7), previous=str(tmp_path / "p"),
                                                   warm_start=warm))
        assert _kept(expected, _ids(tmp_path / out)) >= 0.99
        assert sorted(result.manifest["clustering"]["matching"]["pairs"][i]["segment"] for i in range(5)) == \
            sorted(perm.values())
        assert Model.load(tmp_path / out).next_segment_id == 15


def test_ids_join_on_pseudonyms_and_fall_back_to_centroids_where_customers_cannot_be_joined(small_data, tmp_path, monkeypatch):
    tx = [small_data / "transactions"]
    run(tx, tmp_path / "a", RunConfig(cluster=ClusterConfig(k=5, seed=0)))
    # Only the model folder: no assignments to read. The note named the run's readable assignments as unreadable.
    only_model = run(tx, tmp_path / "b", RunConfig(cluster=ClusterConfig(k=5, seed=7),
                                                   previous=str(tmp_path / "a" / "model")))
    report = only_model.manifest["clustering"]["matching"]
    assert report["method"] == "centroids"
    assert f"is a model folder; give --previous its run folder, {tmp_path / 'a'}," in report["note"]
    assert _kept(_ids(tmp_path / "a"), _ids(tmp_path / "b")) >= 0.99
    # This run pseudonymises its customer ids, the previous one did not: they cannot be joined.
    monkeypatch.setenv("SEGMINT_ID_KEY", "k" * 32)
    hidden = run(tx, tmp_path / "c", RunConfig(cluster=ClusterConfig(k=5, seed=7), previous=str(tmp_path / "a"),
                                               pseudonymize_ids=True))
    report = hidden.manifest["clustering"]["matching"]
    assert report["method"] == "centroids" and "pseudonymises" in report["note"]
    assert report["new_ids"] == [] and report["vanished_ids"] == []
    # Both pseudonymised with the same key: the pseudonyms join.
    both = run(tx, tmp_path / "d", RunConfig(cluster=ClusterConfig(k=5, seed=3), previous=str(tmp_path / "c"),
                                             pseudonymize_ids=True))
    report = both.manifest["clustering"]["matching"]
    assert report["method"] == "customers" and report["shared_customers"]["customers"] == 3000
    assert _kept(_ids(tmp_path / "c"), _ids(tmp_path / "d")) >= 0.99
    # Pseudonymised with another key: the note names the keys (it said no customer was in the previous run).
    monkeypatch.setenv("SEGMINT_ID_KEY", "j" * 32)
    other_key = run(tx, tmp_path / "e", RunConfig(cluster=ClusterConfig(k=5, seed=3), previous=str(tmp_path / "c"),
                                                  pseudonymize_ids=True))
    report = other_key.manifest["clustering"]["matching"]
    assert report["method"] == "centroids" and "with two keys (SEGMINT_ID_KEY)" in report["note"]


def test_previous_ids_are_followed_when_they_are_not_in_size_order(small_data, small_cfg, small_run, tmp_path):
    # A fresh run numbers its segments by decreasing size, so a matcher that did nothing would
    # pass a check against an unchanged previous run. Rotate the previous model's ids instead: the
    # same data and seed give the same centroids, and each must take the id its partner now has.
    previous = tmp_path / "previous"
    (previous / "model").mkdir(parents=True)
    doc = json.loads((small_run / "model" / "model.json").read_text())
    old_ids = doc["segment_ids"]
    assert old_ids == list(range(6))
    rotated = old_ids[1:] + old_ids[:1]  # no id keeps its row
    doc["segment_ids"] = rotated
    (previous / "model" / "model.json").write_text(json.dumps(doc))
    to_new = dict(zip(old_ids, rotated, strict=True))
    result = run([small_data / "transactions"], tmp_path / "again",
                 dataclasses.replace(small_cfg, previous=str(previous)))
    before = _ids(small_run)
    after = _ids(tmp_path / "again")
    both = before.join(after, on="customer_id", suffix="_new")
    assert both.height == before.height == after.height
    moved = both.filter(pl.col("segment_new") != pl.col("segment").replace_strict(to_new))
    assert moved.height == 0, f"{moved.height} customers did not follow their segment's rotated id: {moved.head(3)}"
    # Names travel with their ids.
    names_before = dict(pl.read_parquet(small_run / "profiles.parquet").select("segment", "name").iter_rows())
    names_after = dict(pl.read_parquet(tmp_path / "again" / "profiles.parquet").select("segment", "name").iter_rows())
    assert names_after == {to_new[s]: name for s, name in names_before.items()}
    report = result.manifest["clustering"]["matching"]
    assert report["new_ids"] == [] and report["vanished_ids"] == []


def test_a_planted_new_persona_gets_a_new_id_never_used_before(small_data, tmp_path):
    tx = pl.read_parquet(small_data / "transactions")
    run([small_data / "transactions"], tmp_path / "a", RunConfig(cluster=ClusterConfig(k=5, seed=0)))
    # 200 new book lovers: an order every three days, 150 to 250 each, on the web.
    rng = np.random.default_rng(0)
    days = pl.datetime_range(pl.datetime(2026, 1, 1), pl.datetime(2026, 6, 29), "3d", eager=True)
    whole = pl.DataFrame({"customer_id": np.repeat(np.arange(9_000_000, 9_000_200), days.len()),
                          "ts": pl.concat([days] * 200), "amount": rng.uniform(150, 250, 200 * days.len()),
                          "order_id": np.arange(200 * days.len()) + 80_000_000,
                          "channel": "web", "category": "books"})
    pl.concat([tx, whole.select(tx.columns).cast(tx.schema)]).write_parquet(tmp_path / "t.parquet")
    # The best optimum (lowest inertia) isolates the book lovers; 10 restarts reach it (5 did on 4 of
    # seeds 0-4 in a fit on this matrix, not on seed 0 in the pipeline).
    result = run([tmp_path / "t.parquet"], tmp_path / "b",
                 RunConfig(cluster=ClusterConfig(k=6, seed=0, nredo=10), previous=str(tmp_path / "a"),
                           warm_start=False))
    report = result.manifest["clustering"]["matching"]
    assert report["new_ids"] == [5] and report["vanished_ids"] == [] and report["method"] == "customers"
    # Matched on the customers both runs share, who are none of the book lovers.
    assert {p["segment"] for p in report["pairs"]} == {0, 1, 2, 3, 4}
    b = _ids(tmp_path / "b")
    assert b.filter(pl.col("customer_id") >= 9_000_000)["segment"].unique().to_list() == [5]
    assert _kept(_ids(tmp_path / "a"), b) >= 0.97  # the new persona moves the scaler a little
    assert Model.load(tmp_path / "b").next_segment_id == 6
    # Without the book lovers, segment 5 vanishes; a new one would get 6, never 5 again.
    again = run([small_data / "transactions"], tmp_path / "c",
                RunConfig(cluster=ClusterConfig(k=5, seed=0), previous=str(tmp_path / "b"), warm_start=False))
    matching = again.manifest["clustering"]["matching"]
    assert matching["vanished_ids"] == [5] and matching["new_ids"] == []
    assert Model.load(tmp_path / "c").next_segment_id == 6
    ids = json.loads((tmp_path / "c" / "model" / "model.json").read_text())["segment_ids"]
    assert ids == [0, 1, 2, 3, 4]


def test_previous_must_cluster_on_the_same_features(small_data, tmp_path):
    from segmint.engine.config import FeatureConfig

    run([small_data / "transactions"], tmp_path / "a", RunConfig(cluster=ClusterConfig(k=3)))
    with pytest.raises(ConfigError, match="same ones") as err:
        run([small_data / "transactions"], tmp_path / "b",
            RunConfig(cluster=ClusterConfig(k=3), previous=str(tmp_path / "a"),
                      features=FeatureConfig(cluster_features=("recency_days", "frequency"))))
    assert "gone here: ['tenure_days'" in str(err.value) and "new here" not in str(err.value)
    assert "cluster_features" not in str(err.value)   # it would name features this run has not
    # A channel new this month adds a share column: the message names it and the setting that keeps the
    # previous features, which then runs.
    lines = pl.read_parquet(small_data / "transactions")
    lines.with_columns(channel=pl.when(pl.int_range(pl.len()) % 7 == 0).then(pl.lit("kiosk"))
                       .otherwise(pl.col("channel"))).write_parquet(tmp_path / "later.parquet")
    with pytest.raises(ConfigError, match="new here: \\['channel_share_kiosk'\\]") as err:
        run([tmp_path / "later.parquet"], tmp_path / "b",
            RunConfig(cluster=ClusterConfig(k=3), previous=str(tmp_path / "a")))
    previous = Model.load(tmp_path / "a").scaler.columns
    assert f"cluster_features = {list(previous)}" in str(err.value)
    run([tmp_path / "later.parquet"], tmp_path / "b", RunConfig(
        cluster=ClusterConfig(k=3), previous=str(tmp_path / "a"), features=FeatureConfig(cluster_features=previous)))
    with pytest.raises(ConfigError, match="--warm-start needs --previous"):
        RunConfig(warm_start=True)


def test_a_kept_name_whose_words_no_longer_hold_is_given_afresh():
    # "frequent" kept for a segment whose median now sits at the 37th percentile was false (exit 0).
    from segmint.engine.pipeline.commands import _kept_names

    profiles = pl.DataFrame({
        "segment": [3, 5, 6], "name": ["Recent · frequent · mid spend", "Dormant · regular · low spend",
                                       "Recent · frequent · high spend"],    # each one's own name, as named afresh
        "recency_days_median_pct": [20.0, 80.0, 25.0], "frequency_median_pct": [80.0, 37.0, 90.0],
        "frequency_median": [9.0, 3.0, 12.0], "aov_median_pct": [50.0, 10.0, 80.0]})
    matching = {"pairs": [{"segment": 3, "name_kept": True}, {"segment": 5, "name_kept": True}]}
    kept = ("Recent · frequent · mid spend · more web", "Dormant · frequent · low spend #5", None)
    named = _kept_names(profiles, kept, matching)
    assert named["name"].to_list() == ["Recent · frequent · mid spend · more web", "Dormant · regular · low spend",
                                       "Recent · frequent · high spend"]
    assert [p["name_kept"] for p in matching["pairs"]] == [True, False]
    # Within KEEP_MARGIN of a band a kept word stays: 1-2 point moves (29.2 <-> 30.4 recency, 73.4 <-> 75.7
    # frequency) renamed a stable segment 4 times in 5 months.
    near = profiles.with_columns(recency_days_median_pct=pl.Series([34.9, 80.0, 25.0]),
                                 frequency_median_pct=pl.Series([70.1, 37.0, 90.0]),
                                 name=pl.Series(["Steady · regular · mid spend", "x", "y"]))
    assert _kept_names(near, ("Recent · frequent · mid spend", None, None), None)["name"][0] == \
        "Recent · frequent · mid spend"
    beyond = near.with_columns(recency_days_median_pct=pl.Series([35.1, 80.0, 25.0]))
    assert _kept_names(beyond, ("Recent · frequent · mid spend", None, None), None)["name"][0] == \
        "Steady · regular · mid spend"
    # ... unless a word held only by the margin ranks it against another segment's the other way round: a kept
    # "frequent" at 70.1 beside a fresh "regular" at 72 (segment 6 here) is renamed.
    ranked = near.with_columns(
        name=pl.Series(["Steady · regular · mid spend", "x", "Recent · regular · high spend"]),
        frequency_median_pct=pl.Series([70.1, 37.0, 72.0]))
    assert _kept_names(ranked, ("Recent · frequent · mid spend", None, None), None)["name"][0] == \
        "Steady · regular · mid spend"
    # A fresh name marked " (new)" last month is judged by its words too (its last word went unchecked).
    named = _kept_names(profiles, ("Recent · frequent · high spend (new)", None, None), None)
    assert named["name"][0] == "Recent · frequent · mid spend"


def test_kept_and_fresh_names_stay_distinct_and_the_new_marker_goes_once_it_marks_nothing():
    from segmint.engine.pipeline.commands import _kept_names

    rows = pl.DataFrame({"segment": [0, 1, 2], "recency_days_median_pct": [20.0, 21.0, 22.0],
                         "frequency_median_pct": [80.0, 81.0, 82.0], "frequency_median": [9.0, 9.0, 9.0],
                         "aov_median_pct": [80.0, 81.0, 82.0], "name": ["X", "X · more app", "Y"]})
    x = "Recent · frequent · high spend"
    # Both of last month's "X" and "X (new)" kept, and a fresh "X" (two segments were both "X (new)").
    named = _kept_names(rows.with_columns(name=pl.Series(["a", "b", x])), (x, f"{x} (new)", None), None)
    assert named["name"].to_list() == [x, f"{x} (new)", f"{x} (new) #2"]
    # "X (new)" kept alone: the marker marked a clash of the run that gave it, and goes.
    named = _kept_names(rows.with_columns(name=pl.Series(["a", "b", "c"])), (None, f"{x} (new)", None), None)
    assert named["name"].to_list() == ["a", x, "c"]
