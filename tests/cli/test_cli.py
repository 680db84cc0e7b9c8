"""The CLI end to end: exit codes, one-line errors, effects checked through the library."""

import hashlib
import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from segmint.cli.app import app
from segmint.engine.cluster.backend import gpu_missing

runner = CliRunner()

NEEDS_NO_GPU = pytest.mark.skipif(gpu_missing() is None, reason="this machine has a usable GPU")


def invoke(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def _one_line_error(result, *needles):
    """Exactly one error line, last on stderr (after any finished stages), no traceback."""
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr + result.stdout
    assert [line for line in lines if line.startswith("error:")] == lines[-1:]
    for needle in needles:
        assert needle in lines[-1]


def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    r = invoke("demo", "--out", out, "--n-customers", 1500, "--k", 4)
    assert r.exit_code == 0, r.stderr
    assert "1,500 customers in 4 segments" in r.stdout
    assert f"outputs in {out / 'run'}" in r.stdout.replace("\n", "")
    assert (out / "run" / "_SUCCESS").exists()
    assert pl.read_parquet(out / "run" / "assignments").height == 1500
    # Every JSON file the demo writes parses with a strict parser (no NaN, no Infinity).
    for path in out.rglob("*.json"):
        json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in {path}"))
    # A second demo at the same place replaces the first.
    assert invoke("demo", "--out", out, "--n-customers", 1000, "--k", 3).exit_code == 0
    assert pl.read_parquet(out / "run" / "assignments").height == 1000


def test_demo_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    r = invoke("demo", "--out", tmp_path / "mine", "--n-customers", 500)
    assert r.exit_code == 4
    _one_line_error(r, "not a segmint demo folder")
    # With --overwrite, a step that refuses (run/ is not a segmint output) left the folder marked a demo's: the
    # next demo, without --overwrite, took it for one.
    (tmp_path / "mine" / "run").mkdir()
    (tmp_path / "mine" / "run" / "notes.txt").write_text("mine")
    r = invoke("demo", "--out", tmp_path / "mine", "--n-customers", 500, "--overwrite")
    assert r.exit_code == 4
    _one_line_error(r, "is not a segmint demo folder and is not empty: the demo writes into a new or empty folder")
    assert not (tmp_path / "mine" / "SEGMINT_DEMO").exists()
    # Nothing written beside the user's files (data/, cohorts/ and report.html were, with --overwrite).
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["run"]
    assert invoke("demo", "--out", tmp_path / "mine", "--n-customers", 500).exit_code == 4
    # A demo folder whose run/ holds a file of the user's: refused before its data/ is replaced, not after.
    (tmp_path / "mine" / "SEGMINT_DEMO").write_text("")
    r = invoke("demo", "--out", tmp_path / "mine", "--n-customers", 500)
    assert r.exit_code == 4 and "run is not a segmint output" in r.stderr
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["SEGMINT_DEMO", "run"]
    # A URI was the local folder "s3:/b/x", written into, then refused with exit 3.
    r = invoke("demo", "--out", "s3://bucket/demo", "--n-customers", 500)
    assert r.exit_code == 2 and not Path("s3:").exists()
    _one_line_error(r, "demo's --out is local, not s3://bucket/demo")


def test_a_demo_stopped_in_an_empty_folder_of_the_users_can_be_run_again_there(tmp_path, monkeypatch):
    from segmint.engine import demo

    (tmp_path / "mine").mkdir()
    child = demo._child

    def stopped(*args):
        if args[0] == "cohorts":
            raise KeyboardInterrupt   # as a Ctrl-C after the data was written
        child(*args)

    monkeypatch.setattr(demo, "_child", stopped)
    r = invoke("demo", "--out", tmp_path / "mine", "--n-customers", 500, "--overwrite")
    assert r.exit_code == 130 and (tmp_path / "mine" / "data").exists()
    monkeypatch.undo()
    # It was marked a demo's only at the end: every later demo there was refused ("not empty"), --overwrite or not.
    assert invoke("demo", "--out", tmp_path / "mine", "--n-customers", 500, "--k", 3).exit_code == 0
    (tmp_path / "f").write_text("x")
    r = invoke("demo", "--out", tmp_path / "f", "--n-customers", 500)
    assert r.exit_code == 4
    _one_line_error(r, "is a file: the demo writes into a new or empty folder")


def test_generate_same_seed_same_bytes(tmp_path):
    def digest(d):
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*.parquet"))}

    assert invoke("generate", "--out", tmp_path / "a", "--n-customers", 800, "--seed", 5).exit_code == 0
    # Again in a child process whose str hashes differ from this one's (PYTHONHASHSEED).
    import os
    import subprocess
    import sys

    seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"
    subprocess.run([sys.executable, "-m", "segmint.cli.app", "generate", "--out", str(tmp_path / "b"),
                    "--n-customers", "800", "--seed", "5"], check=True, capture_output=True,
                   env={**os.environ, "PYTHONHASHSEED": seed})
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert invoke("generate", "--out", tmp_path / "c", "--n-customers", 800, "--seed", 6).exit_code == 0
    assert digest(tmp_path / "a") != digest(tmp_path / "c")
    personas = pl.read_parquet(tmp_path / "a" / "personas.parquet")
    assert personas.height == 800 and personas["persona"].n_unique() >= 5
    tx = pl.read_parquet(tmp_path / "a" / "transactions")
    assert tx.columns == ["customer_id", "ts", "amount", "order_id", "channel", "category"]
    assert (tx["amount"] < 0).any()


def test_run_features_validate_assign(small_data, tmp_path):
    tx = small_data / "transactions"
    r = invoke("run", tx, "--out", tmp_path / "run", "--k", "auto", "--seed", 1)
    assert r.exit_code == 0, r.stderr
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    assert manifest["k_scan"] and manifest["k"] in [row["k"] for row in manifest["k_scan"]]

    r = invoke("features", tx, "--out", tmp_path / "f")
    assert r.exit_code == 0, r.stderr
    feats = pl.read_parquet(tmp_path / "f" / "features")
    assert feats.height == manifest["customers"] and "segment" not in feats.columns

    r = invoke("validate", tx)
    assert r.exit_code == 0 and "rows in" in r.stdout
    assert not list(tmp_path.glob(".*staging*"))
    # --pseudonymize-ids, which every command reading transactions takes, was no option of validate (exit 2).
    assert invoke("validate", tx, "--pseudonymize-ids", env={"SEGMINT_ID_KEY": ""}).exit_code == 2
    r = invoke("validate", tx, "--pseudonymize-ids", env={"SEGMINT_ID_KEY": "k" * 32})
    assert r.exit_code == 0 and r.stdout == invoke("validate", tx).stdout

    r = invoke("assign", tmp_path / "run", tx, "--out", tmp_path / "scored")
    assert r.exit_code == 0, r.stderr
    assert pl.read_parquet(tmp_path / "scored" / "assignments").height == manifest["customers"]


def test_json_logs_are_json_lines(small_data, tmp_path):
    r = invoke("run", small_data / "transactions", "--out", tmp_path / "o", "--k", 3, "--json", "--buckets", 2)
    assert r.exit_code == 0
    events = [json.loads(line) for line in r.stderr.splitlines()]
    assert {e["event"] for e in events} == {"stage_start", "stage_progress", "stage_done", "done"}
    done = events[-1]
    assert done["event"] == "done" and done["status"] == "succeeded" and done["seconds"] > 0
    assert json.loads(Path(done["run_json"]).read_text())["run_id"] == done["run_id"]
    assert r.stdout == ""
    # Errors are events too, with the exit code.
    r = invoke("run", small_data / "transactions", "--out", tmp_path / "o", "--json")
    assert r.exit_code == 4
    error = json.loads(r.stderr.strip().splitlines()[-1])
    assert error["event"] == "error" and error["exit_code"] == 4 and "--overwrite" in error["message"]


# One CSV row per case, with the reason it must be rejected for: with --as-of 2024-01-04 (first) and
# without (second: the as-of is then the latest valid time, 2024-01-05, and rows after the moment the
# run started are future_timestamp instead). None: the row is used.
DIRTY_ROWS = [
    ("1,2024-01-01,5", None, None),
    (",2024-01-02,3", "null_customer_id", "null_customer_id"),
    ("2,,4", "null_timestamp", "null_timestamp"),
    ("2,not a date,4", "unparseable_timestamp", "unparseable_timestamp"),
    ("2,2024-01-02,abc", "unparseable_amount", "unparseable_amount"),
    ("3,2024-01-03,", "non_finite_amount", "non_finite_amount"),
    ("3,2024-01-03,inf", "non_finite_amount", "non_finite_amount"),
    ("9,0001-01-01,4", "ancient_timestamp", "ancient_timestamp"),    # placeholders for an unknown date
    ("9,1900-12-31,4", "ancient_timestamp", "ancient_timestamp"),
    ("9,1901-01-01,4", None, None),
    ("3,2024-01-04,9", None, None),
    ("3,2024-01-04,9", "duplicate", "duplicate"),              # --dedupe-on cust,when,value
    ("4,2024-01-05,2", "after_as_of", None),
    ("5,2999-01-01,2", "after_as_of", "future_timestamp"),
    ("6,2024-01-02,1e308", "amount_overflow", "amount_overflow"),  # the customer's total is not a float
    ("6,2024-01-03,1e308", "amount_overflow", "amount_overflow"),
    ("7,2024-01-02,-5", "returns_only", "returns_only"),      # a customer without a purchase
    ("8,2024-01-02,7", None, None),
]


def test_csv_with_every_reject_reason_is_quarantined(tmp_path):
    from segmint.engine.io.clean import REASONS

    (tmp_path / "dirty.csv").write_text("cust,when,value\n" + "".join(line + "\n" for line, _, _ in DIRTY_ROWS))
    # Every reason is covered by the two runs: after_as_of needs --as-of, future_timestamp needs none.
    assert {r for _, *reasons in DIRTY_ROWS for r in reasons} - {None} == set(REASONS)
    for which, as_of in ((1, ["--as-of", "2024-01-04"]), (2, [])):
        out = tmp_path / f"o{which}"
        r = invoke("run", tmp_path / "dirty.csv", "--out", out, "--customer-col", "cust", "--time-col", "when",
                   "--time-format", "%Y-%m-%d", "--amount-col", "value", "--k", 2, *as_of,
                   "--dedupe-on", "cust,when,value", "--max-reject-share", 0.9)
        assert r.exit_code == 0, r.stderr
        want = sorted(((line, reasons[which - 1]) for line, *reasons in DIRTY_ROWS if reasons[which - 1]),
                      key=str)
        rejects = pl.read_parquet(out / "rejects")
        assert rejects.columns == ["cust", "when", "value", "reason"]
        got = sorted(((",".join(v or "" for v in row[:3]), row[3]) for row in rejects.iter_rows()), key=str)
        assert got == want
        rows = json.loads((out / "run.json").read_text())["rows"]
        counts = rows["rejected_by_reason"]
        # Sums of the rows' finite amounts; none for rows without one (they read 0.0: rows that carried nothing).
        amounts = rows["rejected_amount_by_reason"]
        assert amounts["non_finite_amount"] is None and amounts["amount_overflow"] is None
        assert amounts["null_customer_id"] == 3.0 and amounts["ancient_timestamp"] == 8.0
        assert {k: n for k, n in counts.items() if n} == {reason: [w for _, w in want].count(reason)
                                                          for reason in {w for _, w in want}}
        assert f"{len(want)} rejected" in r.stdout
        # The report and validate say the same of them (the report exited 1 on a missing sum; validate said 0.00).
        r = invoke("report", out, "--out", tmp_path / f"r{which}.html")
        assert r.exit_code == 0, r.stderr
        page = (tmp_path / f"r{which}.html").read_text()
        assert "rejected: non_finite_amount" in page and "rejected: amount_overflow" in page
        r = invoke("validate", tmp_path / "dirty.csv", "--customer-col", "cust", "--time-col", "when",
                   "--time-format", "%Y-%m-%d", "--amount-col", "value", *as_of, "--dedupe-on", "cust,when,value",
                   "--max-reject-share", 0.9)
        assert r.exit_code == 0, r.stderr
        line = next(x for x in r.stdout.splitlines() if "rejected non_finite_amount" in x)
        assert line.rsplit("amount", 1)[1].strip().startswith("n/a")


@pytest.mark.parametrize(("args", "code", "needle"), [
    (["--k", "0"], 2, "(--k) must be a positive integer or 'auto', got '0'"),
    (["--k", "many"], 2, "(--k) must be a positive integer or 'auto'"),
    (["--micro-k", "1.5"], 2, "(--micro-k) must be a positive integer or 'auto', got '1.5'"),
    (["--device", "tpu"], 2, "--device must be auto, cpu or gpu"),
    pytest.param(["--device", "gpu"], 2, "no usable GPU", marks=NEEDS_NO_GPU),
    (["--as-of", "soon"], 2, "--as-of 'soon'"),
    (["--dedupe-on", "nope"], 2, "not mapped"),
    (["--time-col", "when"], 3, "column 'when' (--time-col) not found"),
    (["--k", "100000"], 2, "larger than the number of customers"),
])
def test_bad_options_exit_with_one_line(small_data, tmp_path, args, code, needle):
    r = invoke("run", small_data / "transactions", "--out", tmp_path / "o", *args)
    assert r.exit_code == code, r.stderr
    _one_line_error(r, needle)
    assert not (tmp_path / "o").exists()


def test_assign_in_buckets(small_data, small_run, tmp_path):
    r = invoke("assign", small_run, small_data / "transactions", "--out", tmp_path / "o", "--buckets", "3")
    assert r.exit_code == 0, r.stderr
    manifest = json.loads((tmp_path / "o" / "run.json").read_text())
    assert manifest["buckets"] > 1 and manifest["customers"] == 3000
    assert pl.read_parquet(tmp_path / "o" / "assignments").height == 3000


def test_lines_on_a_channel_without_a_share_are_counted_and_said(small_data, small_run, tmp_path):
    # A channel the model never saw (a new kiosk) counted in no share, and neither run.json nor the summary
    # said so: customers buying only there had every share 0 and were placed as customers who buy nowhere.
    lines = pl.read_parquet(small_data / "transactions")
    kiosk = (pl.col("customer_id") % 5 == 0) & (pl.col("channel") == lines["channel"].mode()[0])
    lines.with_columns(channel=pl.when(kiosk).then(pl.lit("kiosk")).otherwise("channel")).write_parquet(
        tmp_path / "batch.parquet")
    r = invoke("assign", small_run, tmp_path / "batch.parquet", "--out", tmp_path / "o")
    assert r.exit_code == 0, r.stderr
    rows = json.loads((tmp_path / "o" / "run.json").read_text())["rows"]
    assert rows["rejected"] == 0
    assert rows["channels_without_a_share"] == {"kiosk": lines.filter(kiosk).height}
    assert f"kiosk ({lines.filter(kiosk).height:,} lines); the model was trained without them" in r.stdout
    # The run that trained it had every channel a share: nothing to say.
    assert "channels_without_a_share" not in json.loads((small_run / "run.json").read_text())["rows"]


def test_assign_of_a_batch_that_leaves_segments_empty_reports_them_without_rates(small_data, small_run, tmp_path):
    # Three customers fill at most three of the model's six segments. The summary printed after the commit
    # formatted the empty ones' missing means and exited 1 over a written output; their rates read 0.0.
    lines = pl.read_parquet(small_data / "transactions")
    lines.filter(pl.col("customer_id").is_in(lines["customer_id"].unique().sort()[:3].implode())).write_parquet(
        tmp_path / "three.parquet")
    r = invoke("assign", small_run, tmp_path / "three.parquet", "--out", tmp_path / "o")
    assert r.exit_code == 0, r.stderr
    profiles = pl.read_parquet(tmp_path / "o" / "profiles.parquet")
    empty = profiles.filter(pl.col("customers") == 0)
    assert empty.height >= 3
    for column in ("aov_kpi", "orders_per_customer", "repurchase_rate", "new_rate", "lapsed_rate"):
        assert empty[column].null_count() == empty.height, column
        assert profiles.filter(pl.col("customers") > 0)[column].null_count() == 0, column
    assert json.loads((tmp_path / "o" / "profiles.json").read_text(), parse_constant=pytest.fail)
    r = invoke("report", tmp_path / "o", "--out", tmp_path / "report.html")
    assert r.exit_code == 0, r.stderr
    assert "n/a" in (tmp_path / "report.html").read_text()


@pytest.mark.parametrize("refund", [110.0, 500.0])
def test_no_revenue_share_where_refunds_leave_no_revenue(tmp_path, refund):
    # Net revenue 0: every share read 0.0%. Net revenue -340: +150 read -44% of revenue and -490 read 144%.
    # (The summary prints "-" for them: formatting a missing share would exit 1 over a written output.)
    import datetime as dt

    d = dt.datetime
    pl.DataFrame({"customer_id": [1, 2, 2, 3], "ts": [d(2025, 1, 1), d(2025, 1, 5), d(2025, 2, 1), d(2025, 1, 3)],
                  "amount": [100.0, 10.0, -refund, 50.0 if refund == 500.0 else 0.0],
                  "order_id": [1, 2, 3, 4]}).write_parquet(tmp_path / "t.parquet")
    r = invoke("run", tmp_path / "t.parquet", "--out", tmp_path / "o", "--k", "2")
    assert r.exit_code == 0, r.stderr
    profiles = pl.read_parquet(tmp_path / "o" / "profiles.parquet")
    assert profiles["revenue"].sum() <= 0 and profiles["revenue_share"].null_count() == 2
    assert profiles.schema["revenue_share"] == pl.Float64
    assert json.loads((tmp_path / "o" / "profiles.json").read_text(), parse_constant=pytest.fail)
    r = invoke("report", tmp_path / "o", "--out", tmp_path / "report.html")
    assert r.exit_code == 0, r.stderr
    page = (tmp_path / "report.html").read_text()
    assert "n/a of revenue" in page and "there is no revenue to share out" in page


def test_summary_lines_are_plain_text_and_assign_names_its_as_of(small_data, small_run, tmp_path):
    # Rich read "[clv]" as markup and printed "disable CLV ( enabled = false)"; assign measured a batch at its
    # own latest purchase without a word, so one lapsed customer came back "New".
    lines = pl.read_parquet(small_data / "transactions")
    one = lines.filter(pl.col("customer_id") == lines["customer_id"].min())
    one.write_parquet(tmp_path / "one.parquet")
    r = invoke("run", tmp_path / "one.parquet", "--out", tmp_path / "o", "--k", "1")
    assert r.exit_code == 0, r.stderr
    assert "[clv] enabled = false" in " ".join(r.stdout.split())
    r = invoke("assign", small_run, tmp_path / "one.parquet", "--out", tmp_path / "a")
    assert r.exit_code == 0, r.stderr
    trained = json.loads((small_run / "run.json").read_text())["as_of"]
    assert f"(the latest valid time in the batch); the model was trained as of {trained}" in " ".join(r.stdout.split())
    r = invoke("assign", small_run, small_data / "transactions", "--out", tmp_path / "b", "--as-of", trained[:10])
    assert r.exit_code == 0, r.stderr
    assert "the model was trained as of" in r.stdout     # a given date that is not the model's instant
    r = invoke("assign", small_run, small_data / "transactions", "--out", tmp_path / "c")
    assert r.exit_code == 0, r.stderr
    assert "the model was trained as of" not in r.stdout


@NEEDS_NO_GPU
def test_assign_on_gpu_without_one_exits_2(small_data, small_run, tmp_path):
    r = invoke("assign", small_run, small_data / "transactions", "--out", tmp_path / "o", "--device", "gpu")
    assert r.exit_code == 2, r.stderr
    _one_line_error(r, "--device gpu: no usable GPU: Faiss sees no GPU")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("flags", "needle"), [
    (["--order-col", "customer_id"], "'customer_id' is mapped to both --customer-col and --order-col"),
    (["--customer-col", "order_id"], "'order_id' is mapped to both --customer-col and --order-col"),
    (["--category-col", "channel"], "leave one out: --channel-col '' or --category-col ''"),
    (["--amount-col", "", "--quantity-col", "amount", "--price-col", "amount"],
     "both --quantity-col and --price-col"),
    # Sessions were each customer's distinct event types.
    (["--events", "EVENTS", "--event-session-col", "event_type"],
     "'event_type' is mapped to both --event-type-col and --event-session-col"),
])
def test_one_column_in_two_roles_is_refused(small_data, tmp_path, flags, needle):
    # Read as both, it made every customer's orders one line each, or squared the amounts, with exit 0.
    flags = [str(small_data / "events") if f == "EVENTS" else f for f in flags]
    r = invoke("run", small_data / "transactions", "--out", tmp_path / "o", *flags)
    assert r.exit_code == 2, r.stderr
    _one_line_error(r, needle, "map each role to its own column")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flag", ["--customer-col", "--time-col"])
