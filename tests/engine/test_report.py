"""The HTML report (self-contained, complete, same bytes twice) and the profile files people read."""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pytest

from segmint.engine.errors import InputContractError, OutputExistsError
from segmint.engine.io.sink import manifest
from segmint.engine.profile_columns import UNITS
from segmint.engine.profile_files import MARKETER_COLUMNS, write_profiles
from segmint.engine.report import SECTIONS, write_report
from segmint.engine.report.inputs import read_run
from segmint.engine.report.traits import candidates, name_reasons

_VOID = {"meta", "br", "img", "input", "link", "hr", "col", "wbr", "source"}


class _Page(HTMLParser):
    """Ids, every attribute value, style text, and whether every opened element was closed."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.attrs: list[tuple[str, str]] = []
        self.styles: list[str] = []
        self.tags: set[str] = set()
        self.stack: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attrs += [(k, v or "") for k, v in attrs]
        self.ids += [v for k, v in attrs if k == "id"]
        self.styles += [v for k, v in attrs if k == "style" and v]
        self._in_style = tag == "style"
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.add(tag)
        self.attrs += [(k, v or "") for k, v in attrs]
        self.ids += [v for k, v in attrs if k == "id"]
        self.styles += [v for k, v in attrs if k == "style" and v]

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-3:])
        self.stack.pop()
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


@pytest.fixture(scope="module")
def cohorts() -> pl.DataFrame:
    """Three monthly cohorts, as `segmint cohorts` writes them; the last month is incomplete."""
    rows = [(dt.date(2026, 1, 1), m, 100, [1.0, 0.4, 0.3][m], m < 2) for m in range(3)]
    rows += [(dt.date(2026, 2, 1), m, 80, [1.0, 0.5][m], m < 1) for m in range(2)]
    rows += [(dt.date(2026, 3, 1), 0, 60, 1.0, False)]
    return pl.DataFrame(rows, schema={"cohort": pl.Date, "months_since_first": pl.Int32, "cohort_size": pl.Int64,
                                      "retention": pl.Float64, "complete_month": pl.Boolean}, orient="row")


@pytest.fixture(scope="module")
def migration() -> pl.DataFrame:
    return pl.DataFrame({"old_segment": [0, 0, 1, 2, None, 3], "new_segment": [0, 1, 1, None, 2, 3],
                         "customers": [500, 40, 300, 25, 60, 200], "revenue": [9e4, 2e3, 4e4, 0.0, 5e3, 1e4]})


@pytest.fixture(scope="module")
def report(small_run, cohorts, migration, tmp_path_factory) -> Path:
    return write_report(small_run, tmp_path_factory.mktemp("report") / "report.html", cohorts=cohorts,
                        migration=migration)


def test_report_parses_and_has_every_section(report):
    page = _parse(report)
    assert page.stack == []
    assert set(SECTIONS) <= set(page.ids)
    assert len(page.ids) == len(set(page.ids)), "ids repeat across the inline SVGs"
    text = report.read_text(encoding="utf-8")
    for sid in ("segments", "rfm", "lifecycle", "clv", "cohorts", "migration"):
        section = text[text.index(f'<section id="{sid}">'):]
        assert section.index("<svg") < section.index("</section>"), sid
    assert '<p class="note">This run had no web/app events' in text  # the small run has no events


def test_report_references_nothing_outside_the_file(report):
    page = _parse(report)
    for key, value in page.attrs:
        if key in ("src", "href", "xlink:href", "action", "poster", "data", "srcset"):
            assert value.startswith(("#", "data:")), (key, value)  # in-page anchors and inline images only
        if key.startswith("xmlns"):
            continue  # a namespace name, never fetched
        assert not re.match(r"\s*(https?:)?//", value), (key, value)
    for css in page.styles:
        assert "@import" not in css
        assert all(ref.startswith("#") for ref in re.findall(r"url\(\s*['\"]?([^)'\"]*)", css)), css
    assert not {"script", "link", "iframe", "object", "embed", "img"} & page.tags


def test_report_is_the_same_bytes_twice(report, small_run, cohorts, migration, tmp_path):
    # The second report is written in a child process whose str hashes differ from this one's
    # (PYTHONHASHSEED): no byte may depend on set or dict-of-str order, or on SVG ids drawn from hashes.
    import os
    import subprocess
    import sys

    cohorts.write_parquet(tmp_path / "cohorts.parquet")
    migration.write_parquet(tmp_path / "migration.parquet")
    code = ("import sys, polars as pl; from pathlib import Path; from segmint.engine.report import write_report; "
            "write_report(Path(sys.argv[1]), Path(sys.argv[2]), cohorts=pl.read_parquet(sys.argv[3]), "
            "migration=pl.read_parquet(sys.argv[4]))")
    seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"
    subprocess.run([sys.executable, "-c", code, str(small_run), str(tmp_path / "again.html"),
                    str(tmp_path / "cohorts.parquet"), str(tmp_path / "migration.parquet")],
                   check=True, env={**os.environ, "PYTHONHASHSEED": seed})
    assert (tmp_path / "again.html").read_bytes() == report.read_bytes()


def test_report_without_optional_tables_says_what_is_missing(small_run, tmp_path):
    text = write_report(small_run, tmp_path / "plain.html").read_text(encoding="utf-8")
    assert set(SECTIONS) <= set(_parse(tmp_path / "plain.html").ids)
    assert "segmint cohorts INPUT --out DIR" in text
    assert "No migration table was given" in text


def test_cohort_heatmap_blanks_the_incomplete_month(report):
    text = report.read_text(encoding="utf-8")
    cohort_svg = text[text.index('<section id="cohorts">'):text.index('<section id="migration">')]
    labels = re.findall(r">(\d+)</text>", cohort_svg)
    assert "40" in labels and "50" not in labels  # 2026-02 month 1 is the incomplete as-of month


def test_traits_quote_the_share_of_customers_strictly_below_or_above(small_run, report):
    run = read_run(small_run)
    a = pl.read_parquet(small_run / "assignments")
    text = report.read_text(encoding="utf-8")
    checked = 0
    for row in run.profiles.iter_rows(named=True):
        for feature, pct in candidates(row):
            median = row[f"{feature}_median"]
            values = a[feature].filter(a[feature].is_finite())
            strict = (values < median).mean() if pct >= 50 else (values > median).mean()
            side = "higher" if pct >= 50 else "lower"
            assert f"{side} than {100 * strict:.0f}% of customers" in text, (row["segment"], feature)
            checked += 1
    assert checked >= run.k


def test_name_reasons_restate_the_rules_with_the_segments_numbers():
    row = {"name": "Dormant · one-time · mid spend · more web #3", "recency_days_median_pct": 81.0,
           "frequency_median": 1.0, "repurchase_rate": 0.25, "aov_median_pct": 50.0}
    reasons = dict(name_reasons(row))
    assert reasons["Dormant"] == "percentile of median days since last purchase (here 81) ≥ 70"
    assert reasons["one-time"] == "median number of purchases (here 1) = 1 and repurchase rate (here 0.25) < 0.5"
    assert reasons["mid spend"] == "25 < percentile of median order value (here 50) < 75"
    assert "differs most" in reasons["more web"] and "same name" in reasons["#3"]


def test_a_kept_name_that_no_longer_holds_says_so():
    # An assigned batch takes the model's names, with its own percentiles: the report said "occasional: percentile
    # (here 50) <= 35" and "Lapsing: 50 <= percentile (here 33) < 70" as if they held.
    row = {"name": "Lapsing · occasional · mid spend", "recency_days_median_pct": 33.0,
           "frequency_median_pct": 60.0, "frequency_median": 3.0, "aov_median_pct": 50.0}
    reasons = dict(name_reasons(row))
    marked = dict(name_reasons({**row, "name": "Steady · regular · mid spend #3 (new)",
                                "recency_days_median_pct": 40.0}))
    assert marked["mid spend"].startswith("25 <") and "kept the same name" in marked["(new)"]
    assert "same name" in marked["#3"]
    near = {**row, "name": "Recent · regular · mid spend", "recency_days_median_pct": 33.0}
    assert dict(name_reasons(near, 5.0))["Recent"].endswith(
        "but within 5 percentile points: a name kept from the previous run keeps a word that close to its band")
    assert dict(name_reasons(near))["Recent"].startswith("not so here")     # assign: no margin
    # An assigned batch's percentiles are among its own customers (one segment's customers, or one customer,
    # sit near 50): said so, not that the customers no longer fit the name (a sweep read it so).
    among = dict(name_reasons(near, batch=True))["Recent"]
    assert among.startswith("not so among this batch (") and "percentiles among the batch's customers" in among
    # Closer to an edge, as many digits as tell them apart (74.996 read "(here 75) >= 75" beside "not so").
    edge = dict(name_reasons({**row, "name": "Lapsing · occasional · high spend", "aov_median_pct": 74.996}))
    assert "(here 74.996) ≥ 75 does not hold" in edge["high spend"]
    # A percentile by a rule's edge is given to the hundredth: 35.25 read "35 < ... (here 35)".
    edge = dict(name_reasons({**row, "name": "Lapsing · regular · mid spend", "frequency_median_pct": 35.25}))
    assert edge["regular"] == "35 < percentile of median number of purchases (here 35.25) < 75"
    assert reasons["Lapsing"].startswith("not so here (50 < percentile of median days since last purchase (here 33)")
    assert reasons["occasional"].startswith("not so here") and "earlier run" in reasons["occasional"]
    assert reasons["mid spend"] == "25 < percentile of median order value (here 50) < 75"
    # A kept word whose rule holds, though a word before it in its group would be chosen now (New before Recent,
    # one-time before occasional): it holds, and says why.
    row = {"name": "Recent · occasional · mid spend", "new_rate": 0.6, "recency_days_median_pct": 20.0,
           "frequency_median_pct": 20.0, "frequency_median": 1.0, "repurchase_rate": 0.2, "aov_median_pct": 50.0,
           "customers": 5}
    assert not any(reason.startswith("not so") for reason in dict(name_reasons(row)).values())


def test_run_aggregates_cover_every_customer(small_run):
    run = read_run(small_run)
    customers = run.manifest["customers"]
    assert run.rfm.sum() == customers
    assert run.clv is not None and run.clv.counts.sum() + run.clv.missing == customers


def test_segment_ids_need_not_be_0_to_k_minus_1(small_run, tmp_path):
    """A warm-started run keeps matched ids, so a run may hold segments 0, 2, 9."""
    run_dir = tmp_path / "run"
    shutil.copytree(small_run, run_dir)
    (run_dir / "assignments" / "segment=1").rename(run_dir / "assignments" / "segment=9")
    profiles = pl.read_parquet(run_dir / "profiles.parquet")
    profiles.with_columns(pl.col("segment").replace(1, 9)).write_parquet(run_dir / "profiles.parquet")
    # Readers read what the manifest lists: list the edited files as a commit would.
    (run_dir / "_manifest.json").write_text(json.dumps({"files": manifest(run_dir)}))
    run = read_run(run_dir)
    assert run.clv is not None and run.clv.counts.sum(axis=1).tolist() == run.profiles["customers"].to_list()
    text = write_report(run_dir, tmp_path / "r.html").read_text(encoding="utf-8")
    assert f"<h3>9 · {profiles['name'][1]}</h3>" in text


def test_report_refuses_what_it_cannot_use(small_run, tmp_path, report):
    (tmp_path / "not-a-run").mkdir()
    with pytest.raises(InputContractError, match="not a finished segmint"):
        write_report(tmp_path / "not-a-run", tmp_path / "r.html")
    with pytest.raises(InputContractError, match="lacks column"):
        write_report(small_run, tmp_path / "r.html", migration=pl.DataFrame({"old_segment": [0]}))
    with pytest.raises(OutputExistsError):
        write_report(small_run, report)


def test_profiles_json_describes_every_column(small_run, tmp_path):
    profiles = pl.read_parquet(small_run / "profiles.parquet")
    write_profiles(tmp_path, profiles)

    def refuse(constant):
        raise ValueError(constant)

    doc = json.loads((tmp_path / "profiles.json").read_text(), parse_constant=refuse)
    assert list(doc["columns"]) == profiles.columns
    for column, meta in doc["columns"].items():
        assert meta["unit"] in UNITS and meta["unit"] != "unknown", column
        assert meta["description"].strip(), column
    assert doc["segments"][0]["name"] == profiles["name"][0] and len(doc["segments"]) == profiles.height
    assert pl.read_parquet(tmp_path / "profiles.parquet").equals(profiles)


def test_profiles_csv_has_the_marketer_columns(small_run, tmp_path):
    profiles = pl.read_parquet(small_run / "profiles.parquet")
    write_profiles(tmp_path, profiles)
    with (tmp_path / "profiles.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [header for _, header in MARKETER_COLUMNS]  # the small run has CLV
    assert len(rows) == profiles.height
    assert [int(r["customers"]) for r in rows] == profiles["customers"].to_list()
    assert float(rows[0]["revenue_per_order"]) == pytest.approx(profiles["aov_kpi"][0], abs=0.005)
    assert [r["name"] for r in rows] == profiles["name"].to_list()


def test_migration_says_how_many_kept_their_id_and_what_a_relabelling_would_keep(small_run, migration, tmp_path):
    text = write_report(small_run, tmp_path / "m.html", migration=migration).read_text(encoding="utf-8")
    # 1,040 customers in both runs; 1,000 on the diagonal, which is also the best relabelling.
    assert "Of the 1,040 customers in both runs, 96% kept their segment id; an optimal relabelling of the " \
           "segments would have kept 96%" in text
    swapped = pl.DataFrame({"old_segment": [0, 1, 1], "new_segment": [1, 0, 1], "customers": [500, 300, 20],
                            "revenue": [1.0, 2.0, 3.0]})
    text = write_report(small_run, tmp_path / "s.html", migration=swapped).read_text(encoding="utf-8")
    assert "Of the 820 customers in both runs, 2.4% kept their segment id; an optimal relabelling of the " \
           "segments would have kept 98%" in text


def test_numbers_with_a_less_than_sign_are_escaped_in_the_page(small_data, tmp_path):
    # A share under 0.1% reads "<0.1%": it went into table cells raw (invalid HTML, and text extractors drop it).
    from segmint.engine.config import RunConfig
    from segmint.engine.pipeline import run

    lines = pl.read_parquet(small_data / "transactions")
    bad = lines.head(1).with_columns(pl.lit(None, dtype=lines.schema["customer_id"]).alias("customer_id"))
    pl.concat([lines, bad]).write_parquet(tmp_path / "t.parquet")
    run([tmp_path / "t.parquet"], tmp_path / "o", RunConfig())
    page = write_report(tmp_path / "o", tmp_path / "r.html").read_text()
    assert "&lt;0.1%" in page and "<0.1%" not in page


def test_a_report_written_into_the_run_it_reads_is_refused_and_the_run_kept(small_run, tmp_path):
    # It replaced run.json with the page, with exit 0; the next `assign` could not read the run.
    from segmint.engine.errors import ConfigError

    run = shutil.copytree(small_run, tmp_path / "run")
    before = (run / "run.json").read_bytes()
    for out in (run / "run.json", run / "report.html"):
        with pytest.raises(ConfigError, match="overlaps the input .* choose an output outside every input"):
            write_report(run, out, overwrite=True)
    assert (run / "run.json").read_bytes() == before and not (run / "report.html").exists()


def test_rows_after_a_given_as_of_are_left_out_not_rejected(small_data, small_cfg, tmp_path):
    # A back-test's later months: the headline read "93% input rows rejected" where no row was bad.
    from segmint.engine.config import RunConfig
    from segmint.engine.pipeline import run
    from segmint.engine.report import numfmt

    # Every 10th amount missing: those after the as-of are after it too (they read as rejected: 26% for 10%).
    tx = pl.read_parquet(small_data / "transactions").with_columns(
        amount=pl.when(pl.int_range(pl.len()) % 10 == 0).then(None).otherwise(pl.col("amount")))
    tx.write_parquet(tmp_path / "t.parquet")
    as_of = tx["ts"].sort()[int(0.7 * tx.height)].date().isoformat()
    out = tmp_path / "run"
    run([tmp_path / "t.parquet"], out, RunConfig(cluster=small_cfg.cluster, as_of=as_of))
    doc = json.loads((out / "run.json").read_text())
    rows, instant = doc["rows"], dt.datetime.fromisoformat(doc["as_of"])
    later = rows["after_as_of"]
    assert later == tx.filter(pl.col("ts") > instant).height > rows["rejected_by_reason"]["after_as_of"]
    assert later > 0.2 * rows["in"] and rows["rejected"] >= later
    page = write_report(out, tmp_path / "r.html").read_text()
    tiles = dict((label, value) for value, label in re.findall(r"<b>([^<]*)</b><span>([^<]*)</span>", page))
    window = tx.filter(pl.col("ts") <= instant)
    rejected = pl.read_parquet(out / "rejects").filter(pl.col("ts") <= instant)   # null amounts, returns only
    assert rejected.height == rows["rejected"] - later >= window["amount"].null_count()
    assert tiles["input rows rejected"] == numfmt.share(rejected.height / window.height)
    assert tiles["rows after the as-of, left out"] == f"{later:,}"
    assert "left out: after --as-of" in page and "rejected: after_as_of" not in page


def test_a_compare_run_later_than_the_run_reported_is_refused(small_data, small_cfg, small_run, tmp_path):
    # The migration ran backwards: the later run's newer customers read as lost, without a word.
    from segmint.engine.config import RunConfig
    from segmint.engine.errors import ConfigError
    from segmint.engine.pipeline import run
    from segmint.engine.pipeline.compare import compare_runs, migration

    times = pl.read_parquet(small_data / "transactions", columns=["ts"])["ts"].sort()
    earlier = tmp_path / "earlier"
    run([small_data / "transactions"], earlier,
        RunConfig(cluster=small_cfg.cluster, as_of=times[int(0.9 * times.len())].date().isoformat()))
    assert migration(earlier, small_run)[0]["customers"].sum() > 0
    with pytest.raises(ConfigError, match=f"--compare {small_run} is as of .*, after {earlier} .*give an earlier "
                                          f"run to --compare"):
        migration(small_run, earlier)
    with pytest.raises(ConfigError, match=f"OLD_RUN {small_run} is as of .*, after {earlier} "):
        compare_runs(small_run, earlier, tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_quality_notes_count_the_customers_table_rows_left_out():
    from segmint.engine.report.html import _quality

    older = {"rows": {"in": 10, "used": 10, "rejected": 0, "rejected_by_reason": {}},
             "customers_table": {"without_a_row": 3}}
    newer = {**older, "customers_table": {"without_a_row": 3,
                                          "rows_left_out": {"no_customer_id": 2, "no_usable_transaction": 7}}}
    assert "7 of its rows are of no customer with a purchase, 2 have no customer id" in _quality(newer)
    # A run made before the rows were counted says nothing of them rather than 0.
    assert "customers have no row." in _quality(older) and "of its rows" not in _quality(older)


def test_the_clv_section_and_the_profiles_note_say_what_the_run_did(small_data, small_cfg, tmp_path):
    """An NBD the configuration asked for read "no dropout detected in the window"; the profiles note named the
    sample size asked for (1,000), not the sample's (a hash threshold keeps about that many)."""
    from segmint.engine.config import ClvConfig, RunConfig, SamplingConfig
    from segmint.engine.pipeline import run

    out = tmp_path / "run"
    run([small_data / "transactions"], out, RunConfig(cluster=small_cfg.cluster, clv=ClvConfig(purchase_model="nbd"),
                                                      sampling=SamplingConfig(profile_customers=1000)))
    doc = json.loads((out / "run.json").read_text())
    sampled = int(re.search(r"from the ([\d,]+) customers of lowest hash", doc["profiles_note"])[1].replace(",", ""))
    assert sampled == doc["clustering"]["n_train"] != 1000   # k-means trained on the whole profile sample here
    page = write_report(out, tmp_path / "r.html").read_text()
    assert "as the configuration asks" in page and "no dropout detected" not in page


