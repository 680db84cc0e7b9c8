"""RFM scores 1..5 by quintile, and named RFM segments from an R/F grid.

Cut points are the 20/40/60/80% quantiles (NumPy's default linear method) of
recency_days, frequency and monetary_total over the fitted population. A score
is 1 + the number of cut points strictly below the value (F, M); R is reversed
(5 - that number) so that higher R means more recent. Ties in the data can
merge cut points, so some scores may be empty; that is reported, not hidden.
The cut points are stored in the model so new customers are scored on the same
scale.
"""

from __future__ import annotations

import functools

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from segmint.engine.io import arrow_numpy
from segmint.engine.quantiles import linear_quantiles
from segmint.engine.runtime import map_threads

__all__ = ["RfmCuts", "fit_rfm_cuts", "rfm_columns", "rfm_scores"]

_QUANTILES = (0.2, 0.4, 0.6, 0.8)


@dataclass(frozen=True)
class RfmCuts:
    recency: tuple[float, ...]
    frequency: tuple[float, ...]
    monetary: tuple[float, ...]

    def to_dict(self) -> dict[str, list[float]]:
        return {"recency": list(self.recency), "frequency": list(self.frequency),
                "monetary": list(self.monetary)}

    @classmethod
    def from_dict(cls, d: dict[str, list[float]]) -> RfmCuts:
        return cls(tuple(d["recency"]), tuple(d["frequency"]), tuple(d["monetary"]))


def fit_rfm_cuts(table: pl.DataFrame) -> RfmCuts:
    """Quintile cut points over the population in ``table``: NumPy's linear quantiles of each column, from its
    chunks as they are (``linear_quantiles``: no float64 copy of the column and no partition of it; 10 M
    customers in 29 chunks, the three columns on two threads: 0.52-0.83 -> 0.079 s in L's fit stage)."""
    return RfmCuts(*map_threads(lambda col: linear_quantiles(table[col], _QUANTILES),
                                ("recency_days", "frequency", "monetary_total")))


def rfm_columns(table: pl.DataFrame, cuts: RfmCuts,
                grid: Sequence[tuple[str, Sequence[int], Sequence[int]]]) -> list[pl.Series]:
    """r_score, f_score, m_score (Int8), rfm_code and rfm_segment of every row of ``table`` (its recency_days,
    frequency and monetary_total, as the map makes them: no nulls)."""
    scores, segment = rfm_scores(table["recency_days"].to_numpy(), table["frequency"].to_numpy(),
                                 table["monetary_total"].to_numpy(), cuts, grid)
    *numbers, code = arrow_numpy.frame(scores).get_columns()
    return [*numbers, code.cast(pl.String), segment]


def rfm_scores(recency: np.ndarray, frequency: np.ndarray, monetary: np.ndarray, cuts: RfmCuts,
               grid: Sequence[tuple[str, Sequence[int], Sequence[int]]]) -> tuple[dict[str, np.ndarray], pl.Series]:
    """r_score, f_score, m_score (int8) and rfm_code (int16, the number 100 R + 10 F + M) of customers of these
    recency_days, frequency and monetary_total, and their rfm_segment.

    In NumPy, not Polars expressions: scoring one customer spent 0.6 ms planning five expressions (0.1 ms so;
    100,000 customers 5.5 -> 3.3 ms)."""
    r = 5 - _above(recency, cuts.recency)
    f = 1 + _above(frequency, cuts.frequency)
    m = 1 + _above(monetary, cuts.monetary)
    # Scores are digits 1-5: the segment is looked up by 10 R + F, with no text per customer.
    rf = r.astype(np.int16) * 10 + f
    names, cell = _segments(tuple((name, tuple(rs), tuple(fs)) for name, rs, fs in grid))
    return {"r_score": r, "f_score": f, "m_score": m, "rfm_code": rf * 10 + m}, names[cell[rf]].alias("rfm_segment")


def _above(v: np.ndarray, cuts: Sequence[float]) -> np.ndarray:
    """How many of ``cuts`` each value is above (int8); a NaN is above every cut but a NaN one, as Polars
    orders floats (the scores were Polars comparisons)."""
    nan = np.isnan(v) if v.dtype.kind == "f" else None
    out = np.zeros(v.shape[0], np.int8)
    for cut in cuts:
        above = v > cut
        if nan is not None and not np.isnan(cut):
            above |= nan
        out += above
    return out


@functools.lru_cache(maxsize=16)
def _segments(grid: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]) -> tuple[pl.Series, np.ndarray]:
    """The grid's segment names (an Enum series) and, at 10 R + F, the position of the cell's name."""
    names = pl.Series([name for name, _, _ in grid], dtype=pl.Enum([name for name, _, _ in grid]))
    cell = np.zeros(56, np.int64)
    for i, (_, rs, fs) in enumerate(grid):
        for r in rs:
            cell[[r * 10 + f for f in fs]] = i
    return names, cell
