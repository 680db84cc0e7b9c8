"""Streaming local Parquet: the rows of each chunk exactly, in order, read on two threads, with a bounded number of
tables decoded at once."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from segmint.engine.errors import InputContractError
from segmint.engine.io import sources
from segmint.engine.io.sources import list_inputs, resolve, split, stream
from segmint.engine.runtime import in_order


def _write(path, rows, row_group, seed):
    rng = np.random.default_rng(seed)
    table = pa.table({"customer_id": rng.integers(0, 50, rows), "amount": rng.normal(0, 1, rows),
                      "channel": pa.array(rng.choice(["web", "app", "store"], rows))})
    pq.write_table(table, path, row_group_size=row_group)
    return pl.from_arrow(table)


@pytest.mark.parametrize("max_rows", [7, 100, 333, 10_000])
def test_stream_gives_each_chunks_rows_in_order_across_row_groups_and_hive_folders(tmp_path, max_rows):
    expected = []
    for i, channel in enumerate(["app", "web"]):   # the order files are listed in
        folder = tmp_path / f"region={channel}"
        folder.mkdir()
        expected.append(_write(folder / "part.parquet", 1_000 + 17 * i, 90, i).with_columns(
            region=pl.lit(channel)))
    wanted = {"customer_id": "--customer-col", "amount": "--amount-col", "channel": "", "region": ""}
    source = resolve(list_inputs([tmp_path], "t"), wanted, "transactions")
    source = split(source, max_rows)
    tables = list(stream(source, source.chunks, ["channel"]))
    assert [t.num_rows for t in tables if t.num_rows] != []
    got = pl.concat([pl.from_arrow(t).with_columns(pl.col("channel").cast(pl.String)) for t in tables])
    assert pa.types.is_dictionary(tables[0].schema.field("channel").type)
    assert got.equals(pl.concat(expected).select(got.columns))
    # Chunk by chunk: a chunk's rows are the ones its offset and count name.
    for chunk in source.chunks[:5]:
        one = pl.concat([pl.from_arrow(t) for t in stream(source, [chunk], ())])
        whole = pl.read_parquet(chunk.path).slice(chunk.offset, chunk.rows)
        assert one.select("customer_id", "amount").equals(whole.select("customer_id", "amount"))


@pytest.mark.parametrize("csv", [False, True])
@pytest.mark.parametrize("budget", [1, 2])
def test_what_is_made_of_each_table_is_given_its_first_rows_position_among_the_chunks(tmp_path, csv, budget,
                                                                                      monkeypatch):
    # Made on either thread, out of order: each table's position is where its rows are among the chunks' rows,
    # chunks cut within and across row groups, the chunks given starting within a file. A budget of one thread
    # (--threads 1) reads on the caller's alone.
    monkeypatch.setattr(sources, "thread_budget", lambda: budget)
    frames = [_write(tmp_path / f"p{i}.parquet", 700 + 31 * i, 90, i) for i in range(3)]
    if csv:
        for i, frame in enumerate(frames):
            (tmp_path / f"p{i}.parquet").unlink()
            frame.write_csv(tmp_path / f"p{i}.csv")
    source = resolve(list_inputs([tmp_path], "t"), {"customer_id": "--customer-col", "amount": "--amount-col"},
                     "transactions")
    source = split(source, 250)
    chunks = source.chunks[1:]
    threads = set()

    def made(table, at):
        threads.add(threading.get_ident())
        time.sleep(0.001)
        return at, pl.from_arrow(table)

    items = list(stream(source, chunks, (), made))
    whole = pl.concat(frames).select("customer_id", "amount").slice(source.chunks[0].rows)
    assert [at for at, _ in items] == np.cumsum([0] + [f.height for _, f in items][:-1]).tolist()
    got = pl.concat([f for _, f in items])   # CSV cells as text
    assert got.select(pl.col("customer_id").cast(pl.Int64)).equals(whole.select("customer_id"))
    assert threads == {threading.get_ident()} if csv or budget == 1 else len(threads) == 2


def test_a_file_that_cannot_be_read_stops_with_its_name(tmp_path):
    _write(tmp_path / "a.parquet", 500, 100, 0)
    source = resolve(list_inputs([tmp_path / "a.parquet"], "t"), {"customer_id": "--customer-col"}, "transactions")
    (tmp_path / "a.parquet").write_bytes(b"PAR1 not parquet any more PAR1")
    with pytest.raises(InputContractError, match="cannot read .*a.parquet"):
        list(stream(source, source.chunks))


def test_the_stream_asks_for_the_next_files_ahead_up_to_its_byte_budget(tmp_path, monkeypatch):
    import os

    sizes = {}
    for i in range(8):
        _write(tmp_path / f"p{i}.parquet", 300, 100, i)
        sizes[str(tmp_path / f"p{i}.parquet")] = os.path.getsize(tmp_path / f"p{i}.parquet")
    advised, reading = [], []
    monkeypatch.setattr(sources, "_advise", advised.append)
    monkeypatch.setattr(sources, "_READ_AHEAD_BYTES", 3 * max(sizes.values()))
    original = pq.read_metadata

    def read_metadata(path, *args, **kwargs):   # the stream's first read of each chunk's file
        reading.append((path, list(advised)))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(pq, "read_metadata", read_metadata)
    source = split(resolve(list_inputs([tmp_path], "t"), {"customer_id": "--customer-col"}, "t"), 100)
    assert sum(t.num_rows for t in stream(source, source.chunks)) == 8 * 300
    files = list(sizes)
    assert advised == files   # each file once, in the order read
    for path, before in reading:
        i = files.index(path)
        # The file itself and at least the budget's worth after it, where there are files left.
        assert before[: i + 1] == files[: i + 1]
        assert len(before) == min(8, i + 3) or sum(sizes[f] for f in before[i:]) >= 3 * max(sizes.values())


@pytest.mark.skipif(not hasattr(__import__("os"), "posix_fadvise"), reason="no posix_fadvise here")
def test_a_file_is_asked_for_up_to_the_budget_not_whole(tmp_path, monkeypatch):
    import os

    _write(tmp_path / "a.parquet", 300, 100, 0)
    calls = []
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, offset, length, advice: calls.append((offset, length, advice)))
    sources._advise(str(tmp_path / "a.parquet"))
    sources._advise(str(tmp_path / "gone.parquet"))   # removed since it was listed: its read says so, not this
    assert calls == [(0, sources._READ_AHEAD_BYTES, os.POSIX_FADV_WILLNEED)]


def test_one_stream_read_ahead_passes_errors_on_and_stops_its_helper_when_left_early():
    def items(n, fail=False):
        for i in range(n):
            yield pa.table({"a": [i]})
        if fail:
            raise OSError("disk gone")

    ahead = in_order(iter([items(2, fail=True)]), 1)
    assert next(ahead)["a"].to_pylist() == [0]
    assert next(ahead)["a"].to_pylist() == [1]
    with pytest.raises(OSError, match="disk gone"):
        next(ahead)
    source = items(5)
    left = in_order(iter([source]), 1)
    assert next(left)["a"].to_pylist() == [0]
    left.close()
    assert not any(t.name == "segmint-read" and t.is_alive() for t in threading.enumerate())
    assert source.gi_frame is None   # closed: its file is released now, not when collected


def test_one_stream_read_ahead_stops_its_helper_when_interrupted_as_it_starts(monkeypatch):
    start = threading.Thread.start

    def interrupted(thread):
        start(thread)
        raise KeyboardInterrupt   # as a Ctrl-C handled while start() waits for the thread to run

    monkeypatch.setattr(threading.Thread, "start", interrupted)
    source = (i for i in range(3))
    with pytest.raises(KeyboardInterrupt):
        next(in_order(iter([source]), 2))
    monkeypatch.undo()
    deadline = time.monotonic() + 5
    while any(t.name == "segmint-read" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    # It waited for an ask forever, holding what it read.
    assert not any(t.name == "segmint-read" for t in threading.enumerate())


@pytest.mark.parametrize("depth", [1, 2])
def test_one_stream_read_ahead_makes_depth_items_ahead_and_no_more(depth):
    made = []

    def items():
        for i in range(10):
            made.append(i)
            yield i

    ahead = in_order(iter([items()]), depth)
    assert next(ahead) == 0
    deadline = time.monotonic() + 5
    while len(made) < depth + 1 and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(0.05)   # time to make one too many, were it asked for
    assert len(made) == depth + 1   # the one in use and ``depth`` ahead
    assert list(ahead) == list(range(1, 10))
    ahead.close()


def test_a_run_in_another_thread_reads_on_after_the_main_thread_ends(tmp_path):
    # Python shuts executors down once the main thread is done: a helper built on one stopped a run
    # going on in a worker thread with "cannot schedule new futures after shutdown".
    _write(tmp_path / "a.parquet", 50_000, 1_000, 0)
    code = textwrap.dedent(f"""
        import threading, time
        from segmint.engine.io.sources import list_inputs, resolve, stream
        source = resolve(list_inputs([{str(tmp_path / "a.parquet")!r}], "t"), {{"customer_id": ""}}, "t")
        def work():
            rows = 0
            for table in stream(source, source.chunks):
                rows += table.num_rows
                time.sleep(0.005)
            print(rows)
        threading.Thread(target=work).start()
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["50000"]


