"""The reusable model: everything needed to score new customers on the training scale.

Stored as ``model/model.json`` (plain JSON, no pickle): column mapping,
feature settings, channel vocabulary, RFM cut points, scaler, centroids,
segment names, CLV parameters, and provenance (versions, config hash, training as-of).
Float32 centroids round-trip exactly through JSON's float64.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from segmint.engine.analytics.clv import ClvParams
from segmint.engine.config import ClvConfig, Columns, FeatureConfig, LifecycleConfig
from segmint.engine.errors import ConfigError
from segmint.engine.features.rfm import RfmCuts
from segmint.engine.preprocess import Scaler

__all__ = ["Model", "FORMAT_VERSION", "versions"]

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Model:
    columns: Columns
    features: FeatureConfig
    channels: tuple[str, ...]
    rfm_cuts: RfmCuts
    scaler: Scaler
    centroids: np.ndarray          # float32[k, d], rows in segment-id order
    names: tuple[str, ...]         # segment names, by segment id
    clv: ClvParams | None          # fitted CLV parameters, reused when scoring
    clv_config: ClvConfig | None   # time unit, horizon and discount they were fitted for
    provenance: dict[str, Any]

    @property
    def k(self) -> int:
        return self.centroids.shape[0]

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        doc = {
            "format_version": FORMAT_VERSION,
            "columns": asdict(self.columns),
            "features": asdict(self.features),
            "channels": list(self.channels),
            "rfm_cuts": self.rfm_cuts.to_dict(),
            "scaler": self.scaler.to_dict(),
            "centroids": self.centroids.astype(np.float64).tolist(),
            "names": list(self.names),
            "clv": self.clv.to_dict() if self.clv else None,
            "clv_config": asdict(self.clv_config) if self.clv_config else None,
            "provenance": self.provenance,
        }
        (directory / "model.json").write_text(json.dumps(doc, indent=1))

    @classmethod
    def load(cls, directory: str | Path) -> Model:
        path = Path(directory)
        path = path / "model" / "model.json" if (path / "model").is_dir() else path / "model.json"
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            msg = f"cannot load model from {directory}: {exc}; give a run directory or its model/ folder"
            raise ConfigError(msg) from None
        if doc.get("format_version") != FORMAT_VERSION:
            msg = f"model format {doc.get('format_version')} is not supported (expected {FORMAT_VERSION})"
            raise ConfigError(msg)
        feats = dict(doc["features"])
        feats["lifecycle"] = LifecycleConfig(**feats["lifecycle"])
        feats["rfm_grid"] = tuple((n, tuple(r), tuple(f)) for n, r, f in feats["rfm_grid"])
        for key in ("cluster_features", "log_features"):
            if feats[key] is not None:
                feats[key] = tuple(feats[key])
        return cls(
            columns=Columns(**doc["columns"]),
            features=FeatureConfig(**feats),
            channels=tuple(doc["channels"]),
            rfm_cuts=RfmCuts.from_dict(doc["rfm_cuts"]),
            scaler=Scaler.from_dict(doc["scaler"]),
            centroids=np.asarray(doc["centroids"], dtype=np.float32),
            names=tuple(doc["names"]),
            clv=ClvParams(**doc["clv"]) if doc.get("clv") else None,
            clv_config=ClvConfig(**doc["clv_config"]) if doc.get("clv_config") else None,
            provenance=doc["provenance"],
        )


def versions() -> dict[str, str]:
    """Versions of segmint and the libraries whose outputs it depends on."""
    found = {"faiss": faiss.__version__}
    for name in ("segmint", "polars", "numba", "numpy", "pyarrow"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "unknown"
    return found
