"""The setuptools package list matches the folders, and the package imports by its mapped names."""

import tomllib
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_packages_list_matches_folders():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = cfg["package-dir"]
    found = set()
    for pkg, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([pkg, *rel.parts]))
    assert set(cfg["packages"]) == found


def test_installed_version_and_imports():
    import segmint.cli.app
    import segmint.engine.pipeline
    import segmint.kernels.sequence  # noqa: F401

    assert version("segmint")