def test_a_required_column_left_out_says_so(small_data, tmp_path, flag):
    # It read "columns.customer must be a string, got None", naming neither what was wrong nor the fix.
    r = invoke("validate", small_data / "transactions", flag, "")
    assert r.exit_code == 2, r.stderr
    _one_line_error(r, "cannot be left out ('' or none): segmint needs it")


def test_report_abtest_and_generate_refuse_uris_they_would_write_as_local_files(small_run, tmp_path, monkeypatch):
    # Path("s3://b/x") is the local "s3:/b/x": the page and the groups were written there, with exit 0; generate
    # failed with exit 1 (an AttributeError).
    monkeypatch.chdir(tmp_path)
    for args in (["report", small_run, "--out", "s3://b/r.html"], ["report", "s3://b/run", "--out", "r.html"],
                 ["generate", "--out", "s3://b/data", "--n-customers", 10],
                 ["abtest", "split", small_run, "--out", "s3://b/g.parquet"],
                 ["abtest", "evaluate", "--assignments", "s3://b/g.parquet", "--outcomes", "o.csv",
                  "--cost-per-contact", 1, "--out", "ab"],
                 ["abtest", "evaluate", "--assignments", "g.parquet", "--outcomes", "o.csv",
                  "--cost-per-contact", 1, "--out", "s3://b/ab"]):
        r = invoke(*args)
        assert r.exit_code == 2, (args, r.stderr)
        _one_line_error(r, "s3://b/")
    assert list(tmp_path.iterdir()) == []