def test_chart_text_is_drawn_as_written_not_as_maths():
    # A grid label "$$ spenders" failed the report (exit 1: Matplotlib's maths parser), and "$5-$10 buyers" was
    # drawn as maths, "5−10 buyers".
    import numpy as np

    from segmint.engine.report import charts

    names = {(r, f): "$$ spenders" if (r + f) % 2 else "$5-$10 buyers" for r in range(1, 6) for f in range(1, 6)}
    svg = charts.rfm_heatmap(np.ones((5, 5), int), names)
    assert "$$ spenders" in svg and "$5-$10 buyers" in svg


def test_an_empty_segment_of_an_assigned_batch_says_so_not_that_it_is_typical():
    # Its card read "close to the population on every feature" and listed each name word's rule "(here n/a)"
    # as if it held.
    from segmint.engine.report.html import _traits

    row = {"segment": 3, "name": "Lapsing · occasional · mid spend", "customers": 0, "share": 0.0,
           "revenue_share": None, "orders_per_customer": None, "aov_kpi": None, "repurchase_rate": None,
           "recency_days_median_pct": None, "frequency_median_pct": None, "aov_median_pct": None}
    page = _traits([row], {3: {}}, {3: "#123456"}, 0.0, True)
    assert "no customer of this batch is in this segment" in page
    assert "close to the population" not in page and "(here n/a)" not in page


