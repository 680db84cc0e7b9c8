"""One staged pipeline: one bucket and many give the same outputs, for every command."""

import dataclasses
import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from segmint.engine.config import (ClusterConfig, Columns, CustomerSource, EventSource, RunConfig, SamplingConfig,
                                   parse_size)
from segmint.engine.pipeline import (assign_customers, compute_clv, compute_cohorts, compute_feature_table, run,
                                     validate)
from segmint.engine.errors import InputContractError
from segmint.engine.io import sources
from segmint.engine.synth import generate
from tests.fixtures import customer_blocks, write_blocks


@pytest.fixture(scope="module")
def dirty(tmp_path_factory):
    """1,500 generated customers with events and a customers table, plus rejects and exact repeats,
    in three Parquet parts; once with integer ids and once with text ids."""
    root = tmp_path_factory.mktemp("buckets")
    generate(root / "gen", customers=1500, seed=5)  # a population Gamma-Gamma can fit
    out = {}
    for kind in ("int", "str"):
        def ids(frame, kind=kind):
            return frame.with_columns(pl.format("c-{}", "customer_id").alias("customer_id")) if kind == "str" else frame
        tx = pl.read_parquet(root / "gen" / "transactions")
        bad = tx.head(40).with_columns(
            customer_id=pl.when(pl.int_range(40) < 10).then(None).otherwise(pl.col("customer_id")),
            amount=pl.when(pl.int_range(40).is_between(10, 19)).then(float("nan")).otherwise(pl.col("amount")))
        tx = ids(pl.concat([tx, bad, tx.sample(50, seed=1)]))
        folder = root / kind
        (folder / "tx").mkdir(parents=True)
        for i, part in enumerate(tx.with_columns(p=pl.int_range(pl.len()) % 3).partition_by("p", maintain_order=True)):
            part.drop("p").write_parquet(folder / "tx" / f"part-{i}.parquet")
        ids(pl.read_parquet(root / "gen" / "events")).write_parquet(folder / "events.parquet")
        ids(pl.read_parquet(root / "gen" / "customers.parquet")).write_parquet(folder / "customers.parquet")
        out[kind] = folder
    return out


def _sorted(path, *keys):
    frame = pl.read_parquet(path)
    return frame.sort(keys or frame.columns, nulls_last=True)


def _same(a, b, name):
    assert a.equals(b), name


@pytest.mark.parametrize("kind", ["int", "str"])
def test_every_command_gives_the_same_outputs_with_one_bucket_or_many(dirty, tmp_path, kind, monkeypatch):
    # Batches of 1,000 rows: a bucket's scratch files are made a batch at a time, on both threads, each at its place.
    monkeypatch.setattr(sources, "_BATCH_ROWS", 1_000)
    data = dirty[kind]
    cfg = RunConfig(cluster=ClusterConfig(k=5, seed=2), dedupe_on=("customer_id", "ts", "order_id", "amount"),
                    events=EventSource(paths=(str(data / "events.parquet"),)),
                    customers=CustomerSource(paths=(str(data / "customers.parquet"),),
                                             attributes=("region", "age_band")))
    tx = [data / "tx"]
    outs = {}
    for buckets in (1, 6):
        c = dataclasses.replace(cfg, buckets=buckets)
        o = tmp_path / f"b{buckets}"
        run(tx, o / "run", c)
        compute_feature_table(tx, o / "features", c)
        compute_clv(tx, o / "clv", c)
        compute_cohorts(tx, o / "cohorts", c)
        assign_customers(tmp_path / "b1" / "run", tx, o / "assign", c)
        outs[buckets] = o
    one, many = outs[1], outs[6]
    for rel, keys in (("run/assignments", ("customer_id",)), ("assign/assignments", ("customer_id",)),
                      ("run/funnel", ("customer_id",)), ("features/features", ("customer_id",)),
                      ("clv/clv", ("customer_id",)), ("run/rejects", ()), ("run/profiles.parquet", ()),
                      ("assign/profiles.parquet", ()), ("run/segment_mix.parquet", ()),
                      ("cohorts/cohorts.parquet", ()), ("cohorts/retention_pivot.parquet", ())):
        _same(_sorted(one / rel, *keys), _sorted(many / rel, *keys), rel)
    a = pl.read_parquet(one / "run" / "assignments")
    assert a.height > 1000 and a["segment"].n_unique() == 5
    m1, m6 = (json.loads((o / "run" / "run.json").read_text()) for o in (one, many))
    assert m1["buckets"] == 1 and m6["buckets"] == 6
    for key in ("rows", "customers", "k", "clv", "events", "customers_table", "as_of", "config_hash"):
        assert m1[key] == m6[key], key
    assert m1["clustering"]["inertia"] == m6["clustering"]["inertia"]
    assert m1["rows"]["rejected_by_reason"]["null_customer_id"] == 10
    assert m1["rows"]["rejected_by_reason"]["duplicate"] > 0
    model1, model6 = (json.loads((o / "run" / "model" / "model.json").read_text()) for o in (one, many))
    for doc in (model1, model6):
        doc["provenance"].pop("run_id")
    assert model1 == model6
    params1, params6 = (json.loads((o / "clv" / "clv_params.json").read_text()) for o in (one, many))
    assert params1 == params6
    assert not list(tmp_path.rglob(".*work*")) and not list(tmp_path.rglob(".*staging*"))


@pytest.mark.parametrize("profile_customers", [1_000_000, 1000])
def test_one_bucket_keeps_its_feature_table_in_memory_unless_resumable_with_the_same_bytes(dirty, tmp_path,
                                                                                          monkeypatch,
                                                                                          profile_customers):
    """A run of one bucket in this process fits and scores the map's table where it is: no scratch file. A
    --resume run writes it (a later attempt must find it); its outputs are the same, byte for byte. With a
    profile sample of every customer the run writes that sample scored; with fewer (1,000 of about 1,500)
    it scores the kept table."""
    from segmint.engine.pipeline import bucket

    scratch = []
    write = bucket._write_features

    def recording(table, path, plan):
        scratch.append(path)
        return write(table, path, plan)

    monkeypatch.setattr(bucket, "_write_features", recording)
    data = dirty["str"]
    cfg = RunConfig(cluster=ClusterConfig(k=4, seed=3), buckets=1, sampling=SamplingConfig(
                        profile_customers=profile_customers),
                    customers=CustomerSource(paths=(str(data / "customers.parquet"),), attributes=("region",)))
    for name, c in (("kept", cfg), ("written", dataclasses.replace(cfg, resume=True))):
        scratch.clear()
        run([data / "tx"], tmp_path / name / "run", c)
        compute_feature_table([data / "tx"], tmp_path / name / "features", c)
        compute_clv([data / "tx"], tmp_path / name / "clv", c)
        assign_customers(tmp_path / "kept" / "run", [data / "tx"], tmp_path / name / "assign", c)
        features = [p for p in scratch if "/features/bucket-" in p]
        assert len(features) == (0 if name == "kept" else 4), scratch
        assert all(p.endswith(".arrow") for p in features), features   # a local disk: Arrow IPC
    files = {rel: (tmp_path / "kept" / rel).read_bytes() for rel in
             (str(p.relative_to(tmp_path / "kept")) for p in (tmp_path / "kept").rglob("*.parquet"))}
    assert any(rel.startswith("run/assignments/segment=") for rel in files)
    for rel in ("features/features", "clv/clv", "assign/assignments"):
        assert any(f.startswith(rel) for f in files), rel
    for rel, content in files.items():
        assert (tmp_path / "written" / rel).read_bytes() == content, rel


def test_a_kept_feature_table_is_dropped_after_the_score(dirty, tmp_path, monkeypatch):
    """Its last use is the score: the profile stage, the model and the commit run without it."""
    import gc
    import weakref

    from segmint.engine.pipeline import bucket, commands

    kept, alive = [], []
    map_bucket, build_profiles = bucket.map_bucket, commands.build_profiles

    def mapping(job):
        result = map_bucket(job)
        kept.append(weakref.ref(result.table))
        return result

    def profiling(*args):
        gc.collect()
        alive.append(kept[0]() is not None)
        return build_profiles(*args)

    monkeypatch.setattr(commands, "map_bucket", mapping)
    monkeypatch.setattr(commands, "build_profiles", profiling)
    for profile_customers in (1_000_000, 1000):
        run([dirty["int"] / "tx"], tmp_path / str(profile_customers), RunConfig(
            cluster=ClusterConfig(k=3), buckets=1, sampling=SamplingConfig(profile_customers=profile_customers)))
    assert len(kept) == 2 and alive == [False, False]


def test_stage_names_are_the_same_with_one_bucket_or_many(dirty, tmp_path):
    names, manifests = [], []
    for buckets in (1, 4):
        result = run([dirty["int"] / "tx"], tmp_path / f"r{buckets}", RunConfig(cluster=ClusterConfig(k=3),
                                                                                buckets=buckets))
        names.append(list(result.manifest["stages"]))
        manifests.append(result.manifest)
    assert names[0] == names[1] == ["plan", "partition", "map", "fit", "cluster", "score", "profile"]
    # Bytes per line are per line held at once: one bucket's lines (no partition ran before the map),
    # or a partition job's; the map is not measured after a partition, whose freed memory it reuses.
    one, many = manifests
    st = one["stages"]["map"]
    assert st["largest_bucket_rows"] == one["rows"]["in"]
    assert one["memory"]["measured_bytes_per_line"] == {
        "map": round(st["added_mb"] * 2**20 / one["rows"]["in"], 1)}
    st = many["stages"]["partition"]
    assert 0 < st["largest_job_rows"] <= many["rows"]["in"]
    assert many["stages"]["map"]["largest_bucket_rows"] < many["rows"]["in"]
    assert many["memory"]["measured_bytes_per_line"] == {
        "partition": round(st["added_mb"] * 2**20 / st["largest_job_rows"], 1)}