def test_contract_violations_exit_3(tmp_path):
    (tmp_path / "corrupt.parquet").write_bytes(b"PAR1 not really parquet")
    r = invoke("validate", tmp_path / "corrupt.parquet")
    assert r.exit_code == 3
    _one_line_error(r, "cannot read")

    pl.DataFrame({"customer_id": [], "ts": [], "amount": []},
                 schema={"customer_id": pl.Int64, "ts": pl.Datetime, "amount": pl.Float64}
                 ).write_parquet(tmp_path / "empty.parquet")
    r = invoke("validate", tmp_path / "empty.parquet")
    assert r.exit_code == 3
    _one_line_error(r, "has no rows")

    pl.DataFrame({"customer_id": [1], "ts": ["2024-01-01"], "amount": ["12"]}).write_parquet(tmp_path / "typed.parquet")
    r = invoke("validate", tmp_path / "typed.parquet")
    assert r.exit_code == 3
    _one_line_error(r, "'amount'", "needs a number")

    r = invoke("validate", tmp_path / "missing" / "*.parquet")
    assert r.exit_code == 3
    _one_line_error(r, "not found")


def test_output_exists_exits_4_and_overwrite_replaces(small_data, tmp_path):
    out = tmp_path / "o"
    assert invoke("run", small_data / "transactions", "--out", out, "--k", 2).exit_code == 0
    r = invoke("run", small_data / "transactions", "--out", out, "--k", 3)
    assert r.exit_code == 4
    _one_line_error(r, "--overwrite")
    assert json.loads((out / "run.json").read_text())["k"] == 2
    r = invoke("run", small_data / "transactions", "--out", out, "--k", 3, "--overwrite")
    assert r.exit_code == 0, r.stderr
    assert json.loads((out / "run.json").read_text())["k"] == 3
    assert pl.read_parquet(out / "assignments")["segment"].n_unique() == 3
    assert [p.name for p in tmp_path.iterdir()] == ["o"]


def test_overwrite_keeps_a_run_that_holds_files_segmint_did_not_write(small_data, tmp_path):
    # A report or notes saved into a run folder were deleted by the next --overwrite, with exit 0.
    out = tmp_path / "o"
    assert invoke("run", small_data / "transactions", "--out", out, "--k", 2).exit_code == 0
    (out / "assignments" / "notes.txt").write_text("keep")
    r = invoke("run", small_data / "transactions", "--out", out, "--k", 3, "--overwrite")
    assert r.exit_code == 4
    _one_line_error(r, "1 file(s) segmint did not write", "notes.txt")
    assert (out / "assignments" / "notes.txt").read_text() == "keep"
    assert json.loads((out / "run.json").read_text())["k"] == 2
    (out / "assignments" / "notes.txt").unlink()
    (out / "_manifest.json").write_text("{not json")
    r = invoke("run", small_data / "transactions", "--out", out, "--k", 3, "--overwrite")
    assert r.exit_code == 4
    _one_line_error(r, "_manifest.json segmint cannot read")


