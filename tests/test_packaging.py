"""The setuptools package list matches the folders, and the package imports by its mapped names."""

import tomllib
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_packages_list_matches_folders():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = cfg["package-dir"]
    mapped = {(ROOT / folder).resolve() for folder in mapping.values()}
    found = set()
    for pkg, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            if rel.parts and init.parent.resolve() in mapped:
                continue  # a mapped folder inside another is its own package (engine/public is segmint)
            found.add(".".join([pkg, *rel.parts]))
    assert set(cfg["packages"]) == found


def test_installed_version_and_imports():
    import segmint
    import segmint.cli.app
    import segmint.engine.pipeline
    import segmint.kernels.sequence  # noqa: F401

    assert version("segmint") == segmint.__version__
    assert {"run", "assign", "features", "clv", "cohorts", "validate", "Model", "RunConfig"} <= set(segmint.__all__)
    assert segmint.Model is segmint.engine.model.Model


def test_import_segmint_does_not_start_polars():
    import subprocess
    import sys

    code = "import sys, segmint, segmint.cli.app; assert 'polars' not in sys.modules and 'numba' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_versions_names_the_faiss_clustering_loads_without_loading_it():
    """run.json's Faiss version, in a process that never clusters (``segmint features``), comes without loading
    Faiss, and is the version the module gives once loaded."""
    import subprocess
    import sys

    code = ("import sys; from segmint.engine.model import versions; v = versions()['faiss']; "
            "assert 'faiss' not in sys.modules, 'loaded'; import faiss; assert v == faiss.__version__, v")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
