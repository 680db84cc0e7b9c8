"""The benchmark suite runs end to end on a tiny scenario and reports every figure it promises."""

import json

import pytest

from segmint.bench import scenarios
from segmint.bench.run import ratio_table, run_benchmark


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(scenarios.SCENARIOS, "S", scenarios.Scenario("S", 40_000, 2_000, True, True))


def test_bench_reports_times_memory_quality_and_ratios(tiny, tmp_path):
    lines = []
    res = run_benchmark("S", data_root=tmp_path, progress=lines.append)
    assert res["customers"] == 2_000 and res["lines"] > 20_000
    for stage in ("segmint map", "segmint fit", "segmint cluster", "segmint score", "duckdb aggregate query",
                  "segmint k-means k=8", "scikit-learn k-means k=64", "faiss defaults k-means k=64"):
        assert res["stages"][stage]["seconds"] > 0 and res["stages"][stage]["peak_rss_mb"] > 0
    for runs in res["clustering"].values():
        assert set(runs) == {"segmint", "scikit-learn", "faiss defaults"}
        assert all(-1 <= r["ari_vs_personas"] <= 1 and r["inertia"] > 0 for r in runs.values())
    e2e = res["end_to_end"]
    assert e2e["seconds"] > 0 and 50 < e2e["peak_rss_mb"] < 20_000
    assert all(isinstance(v, float) for v in res["ratios"].values())
    assert "| map (read + clean + features) / duckdb query (time) |" in ratio_table(res)
    json.dumps(res)  # everything is JSON-serialisable for --out
    # The data is cached: a second run does not regenerate it.
    stamp = (tmp_path / "S-seed0" / "_SUCCESS").stat().st_mtime
    scenarios.ensure_data(scenarios.SCENARIOS["S"], 0, tmp_path)
    assert (tmp_path / "S-seed0" / "_SUCCESS").stat().st_mtime == stamp


def test_out_of_memory_scenario_times_end_to_end_runs_only(monkeypatch, tmp_path):
    monkeypatch.setitem(scenarios.SCENARIOS, "L", scenarios.Scenario("L", 40_000, 2_000, False, False))
    res = run_benchmark("L", data_root=tmp_path, progress=lambda line: None)
    assert "segmint map" not in res["stages"]
    assert res["end_to_end"]["rows_in"] == res["end_to_end_2GB"]["rows_in"] == res["lines"] > 20_000
    assert set(res["ratios"]) == {"end to end / duckdb query (time)", "end to end, peak RSS GiB",
                                  "end to end with --memory-limit 2GB, peak RSS GiB"}
    assert res["end_to_end_2GB"]["buckets"] >= 1


def test_gpu_scenario_harness_on_the_host_backend():
    # The card is not needed to check the harness: the host backend runs the same code.
    from segmint.bench.gpu import GpuScenario, run_gpu_benchmark
    from segmint.engine.cluster.backend import HostBackend

    sc = GpuScenario(rows=30_000, dim=8, k=16, niter=10, assign_rows=70_000, cpu=True)
    res = run_gpu_benchmark(sc, HostBackend(), progress=lambda line: None)
    assert set(res["clustering"]) == {"segmint", "faiss CPU"}
    ours, cpu = res["clustering"]["segmint"], res["clustering"]["faiss CPU"]
    assert abs(ours["train_inertia"] / cpu["train_inertia"] - 1) < 1e-3
    assert abs(res["ratios"]["segmint / faiss CPU inertia"] - 1) < 1e-3
    assert res["assigned"] == 70_000
    assert res["stages"]["segmint: assign 70,000 rows"]["seconds"] > 0
    assert "| faiss CPU time / segmint time |" in ratio_table(res)
    json.dumps(res)


def test_gpu_scenario_without_a_gpu_exits_2():
    import faiss
    from typer.testing import CliRunner

    from segmint.cli.app import app

    if faiss.get_num_gpus() > 0:
        pytest.skip("this machine has a GPU")
    res = CliRunner().invoke(app, ["bench", "--scenario", "GPU"])
    assert res.exit_code == 2
    assert "--scenario GPU needs a usable GPU: Faiss sees no GPU" in res.output
