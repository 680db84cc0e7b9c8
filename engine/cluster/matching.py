"""Stable segment ids across runs: this run's segments matched to a previous model's.

Two kinds of evidence, the first where it exists:

1. Customers. Where the previous run's assignments are readable, ``shared[r, c]`` counts the
   customers (of this run's profile sample) in new segment ``r`` who were in previous segment ``c``.
   An optimal one-to-one assignment on that table (SciPy's ``linear_sum_assignment``, maximising the
   customers kept) pairs the segments, as an optimal relabelling of the two clusterings would. A pair
   keeps the previous id when it holds most of the previous segment's returning customers, or most of
   the new segment's customers: a new segment made of newcomers, which shares only a handful of
   customers with whatever it was paired with, is not that segment.
2. Centroids. The segments left unpaired are compared in the previous model's scaled space (the new
   centroids taken back to raw feature values with the new scaler, then scaled as the previous model
   scales); an optimal assignment on the distances pairs them, and a pair closer than
   ``match_distance`` (standard deviations of that space) keeps the previous id.

Every other new segment is new and gets an id never used before (the model remembers the next free
one); previous segments left without a partner have vanished. A matched segment keeps its previous
name too when its centroid is within ``match_distance`` of the previous one (a name states conditions
on the segment's profile); farther, it keeps the id and is named afresh.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from segmint.engine.errors import ConfigError
from segmint.engine.preprocess import Scaler

__all__ = ["Matching", "match_segments", "check_same_features", "optimal_overlap"]


@dataclass(frozen=True)
class Matching:
    ids: tuple[int, ...]               # id of each new centroid row
    names: tuple[str | None, ...]      # the previous name of matched rows, None for new segments
    vanished: tuple[int, ...]          # previous ids without a partner
    next_id: int                       # the next id never used
    report: dict[str, Any]             # for run.json


def match_segments(centroids: np.ndarray, scaler: Scaler, sizes: np.ndarray, previous: Any, match_distance: float,
                   shared: np.ndarray | None = None, note: str | None = None) -> Matching:
    """Match ``centroids`` (rows in the new scaled space, with their sizes in the profile sample) to
    ``previous`` (a Model). ``shared`` (int[k_new, k_previous], columns in ``previous.segment_ids``
    order) is the customers both runs share, by segment in each; None matches on centroids alone,
    ``note`` saying why."""
    check_same_features(scaler.columns, previous)
    from scipy.optimize import linear_sum_assignment

    mine = previous.scaler.scale(scaler.unscale(centroids))
    theirs = previous.centroids.astype(np.float64)
    distance = np.sqrt(((mine[:, None, :] - theirs[None, :, :]) ** 2).sum(axis=2))
    partner: dict[int, tuple[int, str]] = {}  # new row -> (previous column, the evidence)
    if shared is not None:
        for r, c in zip(*linear_sum_assignment(shared, maximize=True), strict=True):
            n = int(shared[r, c])
            if n > 0 and (2 * n >= shared[:, c].sum() or 2 * n >= sizes[r]):
                partner[int(r)] = (int(c), "customers")
    rows = [r for r in range(len(centroids)) if r not in partner]
    cols = sorted(set(range(len(theirs))) - {c for c, _ in partner.values()})
    if rows and cols:
        sub = distance[np.ix_(rows, cols)]
        for i, j in zip(*linear_sum_assignment(sub), strict=True):
            if sub[i, j] <= match_distance:
                partner[rows[i]] = (cols[j], "centroids")
    ids: list[int | None] = [None] * len(centroids)
    names: list[str | None] = [None] * len(centroids)
    for r, (c, _) in partner.items():
        ids[r] = previous.segment_ids[c]
        # The name states conditions on the segment's profile: kept only where the segment still looks the same.
        names[r] = previous.names[c] if distance[r, c] <= match_distance else None
    next_id = previous.next_segment_id
    new = []
    for r in np.argsort(-sizes, kind="stable"):  # new segments numbered by decreasing size
        if ids[r] is None:
            ids[r] = next_id
            new.append(next_id)
            next_id += 1
    vanished = tuple(sorted(set(previous.segment_ids) - set(ids)))
    pairs = [{"segment": ids[r], "by": how, "distance": round(float(distance[r, c]), 6), "name_kept": names[r] is not None,
              **({"shared_customers": int(shared[r, c])} if shared is not None else {})}
             for r, (c, how) in sorted(partner.items(), key=lambda item: ids[item[0]])]
    report = {"previous_run": previous.provenance.get("run_id"), "match_distance": match_distance,
              "method": "customers" if shared is not None else "centroids",
              **({"note": note} if note else {}), "pairs": pairs, "new_ids": new, "vanished_ids": list(vanished)}
    if shared is not None:
        total = int(shared.sum())
        kept = sum(int(shared[r, c]) for r, (c, _) in partner.items())
        report["shared_customers"] = {
            "customers": total, "kept_id": kept, "kept_share": round(kept / total, 6) if total else None,
            "optimal_share": round(optimal_overlap(shared) / total, 6) if total else None,
            "note": "customers of this run's profile sample who were in the previous run"}
    return Matching(tuple(int(i) for i in ids), tuple(names), vanished, next_id, report)


def check_same_features(columns: tuple[str, ...], previous: Any) -> None:
    """Refuse a previous model that clusters on other features: neither its centroids nor its ids apply."""
    if columns != previous.scaler.columns:
        added = [c for c in columns if c not in previous.scaler.columns]
        gone = [c for c in previous.scaler.columns if c not in columns]
        what = "; ".join([f"new here: {added}"] * bool(added) + [f"gone here: {gone}"] * bool(gone)) \
            or "in another order"
        # Keeping the previous features works only where this run has every one of them, and for behavioural ones:
        # an attribute's levels are its most frequent values, which no setting names ('region=east' was offered).
        levels = any("=" in c for c in (*added, *gone))
        keep = f"set [features] cluster_features = {list(previous.scaler.features)} in --config, or " \
            if not gone and not levels else ""
        msg = (f"--previous clusters on other features than this run ({what}), and segments can only be matched "
               f"on the same ones: {keep}run without --previous (segment ids then start afresh)")
        raise ConfigError(msg)


def optimal_overlap(shared: np.ndarray) -> int:
    """The most customers a one-to-one relabelling of two clusterings keeps in the same segment, from
    their contingency table (customers in segment r of one and c of the other)."""
    from scipy.optimize import linear_sum_assignment

    if shared.size == 0:
        return 0
    rows, cols = linear_sum_assignment(shared, maximize=True)
    return int(shared[rows, cols].sum())
