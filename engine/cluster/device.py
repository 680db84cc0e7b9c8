"""Which device clusters: ``auto`` picks the GPU when Faiss sees one, else the CPU."""

from __future__ import annotations

import faiss

from segmint.engine.errors import ConfigError

__all__ = ["resolve_device"]


def resolve_device(requested: str) -> str:
    """``cpu`` or ``gpu``; ``gpu`` without a usable GPU is a config error (exit 2)."""
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if requested == "gpu" and gpus == 0:
        msg = ("--device gpu: no usable GPU (Faiss sees 0 GPUs; this needs a CUDA machine with "
               "faiss-gpu installed); use --device cpu or auto")
        raise ConfigError(msg)
    if requested == "cpu" or gpus == 0:
        return "cpu"
    return "gpu"
