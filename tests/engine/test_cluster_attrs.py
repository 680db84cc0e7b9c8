"""--cluster-attrs: customer attributes one-hot among the clustering features, through run, assign and predict."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest

from segmint.engine.config import ClusterConfig, CustomerSource, RunConfig
from segmint.engine.errors import ConfigError, InputContractError
from segmint.engine.model import Model
from segmint.engine.pipeline import assign_customers, run
from segmint.engine.preprocess import fit_scaler


def _cfg(small_data, weight: float, attributes=("region",)) -> RunConfig:
    return RunConfig(cluster=ClusterConfig(k=5, seed=1, attributes=attributes, attribute_weight=weight),
                     customers=CustomerSource(paths=(str(small_data / "customers.parquet"),),
                                              attributes=("region", "age_band")))


def _regions_per_segment(out) -> list[int]:
    a = pl.read_parquet(out / "assignments", hive_partitioning=True)
    return a.group_by("segment").agg(pl.col("region").n_unique()).sort("segment")["region"].to_list()


def test_a_heavy_attribute_makes_segments_pure_and_assign_scores_like_the_run(small_data, tmp_path):
    regions = pl.read_parquet(small_data / "customers.parquet")["region"].n_unique()
    plain = dataclasses.replace(_cfg(small_data, 1.0), cluster=ClusterConfig(k=5, seed=1))
    run([small_data / "transactions"], tmp_path / "plain", plain)
    assert max(_regions_per_segment(tmp_path / "plain")) == regions     # behaviour alone mixes regions
    result = run([small_data / "transactions"], tmp_path / "run", _cfg(small_data, 20.0))
    assert _regions_per_segment(tmp_path / "run") == [1] * 5            # a weight of 20 sd: one region each
    features = result.manifest["clustering"]["features"]
    assert sorted(f for f in features if f.startswith("region=")) == sorted(
        f"region={r}" for r in pl.read_parquet(small_data / "customers.parquet")["region"].unique())
    model = Model.load(tmp_path / "run")
    assert model.scaler.columns == tuple(features) and model.scaler.weight == 20.0
    scored = assign_customers(tmp_path / "run", [small_data / "transactions"], tmp_path / "scored",
                              _cfg(small_data, 1.0, ()))
    read = (lambda o: pl.read_parquet(o / "assignments").select("customer_id", "segment").sort("customer_id"))
    assert read(tmp_path / "scored").equals(read(tmp_path / "run"))
    assert scored.manifest["clustering"]["features"] == features


@pytest.mark.parametrize("attributes", [(), ("region",)])
def test_assign_joins_a_customers_table_and_writes_its_segment_mix_as_run_does(small_data, tmp_path, attributes):
    # Ignored without a word for a model not clustering on attributes; the mix never written by assign.
    cfg = _cfg(small_data, 1.0, attributes)
    run([small_data / "transactions"], tmp_path / "run", cfg)
    assign_customers(tmp_path / "run", [small_data / "transactions"], tmp_path / "scored",
                     dataclasses.replace(cfg, cluster=ClusterConfig()))
    assert pl.read_parquet(tmp_path / "scored" / "segment_mix.parquet").equals(
        pl.read_parquet(tmp_path / "run" / "segment_mix.parquet"))
    read = (lambda o: pl.read_parquet(o / "assignments").select("customer_id", "region", "age_band")
            .sort("customer_id"))
    assert read(tmp_path / "scored").equals(read(tmp_path / "run"))


def test_a_model_on_attributes_asks_for_them_where_it_scores(small_data, tmp_path):
    run([small_data / "transactions"], tmp_path / "run", _cfg(small_data, 1.0))
    with pytest.raises(ConfigError, match=r"^this model clusters on the customer attribute\(s\) \['region'\]: "
                                          r"pass --customers with --customer-attrs region$"):
        assign_customers(tmp_path / "run", [small_data / "transactions"], tmp_path / "scored", RunConfig())
    history = pl.read_parquet(small_data / "transactions").head(20)
    with pytest.raises(ConfigError, match="score with 'segmint assign' and --customers"):
        Model.load(tmp_path / "run").predict(history)


def test_cluster_attributes_must_come_from_the_customers_table():
    with pytest.raises(ConfigError, match="--cluster-attrs region must come from the customers table"):
        RunConfig(cluster=ClusterConfig(attributes=("region",)))
    with pytest.raises(ConfigError, match="attribute_weight must be a positive number, got 0"):
        ClusterConfig(attribute_weight=0)


def test_attributes_that_are_not_categories_are_refused():
    # Each was one-hot on its 32 most frequent values, arbitrary ones, without a word.
    n = 200
    base = pl.DataFrame({"f": np.arange(n, dtype=np.float64)})
    income = base.with_columns(a=pl.Series(np.arange(n) * 10.0))
    with pytest.raises(ConfigError, match="--cluster-attrs a is a number with 200 values; .*at most 32"):
        fit_scaler(income, ["f"], [], attributes=["a"])
    email = base.with_columns(a=pl.Series([f"c{i}@x" for i in range(n)]))
    with pytest.raises(ConfigError, match="a has 200 values, and its 32 most frequent hold 32 of the 200 customers"):
        fit_scaler(email, ["f"], [], attributes=["a"])
    # Categories stay: a number of few values (a grade), and a long tail under the levels kept.
    grade = base.with_columns(a=pl.Series(np.arange(n) % 5))
    assert len(fit_scaler(grade, ["f"], [], attributes=["a"]).columns) == 6
    country = base.with_columns(a=pl.Series(["big"] * 120 + [f"small{i}" for i in range(80)]))
    assert len(fit_scaler(country, ["f"], [], attributes=["a"]).columns) == 33


def test_the_cli_refuses_an_attribute_that_is_not_categories_with_exit_2(small_data, tmp_path):
    from typer.testing import CliRunner

    from segmint.cli.app import app

    customers = pl.read_parquet(small_data / "customers.parquet")
    customers.with_columns(income=pl.int_range(pl.len()) * 7.5).write_parquet(tmp_path / "c.parquet")
    r = CliRunner().invoke(app, ["run", str(small_data / "transactions"), "--out", str(tmp_path / "o"), "--customers",
                                 str(tmp_path / "c.parquet"), "--customer-attrs", "region,income", "--cluster-attrs",
                                 "income"])
    assert r.exit_code == 2 and "--cluster-attrs income is a number with" in r.output
    assert not (tmp_path / "o").exists()


def test_one_hot_levels_by_frequency_unseen_and_missing_values_at_the_origin():
    fit = pl.DataFrame({"f": [1.0, 2.0, 3.0, 4.0], "a": ["x", "y", "y", None]})
    scaler = fit_scaler(fit, ["f"], [], attributes=["a"], weight=3.0)
    assert scaler.columns == ("f", "a=y", "a=x")
    new = pl.DataFrame({"f": [1.0, 1.0, 1.0, 1.0], "a": ["x", "y", "z", None]})
    np.testing.assert_array_equal(scaler.transform(new)[:, 1:], [[0, 3], [3, 0], [0, 0], [0, 0]])
    again = type(scaler).from_dict(scaler.to_dict())
    assert again == scaler
    raw = np.array([[2.5, 1.0, 0.0], [7.0, 0.0, 1.0]])
    np.testing.assert_allclose(scaler.unscale(scaler.scale(raw)), raw)
    np.testing.assert_allclose(scaler.scale(raw)[:, 1:], raw[:, 1:] * 3.0)


def test_numeric_levels_are_matched_by_value_whatever_the_batch_s_number_type():
    # A batch's 1.0 (an integer column pandas made float for a missing value) was not the model's level "1": its
    # customers sat at 0 on every level, and 1,800 of 3,000 moved segment with exit 0 (helper sweep).
    scaler = fit_scaler(pl.DataFrame({"f": [1.0, 2.0, 3.0], "n": [1, 2, 2]}), ["f"], [], attributes=["n"])
    expected = scaler.transform(pl.DataFrame({"f": [1.0, 1.0, 1.0], "n": [1, 2, 3]}))
    for batch in (pl.Series("n", [1.0, 2.0, 3.0]), pl.Series("n", [1, 2, 3], pl.Int32),
                  pl.Series("n", [1, 2, 3]).cast(pl.Decimal(10, 2))):
        np.testing.assert_array_equal(scaler.transform(pl.DataFrame({"f": [1.0, 1.0, 1.0]}).with_columns(batch)),
                                      expected)
    np.testing.assert_array_equal(expected[:, 1:], [[0, 1], [1, 0], [0, 0]])
    # A Float32 level is its own text (0.1 as float64 is not Float32's 0.1), and integers compare exactly (as floats
    # 2^53 + 1 is 2^53): both lost their levels in the review of the first fix.
    for values in (pl.Series("n", [0.1, 0.2, 0.2], pl.Float32), pl.Series("n", [2**53 + 1, 2**53, 2**53])):
        table = pl.DataFrame({"f": [1.0, 2.0, 3.0]}).with_columns(values)
        np.testing.assert_array_equal(fit_scaler(table, ["f"], [], attributes=["n"]).transform(table)[:, 1:],
                                      [[0, 1], [1, 0], [1, 0]])
    # A level beyond the batch's integer type (-1 beside UInt8) is no value of it: "unexpected OverflowError".
    signed = fit_scaler(pl.DataFrame({"f": [1.0, 2.0, 3.0], "n": [-1, 2, 2]}), ["f"], [], attributes=["n"])
    batch = pl.DataFrame({"f": [1.0, 1.0]}).with_columns(pl.Series("n", [2, 255], pl.UInt8))
    np.testing.assert_array_equal(signed.transform(batch)[:, 1:], [[1, 0], [0, 0]])


@pytest.mark.parametrize("values", [[None, None, None], ["x", None, None]])
def test_an_attribute_no_customer_has_is_refused_not_clustered_on_as_nothing(values):
    # A customers table whose ids matched no customer (text '001000005' against 1000005), or an empty column:
    # the run clustered on no level of it, exit 0, and its model still asked for the table to score.
    table = pl.DataFrame({"f": [1.0, 2.0, 3.0], "a": values}, schema={"f": pl.Float64, "a": pl.String})
    if values[0] is None:
        with pytest.raises(InputContractError, match="--cluster-attrs a: no customer clustered has a value"):
            fit_scaler(table, ["f"], [], attributes=["a"])
    else:
        assert fit_scaler(table, ["f"], [], attributes=["a"]).columns == ("f", "a=x")


def test_attributes_named_as_scores_or_features_or_twice_are_refused(small_data, tmp_path):
    # r_score, rfm_segment, rfm_code: the attribute was dropped for the computed column with exit 0 (its segment
    # mix showed the scores under the attribute's name); segment, clv, customer_id, ...: a DuplicateError.
    from segmint.engine.analytics.attributes import SCORED_COLUMNS
    from segmint.engine.errors import InputContractError

    customers = pl.read_parquet(small_data / "customers.parquet")
    for name in (*SCORED_COLUMNS, "frequency", "__hash"):   # __hash: segmint's own column, exit 1 at the run's end
        if name == "customer_id":
            continue
        customers.with_columns(pl.col("region").alias(name)).write_parquet(tmp_path / "c.parquet")
        cfg = RunConfig(cluster=ClusterConfig(k=3), customers=CustomerSource(paths=(str(tmp_path / "c.parquet"),),
                                                                             attributes=(name,)))
        with pytest.raises(InputContractError, match=rf"attribute\(s\) \['{name}'\] clash with the names"):
            run([small_data / "transactions"], tmp_path / "o", cfg)
        assert not (tmp_path / "o").exists()
    with pytest.raises(ConfigError, match="--customer-attrs names region more than once"):
        CustomerSource(paths=("c.parquet",), attributes=("region", "age_band", "region"))


def test_every_column_scoring_adds_is_reserved(small_data, tmp_path):
    # SCORED_COLUMNS is what attribute names may not be: every column of the assignments besides the features
    # and the attributes, and none that is not one.
    from segmint.engine.analytics.attributes import SCORED_COLUMNS
    from segmint.engine.pipeline import compute_feature_table

    cfg = dataclasses.replace(_cfg(small_data, 1.0), cluster=ClusterConfig(k=3, micro_k=2))
    run([small_data / "transactions"], tmp_path / "o", cfg)
    compute_feature_table([small_data / "transactions"], tmp_path / "f", cfg)
    features = set(pl.read_parquet(tmp_path / "f" / "features").columns)
    assigned = set(pl.read_parquet(tmp_path / "o" / "assignments", hive_partitioning=True).columns)
    assert assigned - features - {"region", "age_band"} <= set(SCORED_COLUMNS) <= assigned


def test_previous_holds_when_two_attribute_levels_swap_rank(small_data, tmp_path):
    # Levels are ordered by this run's counts: two regions that swapped rank were "other features (in another
    # order)" and --previous was refused, advising a cluster_features list of 'region=...' that is refused too.
    customers = pl.read_parquet(small_data / "customers.parquet")
    counts = customers["region"].value_counts(sort=True)
    first, second = counts["region"][0], counts["region"][1]
    gap = int(counts["count"][0] - counts["count"][1])
    moved = customers.filter(pl.col("region") == first).head(gap + 1)["customer_id"]
    swapped = customers.with_columns(region=pl.when(pl.col("customer_id").is_in(moved.implode()))
                                     .then(pl.lit(second)).otherwise("region"))
    swapped.write_parquet(tmp_path / "customers.parquet")
    cfg = _cfg(small_data, 1.0)
    first_run = run([small_data / "transactions"], tmp_path / "a", cfg)
    later = dataclasses.replace(cfg, previous=str(tmp_path / "a"), customers=dataclasses.replace(
        cfg.customers, paths=(str(tmp_path / "customers.parquet"),)))
    result = run([small_data / "transactions"], tmp_path / "b", later)
    assert result.manifest["clustering"]["features"] == first_run.manifest["clustering"]["features"]
    assert Model.load(tmp_path / "b").scaler.attributes == Model.load(tmp_path / "a").scaler.attributes
