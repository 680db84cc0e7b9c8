"""segmint: segment very large customer bases. ``import segmint`` is the public API.

    import segmint
    result = segmint.run("data/transactions", "runs/2026-06", segmint.RunConfig(cluster=segmint.ClusterConfig(k=6)))
    result.summary                      # one row per segment
    result.assignments().collect()      # every customer
    segmint.Model.load("runs/2026-06").predict(new_transactions)

Names are imported on first use, so that ``import segmint`` stays light and the CLI can
set its thread budget before Polars, Numba or Faiss start.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from segmint.engine.runtime import few_malloc_arenas, serial_blas, short_openmp_spin, small_pages

short_openmp_spin()  # before Numba or Faiss load
small_pages()     # before NumPy and pyarrow load, where they have not
serial_blas()     # before NumPy or SciPy load
few_malloc_arenas()  # before helper threads allocate

try:
    __version__ = version("segmint")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without an install
    __version__ = "0+unknown"

_EXPORTS = {
    "run": "segmint.engine.api", "assign": "segmint.engine.api", "features": "segmint.engine.api",
    "clv": "segmint.engine.api", "cohorts": "segmint.engine.api", "validate": "segmint.engine.api",
    "Result": "segmint.engine.api",
    "Model": "segmint.engine.model",
    "open_output": "segmint.engine.io.committed", "Output": "segmint.engine.io.committed",
    "RunConfig": "segmint.engine.config", "Columns": "segmint.engine.config", "ClusterConfig": "segmint.engine.config",
    "FeatureConfig": "segmint.engine.config", "LifecycleConfig": "segmint.engine.config",
    "ClvConfig": "segmint.engine.config", "SamplingConfig": "segmint.engine.config",
    "EventSource": "segmint.engine.config", "CustomerSource": "segmint.engine.config",
    "load_toml": "segmint.engine.config",
    "SegmintError": "segmint.engine.errors", "ConfigError": "segmint.engine.errors",
    "InputContractError": "segmint.engine.errors", "OutputExistsError": "segmint.engine.errors",
    "configure_threads": "segmint.engine.runtime", "Progress": "segmint.engine.progress",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'segmint' has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name])
    value = getattr(module, "configure" if name == "configure_threads" else name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