def test_a_true_false_attribute_is_ranked_as_numbers(small_data, small_cfg, tmp_path):
    # A flag's profile statistics (vip_median) made it a trait candidate, and its ranking called is_finite on a
    # Boolean column: `segmint report` exited 1 on any run with a true/false customer attribute.
    import dataclasses

    from segmint.engine.config import CustomerSource
    from segmint.engine.pipeline import run
    from segmint.engine.report.inputs import _ranks

    customers = pl.read_parquet(small_data / "customers.parquet")
    customers.with_columns(vip=pl.col("customer_id").hash(7) % 3 == 0).write_parquet(tmp_path / "customers.parquet")
    cfg = dataclasses.replace(small_cfg, customers=CustomerSource(paths=(str(tmp_path / "customers.parquet"),),
                                                                  attributes=("vip",)))
    run([small_data / "transactions"], tmp_path / "run", cfg)
    profiles = pl.read_parquet(tmp_path / "run" / "profiles.parquet")
    assert profiles.schema["vip_median"].is_numeric()
    write_report(tmp_path / "run", tmp_path / "report.html")

    assigned = pl.read_parquet(tmp_path / "run" / "assignments")
    flag = pl.read_parquet(tmp_path / "customers.parquet").select("customer_id", "vip")
    vip = assigned.join(flag, on="customer_id", how="left")["vip"].cast(pl.Float64).drop_nulls()
    fake = profiles.select("segment", vip_median=pl.lit(0.5), vip_median_pct=pl.lit(99.0))
    ranks = _ranks(assigned.join(flag, on="customer_id", how="left").lazy(), fake)
    below, above = ranks[int(profiles["segment"][0])]["vip"]
    assert below == pytest.approx((vip < 0.5).mean()) and above == pytest.approx((vip > 0.5).mean())