def test_memory_limit_decides_the_bucket_count(tmp_path):
    """A limit that leaves room for 1/2.5 of the mapped data forces 3 buckets.

    The limit is derived from the plan's own inputs, not from constant values: the rows, the
    per-row costs (BYTES_PER_ROW, read here so the test holds when they are re-measured) and the
    process's memory when planning (memory_limit - data_budget of a plan with a large limit)."""
    import datetime as dt

    import numpy as np

    from segmint.engine.pipeline.plan import BYTES_PER_ROW, code_to_come, make_plan

    # Enough rows that 1/2.5 of their cost is well above the least budget a plan accepts (32 MiB).
    rows = -(-int(2.5 * 64 * 2**20) // BYTES_PER_ROW["tx"])
    pl.DataFrame({"customer_id": np.arange(rows) % 50_000,
                  "ts": pl.datetime_range(dt.datetime(2024, 1, 1), dt.datetime(2024, 12, 31), interval="1h",
                                          eager=True).sample(rows, with_replacement=True, seed=0),
                  "amount": np.ones(rows)}).write_parquet(tmp_path / "t.parquet")
    tx = [tmp_path / "t.parquet"]
    started = dt.datetime.now(dt.timezone.utc)

    def plan(cfg):
        return make_plan("validate", tx, cfg, work=tmp_path / "work", run_id="t", started=started)

    plan(RunConfig(memory_limit=parse_size("64GB")))  # the first plan loads libraries (pyarrow: ~36 MB)
    roomy = plan(RunConfig(memory_limit=parse_size("64GB")))
    assert roomy.buckets == 1 and roomy.tx.rows == rows
    in_use = roomy.memory_limit - roomy.data_budget  # this process's memory when planning, and code to come
    vm_rss = next(int(line.split()[1]) * 1024 for line in Path("/proc/self/status").read_text().splitlines()
                  if line.startswith("VmRSS:"))
    # The budget is what the limit leaves beside this process and the code its stages will load.
    assert abs(in_use - vm_rss - code_to_come()) < 16 * 2**20
    need = rows * BYTES_PER_ROW["tx"]
    tight = plan(RunConfig(memory_limit=in_use + int(need / 2.5)))
    # The process's memory moves a little between the two plans; the budget stays within (need/3, need/2].
    assert need / 3 < tight.data_budget <= need / 2
    assert tight.buckets == 3
    # --buckets wins over the memory limit, either way.
    assert plan(RunConfig(memory_limit=parse_size("64GB"), buckets=3)).buckets == 3
    assert plan(RunConfig(memory_limit=in_use + int(need / 2.5), buckets=1)).buckets == 1


def test_files_of_their_own_customers_are_the_buckets_without_a_partition(small_data, tmp_path, monkeypatch):
    # Files whose customer ids are apart (their footers' statistics) are mapped as buckets of whole files: nothing
    # is written to scratch, the partition pass only gathers the as-of and the channel counts, and the outputs are
    # the one bucket's (rejected rows read back from the input's own files). Files whose ranges meet, a null id, or
    # --buckets: partitioned by hash.
    from segmint.engine.pipeline import partition
    from segmint.engine.pipeline import plan as plans

    tx = pl.read_parquet(small_data / "transactions")
    tx = tx.with_columns(amount=pl.when(pl.int_range(pl.len()) % 997 == 0).then(float("nan"))
                         .when(pl.col("customer_id") % 97 == 0).then(-pl.col("amount").abs()).otherwise("amount"))
    layouts = {"apart": customer_blocks(tx, 6), "meet": tx.with_columns((pl.int_range(pl.len()) % 6).alias("block")),
               "null": customer_blocks(tx, 6).with_columns(
                   customer_id=pl.when(pl.int_range(pl.len()) == 5).then(None).otherwise("customer_id"))}
    for name, frame in layouts.items():
        (tmp_path / name).mkdir()
        for (b,), part in frame.partition_by("block", as_dict=True, maintain_order=True).items():
            part.drop("block").write_parquet(tmp_path / name / f"part-{b}.parquet")
    written: list[str] = []
    write = partition._write_ipc

    def recording(table, path, plan):
        written.append(path)
        write(table, path, plan)

    monkeypatch.setattr(partition, "_write_ipc", recording)
    monkeypatch.setattr(plans, "_buckets", lambda rows, budget, per_row: 3)   # three buckets of this small input
    cfg = RunConfig(cluster=ClusterConfig(k=4, seed=3), max_reject_share=0.9)
    scratch, clustered, rows = {}, {}, {}
    for name, layout, buckets in (("apart", "apart", None), ("hashed", "apart", 3), ("meet", "meet", None),
                                  ("null", "null", None), ("one", "apart", 1)):
        written.clear()
        result = run([tmp_path / layout], tmp_path / f"out-{name}", dataclasses.replace(cfg, buckets=buckets))
        scratch[name] = len(written)
        assert result.manifest["buckets"] == (1 if name == "one" else 3)
        clustered[name] = result.manifest["stages"]["partition"].get("clustered")
        rows[name] = (result.manifest["rows"], result.manifest["customers"], result.manifest["as_of"])
    assert scratch["apart"] == 0 == scratch["one"] and min(scratch["hashed"], scratch["meet"], scratch["null"]) > 0
    assert clustered == {"apart": True, "hashed": False, "meet": False, "null": False, "one": None}
    assert rows["apart"] == rows["one"] == rows["hashed"]   # rows in, used, rejected by reason; customers; as-of
    for name in ("assignments", "rejects", "profiles.parquet"):
        one = _sorted(tmp_path / "out-one" / name)
        for other in ("apart", "hashed"):
            _same(one, _sorted(tmp_path / f"out-{other}" / name), f"{other}: {name}")
    assert {"non_finite_amount", "returns_only"} <= set(pl.read_parquet(tmp_path / "out-apart" / "rejects")["reason"])


@pytest.mark.parametrize("case", ["latest_rejected", "rare_channel", "own_top_channel", "future_row", "given_as_of",
                                  "footers_say_less"])
def test_files_that_are_the_buckets_settle_the_as_of_and_channels_from_their_buckets(small_data, tmp_path,
                                                                                      monkeypatch, case):
    # Where the files are the buckets no pass reads every row first: the as-of is the footers' latest time, checked
    # against what the buckets' rows held, and the channels are settled from the buckets' counts. Each way that can
    # go otherwise gives the one bucket's outputs: the latest row rejected (every bucket mapped again with the
    # as-of its rows give), a channel some buckets lack (their shares 0.0 as they are read), a bucket whose own most
    # common channel is not the run's (that bucket mapped again), a row after the run's start (the rows' pass),
    # footers whose latest time is before the rows' (the rows' pass, then every bucket mapped again).
    from segmint.engine.config import FeatureConfig
    from segmint.engine.pipeline import plan as plans

    tx = customer_blocks(pl.read_parquet(small_data / "transactions"), 3)
    cfg = RunConfig(cluster=ClusterConfig(k=4, seed=3), max_reject_share=0.9)
    first = tx.filter(pl.col("block") == 0).head(1)
    if case == "latest_rejected":   # the footers' latest time is a row with no amount
        tx = pl.concat([tx, first.with_columns(ts=pl.lit(tx["ts"].max() + dt.timedelta(hours=1)), amount=float("nan"))])
    elif case == "future_row":
        tx = pl.concat([tx, first.with_columns(ts=pl.lit(dt.datetime(2999, 1, 1)))])
    elif case == "rare_channel":   # bucket 2 alone has a kiosk line
        tx = tx.with_columns(channel=pl.when((pl.col("block") == 2) & (pl.int_range(pl.len()) % 50 == 0))
                             .then(pl.lit("kiosk")).otherwise("channel"))
    elif case == "own_top_channel":   # web is the run's one channel, store is bucket 1's most common
        tx = tx.with_columns(channel=pl.when((pl.col("block") == 1) & (pl.int_range(pl.len()) % 10 < 6))
                             .then(pl.lit("store")).otherwise("channel"))
        cfg = dataclasses.replace(cfg, features=FeatureConfig(max_channels=1))
    elif case == "given_as_of":
        cfg = dataclasses.replace(cfg, as_of="2026-03-01")
    else:
        real = plans.footer_latest
        monkeypatch.setattr(plans, "footer_latest",
                            lambda source, column, footers: real(source, column, footers) - 86_400_000_000)
    write_blocks(tx, tmp_path / "tx")
    monkeypatch.setattr(plans, "_buckets", lambda rows, budget, per_row: 3)
    apart = run([tmp_path / "tx"], tmp_path / "apart", cfg)
    one = run([tmp_path / "tx"], tmp_path / "one", dataclasses.replace(cfg, buckets=1))
    partition, mapped = apart.manifest["stages"]["partition"], apart.manifest["stages"]["map"]
    assert partition["clustered"] and partition["statistics"] == ("rows" if case == "future_row" else "buckets")
    assert mapped.get("statistics") == ("rows" if case == "footers_say_less" else None)
    again = {"latest_rejected": 3, "own_top_channel": 1, "footers_say_less": 3}
    assert mapped.get("mapped_again", 0) == again.get(case, 0)
    # The map's bytes a line are measured where no partition job ran before it.
    assert set(apart.manifest["memory"]["measured_bytes_per_line"]) == {"partition" if case == "future_row" else "map"}
    for key in ("rows", "customers", "as_of", "channels"):
        assert apart.manifest[key] == one.manifest[key], key
    for name in ("assignments", "rejects", "profiles.parquet"):
        _same(_sorted(tmp_path / "one" / name), _sorted(tmp_path / "apart" / name), name)


@pytest.mark.parametrize("case", ["rare_channel", "latest_rejected"])
def test_every_command_on_files_that_are_the_buckets_gives_the_one_buckets_outputs(small_data, tmp_path, monkeypatch,
                                                                                   case):
    # The settle after the map (engine.pipeline.commands._settled), through every command that maps: a channel one
    # bucket alone has (the others' shares added as they are read), the latest row rejected (every bucket mapped
    # again).
    from segmint.engine.pipeline import plan as plans

    tx = customer_blocks(pl.read_parquet(small_data / "transactions"), 3)
    if case == "rare_channel":
        tx = tx.with_columns(channel=pl.when((pl.col("block") == 2) & (pl.int_range(pl.len()) % 40 == 0))
                             .then(pl.lit("kiosk")).otherwise("channel"))
    else:
        tx = pl.concat([tx, tx.head(1).with_columns(ts=pl.lit(tx["ts"].max() + dt.timedelta(hours=1)),
                                                    amount=float("nan"))])
    write_blocks(tx, tmp_path / "tx")
    monkeypatch.setattr(plans, "_buckets", lambda rows, budget, per_row: 3)
    cfg = RunConfig(cluster=ClusterConfig(k=4, seed=3), max_reject_share=0.9)
    inputs = [tmp_path / "tx"]
    outs, checks = {}, {}
    for name, buckets in (("one", 1), ("apart", None)):
        c = dataclasses.replace(cfg, buckets=buckets)
        o = tmp_path / name
        result = run(inputs, o / "run", c)
        compute_feature_table(inputs, o / "features", c)
        compute_clv(inputs, o / "clv", c)
        compute_cohorts(inputs, o / "cohorts", c)
        assign_customers(tmp_path / "one" / "run", inputs, o / "assign", c)
        checks[name] = validate(inputs, c)
        outs[name] = o
        assert result.manifest["stages"]["partition"].get("statistics") == (None if buckets else "buckets")
    assert checks["one"] == checks["apart"]
    for rel, keys in (("run/assignments", ("customer_id",)), ("assign/assignments", ("customer_id",)),
                      ("features/features", ("customer_id",)), ("clv/clv", ("customer_id",)), ("run/rejects", ()),
                      ("run/profiles.parquet", ()), ("assign/profiles.parquet", ()),
                      ("cohorts/cohorts.parquet", ()), ("cohorts/retention_pivot.parquet", ())):
        _same(_sorted(outs["one"] / rel, *keys), _sorted(outs["apart"] / rel, *keys), rel)
    if case == "rare_channel":
        assert "channel_share_kiosk" in pl.read_parquet(outs["apart"] / "features" / "features").columns


def test_the_plan_reads_each_files_footer_once(small_data, tmp_path, monkeypatch):
    # The listing reads every local Parquet file's footer; the chunks' row groups, the files' id ranges and their
    # latest time are read from what it read, where each read the file again (scenario L's 1,000 files: three
    # reads each, its plan 0.48-0.51 -> 0.31-0.37 s).
    import collections
    import os

    import pyarrow.parquet as pq

    from segmint.engine.pipeline import plan as plans

    write_blocks(customer_blocks(pl.read_parquet(small_data / "transactions"), 6), tmp_path / "tx")
    monkeypatch.setattr(plans, "_buckets", lambda rows, budget, per_row: 3)
    started = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)

    def plan():
        return plans.make_plan("run", [tmp_path / "tx"], RunConfig(memory_limit=parse_size("4GB")),
                               work=tmp_path / "w", run_id="t", started=started)

    reads: collections.Counter[str] = collections.Counter()
    opened, read_metadata = pq.ParquetFile.__init__, pq.read_metadata

    def counted(self, source, *args, **kwargs):
        if isinstance(source, (str, os.PathLike)):   # else read_metadata's own file, counted there
            reads[Path(source).name] += 1
        opened(self, source, *args, **kwargs)

    def counted_metadata(where, *args, **kwargs):
        reads[Path(where).name] += 1
        return read_metadata(where, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "__init__", counted)
    monkeypatch.setattr(pq, "read_metadata", counted_metadata)
    planned = plan()
    assert planned.clusters and planned.footer_latest_us is not None   # the id ranges and the latest time were read
    assert reads == {f"part-{i}.parquet": 1 for i in range(6)}