@pytest.mark.parametrize(("made", "bound"), [("None", 8), ("lambda table, at: table", 11)])
def test_streaming_holds_a_few_batches_however_slow_the_reader(tmp_path, made, bound):
    # 40 row groups of about 2 MB decoded: a reader that reads ahead without a bound holds most of them
    # while the caller is slow; ours holds the batch being used, the next two, and what each of the two threads
    # reading them decodes at once (5.5-7.0 batches' worth over 25 runs; one thread alone: 5.5); with ``made``,
    # four ahead (7.6-9.7 over 8 runs). In a fresh process, so that Arrow's pool peak is this stream's alone.
    rng = np.random.default_rng(0)
    n = 40 * 65_536
    pq.write_table(pa.table({"customer_id": rng.integers(0, 10**9, n), "amount": rng.normal(0, 1, n),
                             "ts": rng.integers(0, 10**15, n)}), tmp_path / "big.parquet",
                   row_group_size=65_536, compression="none")
    code = textwrap.dedent(f"""
        import time, pyarrow as pa
        from segmint.engine.io.sources import list_inputs, resolve, stream
        source = resolve(list_inputs([{str(tmp_path / "big.parquet")!r}], "t"),
                         {{"customer_id": "", "amount": "", "ts": ""}}, "t")
        rows = 0
        for table in stream(source, source.chunks, (), {made}):
            rows += table.num_rows
            time.sleep(0.01)
        print(rows, pa.default_memory_pool().max_memory())
    """)
    rows, peak = map(int, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                         check=True).stdout.split())
    batch = 65_536 * 3 * 8
    assert rows == n
    assert peak < bound * batch, f"{peak / 2**20:.0f} MB of Arrow memory at once for batches of {batch / 2**20:.1f} MB"