def test_a_channel_shares_statistics_are_described_as_statistics():
    # profiles.json described channel_share_app_zlift as the share of orders in a channel 'app_zlift', unit share.
    from segmint.engine.profile_columns import STATS, describe, describe_feature

    for stat, (unit, _) in STATS.items():
        column = describe(f"channel_share_app_{stat}")
        assert column.unit == (unit or "share") and "app_" not in column.description, stat
        assert column.description != describe(f"aov_{stat}").description, stat
    # A channel named like a statistic is a share, and its statistics are statistics of it.
    assert describe_feature("channel_share_web_std").label == "share of orders via web_std"
    assert describe("channel_share_web_std_median").description == "Median of share of orders via web_std over " \
                                                                   "the segment's customers."
    assert describe("channel_share_mean_zlift").unit == "std"


def test_the_migration_section_says_where_the_runs_settings_differ(small_data, small_cfg, small_run, tmp_path):
    # compare warned that part of the moves were the settings' (orders grouped in one run only); the report's
    # migration section drew the same table without a word.
    import dataclasses

    from segmint.engine.config import RunConfig
    from segmint.engine.pipeline import run
    from segmint.engine.pipeline.compare import compare_runs, migration

    cfg = RunConfig(cluster=small_cfg.cluster, columns=dataclasses.replace(RunConfig().columns, order=None))
    run([small_data / "transactions"], tmp_path / "lines", cfg)
    moves, differ = migration(small_run, tmp_path / "lines")
    assert differ and differ == compare_runs(small_run, tmp_path / "lines", tmp_path / "c")["settings_differ"]
    page = write_report(tmp_path / "lines", tmp_path / "r.html", migration=moves, settings_differ=differ) \
        .read_text(encoding="utf-8")
    assert "The runs' settings differ, so part of these moves is theirs, not the customers' (orders" in page
    assert migration(small_run, small_run)[1] == []
    from typer.testing import CliRunner

    from segmint.cli.app import app

    ran = CliRunner().invoke(app, ["report", str(tmp_path / "lines"), "--compare", str(small_run), "--out",
                                   str(tmp_path / "cli.html")])
    assert ran.exit_code == 0, ran.output
    assert "so part of these moves is theirs" in (tmp_path / "cli.html").read_text(encoding="utf-8")
