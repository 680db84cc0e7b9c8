"""Stable segment ids across runs: the new centroids matched to a previous model's.

Both sets of centroids are compared in the previous model's scaled space (the new
centroids are taken back to raw feature values with the new scaler, then scaled as
the previous model scales). An optimal one-to-one assignment (Hungarian algorithm,
SciPy's ``linear_sum_assignment``) pairs them; a pair closer than ``match_distance``
(in standard deviations of that space) keeps the previous id and name. Every other
new segment is new, and gets an id never used before (the model remembers the
next free one); previous segments left without a partner have vanished.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from segmint.engine.errors import ConfigError
from segmint.engine.preprocess import Scaler

__all__ = ["Matching", "match_segments"]


@dataclass(frozen=True)
class Matching:
    ids: tuple[int, ...]               # id of each new centroid row
    names: tuple[str | None, ...]      # the previous name of matched rows, None for new segments
    vanished: tuple[int, ...]          # previous ids without a partner
    next_id: int                       # the next id never used
    report: dict[str, Any]             # for run.json


def match_segments(centroids: np.ndarray, scaler: Scaler, sizes: np.ndarray, previous: Any,
                   match_distance: float) -> Matching:
    """Match ``centroids`` (rows in the new scaled space, with their sizes) to ``previous`` (a Model)."""
    if scaler.columns != previous.scaler.columns:
        msg = (f"--previous clusters on {list(previous.scaler.columns)} but this run on {list(scaler.columns)}; "
               f"segments can only be matched on the same features")
        raise ConfigError(msg)
    from scipy.optimize import linear_sum_assignment

    mine = previous.scaler.scale(scaler.unscale(centroids))
    theirs = previous.centroids.astype(np.float64)
    distance = np.sqrt(((mine[:, None, :] - theirs[None, :, :]) ** 2).sum(axis=2))
    rows, cols = linear_sum_assignment(distance)
    ids: list[int | None] = [None] * len(centroids)
    names: list[str | None] = [None] * len(centroids)
    pairs = []
    for r, c in zip(rows, cols, strict=True):
        d = float(distance[r, c])
        kept = d <= match_distance
        pairs.append({"previous_id": previous.segment_ids[c], "distance": round(d, 6), "kept": kept})
        if kept:
            ids[r], names[r] = previous.segment_ids[c], previous.names[c]
    next_id = previous.next_segment_id
    new = []
    for r in np.argsort(-sizes, kind="stable"):  # new segments numbered by decreasing size
        if ids[r] is None:
            ids[r] = next_id
            new.append(next_id)
            next_id += 1
    vanished = tuple(sorted(set(previous.segment_ids) - set(ids)))
    report = {"previous_run": previous.provenance.get("run_id"), "match_distance": match_distance,
              "pairs": pairs, "new_ids": new, "vanished_ids": list(vanished)}
    return Matching(tuple(int(i) for i in ids), tuple(names), vanished, next_id, report)