def test_a_hive_key_some_files_hold_themselves_comes_from_each_files_folder_otherwise(tmp_path):
    # Read through a dataset scanner, every file took the first file's columns: where the first held the
    # key itself, the others' rows came back with it null instead of their folder's value.
    (tmp_path / "region=north").mkdir()
    (tmp_path / "region=south").mkdir()
    pq.write_table(pa.table({"customer_id": [1, 2], "region": ["north", "north"]}),
                   tmp_path / "region=north" / "a.parquet")
    pq.write_table(pa.table({"customer_id": [3]}), tmp_path / "region=south" / "b.parquet")
    source = resolve(list_inputs([tmp_path], "t"), {"customer_id": "--customer-col", "region": ""}, "transactions")
    got = pl.concat([pl.from_arrow(t) for t in stream(source, source.chunks)])
    assert got.sort("customer_id")["region"].to_list() == ["north", "north", "south"]


def test_a_hive_key_mixed_with_files_holding_it_gives_one_table_in_any_bucket_count(small_data, tmp_path):
    """The channel in one folder's files, the others' from their folder: one bucket was right; several failed the
    partition (exit 1, 'Unable to merge: dictionary vs large_string'). A file outside the key's folders was
    given the column, passed the check, then failed to read (exit 1, KeyError): it lacks the column (exit 3)."""
    from segmint.engine.config import ClusterConfig, RunConfig
    from segmint.engine.errors import InputContractError
    from segmint.engine.pipeline import run

    tx = pl.read_parquet(small_data / "transactions")
    for (channel,), part in tx.group_by("channel"):
        (tmp_path / "in" / f"channel={channel}").mkdir(parents=True)
        (part if channel == "app" else part.drop("channel")).write_parquet(
            tmp_path / "in" / f"channel={channel}" / "p.parquet")
    outs = [run([tmp_path / "in"], tmp_path / f"o{b}", RunConfig(cluster=ClusterConfig(k=3), buckets=b))
            for b in (1, 3)]
    got = [pl.read_parquet(o.out + "/assignments").sort("customer_id") for o in outs]
    assert got[0].equals(got[1].select(got[0].columns))
    assert got[0].equals(pl.read_parquet(run([small_data / "transactions"], tmp_path / "whole", RunConfig(
        cluster=ClusterConfig(k=3))).out + "/assignments").sort("customer_id").select(got[0].columns))
    tx.head(10).drop("channel").write_parquet(tmp_path / "in" / "root.parquet")
    with pytest.raises(InputContractError, match="column 'channel' .* not found in .*root.parquet"):
        run([tmp_path / "in"], tmp_path / "o", RunConfig(cluster=ClusterConfig(k=3)))


@pytest.mark.parametrize("zone", [None, "UTC", "America/New_York"])
def test_int96_times_as_spark_writes_them_are_the_times_written(small_data, tmp_path, zone):
    """pyarrow reads INT96 as ns where the file's schema says us: the column counted as typed, and the map
    failed (exit 1, KeyError 'ns')."""
    from segmint.engine.config import RunConfig
    from segmint.engine.pipeline import compute_feature_table

    tx = pl.read_parquet(small_data / "transactions")
    if zone is not None:
        tx = tx.with_columns(pl.col("ts").dt.replace_time_zone("UTC").dt.convert_time_zone(zone))
    tx.write_parquet(tmp_path / "plain.parquet")
    pq.write_table(tx.to_arrow(), tmp_path / "spark.parquet", flavor="spark")
    assert pq.read_schema(tmp_path / "spark.parquet").field("ts").type.unit == "ns"
    got = [pl.read_parquet(compute_feature_table([tmp_path / f"{name}.parquet"], tmp_path / name,
                                                 RunConfig(as_of="2026-01-01")).out + "/features")
           for name in ("plain", "spark")]
    assert got[0].height > 0 and got[0].equals(got[1])


def test_row_counts_from_the_parquet_footer_equal_what_is_read(tmp_path):
    frame = _write(tmp_path / "a.parquet", 1_234, 100, 3)
    pq.write_table(pa.table({"customer_id": pa.array([], pa.int64()), "amount": pa.array([], pa.float64()),
                             "channel": pa.array([], pa.string())}), tmp_path / "empty.parquet")
    assert sources._rows(str(tmp_path / "a.parquet"), False, ()) == frame.height == 1_234
    assert sources._rows(str(tmp_path / "empty.parquet"), False, ()) == 0
    frame.write_csv(tmp_path / "a.csv")
    assert sources._rows(str(tmp_path / "a.csv"), True, ()) == 1_234