def test_the_footers_latest_time_is_read_as_the_map_reads_times(tmp_path):
    from segmint.engine.io.sources import Chunk, Source
    from segmint.engine.pipeline.clusters import footer_latest

    def latest(*columns, **write):
        paths = []
        for i, values in enumerate(columns):
            pl.DataFrame({"ts": values}).write_parquet(tmp_path / f"{i}.parquet", **write)
            paths.append(str(tmp_path / f"{i}.parquet"))
        return footer_latest(Source("tx", tuple(paths), False, ("ts",), {}, tuple(Chunk(p, 0, 1) for p in paths)),
                             "ts")

    day = dt.datetime(2024, 5, 6, 7, 8, 9, 123456)
    us = (day - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1)
    assert latest(pl.Series([day, None]), pl.Series([day - dt.timedelta(days=1)])) == us
    assert latest(pl.Series([day]).cast(pl.Datetime("ms"))) == us - 456
    assert latest(pl.Series([day]).dt.replace_time_zone("UTC").dt.convert_time_zone("Asia/Tokyo")) == us
    assert latest(pl.Series([day.date()])) == us - (us % 86_400_000_000)
    assert latest(pl.Series([None, None], dtype=pl.Datetime("us")), pl.Series([day])) == us   # a file of no time
    assert latest(pl.Series([day]), statistics=False) is None
    assert latest(pl.Series([day]).cast(pl.Datetime("ns"))) is None   # parsed by the map, not read as typed
    assert latest(pl.Series(["2024-05-06"])) is None
    assert latest(pl.Series([253_402_300_800_000]).cast(pl.Datetime("ms"))) is None   # year 10000: a rejected row's


def test_a_file_rewritten_between_the_statistics_and_its_bucket_stops_the_run(small_data, tmp_path, monkeypatch):
    # Where the files are the buckets their rows are read twice (the run's statistics, then their bucket's map),
    # and their ranges were taken from their footers when planning: a file rewritten meanwhile, as many rows with
    # another file's customers, would have split those customers across buckets with exit 0.
    import time

    from segmint.engine.errors import InputContractError
    from segmint.engine.pipeline import commands
    from segmint.engine.pipeline import plan as plans

    parts = write_blocks(customer_blocks(pl.read_parquet(small_data / "transactions"), 3), tmp_path / "tx")
    monkeypatch.setattr(plans, "_buckets", lambda rows, budget, per_row: 3)
    real = commands.map_bucket

    def rewriting(job):
        if job.bucket == 0:
            time.sleep(0.01)   # a new modification time on any file system's clock
            moved = parts[(0,)].with_columns(customer_id=pl.col("customer_id").max() + 1)
            moved.write_parquet(tmp_path / "tx" / "part-0.parquet")
        return real(job)

    monkeypatch.setattr(commands, "map_bucket", rewriting)
    with pytest.raises(InputContractError, match="part-0.parquet changed while the run read it"):
        run([tmp_path / "tx"], tmp_path / "out", RunConfig(cluster=ClusterConfig(k=3, seed=1)))
    assert not (tmp_path / "out").exists()


