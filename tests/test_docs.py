"""Docs are tested: every command has help with an example and is documented in the README."""

import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from segmint.cli.app import app

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _walk(group, prefix: str = "") -> list[str]:
    names = []
    for name, cmd in group.commands.items():
        full = f"{prefix}{name}"
        names.extend(_walk(cmd, full + " ") if hasattr(cmd, "commands") else [full])
    return names


COMMANDS = _walk(typer.main.get_group(app))


def test_every_command_is_walked():
    assert {"run", "demo", "clv", "cohorts", "abtest split", "abtest evaluate"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_command_has_help_with_example(command):
    r = CliRunner().invoke(app, [*command.split(), "--help"])
    assert r.exit_code == 0
    assert "Example: segmint " + command in re.sub(r"\s+", " ", r.stdout)


@pytest.mark.parametrize("command", COMMANDS)
def test_command_documented_in_readme(command):
    assert f"segmint {command}" in README


def test_readme_documents_every_reject_reason_and_feature():
    from segmint.engine.io.clean import REASONS
    from segmint.kernels.sequence import ORDER_FEATURES

    for name in (*REASONS, *ORDER_FEATURES, "refund_share", "category_entropy", "activity_status",
                 "rfm_segment"):
        assert f"`{name}`" in README, name