@pytest.mark.parametrize("broken", ['{ts},7.5,"beauty', '{ts},7"5,home'])
def test_a_csv_file_with_a_quote_left_open_is_refused_not_cut_short(tmp_path, broken):
    # Polars' row count skips the parse: a file whose 11th line opened a quote it never closed counted 10 rows
    # of 3,000, and the run read those 10 with exit 0. A quote inside an unquoted field counted 0.
    rows = [f"{i % 97},2024-07-{1 + i % 28:02d}T12:00:00,{i % 50}.25,cat{i % 5}" for i in range(3_000)]
    rows[10] = "5," + broken.format(ts="2024-07-01T12:00:00")
    (tmp_path / "t.csv").write_text("customer_id,ts,amount,category\n" + "\n".join(rows) + "\n")
    with pytest.raises(InputContractError, match=r"cannot read .*t\.csv: .*a quote opened and not closed") as e:
        resolve(list_inputs([tmp_path / "t.csv"], "t"), {"customer_id": "--customer-col"}, "transactions")
    # Polars quoted the lines from the quote on: customers' data, in the logs.
    assert "home" not in str(e.value) and "beauty" not in str(e.value) and "cat" not in str(e.value)
    # Quoted fields holding a newline, a delimiter and a doubled quote are rows like any other.
    rows[10] = '5,2024-07-01T12:00:00,7.5,"two\nlines, a ""quote"""'
    (tmp_path / "t.csv").write_text("customer_id,ts,amount,category\n" + "\n".join(rows) + "\n")
    source = resolve(list_inputs([tmp_path / "t.csv"], "t"), {"customer_id": "--customer-col"}, "transactions")
    assert source.rows == 3_000


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16"])
def test_a_csv_file_not_in_utf8_is_refused_naming_the_encoding(tmp_path, encoding):
    # The message blamed a quote left open, which sent users looking for one in a file without any.
    text = "customer_id,ts,amount\n" + "".join(f"Zo\u00eb{i % 7},2024-07-{1 + i % 28:02d},{i}.5\n" for i in range(50))
    (tmp_path / "t.csv").write_bytes(text.encode(encoding))
    with pytest.raises(InputContractError, match=r"cannot read .*t\.csv: .*reads CSV as UTF-8: convert the file") as e:
        resolve(list_inputs([tmp_path / "t.csv"], "t"), {"customer_id": "--customer-col"}, "transactions")
    assert "quote" not in str(e.value)
    # Only the header in Latin-1: Polars read it lossily ('montant_\ufffd', mappable as such), the rows as UTF-8.
    (tmp_path / "h.csv").write_bytes("customer_id,ts,montant_\u00e9\n1,2024-07-01,5.5\n".encode("latin-1"))
    with pytest.raises(InputContractError, match=r"h\.csv: its header is not UTF-8; .*convert the file"):
        list_inputs([tmp_path / "h.csv"], "t")


def test_a_csv_file_without_a_header_is_told_so_without_quoting_its_first_line(tmp_path):
    # The first line, read as the header, was listed as the columns available: a customer's id and email.
    (tmp_path / "t.csv").write_text("RAWID7,2024-07-02T00:40:27,1.45,a@x.com\nRAWID8,2024-07-03,2.5,b@x.com\n")
    with pytest.raises(InputContractError, match="first line holds values, not column names .*add a header") as e:
        resolve(list_inputs([tmp_path / "t.csv"], "t"), {"customer_id": "--customer-col"}, "transactions")
    assert "RAWID" not in str(e.value) and "@x.com" not in str(e.value)
    # A value repeated on that first line read as a header naming a column twice, quoted.
    (tmp_path / "d.csv").write_text("a@x.com,2024-07-01,1.5,a@x.com\nb@x.com,2024-07-02,2.5,b@x.com\n")
    with pytest.raises(InputContractError, match="first line holds values") as e:
        list_inputs([tmp_path / "d.csv"], "t")
    assert "@x.com" not in str(e.value)
    # Under half of the first line values (an id, a time, an amount, then text: a channel, an email): listed.
    (tmp_path / "w.csv").write_text("RAWID7,2024-07-02 00:40:27,1.45,O7,web,c,a@x.com\nRAWID8,2024-07-03,2.5,O8,web,c,"
                                    "b@x.com\n")
    with pytest.raises(InputContractError, match="first line holds values, not column names .*add a header") as e:
        resolve(list_inputs([tmp_path / "w.csv"], "t"), {"customer_id": "--customer-col"}, "transactions")
    assert "RAWID" not in str(e.value) and "@x.com" not in str(e.value)
    # Times as PostgreSQL, Excel and a German export write them, and an address in a display name, are values.
    for when in ("2024-01-05 10:00:00+00", "1/5/2024 10:00 AM", "05.01.2024 10:00", "Jan  5 2024 10:00AM"):
        (tmp_path / "v.csv").write_text(f"RAWID7,{when},12,web,Ann Lee <ann@x.com>\nRAWID8,{when},3,web,b\n")
        with pytest.raises(InputContractError, match="first line holds values") as e:
            resolve(list_inputs([tmp_path / "v.csv"], "t"), {"customer_id": "--customer-col"}, "transactions")
        assert "RAWID" not in str(e.value)
    # Names that hold an @, a date or a clock time among other text are names (a Logstash export's '@timestamp').
    (tmp_path / "n.csv").write_text("customer_id,@timestamp,amount,balance_2024-01-01\n1,2024-07-02,1.45,3\n")
    with pytest.raises(InputContractError, match="available: customer_id, '@timestamp', amount, balance_2024-01-01"):
        resolve(list_inputs([tmp_path / "n.csv"], "t"), {"ts": "--time-col"}, "transactions")
    # A header of names is listed, to map one of them; so is one with a few names that are numbers (years).
    (tmp_path / "t.csv").write_text("client,when,value\nRAWID7,2024-07-02,1.45\n")
    with pytest.raises(InputContractError, match="available: client, when, value; map the right column"):
        resolve(list_inputs([tmp_path / "t.csv"], "t"), {"customer_id": "--customer-col"}, "transactions")
    (tmp_path / "t.csv").write_text("client,when,value,2023,2024\nRAWID7,2024-07-02,1.45,1,2\n")
    with pytest.raises(InputContractError, match="available: client, when, value, 2023, 2024; map the right"):
        resolve(list_inputs([tmp_path / "t.csv"], "t"), {"customer_id": "--customer-col"}, "transactions")
    # Names of a letter and a digit (a column per week or zone) are names: T and Z counted as a time's letters
    # anywhere made these values, and the file was told to add a header it had.
    (tmp_path / "t.csv").write_text("client,T1,Z1,Z2\nRAWID7,2024-07-02,1.45,2\n")
    with pytest.raises(InputContractError, match="available: client, T1, Z1, Z2; map the right"):
        resolve(list_inputs([tmp_path / "t.csv"], "t"), {"customer_id": "--customer-col"}, "transactions")