def test_a_partition_job_reads_at_most_max_job_rows_whatever_the_memory(small_data, tmp_path, monkeypatch):
    # Partition jobs are sized by the memory budget up to MAX_JOB_ROWS, never past it (scenario L at the default
    # limit: 11 jobs of 21.7 M rows took 31-39 s, 29 of at most 8 M 20-26 s).
    import datetime as dt

    from segmint.engine.pipeline import plan as plans
    from segmint.engine.pipeline.partition import job_rows, partition_jobs

    lines = pl.scan_parquet(small_data / "transactions").select(pl.len()).collect().item()
    monkeypatch.setattr(plans, "MAX_JOB_ROWS", lines // 5)
    started = dt.datetime.now(dt.timezone.utc)

    def plan(limit, buckets=2):
        return plans.make_plan("run", [small_data / "transactions"], RunConfig(memory_limit=parse_size(limit),
                               buckets=buckets), work=tmp_path / "work", run_id="t", started=started)

    one = plan("64GB", buckets=1)   # no jobs: its chunks are what the map reads (a CSV's each a scan from its start)
    assert one.chunk_rows == one.data_budget // one.bytes_per_row["partition"] > lines
    roomy = plan("64GB")
    assert roomy.chunk_rows == lines // 5
    jobs = partition_jobs(roomy, "tx")
    assert len(jobs) >= 5 and all(job_rows(job) <= lines // 5 for job in jobs)
    assert sum(job_rows(job) for job in jobs) == lines
    monkeypatch.setattr(plans, "MAX_JOB_ROWS", 10**12)   # the budget's own size, where it is the smaller
    budget = plan("64GB")
    assert budget.chunk_rows == budget.data_budget // budget.bytes_per_row["partition"] > lines


def test_no_bucket_holds_more_rows_than_its_int32_codes_can_number(small_data, tmp_path, monkeypatch):
    # A line's customer code, order code and order id are int32: past MOST_BUCKET_ROWS rows in one bucket they
    # would wrap around and give lines to other orders, exit 0. The limits are set below this input's rows.
    import datetime as dt

    from segmint.engine.errors import ConfigError
    from segmint.engine.features import build
    from segmint.engine.pipeline import plan as plans

    lines = pl.scan_parquet(small_data / "transactions").select(pl.len()).collect().item()
    started = dt.datetime.now(dt.timezone.utc)

    def plan(sizes=None, **given):
        return plans.make_plan("run", [small_data / "transactions"], RunConfig(memory_limit=parse_size("64GB"),
                               **given), work=tmp_path / "work", run_id="t", started=started, sizes=sizes)

    assert plan().buckets == 1
    most = lines // 3
    monkeypatch.setattr(plans, "MOST_BUCKET_ROWS", most)
    monkeypatch.setattr(plans, "MAX_BUCKET_ROWS", lines // 4)
    # Memory would allow one bucket: the plan cuts the input as any bucketed run, MAX_BUCKET_ROWS a bucket.
    assert plan().buckets == -(-lines // (lines // 4)) >= 4
    # A given --buckets shares the rows by hash, unevenly: each bucket is given half of what it can hold.
    least = -(-lines // (most // 2))
    assert plan(buckets=least).buckets == least
    with pytest.raises(ConfigError, match=rf"give at least --buckets {least}\b"):
        plan(buckets=least - 1)
    # A resumed attempt's sizes were checked when first planned; its input changed since, it starts afresh
    # (commands._recorded_run compares them after planning with them): no refusal of a --buckets never given.
    assert plan(sizes=(1, lines), buckets=least - 1).buckets == 1
    # The least --buckets named leaves room for the hash's uneven shares: the map takes every bucket.
    monkeypatch.setattr(build, "MOST_BUCKET_ROWS", most)
    done = run([small_data / "transactions"], tmp_path / "least", RunConfig(buckets=least))
    assert done.manifest["rows"]["in"] == lines and done.manifest["stages"]["map"]["largest_bucket_rows"] <= most
    # A bucket past the limit however it came (one customer's rows, a plan of another release) is refused by
    # the map itself, before any output.
    monkeypatch.undo()
    monkeypatch.setattr(build, "MOST_BUCKET_ROWS", lines - 1)
    with pytest.raises(ConfigError, match=f"one bucket holds {lines:,} rows"):
        run([small_data / "transactions"], tmp_path / "out", RunConfig())
    assert not (tmp_path / "out").exists()


def test_a_bucket_of_rejects_only_keeps_its_rejects(tmp_path):
    # Many buckets for few customers: some buckets hold only null-id rows.
    n = 200
    df = pl.DataFrame({"customer_id": [i % 20 if i % 4 else None for i in range(n)],
                       "ts": [f"2024-01-{1 + i % 28:02d}" for i in range(n)], "amount": [1.0 + i for i in range(n)]})
    df.write_parquet(tmp_path / "t.parquet")
    cfg = RunConfig(cluster=ClusterConfig(k=2), buckets=40, max_reject_share=0.3)
    run([tmp_path / "t.parquet"], tmp_path / "o", cfg)
    run([tmp_path / "t.parquet"], tmp_path / "mem", dataclasses.replace(cfg, buckets=1))
    rejects = pl.read_parquet(tmp_path / "o" / "rejects")
    assert rejects.height == 50 and set(rejects["reason"]) == {"null_customer_id"}
    a, b = (_sorted(tmp_path / d / "assignments", "customer_id") for d in ("o", "mem"))
    assert a.equals(b) and a.height == 15  # ids i % 20 with i % 4 != 0


@pytest.mark.slow
def test_buckets_equal_one_bucket_on_scenario_s(tmp_path):
    """Scale check, run by hand (pytest -m slow): 45 k customers, 1 M lines, 16 buckets."""
    from segmint.bench.scenarios import SCENARIOS, ensure_data

    data = ensure_data(SCENARIOS["S"], 0, tmp_path / "cache") / "transactions"
    cfg = RunConfig(cluster=ClusterConfig(k=8, seed=1))
    run([data], tmp_path / "one", dataclasses.replace(cfg, buckets=1))
    run([data], tmp_path / "many", dataclasses.replace(cfg, buckets=16))
    assert _sorted(tmp_path / "one" / "assignments", "customer_id").equals(
        _sorted(tmp_path / "many" / "assignments", "customer_id"))


def test_fit_memory_check_refuses_only_a_sample_that_cannot_fit():
    import types

    from segmint.engine.config import SamplingConfig
    from segmint.engine.errors import ConfigError
    from segmint.engine.pipeline.fit import FIT_BYTES_PER_CUSTOMER, check_fit_memory

    cfg = RunConfig(sampling=SamplingConfig(fit_customers=10_000, profile_customers=5_000))
    fit_bytes = 10_000 * FIT_BYTES_PER_CUSTOMER
    profile_bytes = 5_000 * 8 * (12 + 8)
    # The two samples are held one after the other: the larger must fit, not their sum.
    check_fit_memory(types.SimpleNamespace(cfg=cfg, data_budget=max(fit_bytes, profile_bytes)), 50_000, 12)
    need = rf"^the global fits need about {fit_bytes / 1e6:,.0f} MB for 50,000 customers .*fit_customers"
    with pytest.raises(ConfigError, match=need):
        check_fit_memory(types.SimpleNamespace(cfg=cfg, data_budget=fit_bytes - 1), 50_000, 12)
    # Fewer customers than the sample sizes: only they are held.
    few = max(2_000 * FIT_BYTES_PER_CUSTOMER, 2_000 * 8 * (12 + 8))
    check_fit_memory(types.SimpleNamespace(cfg=cfg, data_budget=few), 2_000, 12)


def test_the_default_fit_sample_fits_the_documented_scale_run():
    # README and bench/README run 10 M customers with --memory-limit 2GB. With 160 bytes a customer budgeted
    # (the CLV fit beside every gathered column and the hash) that run was refused after its partition and
    # map ("need about 1,600 MB ... leaves 1,596 MB"); its fit sample peaks at about 99 bytes a customer.
    from segmint.engine.config import SamplingConfig
    from segmint.engine.pipeline.fit import FIT_BYTES_PER_CUSTOMER
    from segmint.engine.pipeline.plan import CODE_AFTER_PLAN

    process_at_plan = 250e6   # measured 206-210 MB on scenario L
    budget = 2e9 - process_at_plan - CODE_AFTER_PLAN
    assert SamplingConfig().fit_customers * FIT_BYTES_PER_CUSTOMER < budget


def test_text_ids_are_budgeted_by_their_length():
    # FIT_BYTES_PER_CUSTOMER is measured with integer ids; 36-character ids took the fit 186 bytes a customer
    # where 110 were budgeted.
    import types

    from segmint.engine.errors import ConfigError
    from segmint.engine.pipeline.fit import FIT_BYTES_PER_CUSTOMER, check_fit_memory, text_id_bytes

    def bucket(ids):
        return types.SimpleNamespace(table=pl.DataFrame({"customer_id": ids}), bucket=0, shares=None)

    assert text_id_bytes(None, [bucket([1, 2, 3])]) == 0.0 and text_id_bytes(None, []) == 0.0
    uuid = text_id_bytes(None, [bucket(["0" * 36, "1" * 36])])
    assert uuid == 2 * (16 + 36 - 8)
    assert text_id_bytes(None, [bucket(["c-1", "c-22"])]) == 2 * (16 - 8)   # held inside Polars' 16-byte view
    cfg = RunConfig(sampling=SamplingConfig(fit_customers=10_000, profile_customers=1_000))
    enough_for_ints = types.SimpleNamespace(cfg=cfg, data_budget=10_000 * FIT_BYTES_PER_CUSTOMER)
    check_fit_memory(enough_for_ints, 10_000, 12)
    with pytest.raises(ConfigError, match="the global fits need about"):
        check_fit_memory(enough_for_ints, 10_000, 12, uuid)


def test_the_fit_sample_holds_only_the_columns_asked_for(dirty, tmp_path):
    # The hash, only a filter, was gathered too: 8 of L's 99 bytes a customer.
    from segmint.engine.pipeline import fit

    cfg = RunConfig(buckets=3, sampling=SamplingConfig(fit_customers=1000))   # of 1,500: the hash filters
    seen = []
    real = fit.gather

    def spy(*args, **kwargs):
        frame = real(*args, **kwargs)
        seen.append((args[4] if len(args) > 4 else kwargs.get("columns"), frame.columns))
        return frame

    with pytest.MonkeyPatch.context() as m:
        m.setattr(fit, "gather", spy)
        result = run([dirty["int"] / "tx"], tmp_path / "out", cfg)
    asked = [(tuple(columns), tuple(got)) for columns, got in seen if columns is not None]
    assert asked and all(got == columns for columns, got in asked)
    assert 900 < result.manifest["stages"]["fit"]["fitted_on"] < 1100


def test_a_given_as_of_counts_channels_alike_in_one_bucket_or_many(tmp_path):
    # Channel B is the commonest only with its rows after the as-of: those do not choose the columns.
    import datetime as dt

    from segmint.engine.config import FeatureConfig

    t = dt.datetime(2024, 1, 1)
    rows = ([(i, t + dt.timedelta(days=i), 10.0, "A") for i in range(3)]
            + [(10 + i, t + dt.timedelta(days=i), 10.0, "B") for i in range(2)]
            + [(20 + i, t + dt.timedelta(days=100), 10.0, "B") for i in range(5)])
    pl.DataFrame(rows, schema=["customer_id", "ts", "amount", "channel"], orient="row").write_parquet(
        tmp_path / "t.parquet")
    cfg = RunConfig(as_of="2024-02-01", max_reject_share=0.9, features=FeatureConfig(max_channels=1),
                    columns=dataclasses.replace(RunConfig().columns, order=None, category=None))
    for buckets in (1, 3):
        result = compute_feature_table([tmp_path / "t.parquet"], tmp_path / f"b{buckets}",
                                       dataclasses.replace(cfg, buckets=buckets))
        assert result.manifest["channels"] == ["A"], buckets
        # B's usable lines hold no share column: counted, in every bucket alike (its later rows were rejected).
        assert result.manifest["rows"]["channels_without_a_share"] == {"B": 2}, buckets


def test_channels_without_a_share_are_listed_up_to_twenty_then_counted(tmp_path):
    # A channel column of store ids put every one of thousands in run.json.
    import datetime as dt

    from segmint.engine.config import FeatureConfig

    t = dt.datetime(2024, 1, 1)
    rows = [(i, t + dt.timedelta(hours=i), 10.0, f"s{i % 30:02d}") for i in range(30 * 31)]
    pl.DataFrame(rows, schema=["customer_id", "ts", "amount", "channel"], orient="row").write_parquet(
        tmp_path / "t.parquet")
    cfg = RunConfig(features=FeatureConfig(max_channels=2),
                    columns=dataclasses.replace(RunConfig().columns, order=None, category=None))
    rows_doc = compute_feature_table([tmp_path / "t.parquet"], tmp_path / "o", cfg).manifest["rows"]
    listed = rows_doc["channels_without_a_share"]
    assert len(listed) == 20 and set(listed.values()) == {31}
    assert rows_doc["channels_without_a_share_others"] == {"channels": 8, "lines": 8 * 31}
    assert sorted(listed) == [f"s{i:02d}" for i in range(2, 22)]   # ties by name, after the two with shares


def test_text_written_as_32_bit_string_maps_alike_in_one_bucket_or_many(tmp_path):
    """pyarrow writes Parquet text as ``string`` (32-bit offsets), which cannot hold more than 2 GiB in one
    array: a column read in several chunks is combined with 64-bit offsets (reproduced by hand: 2.2 GB of
    text in two chunks stopped the map with "offset overflow while concatenating arrays"), and such input
    gives the outputs of Polars-written text, in one bucket or many."""
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    from segmint.engine.io.canonical import _one_chunk

    two = pa.chunked_array([pa.array(["a", None], pa.string()), pa.array(["bc"], pa.string())])
    assert _one_chunk(two).type == pa.large_string() and _one_chunk(two).to_pylist() == ["a", None, "bc"]
    assert _one_chunk(pa.chunked_array([pa.array([b"x"]), pa.array([b"y"])])).type == pa.large_binary()

    rows = 600
    table = pa.table({"customer_id": pa.array([f"c{i % 150}" if i % 97 else None for i in range(rows)], pa.string()),
                      "ts": pa.array([dt.datetime(2024, 1, 1) + dt.timedelta(hours=7 * i) for i in range(rows)],
                                     pa.timestamp("us")),
                      "amount": [float(i % 13) + 1.0 for i in range(rows)],
                      "order_id": pa.array([f"o{i // 2}" for i in range(rows)], pa.string()),
                      "channel": pa.array(["web", "app", "store"] * (rows // 3), pa.string())})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=100)
    pl.from_arrow(table).write_parquet(tmp_path / "polars.parquet")
    cfg = RunConfig(columns=dataclasses.replace(RunConfig().columns, order="order_id", channel="channel"),
                    cluster=ClusterConfig(k=3), max_reject_share=0.5)
    for name, source, buckets in (("one", "t", 1), ("three", "t", 3), ("polars", "polars", 1)):
        run(tmp_path / f"{source}.parquet", tmp_path / name, dataclasses.replace(cfg, buckets=buckets))
    for out in ("three", "polars"):
        for name in ("assignments", "rejects"):
            _same(_sorted(tmp_path / "one" / name), _sorted(tmp_path / out / name), f"{out} {name}")


def test_int64_ids_read_from_arrow_go_to_the_buckets_their_canonical_ids_do():
    # The partition hashes Int64 ids without nulls from Arrow's buffer, anything else through Polars'
    # canonical ids: a row's bucket must be the same either way, or a customer's rows would split.
    import numpy as np
    import pyarrow as pa

    from segmint.engine.pipeline.partition import _buckets_of, bucket_of

    rng = np.random.default_rng(7)
    ids = np.concatenate([rng.integers(-2**63, 2**63 - 1, 5000, dtype=np.int64, endpoint=True),
                          np.array([0, 1, -1, 2**63 - 1, -2**63], np.int64)])
    for buckets in (1, 3, 29):
        want = bucket_of(pl.Series(ids), buckets)
        chunked = pa.table({"c": pa.chunked_array([ids[:1234], ids[1234:]])})
        for table in (pa.table({"c": ids}), chunked):
            assert (_buckets_of(table, "c", buckets) == want).all()
        assert (_buckets_of(pa.table({"c": ids}).slice(3), "c", buckets) == want[3:]).all()
        # Through Polars (a null among the ids, narrower integers): the buckets the buffer's path gives.
        nulls = pa.table({"c": pa.array(list(ids[:100]) + [None], pa.int64())})
        assert (_buckets_of(nulls, "c", buckets)[:100] == want[:100]).all()
        small = rng.integers(-2**31, 2**31, 1000)
        assert (_buckets_of(pa.table({"c": small.astype(np.int32)}), "c", buckets)
                == _buckets_of(pa.table({"c": small.astype(np.int64)}), "c", buckets)).all()


def test_scratch_compression_changes_the_scratch_bytes_and_no_output(dirty, tmp_path, monkeypatch):
    # Local scratch is uncompressed unless compress_scratch asks for LZ4; the outputs are the same bytes.
    from segmint.engine.pipeline import partition

    written: dict[str, int] = {}
    write = partition._write_ipc

    def recording(table, path, plan):
        write(table, path, plan)
        written[path] = Path(path).stat().st_size

    monkeypatch.setattr(partition, "_write_ipc", recording)
    data = dirty["int"]
    sizes = {}
    for name, compress in (("plain", None), ("lz4", True), ("off", False)):
        written.clear()
        run([data / "tx"], tmp_path / name, RunConfig(cluster=ClusterConfig(k=4, seed=3), buckets=3,
                                                     compress_scratch=compress))
        sizes[name] = sum(written.values())
    assert sizes["lz4"] < sizes["plain"] == sizes["off"]
    files = sorted(str(p.relative_to(tmp_path / "plain")) for p in (tmp_path / "plain").rglob("*.parquet"))
    assert files
    for rel in files:
        assert (tmp_path / "lz4" / rel).read_bytes() == (tmp_path / "plain" / rel).read_bytes(), rel


def test_scratch_dictionaries_take_the_narrowest_index_and_map_alike(tmp_path, monkeypatch):
    # The partition writes a dictionary column's indices as int8 or int16 where its dictionary fits (a
    # channel or category index was 4 of the 40 bytes a line of scratch); the map codes every width alike.
    # Two files, one partition job each: 300 categories (int16) in one, 50 in the other (int8), so a bucket
    # holds files of both widths; channels with nulls (int8); rejected rows (null times, returns-only
    # customers) read back from the scratch for the rejects.
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    from segmint.engine.pipeline import partition

    indices: dict[str, set[pa.DataType]] = {}
    write = partition._write_ipc

    def recording(table, path, plan):
        for field in table.schema:
            if pa.types.is_dictionary(field.type):
                indices.setdefault(field.name, set()).add(field.type.index_type)
        write(table, path, plan)

    monkeypatch.setattr(partition, "_write_ipc", recording)
    monkeypatch.setattr(partition, "_job_chunks", lambda plan, role: [(i, i + 1) for i in
                                                                      range(len(plan.source(role).chunks))])

    def part(seed: int, categories: int, rows: int = 3000) -> pa.Table:
        customer = [(i * 7919 + seed) % 400 for i in range(rows)]
        return pa.table({
            "customer_id": pa.array(customer, pa.int64()),
            "ts": pa.array([None if i % 499 == 0 else dt.datetime(2024, 1, 1) + dt.timedelta(hours=3 * i + seed)
                            for i in range(rows)], pa.timestamp("us")),
            "amount": [-3.0 if c % 50 == 0 else float(i % 13) - 1.0 for i, c in enumerate(customer)],
            "order_id": pa.array([i // 2 + seed * 100_000 for i in range(rows)], pa.int64()),
            "channel": pa.array([None if i % 7 == 0 else ("web", "app", "store")[i % 3] for i in range(rows)]),
            "category": pa.array([f"cat-{i * 31 % categories:03d}" for i in range(rows)])})

    (tmp_path / "tx").mkdir()
    pq.write_table(part(1, 300), tmp_path / "tx" / "a.parquet")
    pq.write_table(part(2, 50), tmp_path / "tx" / "b.parquet")
    cfg = RunConfig(cluster=ClusterConfig(k=3, seed=1), max_reject_share=0.9)
    for name, buckets in (("one", 1), ("three", 3)):
        run([tmp_path / "tx"], tmp_path / name, dataclasses.replace(cfg, buckets=buckets))
    assert indices == {"channel": {pa.int8()}, "category": {pa.int8(), pa.int16()}}
    for name in ("assignments", "rejects"):
        _same(_sorted(tmp_path / "one" / name), _sorted(tmp_path / "three" / name), name)
    reasons = set(pl.read_parquet(tmp_path / "three" / "rejects")["reason"])
    assert {"null_timestamp", "returns_only"} <= reasons
    assert pl.read_parquet(tmp_path / "three" / "assignments")["category_count"].max() > 1


def test_scratch_columns_narrow_where_they_round_trip_and_map_alike(tmp_path, monkeypatch):
    # Ids, times and amounts go to 32 bits in a scratch file where every value of the file round-trips
    # (engine.io.narrowing), and stay as they are in one where one does not: file a narrows everything, file b
    # nothing (an id 2^40 away from the others, a time off whole seconds, an amount of a fraction of a cent).
    # One partition job a file, so a bucket holds both kinds. A NaN amount and null times are rejected and read
    # back from the scratch for the rejects file (a -0.0 amount is kept): its rows are the one bucket's.
    import pyarrow as pa
    import pyarrow.parquet as pq

    from segmint.engine.pipeline import partition

    kinds: dict[str, set[pa.DataType]] = {}
    write = partition._write_ipc

    def recording(table, path, plan):
        for field in table.schema:
            kinds.setdefault(field.name, set()).add(field.type)
        write(table, path, plan)

    monkeypatch.setattr(partition, "_write_ipc", recording)
    monkeypatch.setattr(partition, "_job_chunks", lambda plan, role: [(i, i + 1) for i in
                                                                      range(len(plan.source(role).chunks))])

    def part(seed: int, whole: bool, rows: int = 3000) -> pa.Table:
        customer = [(i * 7919 + seed) % 400 + 10**9 for i in range(rows)]
        amount = [(i % 1300 - 100) / 100 for i in range(rows)]
        amount[6] = -0.0
        times = [None if i % 499 == 0 else dt.datetime(2024, 1, 1) + dt.timedelta(hours=3 * i + seed)
                 for i in range(rows)]
        order = [i // 2 + seed * 10**6 for i in range(rows)]
        if not whole:
            customer[1], amount[2], amount[5], order[4] = 2**40, 0.125, float("nan"), 2**40
            times[3] += dt.timedelta(microseconds=1)
        return pa.table({"customer_id": pa.array(customer, pa.int64()), "ts": pa.array(times, pa.timestamp("us")),
                         "amount": amount, "order_id": pa.array(order, pa.int64())})

    (tmp_path / "tx").mkdir()
    pq.write_table(part(1, True), tmp_path / "tx" / "a.parquet")
    pq.write_table(part(2, False), tmp_path / "tx" / "b.parquet")
    cfg = RunConfig(cluster=ClusterConfig(k=3, seed=1), max_reject_share=0.9)
    for name, buckets in (("one", 1), ("three", 3)):
        run([tmp_path / "tx"], tmp_path / name, dataclasses.replace(cfg, buckets=buckets))
    assert kinds == {"customer_id": {pa.uint32(), pa.int64()}, "ts": {pa.uint32(), pa.timestamp("us")},
                     "amount": {pa.int32(), pa.float64()}, "order_id": {pa.uint32(), pa.int64()}}
    for name in ("assignments", "rejects"):
        _same(_sorted(tmp_path / "one" / name), _sorted(tmp_path / "three" / name), name)
    rejects = pl.read_parquet(tmp_path / "three" / "rejects")
    assert {"null_timestamp", "non_finite_amount"} <= set(rejects["reason"])


def test_a_partition_that_cannot_fit_its_disk_is_refused_before_it_starts(dirty, tmp_path, monkeypatch):
    # The check counts a floor of the scratch's bytes: a disk with as much free space as a run's scratch
    # took is never refused, one byte less than the floor is, before anything is written, with the fixes
    # named; LZ4 scratch is not checked.
    import shutil

    from segmint.engine.errors import ConfigError
    from segmint.engine.pipeline import partition

    written: list[int] = []
    write = partition._write_ipc

    def recording(table, path, plan):
        write(table, path, plan)
        written.append(Path(path).stat().st_size)

    monkeypatch.setattr(partition, "_write_ipc", recording)
    tx = [dirty["int"] / "tx"]
    cfg = RunConfig(cluster=ClusterConfig(k=4, seed=3), buckets=3)
    run(tx, tmp_path / "measured", cfg)
    scratch = sum(written)
    usage = shutil.disk_usage(tmp_path)

    def free(nbytes):
        monkeypatch.setattr(partition.shutil, "disk_usage", lambda path: usage._replace(free=nbytes))

    free(scratch)
    run(tx, tmp_path / "fits", cfg)
    free(1)
    with pytest.raises(ConfigError, match="compress_scratch = true") as refused:
        run(tx, tmp_path / "refused", cfg)
    assert "needs at least" in str(refused.value)
    assert not (tmp_path / "refused").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fits", "measured"]   # no work folder left
    run(tx, tmp_path / "lz4", dataclasses.replace(cfg, compress_scratch=True))


def test_a_feature_table_with_a_dictionary_per_chunk_is_written_as_local_scratch(tmp_path):
    # A Categorical stacked from frames holds a dictionary per chunk; an Arrow IPC file takes one per column.
    from types import SimpleNamespace

    from segmint.engine.io import store
    from segmint.engine.pipeline.bucket import _write_features

    part = [pl.DataFrame({"customer_id": [i, i + 1], "tier": pl.Series(tiers, dtype=pl.Categorical)})
            for i, tiers in ((0, ["gold", "silver"]), (2, ["bronze", "gold"]))]
    table = pl.concat(part, rechunk=False)
    assert table.to_arrow().column("tier").num_chunks == 2
    _write_features(table, str(tmp_path / "f.arrow"), SimpleNamespace(options=()))
    back = pl.from_arrow(store.read_ipc(str(tmp_path / "f.arrow")))
    assert back["customer_id"].to_list() == [0, 1, 2, 3]
    assert back["tier"].cast(pl.String).to_list() == ["gold", "silver", "bronze", "gold"]


@pytest.mark.parametrize("resume", [False, True])
def test_scratch_is_removed_as_soon_as_nothing_reads_it_unless_a_run_may_go_on(dirty, tmp_path, monkeypatch, resume):
    """Each bucket's partition scratch goes once its map job is done, its feature table once scored; a resumable
    run keeps both for its next attempt (the work dir goes at the end either way)."""
    from segmint.engine.pipeline import commands, fit

    seen: dict[str, list[str]] = {}
    work: list[Path] = []
    gather, build_profiles = fit.gather, commands.build_profiles

    def files(folder: str) -> list[str]:
        return sorted(p.name for p in (work[0] / folder).rglob("*") if p.is_file())

    def gathering(plan, *args, **kwargs):
        work.append(Path(plan.work))
        seen.setdefault("fit: tx", files("tx"))
        seen.setdefault("fit: events", files("events"))
        seen.setdefault("fit: features", files("features"))
        return gather(plan, *args, **kwargs)

    def profiling(*args):
        seen["profile: features"] = files("features")
        return build_profiles(*args)

    monkeypatch.setattr(fit, "gather", gathering)
    monkeypatch.setattr(commands, "build_profiles", profiling)
    cfg = RunConfig(cluster=ClusterConfig(k=3), buckets=3, resume=resume,
                    events=EventSource(paths=(str(dirty["int"] / "events.parquet"),)))
    run([dirty["int"] / "tx"], tmp_path / "out", cfg)
    mapped = [f"bucket-{b:05d}.arrow" for b in range(3)]
    if resume:
        assert len(seen["fit: tx"]) >= 3 and len(seen["fit: events"]) >= 3
        assert seen["fit: features"] == seen["profile: features"] == mapped
    else:
        assert seen == {"fit: tx": [], "fit: events": [], "fit: features": mapped, "profile: features": []}
    assert not work[0].exists()


def test_a_scratch_removal_that_fails_is_left_to_the_work_dirs_removal(dirty, tmp_path, monkeypatch, capfd):
    """An object store refusing a delete mid-map: no traceback from the helper thread, the run goes on, and the
    work dir's removal at the end takes what was left."""
    from segmint.engine.io import store

    remove_prefix, refused = store.remove_prefix, []

    def refusing(prefix, options=None):
        if "bucket=" in str(prefix):
            refused.append(prefix)
            raise OSError("503 Slow Down")
        return remove_prefix(prefix, options)

    monkeypatch.setattr(store, "remove_prefix", refusing)
    run([dirty["int"] / "tx"], tmp_path / "out", RunConfig(cluster=ClusterConfig(k=3), buckets=3))
    assert len(refused) == 3
    assert "Traceback" not in capfd.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_pseudonymised_side_tables_map_alike_in_one_bucket_or_many(dirty, tmp_path, monkeypatch):
    """With --pseudonymize-ids, integer ids of events and customers are read as text pseudonyms: one bucket
    (the inputs themselves) failed casting them back to the input's integer type."""
    monkeypatch.setenv("SEGMINT_ID_KEY", "k" * 32)
    data = dirty["int"]
    cfg = RunConfig(cluster=ClusterConfig(k=3), pseudonymize_ids=True,
                    events=EventSource(paths=(str(data / "events.parquet"),)),
                    customers=CustomerSource(paths=(str(data / "customers.parquet"),), attributes=("region",)))
    for buckets in (1, 3):
        run([data / "tx"], tmp_path / str(buckets), dataclasses.replace(cfg, buckets=buckets))
    for rel in ("assignments", "funnel", "segment_mix.parquet"):
        one, many = (_sorted(tmp_path / str(b) / rel) for b in (1, 3))
        assert one.height > 0
        _same(one, many, rel)
    assert pl.read_parquet(tmp_path / "1" / "assignments")["customer_id"].dtype == pl.String


@pytest.mark.parametrize(("role", "rows"), [("tx", "rows"), ("events", "event rows"),
                                           ("customers", "customers-table rows")])
def test_a_bucket_whose_scratch_went_missing_stops_the_run_instead_of_losing_its_customers(small_data, tmp_path,
                                                                                          monkeypatch, role, rows):
    """Scratch removed too early (or lost from a resumed attempt's work dir) read back as an empty bucket, and
    the run went on without its customers, exit 0; only the transactions' rows were counted back, and a bucket's
    events or customers-table rows lost left its customers' sessions, funnel stages or attributes wrong, exit 0."""
    import shutil

    from segmint.engine.config import CustomerSource, EventSource
    from segmint.engine.errors import InputContractError
    from segmint.engine.pipeline import commands

    map_bucket = commands.map_bucket

    def losing(job):
        if job.bucket == 1:
            shutil.rmtree(Path(job.plan.work) / role / "bucket=00001")
        return map_bucket(job)

    monkeypatch.setattr(commands, "map_bucket", losing)
    cfg = RunConfig(cluster=ClusterConfig(k=3), buckets=3, events=EventSource(paths=(str(small_data / "events"),)),
                    customers=CustomerSource(paths=(str(small_data / "customers.parquet"),), attributes=("region",)))
    with pytest.raises(InputContractError, match=f"the buckets hold [0-9,]+ {rows} but the input has .* went missing"):
        run([small_data / "transactions"], tmp_path / "out", cfg)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("layout", ["32_and_64_bit_ids", "ranges_that_meet_in_part", "a_bucket_without_files"])
def test_files_of_their_own_customers_are_the_buckets_in_any_id_width_and_where_some_ranges_meet(small_data, tmp_path,
                                                                                               monkeypatch, layout):
    # Files that hold their ids in INT32 and INT64 (one dataset written by two tools), and a file without rows;
    # or 24 files of which the 8th and 9th hold rows of one customer (their ranges meet: one bucket together, where
    # each file alone would be dealt to a bucket of its own; the other files apart). Still the buckets, the one
    # bucket's outputs. Or nine files in ten buckets: one bucket has no file (its shares settled as any other's).
    from segmint.engine.pipeline import plan as plans

    tx = pl.read_parquet(small_data / "transactions")
    if layout == "32_and_64_bit_ids":
        parts = write_blocks(customer_blocks(tx, 3), tmp_path / "tx")
        parts[(1,)].cast({"customer_id": pl.Int32}).write_parquet(tmp_path / "tx" / "part-1.parquet")
        tx.head(0).write_parquet(tmp_path / "tx" / "part-9.parquet")
    elif layout == "a_bucket_without_files":
        write_blocks(customer_blocks(tx, 9), tmp_path / "tx")
    else:
        parts = write_blocks(customer_blocks(tx, 24), tmp_path / "tx")
        first, second = parts[(7,)], parts[(8,)]
        split = first["customer_id"].max()   # one of this customer's rows goes to the next file
        moved = first.filter(pl.col("customer_id") == split).head(1)
        first.join(moved, on=first.columns, how="anti").write_parquet(tmp_path / "tx" / "part-7.parquet")
        pl.concat([second, moved]).write_parquet(tmp_path / "tx" / "part-8.parquet")
    buckets = 10 if layout == "a_bucket_without_files" else 3
    monkeypatch.setattr(plans, "_buckets", lambda rows, budget, per_row: buckets)
    cfg = RunConfig(cluster=ClusterConfig(k=4, seed=3))
    apart = run([tmp_path / "tx"], tmp_path / "apart", cfg)
    run([tmp_path / "tx"], tmp_path / "one", dataclasses.replace(cfg, buckets=1))
    assert apart.manifest["stages"]["partition"]["clustered"] and apart.manifest["buckets"] == buckets
    for name in ("assignments", "rejects", "profiles.parquet"):
        _same(_sorted(tmp_path / "one" / name), _sorted(tmp_path / "apart" / name), name)


def test_rows_missing_from_buckets_of_whole_files_blame_the_input_not_scratch(small_data, tmp_path, monkeypatch):
    # Where the files are the buckets no scratch is written: rows the buckets did not hold can only be the input's
    # files changed under the run (each map also checks its rows against the plan; this is the count's own check).
    from segmint.engine.errors import InputContractError
    from segmint.engine.pipeline import commands
    from segmint.engine.pipeline import plan as plans

    write_blocks(customer_blocks(pl.read_parquet(small_data / "transactions"), 3), tmp_path / "tx")
    monkeypatch.setattr(plans, "_buckets", lambda rows, budget, per_row: 3)
    map_bucket = commands.map_bucket

    def short(job):
        result = map_bucket(job)
        result.counts.rows_in -= job.bucket == 1
        return result

    monkeypatch.setattr(commands, "map_bucket", short)
    with pytest.raises(InputContractError, match="but the input has .*: the input changed while the run read it"):
        run([tmp_path / "tx"], tmp_path / "out", RunConfig(cluster=ClusterConfig(k=3)))


def test_a_partition_that_cannot_fit_the_disk_is_refused_before_a_row_is_written(small_data, tmp_path, monkeypatch):
    """The refusal names the scratch's floor and the free space in MB of 10^6 bytes, as --memory-limit reads
    them (2^20 bytes read 1,000,000 free bytes as 0 MB)."""
    import shutil

    from segmint.engine.errors import ConfigError
    from segmint.engine.pipeline import commands, partition

    def never(job):
        raise AssertionError("a partition job ran")

    lines = pl.scan_parquet(small_data / "transactions").select(pl.len()).collect().item()
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(partition.shutil, "disk_usage", lambda path: usage._replace(free=1_000_000))
    monkeypatch.setattr(commands, "partition_chunk", never)
    cfg = RunConfig(cluster=ClusterConfig(k=3), buckets=2)
    with pytest.raises(ConfigError, match=r"needs at least ([\d,]+) MB under .* and 1 MB are free") as caught:
        run([small_data / "transactions"], tmp_path / "run", cfg)
    needed = int(caught.value.args[0].split("needs at least ")[1].split(" MB")[0].replace(",", ""))
    # At least the three columns a line has (id, time, amount), each of 4 bytes where narrowed (engine.io.narrowing).
    assert needed * 10**6 >= lines * 4 * 3
    assert not (tmp_path / "run").exists()


def test_files_of_one_input_in_narrower_types_read_as_the_widest_in_one_bucket_or_many(tmp_path):
    """Files of one dataset written by different tools: int32 ids, float32 amounts and millisecond times in one
    file, int64, float64 and microseconds in the others (refused before as "give files of one schema"). Each
    file is read as the types every file converts to without loss: the outputs are those of the same values
    written in the wide types, in one bucket or three, events included."""
    generate(tmp_path / "gen", customers=300, seed=3)
    tx = pl.read_parquet(tmp_path / "gen" / "transactions")
    ev = pl.read_parquet(tmp_path / "gen" / "events")
    narrow = {"customer_id": pl.Int32, "amount": pl.Float32, "ts": pl.Datetime("ms")}
    for name, frame in (("tx", tx), ("ev", ev)):
        parts = frame.with_columns(p=pl.int_range(pl.len()) % 3).partition_by("p", maintain_order=True,
                                                                              include_key=False)
        narrowed = parts[1].cast({c: t for c, t in narrow.items() if c in frame.columns})
        (tmp_path / "mixed" / name).mkdir(parents=True)
        (tmp_path / "wide" / name).mkdir(parents=True)
        for i, part in enumerate([parts[0], narrowed, parts[2]]):
            part.write_parquet(tmp_path / "mixed" / name / f"part-{i}.parquet")
            wide = part.cast({c: frame.schema[c] for c in part.columns})
            wide.write_parquet(tmp_path / "wide" / name / f"p{i}.parquet")
    assert pl.read_parquet(tmp_path / "mixed" / "tx" / "part-1.parquet").schema["customer_id"] == pl.Int32
    events = EventSource(paths=(str(tmp_path / "mixed" / "ev"),))
    cfg = RunConfig(cluster=ClusterConfig(k=3), events=events)
    run(tmp_path / "wide" / "tx", tmp_path / "out-wide",
        dataclasses.replace(cfg, events=EventSource(paths=(str(tmp_path / "wide" / "ev"),))))
    for buckets in (1, 3):
        out = tmp_path / f"out-{buckets}"
        run(tmp_path / "mixed" / "tx", out, dataclasses.replace(cfg, buckets=buckets))
        for name in ("assignments", "rejects"):
            _same(_sorted(tmp_path / "out-wide" / name), _sorted(out / name), f"{buckets} {name}")


def test_a_file_whose_column_has_no_value_reads_as_the_others_type(tmp_path):
    """pandas writes a column without a value as the Null type (a day's export where no line had a category or
    an order id): the run was refused ("give files of one schema"). It reads as the other files' type, text
    as the dictionaries the map reads: outputs as with the nulls typed, in one bucket or three."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    generate(tmp_path / "gen", customers=300, seed=4)
    tx = pl.read_parquet(tmp_path / "gen" / "transactions")
    parts = tx.with_columns(p=pl.int_range(pl.len()) % 3).partition_by("p", maintain_order=True, include_key=False)
    empty = parts[1].with_columns(pl.lit(None, pl.String).alias("category"), pl.lit(None, pl.String).alias("channel"),
                                  pl.lit(None, pl.Int64).alias("order_id"))
    for folder in ("typed", "null"):
        (tmp_path / folder).mkdir()
        for i, part in enumerate([parts[0], empty, parts[2]]):
            table = part.to_arrow()
            if folder == "null" and i == 1:
                for name in ("category", "channel", "order_id"):
                    table = table.set_column(table.schema.get_field_index(name), name, pa.nulls(part.height))
            pq.write_table(table, tmp_path / folder / f"part-{i}.parquet")
    assert pl.read_parquet(tmp_path / "null" / "part-1.parquet").schema["category"] == pl.Null
    cfg = RunConfig(cluster=ClusterConfig(k=3))
    run(tmp_path / "typed", tmp_path / "out-typed", cfg)
    for buckets in (1, 3):
        out = tmp_path / f"out-{buckets}"
        run(tmp_path / "null", out, dataclasses.replace(cfg, buckets=buckets))
        for name in ("assignments", "rejects"):
            _same(_sorted(tmp_path / "out-typed" / name), _sorted(out / name), f"{buckets} {name}")


def test_blank_and_null_text_ids_repeat_each_other_in_one_bucket_whatever_the_buckets(tmp_path):
    # A blank text id is a missing one, and a row of each compares equal; the partition sent " " to its own
    # hash's bucket, so those repeats were counted with 1 bucket and not with 3.
    rows = [(str(1000 + c), dt.datetime(2025, 1, 1 + j, c % 24), 10.0 + c + j, f"o{c}-{j}")
            for c in range(40) for j in range(3)]
    rows += [([None, " ", "\t"][k % 3], dt.datetime(2025, 2, 1), 5.0, "x1") for k in range(21)]
    pl.DataFrame(rows, schema={"customer_id": pl.String, "ts": pl.Datetime("us"), "amount": pl.Float64,
                               "order_id": pl.String}, orient="row").write_parquet(tmp_path / "tx.parquet")
    counts = {b: validate([tmp_path / "tx.parquet"], RunConfig(buckets=b)) for b in (1, 3, 5)}
    assert {b: (c.repeats_on_mapped_columns, c.rows_used) for b, c in counts.items()} == \
        dict.fromkeys((1, 3, 5), (20, 120))


def test_the_plan_budgets_the_text_it_parses(tmp_path):
    # A CSV's rows were budgeted as typed Parquet's 100 bytes a line, and measured 372-422 (helper sweep).
    import datetime as dt

    from segmint.engine.pipeline.plan import BYTES_PER_ROW, TEXT_COLUMN_BYTES, make_plan

    frame = pl.DataFrame({"customer_id": [1, 2, 3], "ts": [dt.datetime(2024, 1, d) for d in (1, 2, 3)],
                          "amount": [1.0, 2.0, 3.0], "order_id": [1, 2, 3]})
    frame.write_parquet(tmp_path / "typed.parquet")
    frame.with_columns(pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%S")).write_parquet(tmp_path / "text_ts.parquet")
    frame.write_csv(tmp_path / "all.csv")
    started = dt.datetime.now(dt.timezone.utc)
    cfg = RunConfig(columns=Columns(channel=None, category=None))
    names = ("typed.parquet", "text_ts.parquet", "all.csv")
    per_row = {name: make_plan("validate", [tmp_path / name], cfg, work=tmp_path / "w", run_id="t",
                               started=started).bytes_per_row for name in names}
    assert per_row["typed.parquet"] == BYTES_PER_ROW
    assert per_row["text_ts.parquet"]["tx"] == BYTES_PER_ROW["tx"] + TEXT_COLUMN_BYTES   # the time alone is text
    assert per_row["all.csv"]["tx"] == BYTES_PER_ROW["tx"] + 4 * TEXT_COLUMN_BYTES       # id, time, amount, order
    assert per_row["all.csv"]["partition"] == per_row["all.csv"]["tx"] + 50 > BYTES_PER_ROW["partition"]


@pytest.mark.parametrize("cluster_features", [None, ("recency_days", "frequency", "aov", "r_score", "clv"),
                                              ("recency_days", "activity_status")])
def test_the_fits_run_side_by_side_where_memory_allows_and_give_the_same_outputs(dirty, tmp_path, monkeypatch,
                                                                                   cluster_features):
    """The CLV's two models, and the profile sample's RFM and CLV beside its scaling: the outputs of a run that
    had the memory for neither side by side, byte for byte. A clustering on prepare's own columns (r_score, clv)
    waits for them."""
    from segmint.engine.analytics import clv
    from segmint.engine.errors import ConfigError
    from segmint.engine.pipeline import fit
    from segmint.engine.runtime import map_threads, parallel_kernels_side_by_side

    if not parallel_kernels_side_by_side():
        pytest.skip("Numba's threading layer here is workqueue: the fits run one after the other")
    side = []
    def spy(module):
        def spied(fn, items, most=None):
            side.append((module, most != 1 and len(items) > 1))
            return map_threads(fn, items, most)
        return spied
    monkeypatch.setattr(clv, "map_threads", spy("clv"))
    monkeypatch.setattr(fit, "map_threads", spy("fit"))
    monkeypatch.setattr("segmint.engine.runtime.thread_budget", lambda: 2)   # on a runner of one CPU too
    cfg = RunConfig(cluster=ClusterConfig(k=5, seed=2),
                    features=dataclasses.replace(RunConfig().features, cluster_features=cluster_features))
    # Within the purchase model's fit, its own serial steps side by side whatever the budget: they hold nothing
    # more at once (x's and T's distinct values; the BG/NBD's triples beside the NBD's fit).
    purchases = [("clv", True), ("clv", True)]
    if cluster_features and "activity_status" in cluster_features:
        # Not a number: refused as on the prepared sample, its numeric columns listed (r_score and clv among them).
        refused = r"\['activity_status'\] are not numeric features; available: .*r_score.*clv"
        with pytest.raises(ConfigError, match=refused):
            run([dirty["int"] / "tx"], tmp_path / "side", cfg)
        assert side == [("clv", True), *purchases]
        return
    run([dirty["int"] / "tx"], tmp_path / "side", cfg)
    assert side == ([("clv", True), *purchases, ("fit", True)] if cluster_features is None
                    else [("clv", True), *purchases])
    side.clear()
    monkeypatch.setattr(fit, "SIDE_BY_SIDE_BYTES", 10**12)
    monkeypatch.setattr(fit, "PREPARE_SIDE_BYTES", 10**12)
    run([dirty["int"] / "tx"], tmp_path / "alone", cfg)
    assert side == [("clv", False), *purchases]
    for rel, keys in (("assignments", ("customer_id",)), ("profiles.parquet", ()), ("rejects", ())):
        _same(_sorted(tmp_path / "side" / rel, *keys), _sorted(tmp_path / "alone" / rel, *keys), rel)
    models = [json.loads((tmp_path / o / "model" / "model.json").read_text()) for o in ("side", "alone")]
    for doc in models:
        doc["provenance"].pop("run_id")
    assert models[0] == models[1]


@pytest.mark.parametrize("k", [5, None])
def test_faiss_never_runs_beside_prepares_kernels(dirty, tmp_path, monkeypatch, k):
    """Faiss brings its own OpenMP runtime, Numba's kernels run on the system's, and two OpenMP runtimes busy at
    once in one process can crash (shared/DESIGN.md, section 10): the scaling runs beside prepare, the k-means
    (and --k auto's scan) only after prepare has ended, on the calling thread; the device's backend is made
    there too, after prepare (a GPU's errors after prepare's, as before)."""
    import threading
    import time

    from segmint.engine.pipeline import fit
    from segmint.engine.runtime import parallel_kernels_side_by_side

    if not parallel_kernels_side_by_side():
        pytest.skip("Numba's threading layer here is workqueue: the fits run one after the other")
    monkeypatch.setattr("segmint.engine.runtime.thread_budget", lambda: 2)   # on a runner of one CPU too
    events = []
    def timed(name, fn):
        def wrapper(*args, **kwargs):
            events.append((name, "start", time.perf_counter(), threading.current_thread()))
            try:
                return fn(*args, **kwargs)
            finally:
                events.append((name, "end", time.perf_counter(), threading.current_thread()))
        return wrapper
    for name in ("prepare", "scale_sample", "fit_kmeans", "select_k", "backend_for"):
        monkeypatch.setattr(fit, name, timed(name, getattr(fit, name)))
    run([dirty["int"] / "tx"], tmp_path / "run", RunConfig(cluster=ClusterConfig(k=k, k_max=4, seed=2)))
    at = {(name, edge): (t, thread) for name, edge, t, thread in events}
    assert at[("scale_sample", "start")][1] is not at[("prepare", "start")][1]   # side by side, on two threads
    faiss = [(t, thread) for name, edge, t, thread in events
             if name in ("fit_kmeans", "select_k", "backend_for") and edge == "start"]
    assert faiss and all(t > at[("prepare", "end")][0] for t, _ in faiss)
    assert all(thread is threading.main_thread() for _, thread in faiss)


def test_numbas_workqueue_layer_runs_the_fits_one_after_the_other_with_the_same_outputs(dirty, tmp_path):
    """Where neither OpenMP nor TBB is installed, Numba's workqueue layer ends the process (SIGABRT, exit 134)
    when two threads launch parallel kernels at once: the fits then run one after the other."""
    import os
    import subprocess
    import sys

    outs = {}
    for layer in ("workqueue", "default"):
        cmd = [sys.executable, "-m", "segmint.cli.app", "--threads", "2", "run", str(dirty["int"] / "tx"), "--out",
               str(tmp_path / layer), "--k", "5", "--seed", "2"]
        done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | {"NUMBA_THREADING_LAYER": layer},
                              timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        outs[layer] = _sorted(tmp_path / layer / "assignments", "customer_id")
    _same(outs["workqueue"], outs["default"], "assignments")



def _scores_ahead_here():
    """Whether this machine scores ahead at all (commands._score_ahead): two threads, a threading layer that lets
    two of them launch parallel kernels at once."""
    from segmint.engine.runtime import parallel_kernels_side_by_side, thread_budget

    if thread_budget() < 2 or not parallel_kernels_side_by_side():
        pytest.skip("one thread, or Numba's workqueue layer: the score stage runs its jobs one after the other")


def test_the_next_bucket_is_scored_beside_the_write_with_the_same_files(small_data, tmp_path, monkeypatch):
    """Run, features and clv in four buckets score the next bucket while the one before is written: the files are
    the bytes of one bucket scored after the other, and a bucket's error, in its scoring or in its write, is raised
    with nothing left behind, the helper thread stopped."""
    import threading

    from segmint.engine.pipeline import commands

    _scores_ahead_here()
    cfg = RunConfig(cluster=ClusterConfig(k=4, seed=1), buckets=4)
    tx = [small_data / "transactions"]
    ahead = []
    pipelined = commands._scores_ahead
    monkeypatch.setattr(commands, "_scores_ahead", lambda s, jobs: ahead.append(len(jobs)) or pipelined(s, jobs))
    for name in ("ahead", "in_turn"):
        if name == "in_turn":
            monkeypatch.setattr(commands, "_score_ahead", lambda *args: False)
        run(tx, tmp_path / name / "run", cfg)
        compute_feature_table(tx, tmp_path / name / "features", cfg)
        compute_clv(tx, tmp_path / name / "clv", cfg)
    assert ahead == [4, 4, 4]   # every command's score went ahead, and only in the first pass
    files = sorted(p.relative_to(tmp_path / "ahead") for p in (tmp_path / "ahead").rglob("*.parquet"))
    parts = {f.name for f in files if f.parts[:2] == ("run", "assignments")}
    assert parts == {f"part-{b:05d}.parquet" for b in range(4)}
    for rel in files:
        assert (tmp_path / "ahead" / rel).read_bytes() == (tmp_path / "in_turn" / rel).read_bytes(), rel
    monkeypatch.undo()

    def fails_on_bucket_2(fn):
        def wrapped(job, *args):
            if job.bucket == 2:
                raise InputContractError(f"bucket 2 cannot be {fn.__name__}")
            return fn(job, *args)
        return wrapped

    for name in ("scored_bucket", "finish_bucket"):
        with monkeypatch.context() as m:
            m.setattr(commands, name, fails_on_bucket_2(getattr(commands, name)))
            with pytest.raises(InputContractError, match=f"bucket 2 cannot be {name}") as failed:
                run(tx, tmp_path / "failed", cfg)
        # Stopped as the error left the stage, not once its traceback is dropped: it read the work folder.
        assert not any(t.name == "segmint-read" and t.is_alive() for t in threading.enumerate())
        del failed
        assert not (tmp_path / "failed").exists()
        assert not list(tmp_path.rglob(".*work*")) and not list(tmp_path.rglob(".*staging*"))


def test_the_next_bucket_is_scored_ahead_only_where_the_budget_holds_two(small_data, tmp_path, monkeypatch):
    from segmint.engine.pipeline import commands

    _scores_ahead_here()
    ahead = []
    pipelined = commands._scores_ahead
    monkeypatch.setattr(commands, "_scores_ahead", lambda s, jobs: ahead.append(len(jobs)) or pipelined(s, jobs))
    monkeypatch.setattr(commands, "SCORE_BYTES_PER_CUSTOMER", 10**12)
    run([small_data / "transactions"], tmp_path / "o", RunConfig(cluster=ClusterConfig(k=3), buckets=3))
    assert ahead == []
    monkeypatch.setattr(commands, "SCORE_BYTES_PER_CUSTOMER", 400)
    run([small_data / "transactions"], tmp_path / "o2", RunConfig(cluster=ClusterConfig(k=3), buckets=3))
    assert ahead == [3]