def test_debug_shows_a_traceback_and_otherwise_one_line(tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "segmint.cli.app", "validate", str(tmp_path / "nothing.parquet")]
    plain = subprocess.run(cmd, capture_output=True, text=True)
    debug = subprocess.run(cmd[:3] + ["--debug"] + cmd[3:], capture_output=True, text=True)
    assert plain.returncode == 3 and "Traceback" not in plain.stderr and plain.stderr.startswith("error: input not")
    # The traceback, then the same line and exit code: a script's handling of a refusal is the same under --debug.
    assert debug.returncode == 3 and "Traceback" in debug.stderr and "InputContractError" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == plain.stderr.strip()


def test_config_file_sets_defaults_and_flags_override(small_data, tmp_path):
    (tmp_path / "segmint.toml").write_text('[cluster]\nk = 3\nseed = 4\n[run]\nas_of = "2026-06-30"\n')
    r = invoke("run", small_data / "transactions", "--out", tmp_path / "o", "--config", tmp_path / "segmint.toml")
    assert r.exit_code == 0, r.stderr
    m = json.loads((tmp_path / "o" / "run.json").read_text())
    assert m["k"] == 3 and m["seed"] == 4 and m["as_of"].startswith("2026-06-30T23:59:59")
    r = invoke("run", small_data / "transactions", "--out", tmp_path / "o2", "--config",
               tmp_path / "segmint.toml", "--k", 2)
    assert json.loads((tmp_path / "o2" / "run.json").read_text())["k"] == 2
    (tmp_path / "bad.toml").write_text("[clusterr]\nk = 3\n")
    r = invoke("run", small_data / "transactions", "--out", tmp_path / "o3", "--config", tmp_path / "bad.toml")
    assert r.exit_code == 2
    _one_line_error(r, "unknown section")


def test_quantity_and_price_in_a_config_and_an_amount_flag_over_them(tmp_path):
    # [columns] quantity and price were refused beside the default amount column the file did not name, and
    # --amount-col did not override them ("give either --amount-col or --quantity-col ..., not both"): exit 2.
    from segmint.cli._options import build_config
    from segmint.engine.errors import ConfigError

    (tmp_path / "segmint.toml").write_text('[columns]\nquantity = "q"\nprice = "p"\n')
    cfg = build_config(tmp_path / "segmint.toml")
    assert (cfg.columns.amount, cfg.columns.quantity, cfg.columns.price) == (None, "q", "p")
    cfg = build_config(tmp_path / "segmint.toml", columns={"amount": "paid"})
    assert (cfg.columns.amount, cfg.columns.quantity, cfg.columns.price) == ("paid", None, None)
    # An [events] section without paths said "EventSource.__init__() missing 1 required keyword-only argument".
    (tmp_path / "events.toml").write_text('[events]\ncustomer = "cid"\n')
    with pytest.raises(ConfigError, match=r"\[events\] needs paths = "):
        build_config(tmp_path / "events.toml")


def test_clv_command_writes_params_and_table(cdnow_sample, tmp_path):
    r = invoke("clv", cdnow_sample, "--out", tmp_path / "clv", "--time-col", "date", "--time-format", "%Y%m%d",
               "--amount-col", "dollars", "--as-of", "1997-09-30", "--time-unit", "week", "--horizon", 39)
    assert r.exit_code == 0, r.stderr
    assert "r=0.2426" in r.stdout.replace("\n", "")
    params = json.loads((tmp_path / "clv" / "clv_params.json").read_text())
    assert params["time_unit"] == "week" and params["horizon"] == 39
    assert pl.read_parquet(tmp_path / "clv" / "rejects")["reason"].unique().to_list() == ["after_as_of"]
    r = invoke("clv", cdnow_sample, "--out", tmp_path / "c2", "--time-unit", "fortnight",
               "--time-col", "date", "--time-format", "%Y%m%d", "--amount-col", "dollars")
    assert r.exit_code == 2
    _one_line_error(r, "--time-unit must be day or week")


def test_cohorts_and_abtest_commands(small_data, small_run, tmp_path):
    r = invoke("cohorts", small_data / "transactions", "--out", tmp_path / "coh")
    assert r.exit_code == 0, r.stderr
    assert pl.read_parquet(tmp_path / "coh" / "cohorts.parquet")["retention"].is_between(0, 1).all()

    r = invoke("abtest", "split", small_run, "--ratio", 0.2, "--salt", "s1", "--out", tmp_path / "g.parquet")
    assert r.exit_code == 0, r.stderr
    groups = pl.read_parquet(tmp_path / "g.parquet")
    groups.filter(pl.col("group") == "treatment").head(50).select(
        "customer_id", pl.lit(1).alias("converted"), pl.lit(30.0).alias("revenue")).write_csv(tmp_path / "o.csv")
    r = invoke("abtest", "evaluate", "--assignments", tmp_path / "g.parquet", "--outcomes", tmp_path / "o.csv",
               "--cost-per-contact", 0.25, "--out", tmp_path / "ab")
    assert r.exit_code == 0, r.stderr
    assert "all" in r.stdout
    assert pl.read_parquet(tmp_path / "ab" / "abtest.parquet").height == groups["segment"].n_unique() + 1

    pl.DataFrame({"customer_id": [-5], "converted": [1]}).write_csv(tmp_path / "bad.csv")
    r = invoke("abtest", "evaluate", "--assignments", tmp_path / "g.parquet", "--outcomes", tmp_path / "bad.csv",
               "--cost-per-contact", 0.25, "--out", tmp_path / "ab2")
    assert r.exit_code == 3
    _one_line_error(r, "1 of the 1 customer(s) in the outcomes file are not in the assignments")
    assert "-5" not in r.stderr   # no id: personal data, and a raw one where the groups hold pseudonyms


def test_run_with_events_and_customers_tables(small_data, tmp_path):
    r = invoke("run", small_data / "transactions", "--out", tmp_path / "o", "--k", 4,
               "--events", small_data / "events", "--customers", small_data / "customers.parquet",
               "--customer-attrs", "region,age_band")
    assert r.exit_code == 0, r.stderr
    out = tmp_path / "o"
    a = pl.read_parquet(out / "assignments")
    assert {"funnel_stage", "sessions", "page_views", "days_since_last_visit", "conversion_rate",
            "region", "age_band"} <= set(a.columns)
    assert set(a["funnel_stage"].cast(pl.String)) <= {"purchase", "repurchase"}
    funnel = pl.read_parquet(out / "funnel")
    assert set(funnel["funnel_stage"].cast(pl.String)) == {"awareness", "consideration", "purchase", "repurchase"}
    assert funnel.height > a.height  # prospects who never bought are in the funnel, not in segments
    manifest = json.loads((out / "run.json").read_text())
    assert sum(manifest["events"]["funnel"].values()) == funnel.height
    assert manifest["customers_table"]["without_a_row"] == 0
    mix = pl.read_parquet(out / "segment_mix.parquet")
    shares = mix.filter(pl.col("value").is_not_null()).group_by("segment", "attribute").agg(pl.col("share").sum())
    assert ((shares["share"] - 1).abs() < 1e-9).all()
    assert (out / "event_rejects" / "part-00000.parquet").exists()
    assert "conversion_rate_mean" in pl.read_parquet(out / "profiles.parquet").columns


@pytest.mark.parametrize("buckets", [1, 3])
def test_customers_table_rows_left_out_are_counted(small_data, tmp_path, buckets):
    # Rows of the customers table that join no customer were dropped without a count: a CRM export of
    # 3,000 customers joined to 2,990 said nothing of the 10 others.
    table = pl.read_parquet(small_data / "customers.parquet")
    extra = pl.DataFrame({"customer_id": [10**9 + 1, 10**9 + 2, None], "region": ["n", "s", "e"]},
                         schema={"customer_id": table.schema["customer_id"], "region": table.schema["region"]})
    table = pl.concat([table.select("customer_id", "region"), extra])
    table.write_parquet(tmp_path / "customers.parquet")
    r = invoke("run", small_data / "transactions", "--out", tmp_path / "o", "--k", 3, "--buckets", buckets,
               "--customers", tmp_path / "customers.parquet", "--customer-attrs", "region")
    assert r.exit_code == 0, r.stderr
    ids = set(pl.read_parquet(tmp_path / "o" / "assignments")["customer_id"].to_list())
    given = table["customer_id"].drop_nulls().to_list()
    left = json.loads((tmp_path / "o" / "run.json").read_text())["customers_table"]["rows_left_out"]
    assert left == {"no_customer_id": 1, "no_usable_transaction": sum(i not in ids for i in given)}
    assert left["no_usable_transaction"] >= 2


def test_side_table_errors_are_one_line(small_data, tmp_path):
    r = invoke("run", small_data / "transactions", "--out", tmp_path / "o", "--customers",
               small_data / "customers.parquet")
    assert r.exit_code == 2
    _one_line_error(r, "--customer-attrs")
    r = invoke("run", small_data / "transactions", "--out", tmp_path / "o", "--events", small_data / "events",
               "--event-type-col", "kind")
    assert r.exit_code == 3
    _one_line_error(r, "'kind' (--event-type-col) not found")


