"""Bad inputs that used to exit 1 ("unexpected") get a clear exit 2 or 3, or a right answer."""

import os
import subprocess
import sys

import polars as pl
import pytest

from segmint.engine.config import ClusterConfig, Columns, RunConfig, load_toml
from segmint.engine.errors import ConfigError
from segmint.engine.pipeline import run, validate


@pytest.mark.parametrize(("text", "needle"), [
    ('[run]\nmemory_limit = "lots"\n', "is not a size"),
    ('[cluster]\nk = "five"\n', "cluster.k must be a positive integer or 'auto', got 'five'"),
    ('[cluster]\nniter = "30"\n', "cluster.niter must be an integer, got '30'"),
    ('[run]\nmax_reject_share = true\n', "run.max_reject_share must be a number"),
    ('[run]\nas_of = "soon"\n', "--as-of 'soon'"),
    ("[columns]\ncustomer = 7\n", "columns.customer must be a string"),
    ("cluster = 3\n", "[cluster] in"),
    ('[features]\nrfm_grid = [1]\n', "rfm_grid"),
    ("[cluster\n", "not valid TOML"),
])
def test_config_file_type_errors_name_the_field(tmp_path, text, needle):
    (tmp_path / "c.toml").write_text(text)
    with pytest.raises(ConfigError, match=None) as err:
        load_toml(tmp_path / "c.toml")
    assert needle in str(err.value) and str(tmp_path / "c.toml") in str(err.value)


def test_config_file_conveniences_are_read_as_meant(tmp_path):
    (tmp_path / "c.toml").write_text('[run]\nmemory_limit = "2GB"\nas_of = 2024-06-30\ndedupe_on = "customer_id"\n'
                                     '[cluster]\nk = "auto"\nmicro_k = "auto"\n')
    cfg = load_toml(tmp_path / "c.toml")
    assert cfg.memory_limit == 2_000_000_000 and cfg.as_of == "2024-06-30"
    assert cfg.dedupe_on == ("customer_id",)  # one column, not its characters
    assert cfg.cluster.k is None and cfg.cluster.micro_k == "auto"


def test_a_symlinked_output_is_refused(small_data, tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(ConfigError, match="symbolic link"):
        run([small_data / "transactions"], tmp_path / "link", RunConfig(overwrite=True))
    assert (tmp_path / "real").is_dir() and (tmp_path / "link").is_symlink()


def test_times_past_year_9999_are_quarantined_not_fatal(tmp_path):
    df = pl.DataFrame({"customer_id": [1, 2, 3], "ts": ["2024-01-01", "2024-01-02", "10000-01-01"],
                       "amount": [1.0, 2.0, 3.0]})
    df.write_csv(tmp_path / "t.csv")
    rep = validate([tmp_path / "t.csv"], RunConfig(columns=Columns(order=None, channel=None, category=None)))
    assert rep.rows_used == 2 and rep.rejected["unparseable_timestamp"] == 1
    far = pl.DataFrame({"customer_id": [1, 2], "ts": pl.Series(["2024-01-01", "9999-12-31"]).str.to_datetime(),
                        "amount": [1.0, 2.0]})
    far.write_parquet(tmp_path / "f.parquet")
    rep = validate([tmp_path / "f.parquet"], RunConfig(max_reject_share=1.0))
    assert rep.rejected["future_timestamp"] == 1 and rep.as_of.year == 2024


def test_an_unwritable_home_falls_back_for_the_kernel_cache(tmp_path, small_data):
    home = tmp_path / "home"
    home.mkdir(mode=0o500)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"} | {"HOME": str(home)}
    code = ("from segmint.engine.runtime import numba_cache_dir; import tempfile; d = numba_cache_dir(); "
            "assert str(d).startswith(tempfile.gettempdir()), d; print(d)")
    if os.geteuid() == 0:  # root writes anywhere: make the home a file instead, which nobody can mkdir under
        home.rmdir()
        home.write_text("")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    r = subprocess.run([sys.executable, "-m", "segmint.cli.app", "validate", str(small_data / "transactions")],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_k_auto_respects_the_minimum_share_in_the_final_fit(small_data, tmp_path):
    result = run([small_data / "transactions"], tmp_path / "o",
                 RunConfig(cluster=ClusterConfig(k=None, min_segment_share=0.05)))
    sizes = pl.read_parquet(tmp_path / "o" / "profiles.parquet")["share"]
    assert sizes.min() >= 0.05 and 4 <= result.manifest["k"] <= 16
    scan = result.manifest["k_scan"]
    assert [r["k"] for r in scan] == list(range(4, 17))
    assert all(r["eligible"] == (r["min_share"] >= 0.05) for r in scan)