def test_a_csv_header_naming_a_column_twice_is_refused(tmp_path):
    # Polars renamed the second 'amount' and the map read the first, whichever was meant, with exit 0.
    (tmp_path / "t.csv").write_text("customer_id,ts,amount,amount\n1,2024-01-01,5,7\n")
    with pytest.raises(InputContractError, match="names the column 'amount' twice in its header"):
        list_inputs([tmp_path / "t.csv"], "t")


def test_files_of_another_format_name_what_segmint_reads(tmp_path):
    # A ';'-separated file was told to map the right column; a .tsv or .csv.gz only that it was not Parquet.
    (tmp_path / "semi.csv").write_text("customer_id;ts;amount\n1;2024-01-01;5\n")
    with pytest.raises(InputContractError, match="header reads as one column, its fields separated by ';': "
                                                 "segmint reads comma-separated CSV"):
        resolve(list_inputs([tmp_path / "semi.csv"], "t"), {"customer_id": "--customer-col"}, "transactions")
    (tmp_path / "t.tsv").write_text("customer_id\tts\n1\t2024-01-01\n")
    with pytest.raises(InputContractError, match="t.tsv: .*; segmint reads Parquet files and uncompressed "
                                                 "comma-separated .csv files"):
        list_inputs([tmp_path / "t.tsv"], "t")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(InputContractError, match="cannot read .*bad.parquet: ") as err:
        list_inputs([tmp_path / "bad.parquet"], "t")
    assert "segmint reads" not in str(err.value)   # a damaged Parquet file is just that


@pytest.mark.parametrize("spelling", ["./{d}", "{d}//", "{d}/.", "file://{abs}", "{abs}//"])
def test_a_folder_is_the_same_files_however_it_is_spelled(tmp_path, monkeypatch, spelling):
    # Cut by the length of the path as typed, './sales' read '_temporary/0/part.parquet' as 'emporary/...' (data,
    # counted twice), skipped files, and named the Hive key 'channel' 'hannel'.
    monkeypatch.chdir(tmp_path)
    for folder in ("sales/channel=web", "sales/_temporary/0"):
        (tmp_path / folder).mkdir(parents=True)
        _write(tmp_path / folder / "part.parquet", 10, 10, 0)
    _write(tmp_path / "sales" / "_SUCCESS.parquet", 10, 10, 0)
    listing = list_inputs([spelling.format(d="sales", abs=tmp_path / "sales")], "t")
    assert [(sources.store.local(f).resolve(), keys) for f, keys in listing.found] == [
        ((tmp_path / "sales/channel=web/part.parquet").resolve(), (("channel", "web"),))]


def test_a_file_two_inputs_name_is_refused_not_read_twice(tmp_path):
    from segmint.engine.errors import ConfigError

    _write(tmp_path / "a.parquet", 10, 10, 0)
    for inputs in ([tmp_path, tmp_path / "a.parquet"], [tmp_path, f"{tmp_path}/*.parquet"], [tmp_path, tmp_path]):
        with pytest.raises(ConfigError, match=r"reads .*a.parquet twice, through the inputs .*: its rows would "
                                              r"count twice"):
            list_inputs(inputs, "transactions")


def test_a_file_of_a_folder_that_segmint_does_not_read_is_refused_not_left_out(tmp_path):
    (tmp_path / "part-0.csv").write_text("customer_id,ts,amount\na,2024-01-05,10\n")
    (tmp_path / "part-1.csv.gz").write_bytes(b"\x1f\x8b")
    (tmp_path / ".part-0.csv.crc").write_bytes(b"")   # hidden and _-prefixed files are skipped, as before
    (tmp_path / "_SUCCESS").write_bytes(b"")
    (tmp_path / "README.md").write_text("notes")      # and files that are no data
    with pytest.raises(InputContractError, match=r"holds part-1.csv.gz, data segmint does not read"):
        list_inputs([tmp_path], "transactions")
    (tmp_path / "part-1.csv.gz").unlink()
    assert len(list_inputs([tmp_path], "transactions").found) == 1


def test_a_csv_line_of_more_fields_than_its_header_is_told_so_not_of_quotes(tmp_path):
    # It was told "a quote opened and not closed?", and by Polars to set truncate_ragged_lines.
    (tmp_path / "t.csv").write_text("customer_id,ts,amount\na,2024-01-05,10,5\nb,2024-01-06,5\n")
    with pytest.raises(InputContractError, match=r"a line holds more fields than the header \(a field with a comma"):
        resolve(list_inputs([tmp_path / "t.csv"], "t"), {"customer_id": "--customer-col"}, "transactions")