@pytest.mark.parametrize(("args", "needle"), [
    (["--buckets", "0"], "--buckets must be >= 1"),
    (["--memory-limit", "lots"], "is not a size"),
    (["--memory-limit", "10KB"], "below what segmint needs"),
    (["--memory-limit", "1MB"], "below what segmint needs"),   # once said "give at least 1MB"
    (["--memory-limit", "50MB"], "below what segmint needs"),
    (["--max-reject-share", "2"], "--max-reject-share must be in [0, 1]"),
])
def test_memory_options_are_checked(small_data, tmp_path, args, needle):
    r = invoke("run", small_data / "transactions", "--out", tmp_path / "o", *args)
    assert r.exit_code == 2
    _one_line_error(r, needle)


def test_bench_rejects_unknown_scenario():
    r = invoke("bench", "--scenario", "XL")
    assert r.exit_code == 2
    _one_line_error(r, "--scenario must be one of S, M, L")


def test_threads_option_is_checked():
    r = invoke("--threads", "0", "validate", "x.parquet")
    assert r.exit_code == 2
    _one_line_error(r, "--threads")


def test_assign_takes_a_customers_table_and_refuses_events(tmp_path):
    from segmint.engine.synth import generate

    generate(tmp_path / "d", customers=400, seed=2)
    side = ["--customers", str(tmp_path / "d" / "customers.parquet"), "--customer-attrs", "region"]
    ran = CliRunner().invoke(app, ["run", str(tmp_path / "d" / "transactions"), "--out", str(tmp_path / "r"),
                                   "--k", "3", *side, "--cluster-attrs", "region"])
    assert ran.exit_code == 0, ran.output
    scored = CliRunner().invoke(app, ["assign", str(tmp_path / "r"), str(tmp_path / "d" / "transactions"),
                                      "--out", str(tmp_path / "s"), *side])
    assert scored.exit_code == 0, scored.output
    refused = CliRunner().invoke(app, ["assign", str(tmp_path / "r"), str(tmp_path / "d" / "transactions"),
                                       "--out", str(tmp_path / "t"), *side, "--events", str(tmp_path / "d" / "events")])
    assert refused.exit_code == 2 and "assign reads an events table only for a model that clusters on" in refused.output
    assert not (tmp_path / "t").exists()


def test_a_model_clustering_on_event_features_scores_with_the_events(small_data, tmp_path):
    # run took event features for clustering with exit 0, and its model could be used nowhere: assign said
    # they were "not available" and refused --events; predict said the same.
    import segmint

    tx, events = small_data / "transactions", ["--events", str(small_data / "events")]
    ran = invoke("run", tx, "--out", tmp_path / "r", "--k", 3, *events, "--event-session-col", "",
                 "--config", _config(tmp_path))
    assert ran.exit_code == 0, ran.stderr
    # The events are read as the run read its own (no session column), whatever --event-* options are given:
    # with the default session column, 26% of customers' sessions and 2.7% of segments differed, exit 0.
    scored = invoke("assign", tmp_path / "r", tx, "--out", tmp_path / "s", *events)
    assert scored.exit_code == 0, scored.stderr
    run_ids = pl.read_parquet(tmp_path / "r" / "assignments").sort("customer_id")
    assigned = pl.read_parquet(tmp_path / "s" / "assignments").sort("customer_id")
    assert assigned["segment"].to_list() == run_ids["segment"].to_list()
    # A batch that calls a column otherwise names it; the run's (absent) session column still holds.
    pl.read_parquet(small_data / "events").rename({"customer_id": "uid"}).write_parquet(tmp_path / "ev.parquet")
    renamed = invoke("assign", tmp_path / "r", tx, "--out", tmp_path / "u", "--events", tmp_path / "ev.parquet",
                     "--event-customer-col", "uid")
    assert renamed.exit_code == 0, renamed.stderr
    again = pl.read_parquet(tmp_path / "u" / "assignments").sort("customer_id")
    assert again["segment"].to_list() == run_ids["segment"].to_list()
    without = invoke("assign", tmp_path / "r", tx, "--out", tmp_path / "t")
    assert without.exit_code == 2
    assert "clusters on the event feature(s) ['sessions', 'conversion_rate']" in without.stderr
    with pytest.raises(segmint.ConfigError, match="score with segmint assign --events"):
        segmint.Model.load(tmp_path / "r").predict(pl.read_parquet(tx))


def _config(folder: Path) -> Path:
    path = folder / "segmint.toml"
    path.write_text('[features]\ncluster_features = ["recency_days", "frequency", "sessions", "conversion_rate"]\n')
    return path


def _plain_migration(old_run: Path, new_run: Path) -> dict[tuple[int | None, int | None], int]:
    """Customers per (old segment, new segment) from a full join of the two runs' assignments
    (None: not in that run)."""
    old = pl.read_parquet(old_run / "assignments").select("customer_id", old="segment")
    new = pl.read_parquet(new_run / "assignments").select("customer_id", new="segment")
    both = old.join(new, on="customer_id", how="full", coalesce=True)
    return {(o, n): c for o, n, c in both.group_by("old", "new").len().iter_rows()}


def test_compare_and_report_compare_count_migrations_like_a_plain_join(two_runs, tmp_path):
    import re

    root, gone, newcomers = two_runs
    plain = _plain_migration(root / "a", root / "b")
    assert sum(c for (o, n), c in plain.items() if n is None) == gone.len()
    assert sum(c for (o, n), c in plain.items() if o is None) == newcomers.len()

    r = invoke("compare", root / "a", root / "b", "--out", tmp_path / "cmp")
    assert r.exit_code == 0, r.stderr
    moves = pl.read_parquet(tmp_path / "cmp" / "migration.parquet")
    assert {(o, n): c for o, n, c in moves.select("old_segment", "new_segment", "customers").iter_rows()} == plain
    changed = sum(c for (o, n), c in plain.items() if o is not None and n is not None and o != n)
    assert changed > 0
    assert f"{changed:,} customers changed segment" in r.stdout.replace("\n", " ")

    r = invoke("report", root / "b", "--compare", root / "a", "--out", tmp_path / "report.html")
    assert r.exit_code == 0, r.stderr
    page = (tmp_path / "report.html").read_text()
    stayed = sum(c for (o, n), c in plain.items() if o == n)
    others = sum(plain.values()) - stayed
    assert f"{stayed:,} customers stayed in their segment and {others:,} moved, arrived or left" in page
    # The largest moves: each row's count is the join's, and they are the ten largest.
    table = page.split("<h3>Largest moves</h3>", 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td><td class=\"num\">([\d,]+)</td>", table)
    assert len(rows) == 10
    listed = []
    for old, new, count in rows:
        key = (None if old == "new customers" else int(old), None if new == "lost" else int(new.split(" · ")[0]))
        assert plain.get(key) == int(count.replace(",", "")), f"{old} -> {new}: the join has {plain.get(key)}"
        listed.append(plain[key])
    assert listed == sorted((c for (o, n), c in plain.items() if o != n), reverse=True)[:10]


def test_assign_takes_the_time_format_of_its_batch(small_data, small_run, tmp_path):
    # The refusal named --time-format, which assign did not take: a batch written day first could not be scored.
    batch = pl.read_parquet(small_data / "transactions").head(2_000)
    batch.with_columns(pl.col("ts").dt.strftime("%d/%m/%Y %H:%M:%S")).write_csv(tmp_path / "dmy.csv")
    r = invoke("assign", small_run, tmp_path / "dmy.csv", "--out", tmp_path / "a")
    assert r.exit_code == 2
    _one_line_error(r, "--time-format '%d/%m/%Y %H:%M:%S'")
    r = invoke("assign", small_run, tmp_path / "dmy.csv", "--out", tmp_path / "a", "--time-format", "%d/%m/%Y %H:%M:%S")
    assert r.exit_code == 0, r.stderr
    assert json.loads((tmp_path / "a" / "run.json").read_text())["rows"]["used"] == 2_000


