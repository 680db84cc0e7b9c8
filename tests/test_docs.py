"""Docs are tested: commands documented and exemplified, definitions listed, examples and snippets run."""

import re
import shlex
from pathlib import Path

import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from segmint.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
REFERENCE = (ROOT / "docs" / "reference.md").read_text()


def _walk(group, prefix: str = "") -> list[str]:
    names = []
    for name, cmd in group.commands.items():
        full = f"{prefix}{name}"
        names.extend(_walk(cmd, full + " ") if hasattr(cmd, "commands") else [full])
    return names


COMMANDS = _walk(typer.main.get_group(app))


def _example(command: str) -> str:
    r = CliRunner().invoke(app, [*command.split(), "--help"], env={"COLUMNS": "300"})
    assert r.exit_code == 0
    found = re.search(r"Example: (segmint [^\n]*?)(?: \(|\s*$)", re.sub(r"[ \t]+", " ", r.stdout), re.M)
    assert found, command
    return found.group(1).strip().strip("`").strip()


def test_every_command_is_walked():
    assert {"run", "demo", "clv", "cohorts", "compare", "report", "abtest split", "abtest evaluate"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_command_has_help_with_an_example_and_no_value_markers_on_flags(command):
    assert _example(command).startswith(f"segmint {command}")
    r = CliRunner().invoke(app, [*command.split(), "--help"], env={"COLUMNS": "300"})
    assert "<bool>" not in r.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_command_documented_in_readme_and_reference(command):
    assert f"segmint {command}" in README
    assert f"segmint {command}" in REFERENCE


def test_reference_documents_every_reject_reason_feature_and_name_word():
    from segmint.engine.io.clean import EVENT_REASONS, REASONS
    from segmint.engine.profile import NAME_RULES
    from segmint.kernels.sequence import ORDER_FEATURES

    for name in (*REASONS, *ORDER_FEATURES, "refund_share", "category_entropy", "activity_status", "rfm_segment",
                 "p_alive", "expected_purchases", "clv", "funnel_stage", "outlier", "micro_segment"):
        assert f"`{name}`" in REFERENCE, name
    assert set(EVENT_REASONS) - set(REASONS) <= {"null_event_type"} and "null event type" in REFERENCE
    for word, rule in NAME_RULES.items():
        assert word.split()[0] in REFERENCE and rule.split()[0] in REFERENCE, word


def test_docs_state_no_process_history():
    for text in (README, REFERENCE, (ROOT / "docs" / "cluster.md").read_text()):
        assert not re.search(r"\bnot yet\b|\bissue #?\d|\bTODO\b", text, re.I)


def test_every_help_example_runs(tmp_path, monkeypatch):
    """Run each command's example as written, in order, in one folder (with the files they expect)."""
    from segmint.bench import scenarios

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEGMINT_BENCH_DIR", str(tmp_path / "bench"))
    monkeypatch.setitem(scenarios.SCENARIOS, "S", scenarios.Scenario("S", 30_000, 1_500, True, True))
    runner = CliRunner()
    order = ["generate", "validate", "run", "assign", "features", "clv", "cohorts", "abtest split",
             "abtest evaluate", "compare", "report", "demo", "warmup", "bench"]
    assert sorted(order) == sorted(COMMANDS)
    for command in order:
        if command == "compare":  # the example compares June with July: make July first
            assert runner.invoke(app, ["run", "data/transactions", "--out", "runs/2026-07", "--k", "auto",
                                       "--previous", "runs/2026-06"]).exit_code == 0
        if command == "abtest evaluate":
            groups = pl.read_parquet("groups.parquet")
            groups.head(40).select("customer_id", converted=pl.lit(1), revenue=pl.lit(20.0)).write_csv("outcomes.csv")
        example = _example(command)
        r = runner.invoke(app, shlex.split(example)[1:])
        assert r.exit_code == 0, f"{example}: {r.stderr}"


def test_readme_python_snippet_runs(tmp_path, monkeypatch):
    from segmint.engine.synth import generate

    monkeypatch.chdir(tmp_path)
    generate(tmp_path / "segmint-demo" / "data", customers=1500, seed=2)
    snippet = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)  # noqa: S102 - our own documentation
    assert scope["segments"].height == 1500
    assert scope["scored"]["customer_id"].to_list() == [1000042]