@pytest.mark.parametrize(("types", "common"), [
    ([pl.Int32, pl.Int64], pl.Int64), ([pl.Int8, pl.UInt32], pl.Int64), ([pl.UInt32, pl.UInt64], pl.UInt64),
    ([pl.UInt8, pl.UInt16], pl.UInt16), ([pl.UInt8, pl.UInt16, pl.UInt64], pl.UInt64), ([pl.Int8, pl.Int16], pl.Int64),
    ([pl.Int64, pl.UInt64], None), ([pl.Float32, pl.Float64], pl.Float64), ([pl.Int64, pl.Float64], None),
    ([pl.Datetime("ms"), pl.Datetime("us")], pl.Datetime("us")),
    ([pl.Datetime("ms", "UTC"), pl.Datetime("us", "UTC")], pl.Datetime("us", "UTC")),
    ([pl.Datetime("us"), pl.Datetime("us", "UTC")], None), ([pl.Datetime("ns"), pl.Datetime("us")], None),
    ([pl.Datetime("us"), pl.Date], None), ([pl.Decimal(10, 2), pl.Decimal(18, 2)], pl.Decimal(18, 2)),
    ([pl.Decimal(10, 2), pl.Decimal(10, 3)], None), ([pl.String, pl.Int64], None), ([pl.String, pl.String], pl.String),
    ([pl.Null, pl.String], pl.String), ([pl.Null, pl.Int32, pl.Int64], pl.Int64), ([pl.Null, pl.Null], pl.Null),
])
def test_files_of_one_column_take_the_type_each_converts_to_without_loss(types, common):
    assert sources._common_type(types) == common
    assert sources._common_type(types[::-1]) == common


def test_files_in_types_no_type_holds_without_a_guess_are_refused_and_others_read_widened(tmp_path):
    import datetime as dt

    times = [dt.datetime(2024, 1, 1, 12, 30, 0, 250_000), dt.datetime(1960, 5, 1)]
    wide = pa.table({"customer_id": pa.array([1, 2], pa.int64()), "ts": pa.array(times, pa.timestamp("us")),
                     "amount": pa.array([1.5, 2.25], pa.float64())})
    narrow = pa.table({"customer_id": pa.array([3, 4], pa.int32()), "ts": pa.array(times, pa.timestamp("ms")),
                       "amount": pa.array([0.1, -3.0], pa.float32())})
    pq.write_table(wide, tmp_path / "a.parquet")
    pq.write_table(narrow, tmp_path / "b.parquet")
    wanted = {"customer_id": "--customer-col", "ts": "--time-col", "amount": "--amount-col"}
    source = resolve(list_inputs([tmp_path], "t"), wanted, "transactions")
    assert source.schema == {"customer_id": pl.Int64, "ts": pl.Datetime("us"), "amount": pl.Float64}
    assert set(source.widened) == set(wanted)
    expected = pl.concat([pl.from_arrow(wide), pl.from_arrow(narrow).cast(source.schema)])
    streamed = pl.concat([pl.from_arrow(t) for t in stream(source, source.chunks)])
    polars_read = pl.concat([sources.read_chunk(source, c) for c in source.chunks])   # CSV's and object stores' path
    assert streamed.equals(expected) and polars_read.equals(expected)
    assert expected["amount"].to_list()[2] == float(np.float32(0.1))   # the float32 value, exactly
    pq.write_table(narrow.set_column(1, "ts", pa.array(times, pa.timestamp("us", "UTC"))), tmp_path / "b.parquet")
    with pytest.raises(InputContractError, match=r"column 'ts' is Datetime.*UTC.* in .*b.parquet but .*one schema"):
        resolve(list_inputs([tmp_path], "t"), wanted, "transactions")
    # A millisecond time microseconds cannot hold (Java's Long.MAX "never"): refused naming it on both paths
    # (Polars' cast panicked: exit 1), where one unit alone quarantines its row.
    sentinel = narrow.set_column(1, "ts", pa.array([2**63 - 1, 0], pa.int64()).cast(pa.timestamp("ms")))
    pq.write_table(sentinel, tmp_path / "b.parquet")
    source = resolve(list_inputs([tmp_path], "t"), wanted, "transactions")
    with pytest.raises(InputContractError, match=r"b.parquet: its column 'ts' \(timestamp\[ms\]\) holds a value "
                                                 r"timestamp\[us\] of the other files cannot hold .*one type"):
        list(stream(source, source.chunks))
    with pytest.raises(InputContractError, match=r"b.parquet: its column 'ts' .* holds a value"):
        sources.read_chunk(source, source.chunks[1])
    # The file named is the one whose type none shares, not one of a pair that widens (it named b.parquet).
    pq.write_table(narrow, tmp_path / "b.parquet")
    pq.write_table(wide.set_column(0, "customer_id", pa.array(["x", "y"])), tmp_path / "c.parquet")
    with pytest.raises(InputContractError, match=r"column 'customer_id' is String in .*c.parquet but Int64 in "
                                                 r".*a.parquet; give"):
        resolve(list_inputs([tmp_path], "t"), wanted, "transactions")