def test_assign_reads_an_iso_batch_of_a_model_trained_with_a_format(small_data, tmp_path):
    # A model trained on day-first CSV gave its format to an ISO batch, and nothing could undo it: --time-format ''
    # was not given, and the advice ("ISO 8601, which segmint reads without a format") could not be followed.
    tx = pl.read_parquet(small_data / "transactions").head(4_000)
    tx.with_columns(pl.col("ts").dt.strftime("%d/%m/%Y %H:%M:%S")).write_csv(tmp_path / "dmy.csv")
    tx.write_csv(tmp_path / "iso.csv")
    r = invoke("run", tmp_path / "dmy.csv", "--out", tmp_path / "run", "--time-format", "%d/%m/%Y %H:%M:%S",
               "--k", "3")
    assert r.exit_code == 0, r.stderr
    as_of = json.loads((tmp_path / "run" / "run.json").read_text())["as_of"]
    r = invoke("assign", tmp_path / "run", tmp_path / "iso.csv", "--out", tmp_path / "a", "--as-of", as_of)
    assert r.exit_code == 2
    _one_line_error(r, "those are ISO 8601: give --time-format iso")
    r = invoke("assign", tmp_path / "run", tmp_path / "iso.csv", "--out", tmp_path / "a", "--as-of", as_of,
               "--time-format", "iso")
    assert r.exit_code == 0, r.stderr
    iso = pl.read_parquet(tmp_path / "a" / "assignments").sort("customer_id")
    r = invoke("assign", tmp_path / "run", tmp_path / "dmy.csv", "--out", tmp_path / "b", "--as-of", as_of)
    assert r.exit_code == 0, r.stderr
    assert iso.equals(pl.read_parquet(tmp_path / "b" / "assignments").sort("customer_id"))
    import segmint

    model = segmint.Model.load(tmp_path / "run")
    scored = model.predict(tx.with_columns(pl.col("ts").dt.strftime("%Y-%m-%d %H:%M:%S")), as_of=as_of,
                           time_format="iso")
    assert scored.height == iso.height


def test_two_copies_of_one_export_are_warned_of(small_data, tmp_path):
    # Every row twice (a copy of a file under another name): spend and CLV doubled, and no command said so.
    tx = pl.read_parquet(small_data / "transactions").head(3_000)
    (tmp_path / "in").mkdir()
    tx.write_parquet(tmp_path / "in" / "a.parquet")
    tx.write_parquet(tmp_path / "in" / "a (copy).parquet")
    r = invoke("features", tmp_path / "in", "--out", tmp_path / "f")
    assert r.exit_code == 0, r.stderr
    assert "warning: at least 3,0" in r.stdout + r.stderr and "two copies of one export?" in r.stdout + r.stderr
    r = invoke("features", tmp_path / "in", "--out", tmp_path / "g", "--dedupe-on", ",".join(tx.columns))
    assert r.exit_code == 0 and "two copies" not in r.stdout + r.stderr
    r = invoke("features", tmp_path / "in" / "a.parquet", "--out", tmp_path / "h")
    assert r.exit_code == 0 and "two copies" not in r.stdout + r.stderr
    # Rejected rows that repeat each other (empty lines of a CSV) are no kept purchases.
    blank = pl.concat([tx, pl.DataFrame(schema=tx.schema).extend(tx.head(1).clear(1000))])
    blank.write_parquet(tmp_path / "blank.parquet")
    r = invoke("features", tmp_path / "blank.parquet", "--out", tmp_path / "i")
    assert r.exit_code == 0 and "two copies" not in r.stdout + r.stderr


def test_compare_json_ends_with_the_done_event_of_every_command(two_runs, tmp_path):
    # compare --json printed its stages and then the summary lines, never `done`.
    root, _, _ = two_runs
    r = invoke("compare", root / "a", root / "b", "--out", tmp_path / "cmp", "--json")
    assert r.exit_code == 0, r.stderr
    events = [json.loads(line) for line in r.stderr.splitlines() if line.strip()]
    done = events[-1]
    assert done["event"] == "done" and done["status"] == "succeeded" and r.stdout == ""
    run_json = json.loads((tmp_path / "cmp" / "run.json").read_text())
    assert done["run_id"] == run_json["run_id"] == json.loads((tmp_path / "cmp" / "compare.json").read_text())["run_id"]
    assert done["run_json"] == str(tmp_path / "cmp" / "run.json")


def test_compare_counts_a_vanished_segment_as_none_left_not_unknown(small_data, tmp_path):
    # A segment of the old run that the new one lacks had null customers, change and revenue change.
    for name, k in (("a", 4), ("b", 2)):
        r = invoke("run", small_data / "transactions", "--out", tmp_path / name, "--k", k)
        assert r.exit_code == 0, r.stderr
    r = invoke("compare", tmp_path / "a", tmp_path / "b", "--out", tmp_path / "cmp")
    assert r.exit_code == 0, r.stderr
    seg = pl.read_parquet(tmp_path / "cmp" / "segments.parquet")
    gone = seg.filter(pl.col("name_new").is_null())
    assert gone.height == 2
    assert gone["customers_new"].to_list() == [0, 0] and gone["revenue_new"].to_list() == [0.0, 0.0]
    assert gone["revenue_share_change"].to_list() == (-gone["revenue_share_old"]).to_list()
    assert gone["customers_change"].to_list() == (-gone["customers_old"]).to_list()
    assert gone["aov_kpi_new"].null_count() == 2     # no customers: no order value, not 0
    assert seg["customers_new"].sum() == seg["customers_old"].sum() == 3000


# `segmint ARGS` with an error segmint does not expect, deep in the engine (reading the input).
_BOOM = """
import sys
import segmint.engine.io.sources as sources

def boom(*args, **kwargs):
    raise RuntimeError("disk on fire")

sources._scan = boom
from segmint.cli.app import main
sys.argv = ["segmint", *sys.argv[1:]]
main()
"""


def test_an_unexpected_error_exits_1_in_one_line_and_debug_shows_the_traceback(tmp_path):
    import subprocess
    import sys

    pl.DataFrame({"customer_id": [1], "ts": ["2024-01-01"], "amount": [5.0]}).write_parquet(tmp_path / "t.parquet")
    plain = subprocess.run([sys.executable, "-c", _BOOM, "validate", str(tmp_path / "t.parquet")],
                           capture_output=True, text=True)
    assert plain.returncode == 1
    assert "Traceback" not in plain.stderr + plain.stdout
    errors = [line for line in plain.stderr.splitlines() if line.strip()]
    assert errors[-1:] == ["error: unexpected RuntimeError: disk on fire (rerun with --debug for the traceback)"]
    assert [line for line in errors if line.startswith("error:")] == errors[-1:]
    debug = subprocess.run([sys.executable, "-c", _BOOM, "--debug", "validate", str(tmp_path / "t.parquet")],
                           capture_output=True, text=True)
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr and ", in boom" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == "error: unexpected RuntimeError: disk on fire"


@pytest.mark.parametrize("error", [
    pl.exceptions.ComputeError("parquet: File out of specification: underlying IO error: No space left on device "
                               "(os error 28)"),   # Polars' words (its Parquet writer on a full tmpfs)
    OSError(28, "Error writing bytes to file. Detail: [errno 28] No space left on device"),   # Arrow's
])
def test_a_full_disk_exits_2_naming_the_fixes_and_keeps_the_previous_output(small_data, small_run, tmp_path,
                                                                            monkeypatch, error):
    import shutil

    from segmint.engine.io import store

    out = tmp_path / "out"
    shutil.copytree(small_run, out)
    before = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    write = store.write_parquet

    def full(frame, path, options=None, *, scratch=False):
        if "assignments" in str(path):   # the score's output parts, mid-run
            raise error
        return write(frame, path, options, scratch=scratch)

    monkeypatch.setattr(store, "write_parquet", full)
    result = invoke("run", small_data / "transactions", "--out", out, "--overwrite")
    assert result.exit_code == 2
    _one_line_error(result, "a disk the command writes to is full", "--work-dir", "compress_scratch")
    after = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]   # no staging or scratch left beside it


def test_an_error_that_is_not_a_full_disk_stays_unexpected():
    from segmint.cli.app import _disk_full

    assert not _disk_full(OSError(13, "Permission denied"))
    assert not _disk_full(RuntimeError("os error 2"))
    wrapped = RuntimeError("a worker failed")
    wrapped.__cause__ = OSError(122, "Disk quota exceeded")
    assert _disk_full(wrapped)


