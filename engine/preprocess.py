"""Feature matrix for clustering: signed log1p on heavy-tailed columns, then standardise.

``sign(x) * log1p(|x|)`` keeps refunds (negative spend) finite. The fitted
means and standard deviations are stored in the model so new customers are
transformed on the training scale. A constant column gets std 1 (it then
contributes nothing to distances).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from segmint.engine.errors import ConfigError

__all__ = ["Scaler", "fit_scaler"]


@dataclass(frozen=True)
class Scaler:
    features: tuple[str, ...]
    log: tuple[bool, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def transform(self, table: pl.DataFrame) -> np.ndarray:
        """float32[n, d] C-contiguous matrix, as Faiss wants it."""
        _require(table, self.features)
        x = _raw(table, self.features, self.log)
        x -= np.asarray(self.mean)
        x /= np.asarray(self.std)
        return np.ascontiguousarray(x, dtype=np.float32)

    def scale(self, raw: np.ndarray) -> np.ndarray:
        """Raw feature values (float[n, d], in ``features`` order) to the scaled space."""
        x = np.array(raw, dtype=np.float64)
        for j, flag in enumerate(self.log):
            if flag:
                x[:, j] = np.sign(x[:, j]) * np.log1p(np.abs(x[:, j]))
        return (x - np.asarray(self.mean)) / np.asarray(self.std)

    def unscale(self, x: np.ndarray) -> np.ndarray:
        """Points of the scaled space (float[n, d]) back to raw feature values: ``scale``'s inverse."""
        raw = np.asarray(x, dtype=np.float64) * np.asarray(self.std) + np.asarray(self.mean)
        for j, flag in enumerate(self.log):
            if flag:
                raw[:, j] = np.sign(raw[:, j]) * np.expm1(np.abs(raw[:, j]))
        return raw

    def to_dict(self) -> dict:
        return {"features": list(self.features), "log": list(self.log),
                "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> Scaler:
        return cls(tuple(d["features"]), tuple(d["log"]), tuple(d["mean"]), tuple(d["std"]))


def fit_scaler(table: pl.DataFrame, features: Sequence[str], log_features: Sequence[str],
               rows: np.ndarray | None = None) -> Scaler:
    """Fit on the customers in ``table`` (or on its ``rows``, a sample given by position)."""
    _require(table, features)
    log = tuple(f in log_features for f in features)
    x = _raw(table if rows is None else table[rows], features, log)
    std = x.std(axis=0)
    std[std == 0] = 1.0
    return Scaler(tuple(features), log, tuple(map(float, x.mean(axis=0))), tuple(map(float, std)))


def _require(table: pl.DataFrame, features: Sequence[str]) -> None:
    missing = [f for f in features if f not in table.columns]
    if missing:
        msg = (f"cluster feature(s) {missing} are not available; available: "
               f"{[c for c, t in table.schema.items() if t.is_numeric()]}")
        raise ConfigError(msg)


def _raw(table: pl.DataFrame, features: Sequence[str], log: Sequence[bool]) -> np.ndarray:
    x = table.select(pl.col(list(features)).cast(pl.Float64)).to_numpy().copy()
    for j, flag in enumerate(log):
        if flag:
            x[:, j] = np.sign(x[:, j]) * np.log1p(np.abs(x[:, j]))
    return x
