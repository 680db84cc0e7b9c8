"""Which device clusters: ``auto`` picks the GPU when Faiss sees one and CuPy is installed, else the CPU."""

from __future__ import annotations

from segmint.engine.cluster.backend import ArrayBackend, CudaBackend, gpu_missing
from segmint.engine.errors import ConfigError

__all__ = ["resolve_device", "backend_for"]


def resolve_device(requested: str) -> str:
    """``cpu`` or ``gpu``; ``gpu`` without a usable GPU is a config error (exit 2) naming what is missing."""
    if requested == "cpu":
        return "cpu"
    missing = gpu_missing()
    if requested == "gpu" and missing:
        msg = f"--device gpu: no usable GPU: {missing}; use --device cpu or auto"
        raise ConfigError(msg)
    return "cpu" if missing else "gpu"


def backend_for(device: str) -> ArrayBackend | None:
    """The backend k-means and assignment run on for a resolved device (None: Faiss' CPU k-means)."""
    return CudaBackend() if device == "gpu" else None