def test_ctrl_c_exits_130_and_leaves_the_previous_output(small_data, small_run, tmp_path):
    import shutil
    import signal

    from tests.fixtures import segmint_child, wait_for

    def digest(folder):
        return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("*")) if p.is_file()}

    out = tmp_path / "out"
    shutil.copytree(small_run, out)
    before = digest(out)
    marker = tmp_path.parent / f"{tmp_path.name}-paused"
    with open(tmp_path.parent / f"{tmp_path.name}-stderr", "w+") as err:
        proc = segmint_child("run", small_data / "transactions", "--out", out, "--overwrite", "--k", 3,
                             "--buckets", 3, paused=marker, stderr=err)
        assert wait_for(marker.parent, marker.name), "the run never reached its model"
        assert list(tmp_path.glob(".out.*"))  # mid-run: its staging folder is there
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(60) == 130
        err.seek(0)
        message = err.read()
    assert "Traceback" not in message
    assert message.strip().splitlines()[-1] == "error: interrupted; no output was changed"
    assert digest(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging or work folder left behind


@pytest.mark.parametrize(("args", "error", "code"), [
    (("run", "{missing}", "--out", "{out}"), "InputContractError", 3),
    (("run", "{data}", "--out", "{out}", "--k", "0"), "ConfigError", 2),
])
def test_a_demo_step_that_fails_keeps_its_exit_code_and_its_line(small_data, tmp_path, args, error, code):
    # Every failing step was an input contract error (exit 3), quoted as a Python list.
    from segmint.engine import demo, errors

    values = {"missing": tmp_path / "missing", "data": small_data / "transactions", "out": tmp_path / "out"}
    with pytest.raises(getattr(errors, error)) as raised:
        demo._child(*(a.format(**values) for a in args))
    assert raised.value.exit_code == code
    message = str(raised.value)
    assert message.startswith("segmint run failed in the demo: ") and "['" not in message and "error:" not in message


def test_the_summary_says_repeats_are_rejected_where_dedupe_on_rejects_them(small_data, tmp_path):
    lines = pl.read_parquet(small_data / "transactions")
    pl.concat([lines, lines.head(3)]).write_parquet(tmp_path / "t.parquet")
    kept = invoke("run", tmp_path / "t.parquet", "--out", tmp_path / "a", "--k", "3")
    dedupe = invoke("run", tmp_path / "t.parquet", "--out", tmp_path / "b", "--k", "3",
                    "--dedupe-on", ",".join(c for c in lines.columns))
    checked = invoke("validate", tmp_path / "t.parquet", "--dedupe-on", ",".join(lines.columns))
    assert kept.exit_code == dedupe.exit_code == checked.exit_code == 0, kept.stderr + dedupe.stderr
    assert "rows repeat an earlier one on every mapped column (kept)" in kept.stdout
    assert "rejected (duplicate: " in dedupe.stdout and "(rejected as duplicate: --dedupe-on)" in dedupe.stdout
    assert "(kept" not in dedupe.stdout and "(rejected as duplicate: --dedupe-on)" in checked.stdout


def test_report_into_the_run_it_compares_with_exits_2_and_writes_nothing(small_run, tmp_path):
    import shutil

    previous = shutil.copytree(small_run, tmp_path / "previous")
    before = (previous / "run.json").read_bytes()
    r = invoke("report", small_run, "--compare", previous, "--out", previous / "run.json", "--overwrite")
    assert r.exit_code == 2, r.stderr
    _one_line_error(r, "overlaps the input", "(--compare)")
    assert (previous / "run.json").read_bytes() == before


def test_paths_with_glob_characters_are_paths(small_data, tmp_path):
    # Polars reads a path as a glob pattern by default: an input file 'export[1].parquet' matched no file (exit 3),
    # and a run written to --out 'runs[1]' could not be reported, resumed into or mapped in buckets (exit 1).
    inputs = tmp_path / "in[1]"
    inputs.mkdir()
    files = sorted((small_data / "transactions").rglob("*.parquet"))
    for i, f in enumerate(files):
        (inputs / (f"export[{i}].parquet" if i % 2 else f"part*{i}?.parquet")).write_bytes(f.read_bytes())
    rows = sum(pl.read_parquet(f).height for f in files)
    out = tmp_path / "runs[1]"
    r = invoke("run", inputs, "--out", out, "--k", 3, "--buckets", 2, "--work-dir", tmp_path / "work[1]")
    assert r.exit_code == 0, r.stderr
    assert json.loads((out / "run.json").read_text())["rows"]["in"] == rows
    r = invoke("report", out, "--out", tmp_path / "report[1]")
    assert r.exit_code == 0, r.stderr
    r = invoke("assign", out, inputs, "--out", tmp_path / "scored[1]")
    assert r.exit_code == 0, r.stderr
    r = invoke("compare", out, tmp_path / "scored[1]", "--out", tmp_path / "cmp[1]")
    assert r.exit_code == 0, r.stderr
    ids = json.loads((tmp_path / "cmp[1]" / "compare.json").read_text())["ids"]
    assert ids["customers_in_both"] == ids["kept_id"] > 0   # the same data scored by its own model
    # An output inside such a folder is inside the input (it was compared with the folder 'in', cut at '[').
    r = invoke("run", inputs, "--out", inputs / "out")
    assert r.exit_code == 2 and "overlaps the input" in r.stderr


def test_every_command_takes_threads_after_its_name():
    # The reference says --threads goes before or after the command; compare, report and abtest refused it after.
    import typer.main

    group = typer.main.get_command(app)
    commands = {name: command for name, command in group.commands.items()}
    commands.update({f"abtest {name}": c for name, c in group.commands["abtest"].commands.items()})
    del commands["abtest"]
    lacking = [name for name, command in commands.items()
               if not any("--threads" in p.opts for p in command.params)]
    assert lacking == []


def test_the_run_summary_says_its_kept_id_share_is_the_profile_samples(small_data, small_run, tmp_path):
    # "of the customers both runs share, 94.2% kept their id" differed from compare's figure for the same pair
    # where the profile sample is smaller than the customer base, without saying it was a sample's.
    config = tmp_path / "c.toml"
    config.write_text("[sampling]\nprofile_customers = 1000\n")
    r = invoke("run", small_data / "transactions", "--out", tmp_path / "r", "--config", config, "--k", "6",
               "--seed", "3", "--previous", small_run)
    assert r.exit_code == 0, r.output
    shared = json.loads((tmp_path / "r" / "run.json").read_text())["clustering"]["matching"]["shared_customers"]
    assert shared["customers"] <= 1000
    assert f"of the {shared['customers']:,} customers of this run's profile sample both runs share, " \
           f"{shared['kept_share']:.1%} kept their id" in " ".join(r.output.split())


def test_a_signal_while_the_summary_prints_says_the_output_was_committed(small_data, tmp_path, monkeypatch):
    # The summary prints after the run returned: a Ctrl-C there said "no output was changed" of a new output.
    from segmint.cli import _render

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(_render, "print_summary", interrupted)
    r = invoke("run", small_data / "transactions", "--out", tmp_path / "o", "--k", 3)
    assert r.exit_code == 130, r.stderr
    _one_line_error(r, "interrupted after the output was committed")
    assert (tmp_path / "o" / "_SUCCESS").is_file()


@pytest.mark.parametrize(("signalled", "code", "how"), [(KeyboardInterrupt, 130, "interrupted"),
                                                        ("Terminated", 143, "terminated")])
def test_a_signal_inside_a_kernel_exits_as_the_signal_does(small_data, tmp_path, monkeypatch, signalled, code, how):
    # A signal raised while a Numba kernel ran came out as its SystemError: "unexpected SystemError", exit 1.
    import segmint.engine.pipeline as pipeline
    from segmint.cli.app import Terminated

    raised = Terminated if signalled == "Terminated" else signalled
    def kernel(*args, **kwargs):
        try:
            raise raised
        except raised:
            raise SystemError("CPUDispatcher(customer_pass) returned a result with an exception set") from None
    monkeypatch.setattr(pipeline, "run", kernel)
    r = invoke("run", small_data / "transactions", "--out", tmp_path / "o")
    assert r.exit_code == code, r.stderr
    _one_line_error(r, f"{how}; no output was changed")


@pytest.mark.parametrize("where", ["--work-dir", "--out"])
def test_a_file_in_the_place_of_a_folder_is_refused_in_one_line(small_data, tmp_path, where):
    # A file given as --work-dir, or as a folder above --out, read "unexpected FileExistsError" (exit 1).
    (tmp_path / "afile").write_text("")
    paths = {"--work-dir": tmp_path / "afile", "--out": tmp_path / "o"} if where == "--work-dir" else \
        {"--out": tmp_path / "afile" / "o"}
    r = invoke("run", small_data / "transactions", *[str(x) for pair in paths.items() for x in pair])
    assert r.exit_code == 2, r.stderr
    _one_line_error(r, "is a file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@pytest.mark.parametrize(("command", "step"), [("generate", "segmint.engine.synth._customer_ids"),
                                             ("run", "segmint.engine.pipeline.commands._check_rejects")])