def test_a_zero_byte_csv_file_is_one_without_rows(tmp_path):
    """A day's export without sales written as an empty file stopped the run ("empty CSV"): it has no header
    and no rows, as a header-only file has none. A folder of only such files is said to be so."""
    (tmp_path / "in").mkdir()
    pl.DataFrame({"customer_id": ["1", "2"], "amount": ["1.5", "2"]}).write_csv(tmp_path / "in" / "a.csv")
    (tmp_path / "in" / "b.csv").write_bytes(b"")
    (tmp_path / "in" / "c.csv").write_text("customer_id,amount\n")
    # Excel's and PowerShell's empty exports: a byte-order mark, a line end (helper sweep: "empty CSV", exit 3).
    (tmp_path / "in" / "d.csv").write_bytes(b"\xef\xbb\xbf")
    (tmp_path / "in" / "e.csv").write_bytes(b"\r\n")
    wanted = {"customer_id": "--customer-col", "amount": "--amount-col"}
    source = resolve(list_inputs([tmp_path / "in"], "t"), wanted, "transactions")
    assert source.rows == 2 and [c.path.rsplit("/", 1)[-1] for c in source.chunks] == ["a.csv"]
    (tmp_path / "in" / "a.csv").unlink()
    (tmp_path / "in" / "c.csv").unlink()
    with pytest.raises(InputContractError, match=r"holds only empty files \(no bytes, or only a byte-order mark"):
        list_inputs([tmp_path / "in"], "transactions")


def test_a_text_file_of_the_inputs_columns_beside_csv_files_is_refused_not_left_out(tmp_path):
    """A day's export saved as .txt beside the .csv ones was left out without a word (its rows lost, exit 0).
    A skipped file whose first line names the mapped columns stops the run naming it; a README does not."""
    (tmp_path / "in").mkdir()
    frame = pl.DataFrame({"customer_id": ["1", "2"], "amount": ["1.5", "2"]})
    frame.write_csv(tmp_path / "in" / "a.csv")
    (tmp_path / "in" / "README.txt").write_text("Exports, one per day; columns customer id and amount.\n")
    (tmp_path / "in" / "NOTES.txt").write_text("Columns: customer_id, amount (EUR)\n")   # no header: prose
    (tmp_path / "in" / "notes.md").write_text("customer_id,amount\n")   # not a data suffix
    wanted = {"customer_id": "--customer-col", "amount": "--amount-col"}
    assert resolve(list_inputs([tmp_path / "in"], "t"), wanted, "transactions").rows == 2
    frame.write_csv(tmp_path / "in" / "b.txt", separator="\t")
    with pytest.raises(InputContractError, match=r"transactions holds .*b.txt, whose first line names its mapped "
                                                 r"columns \(amount, customer_id\): .*rename it .csv"):
        resolve(list_inputs([tmp_path / "in"], "t"), wanted, "transactions")
    # Beside Parquet files, renamed .csv it would be refused as another format: move it out.
    (tmp_path / "in" / "a.csv").unlink()
    frame.write_parquet(tmp_path / "in" / "a.parquet")
    with pytest.raises(InputContractError, match=r"b.txt, whose first line .*files; move it out$"):
        resolve(list_inputs([tmp_path / "in"], "t"), wanted, "transactions")


def test_a_csv_whose_lines_end_in_a_carriage_return_alone_says_so(tmp_path):
    # Read as one line, its header ran on into the rows: "its first line holds values ... add a header line".
    (tmp_path / "cr.csv").write_bytes(b"customer_id,amount\r1,2.5\r2,3\r")
    with pytest.raises(InputContractError, match=r"cr.csv: its lines end in a carriage return alone .*tr '\\r' '\\n'"):
        list_inputs([tmp_path / "cr.csv"], "transactions")
    (tmp_path / "cr.csv").write_bytes(b"customer_id,amount\r\n1,2.5\r\n2,3\r\n")   # Windows' line ends read
    wanted = {"customer_id": "--customer-col", "amount": "--amount-col"}
    assert resolve(list_inputs([tmp_path / "cr.csv"], "t"), wanted, "transactions").rows == 2


def test_column_names_a_message_lists_are_quoted_where_plain_names_would_mislead(tmp_path):
    # "available: customer id, ts, amount" read as three names, or four.
    (tmp_path / "t.csv").write_text("customer id, ts,amount\n1,2024-01-01,3\n")
    with pytest.raises(InputContractError, match=r"available: 'customer id', ' ts', amount; map the right"):
        resolve(list_inputs([tmp_path / "t.csv"], "t"), {"customer_id": "--customer-col"}, "transactions")


def test_a_utf16_csv_is_told_to_convert_from_utf16(tmp_path):
    # Every non-UTF-8 file was told "iconv -f latin1", which turns UTF-16 into nonsense (helper sweep).
    (tmp_path / "u.csv").write_bytes("customer_id,amount\n1,5\n".encode("utf-16"))
    (tmp_path / "l.csv").write_bytes("customer_id,montant_\xe9\n1,5\n".encode("latin-1"))
    for name, source in (("u.csv", "utf-16"), ("l.csv", "latin1")):
        with pytest.raises(InputContractError, match=rf"iconv -f {source} -t utf-8"):
            resolve(list_inputs([tmp_path / name], "t"), {"customer_id": "--customer-col"}, "transactions")


def _streams(lengths, made, delay=0.0, fail_at=None, closed=None):
    """Generators of (stream, item) pairs, each noting in ``made`` the thread that made it."""
    def one(k, n):
        try:
            for j in range(n):
                if (k, j) == fail_at:
                    raise OSError(f"disk gone at {k}, {j}")
                time.sleep(delay)
                made.append((k, j, threading.get_ident()))
                yield k, j
        finally:
            if closed is not None:
                closed.append(k)
    return (one(k, n) for k, n in enumerate(lengths))