def test_rayjob_manifest_runs_a_real_segmint_command(monkeypatch):
    yaml = pytest.importorskip("yaml")
    import segmint.engine.pipeline as pipeline

    doc = yaml.safe_load((ROOT / "docs" / "rayjob.yaml").read_text())
    assert doc["kind"] == "RayJob" and doc["apiVersion"].startswith("ray.io/")
    args = shlex.split(doc["spec"]["entrypoint"])
    assert args[0] == "segmint"
    seen = {}

    def capture(inputs, out, cfg, progress=None, **kwargs):
        seen.update(inputs=inputs, out=out, cfg=cfg)
        raise SystemExit(0)

    monkeypatch.setattr(pipeline, "run", capture)  # the CLI parses and builds the config; nothing runs
    monkeypatch.setattr("segmint.engine.runtime.configure", lambda threads: seen.update(threads=threads) or (1, []))
    monkeypatch.setattr("segmint.cli.app._state", {"debug": False, "started": 0.0})
    r = CliRunner().invoke(app, args[1:])
    assert r.exit_code == 0, r.output
    assert seen["cfg"].executor == "ray" and seen["cfg"].ray_address == "auto" and seen["threads"] == 4
    assert seen["out"].startswith("s3://") and seen["cfg"].work_dir.startswith("s3://")
    spec = doc["spec"]["rayClusterSpec"]
    pods = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for pod in pods:
        container = pod["template"]["spec"]["containers"][0]
        assert container["envFrom"], "credentials reach every pod from a secret"
        assert any(v["mountPath"] == "/dev/shm" for v in container["volumeMounts"])


def test_the_config_example_runs_as_it_says(tmp_path, monkeypatch, cdnow_parquet):
    # The example named no [events], [customers], [clv] enabled or rfm_grid keys, which load_toml takes; then it
    # listed the attribute it clusters on among cluster_features, and a run of it stopped (exit 2): it is run here.
    import json

    from segmint.engine.config import load_toml

    example = REFERENCE.split("## Configuration file")[1].split("```toml\n")[1].split("```")[0]
    (tmp_path / "conf").mkdir()   # relative paths in it are read from the working folder, not the file's
    (tmp_path / "conf" / "segmint.toml").write_text(example)
    cfg = load_toml(tmp_path / "conf" / "segmint.toml")
    assert cfg.cluster.attributes == ("region",) and cfg.clv.enabled and cfg.clv.discount_rate == 0.10
    assert cfg.events is not None and cfg.events.session is None and cfg.customers.attributes == ("region", "age_band")
    assert [name for name, _, _ in cfg.features.rfm_grid] == ["Best", "Growing", "Steady", "Lapsing"]
    # CDNOW in the example's column names; its customers and a month of their events beside it.
    tx = pl.read_parquet(cdnow_parquet).select(cust="customer_id", date="date", dollar_value="dollar_value")
    (tmp_path / "transactions").mkdir()
    tx.write_parquet(tmp_path / "transactions" / "part-0.parquet")
    ids = tx["cust"].unique().sort()
    regions = (ids % 3).replace_strict({0: "north", 1: "south", 2: "west"})
    customers = pl.DataFrame({"customer_id": ids, "region": regions,
                              "age_band": (ids % 2).replace_strict({0: "18-34", 1: "35+"})})
    customers.write_parquet(tmp_path / "customers.parquet")
    (tmp_path / "events").mkdir()
    events = pl.DataFrame({"customer_id": ids[:500], "event_type": "view"})
    events.with_columns(ts=pl.datetime(1998, 6, 1) + pl.duration(hours=pl.col("customer_id"))).write_parquet(
        tmp_path / "events" / "e.parquet")
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["run", "transactions", "--out", "out", "--config", "conf/segmint.toml"])
    assert r.exit_code == 0, r.output
    manifest = json.loads(next(Path("out").glob("run*.json")).read_text())
    assert manifest["config"]["cluster"]["attributes"] == ["region"]
    assert manifest["config"]["features"]["cluster_features"] == ["recency_days", "frequency", "aov"]