def test_a_signal_a_library_swallowed_stops_the_command_before_its_commit(small_data, tmp_path, monkeypatch,
                                                                          command, step):
    # Polars caught a Ctrl-C landing in a Series' construction and went on: generate replaced its output, exit 0.
    import signal

    from segmint.engine.synth import generate

    out = tmp_path / "o"
    generate(out, customers=50, seed=1)
    before = sorted((p.relative_to(out), p.read_bytes()) for p in out.rglob("*") if p.is_file())
    module, name = step.rsplit(".", 1)
    original, sent = getattr(__import__(module, fromlist=[name]), name), []
    def swallowing(*args, **kwargs):
        if not sent:
            sent.append(1)
            try:
                signal.raise_signal(signal.SIGINT)   # to this thread: its handler runs before the next line
            except KeyboardInterrupt:
                pass
        return original(*args, **kwargs)
    monkeypatch.setattr(step, swallowing)
    args = ["generate", "--out", out, "--n-customers", 60] if command == "generate" else \
        ["run", small_data / "transactions", "--out", out, "--k", 3]
    r = invoke(*args, "--overwrite")
    monkeypatch.undo()
    assert sent and r.exit_code == 130, r.stderr
    _one_line_error(r, "interrupted; no output was changed")
    assert sorted((p.relative_to(out), p.read_bytes()) for p in out.rglob("*") if p.is_file()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_a_derived_as_of_later_than_every_row_kept_is_said(tmp_path):
    # A returns-only customer's refund, the latest row, is the derived as-of: every customer's recency and tenure
    # were measured 15.5 days on from the last purchase kept, without a word (helper sweep).
    _a_stray_refund_last(tmp_path / "t.parquet")
    r = invoke("run", tmp_path / "t.parquet", "--out", tmp_path / "o", "--k", 1, "--order-col", "",
               "--channel-col", "", "--category-col", "")
    assert r.exit_code == 0, r.stderr
    manifest = json.loads((tmp_path / "o" / "run.json").read_text())
    assert manifest["as_of"] == "2026-07-15T12:00:00" and manifest["time_range"][1] == "2026-06-30T00:00:00"
    assert "warning: the as-of 2026-07-15T12:00:00 (the latest valid row) is later than the last row kept" in r.stdout
    assert "pass --as-of 2026-06-30T00:00:00" in r.stdout
    given = invoke("run", tmp_path / "t.parquet", "--out", tmp_path / "g", "--k", 1, "--order-col", "",
                   "--channel-col", "", "--category-col", "", "--as-of", "2026-06-30T00:00:00")
    assert given.exit_code == 0 and "warning: the as-of" not in given.stdout


@pytest.mark.parametrize(("command", "measured"), [
    ("features", "recency, tenure and status are measured at the as-of; pass --as-of 2026-06-30T00:00:00"),
    ("cohorts", "the table runs to 2026-07, its months after 2026-06 with no activity and counted as complete")])
def test_every_command_measuring_at_a_derived_as_of_says_it_is_later_than_every_row_kept(tmp_path, command, measured):
    # Only run and assign said it: `segmint features` on the same rows measured recency and tenure 15.5 days past
    # the last purchase kept, and cohorts ran its table to July, a month of no activity counted complete, without a
    # word (the last session's note).
    _a_stray_refund_last(tmp_path / "t.parquet")
    columns = ("--order-col", "", "--channel-col", "", "--category-col", "")
    r = invoke(command, tmp_path / "t.parquet", "--out", tmp_path / "o", *columns)
    assert r.exit_code == 0, r.stderr
    assert ("warning: the as-of 2026-07-15T12:00:00 (the latest valid row) is later than the last row kept "
            "(2026-06-30T00:00:00)") in r.stdout
    assert measured in r.stdout
    given = invoke(command, tmp_path / "t.parquet", "--out", tmp_path / "g", *columns, "--as-of", "2026-06-30")
    assert given.exit_code == 0 and "warning: the as-of" not in given.stdout, given.stderr


def test_validate_says_when_a_derived_as_of_is_later_than_every_row_kept(tmp_path):
    # validate, where a user checks the data before a run, printed the time range and the as-of and no warning,
    # while the run on the same rows then warned (the last session's note).
    _a_stray_refund_last(tmp_path / "t.parquet")
    columns = ("--order-col", "", "--channel-col", "", "--category-col", "")
    r = invoke("validate", tmp_path / "t.parquet", *columns)
    assert r.exit_code == 0, r.stderr
    assert ("warning: the as-of 2026-07-15T12:00:00 (the latest valid row) is later than the last row kept "
            "(2026-06-30T00:00:00)") in r.stdout
    assert "a run's recency, tenure and status would be measured at the as-of; pass --as-of 2026-06-30T00:00:00" \
        in r.stdout
    given = invoke("validate", tmp_path / "t.parquet", *columns, "--as-of", "2026-06-30")
    assert given.exit_code == 0 and "warning: the as-of" not in given.stdout, given.stderr


def test_the_as_of_warning_names_what_each_command_measured_at_it():
    # clv's fit needs more customers than a CLI test writes: its wording, and cohorts' same-month case, from run.json.
    from segmint.cli.app import _as_of_warning

    def manifest(command: str, as_of: str, last: str = "2026-06-30T00:00:00") -> dict:
        return {"command": command, "as_of": as_of, "time_range": ["2026-01-01T00:00:00", last], "config": {}}

    assert "each customer's age, and so the CLV, is measured at the as-of; pass --as-of 2026-06-30T00:00:00" in \
        _as_of_warning(manifest("clv", "2026-07-15T12:00:00"))
    # The as-of in the last row's month: the same months in the table (the last complete only at its last microsecond).
    assert _as_of_warning(manifest("cohorts", "2026-06-30T12:00:00")) is None
    assert "recency, tenure and status" in _as_of_warning(manifest("features", "2026-06-30T12:00:00"))
    assert _as_of_warning(manifest("features", "2026-06-30T00:00:00")) is None
    assert _as_of_warning({**manifest("clv", "2026-07-15T12:00:00"), "config": {"as_of": "2026-07-15"}}) is None


def _a_stray_refund_last(path) -> None:
    """Purchases up to 2026-06-30, then a returns-only customer's refund on 2026-07-15 12:00: the derived as-of."""
    import datetime as dt

    pl.DataFrame({"customer_id": [1, 1, 2, 9], "amount": [10.0, 10.0, 10.0, -5.0],
                  "ts": [dt.datetime(2026, 1, 1), dt.datetime(2026, 6, 1), dt.datetime(2026, 6, 30),
                         dt.datetime(2026, 7, 15, 12)]}).write_parquet(path)


def test_the_cli_puts_back_the_caller_s_signal_handlers_and_leaves_an_ignored_one_ignored(small_data, tmp_path):
    # Review: the CLI's handlers stayed after a command run in the caller's process, so a Ctrl-C the caller caught
    # later was noted and stopped its next API commit; and an inherited SIG_IGN (`segmint ... &`) was overridden.
    import signal

    from segmint.cli.app import _install_handlers
    from segmint.engine import runtime
    from segmint.engine.synth import generate

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert invoke("generate", "--out", tmp_path / "g", "--n-customers", 30).exit_code == 0
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    # Nor a usage error or --help, which never reach the command (review: set by the group's callback, they stayed).
    assert invoke("generate").exit_code == 2 and invoke("run", "--help").exit_code == 0
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    try:
        signal.raise_signal(signal.SIGINT)
    except KeyboardInterrupt:
        pass
    generate(tmp_path / "api", customers=30, seed=1)   # the caller's own Ctrl-C, caught, stops nothing
    assert (tmp_path / "api" / "_SUCCESS").exists() and not runtime._RECEIVED
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _install_handlers()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])


def test_events_of_another_system_s_ids_are_said_to_match_no_customer(small_data, tmp_path):
    # Events whose ids match none of the transactions' passed: their visitors were counted as non-buyers and every
    # buyer's sessions, page views and conversions were 0, without a word.
    events = pl.read_parquet(small_data / "events")
    (tmp_path / "ev").mkdir()
    events.with_columns(pl.col("customer_id") + 10**9).write_parquet(tmp_path / "ev" / "e.parquet")
    r = invoke("run", small_data / "transactions", "--out", tmp_path / "o", "--k", 3, "--events", tmp_path / "ev")
    assert r.exit_code == 0, r.stderr
    assert json.loads((tmp_path / "o" / "run.json").read_text())["events"]["customers_with_events"] == 0
    assert "warning: none of the customers has an event" in r.stdout
    r = invoke("run", small_data / "transactions", "--out", tmp_path / "ok", "--k", 3, "--events",
               small_data / "events")
    assert r.exit_code == 0 and "none of the customers has an event" not in r.stdout
    assert json.loads((tmp_path / "ok" / "run.json").read_text())["events"]["customers_with_events"] > 0