@pytest.mark.parametrize("seed", range(4))
def test_in_order_gives_every_item_of_every_stream_in_order_and_the_caller_makes_some(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 4, 40).tolist()   # empty streams among them
    made = []
    got = []
    for item in in_order(_streams(lengths, made, delay=0.002), ahead=2):
        got.append(item)
        time.sleep(0.001 * rng.random())
    assert got == [(k, j) for k, n in enumerate(lengths) for j in range(n)]
    threads = {t for _, _, t in made}
    # The caller made items while the helper was on others: the two made them side by side.
    assert threading.get_ident() in threads and len(threads) == 2
    assert not any(t.name == "segmint-read" and t.is_alive() for t in threading.enumerate())


def test_in_order_makes_no_more_than_ahead_items_beyond_the_callers():
    made = []
    ahead = in_order(_streams([3] * 10, made), ahead=2)
    assert next(ahead) == (0, 0)
    deadline = time.monotonic() + 5
    while len(made) < 3 and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(0.05)   # time to make one too many, were it allowed
    assert len(made) == 3   # the one the caller holds and two ahead
    assert list(ahead) == [(k, j) for k in range(10) for j in range(3)][1:]


@pytest.mark.parametrize("fail_at", [(0, 0), (3, 1), (7, 2)])
def test_in_order_raises_a_streams_error_where_its_item_would_have_come(fail_at):
    made, closed = [], []
    got = []
    with pytest.raises(OSError, match=f"disk gone at {fail_at[0]}, {fail_at[1]}"):
        for item in in_order(_streams([3] * 10, made, delay=0.001, fail_at=fail_at, closed=closed), ahead=2):
            got.append(item)
    assert got == [(k, j) for k in range(10) for j in range(3)][: 3 * fail_at[0] + fail_at[1]]
    assert not any(t.name == "segmint-read" and t.is_alive() for t in threading.enumerate())
    assert fail_at[0] in closed


def test_in_order_raises_an_error_of_the_streams_themselves_in_place():
    made = []

    def streams():
        yield from _streams([2, 2], made)
        raise InputContractError("cannot read c.parquet")

    got = []
    with pytest.raises(InputContractError, match="c.parquet"):
        for item in in_order(streams(), ahead=2):
            got.append(item)
    assert got == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_in_order_left_early_stops_its_helper_and_closes_every_stream():
    made, closed = [], []
    source = _streams([5] * 6, made, delay=0.001, closed=closed)
    left = in_order(source, ahead=2)
    assert next(left) == (0, 0)
    time.sleep(0.02)
    left.close()
    assert not any(t.name == "segmint-read" and t.is_alive() for t in threading.enumerate())
    assert source.gi_frame is None
    opened = {k for k, _, _ in made}
    assert opened <= set(closed)   # every stream begun was closed: its file released now, not when collected


@pytest.mark.parametrize("where", ["item", "stream"])
def test_in_order_stops_at_once_on_an_interrupt_on_the_callers_thread(where):
    # Ctrl-C (or a signal the CLI raises) lands on the caller's thread, as it makes an item or opens the next
    # stream (a file's footer read): raised there and then, not kept as an error of that stream, to be raised
    # once the helper's earlier items were given.
    caller = threading.get_ident()
    got, raised_at = [], []

    def interrupt():
        raised_at.append(len(got))
        raise KeyboardInterrupt

    def one(k):
        if where == "item" and k and threading.get_ident() == caller:
            interrupt()
        time.sleep(0.02)
        yield k

    def streams():
        for k in range(20):
            if where == "stream" and k and threading.get_ident() == caller:
                interrupt()
            yield one(k)

    with pytest.raises(KeyboardInterrupt):
        for item in in_order(streams(), ahead=2):
            got.append(item)
    assert raised_at == [len(got)]   # nothing given after it
    assert got == list(range(len(got)))
    assert not any(t.name == "segmint-read" and t.is_alive() for t in threading.enumerate())


def test_in_order_makes_items_on_the_helper_with_the_callers_numba_threads():
    # Numba's thread count is per thread: a new thread had the default (every core), not the caller's --threads.
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one Numba thread at most here: the caller's count is a new thread's default")
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        seen = []

        def one():
            time.sleep(0.01)
            seen.append((threading.get_ident(), numba.get_num_threads()))
            yield None

        list(in_order((one() for _ in range(8)), ahead=2))
    finally:
        numba.set_num_threads(before)
    assert len({t for t, _ in seen}) == 2 and {n for _, n in seen} == {1}


def test_a_map_that_fails_stops_its_reading_thread_as_the_error_leaves(small_data, tmp_path, monkeypatch):
    # Not once the error's traceback is dropped: a caller keeping the error (a notebook's last exception) kept the
    # helper parked with its decoded batches and open files.
    from segmint.engine.config import RunConfig
    from segmint.engine.features import build
    from segmint.engine.pipeline import run

    made = []
    line_values = build.line_values

    def fails_on_the_second_chunk(*args, **kwargs):
        made.append(1)
        if len(made) == 2:
            raise InputContractError("the second chunk cannot be read")
        return line_values(*args, **kwargs)

    monkeypatch.setattr(sources, "_BATCH_ROWS", 1_000)   # many batches, so that the helper has some ahead
    monkeypatch.setattr(build, "line_values", fails_on_the_second_chunk)
    with pytest.raises(InputContractError, match="second chunk") as failed:
        run([small_data / "transactions"], tmp_path / "o", RunConfig(buckets=1))
    assert not any(t.name == "segmint-read" and t.is_alive() for t in threading.enumerate())
    assert failed.value is not None and not (tmp_path / "o").exists()
