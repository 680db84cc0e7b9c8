"""RFM scores, codes and segments against a plain Python reference, on random customers."""

from __future__ import annotations

import numpy as np
import polars as pl

from segmint.engine.config import DEFAULT_RFM_GRID, FeatureConfig
from segmint.engine.features.rfm import fit_rfm_cuts
from segmint.engine.features.table import add_rfm


def test_scores_codes_and_segments_match_a_plain_reference():
    rng = np.random.default_rng(7)
    n = 5_000
    table = pl.DataFrame({"recency_days": rng.integers(0, 400, n).astype(float),
                          "frequency": rng.integers(1, 12, n), "monetary_total": rng.lognormal(3, 1, n)})
    cuts = fit_rfm_cuts(table)
    out = add_rfm(table, cuts, FeatureConfig())
    grid = {(r, f): name for name, rs, fs in DEFAULT_RFM_GRID for r in rs for f in fs}
    for row in out.iter_rows(named=True):
        r = 5 - sum(row["recency_days"] > c for c in cuts.recency)
        f = 1 + sum(row["frequency"] > c for c in cuts.frequency)
        m = 1 + sum(row["monetary_total"] > c for c in cuts.monetary)
        assert (row["r_score"], row["f_score"], row["m_score"]) == (r, f, m)
        assert row["rfm_code"] == f"{r}{f}{m}"
        assert row["rfm_segment"] == grid[(r, f)]
    assert out["rfm_segment"].dtype == pl.Enum([name for name, _, _ in DEFAULT_RFM_GRID])
    assert len(set(out["rfm_code"])) > 60   # the scores spread over the grid: every digit is exercised



def _reference_above(value: float, cuts: tuple[float, ...]) -> int:
    """Cuts a value is above, a NaN above every cut but a NaN one (Polars' order of floats)."""
    return sum((value > c) or (np.isnan(value) and not np.isnan(c)) for c in cuts)


def test_scores_at_the_cut_points_of_nan_of_one_row_and_of_none():
    rng = np.random.default_rng(11)
    base = pl.DataFrame({"recency_days": rng.integers(0, 400, 500).astype(float),
                         "frequency": rng.integers(1, 12, 500), "monetary_total": rng.lognormal(3, 1, 500)})
    cuts = fit_rfm_cuts(base)
    # Values on the cut points themselves (a value equal to a cut is not above it), NaN, and infinities.
    edge = pl.DataFrame({"recency_days": [*cuts.recency, np.nan, np.inf, -np.inf],
                         "frequency": [int(np.ceil(c)) for c in cuts.frequency] + [1, 99, 0],
                         "monetary_total": [*cuts.monetary, np.nan, np.inf, 0.0]})
    grid = {(r, f): name for name, rs, fs in DEFAULT_RFM_GRID for r in rs for f in fs}
    for table in (edge, edge.head(1), edge.head(0)):
        out = add_rfm(table, cuts, FeatureConfig())
        assert out.height == table.height
        assert out.columns == [*table.columns, "r_score", "f_score", "m_score", "rfm_code", "rfm_segment"]
        for row in out.iter_rows(named=True):
            r = 5 - _reference_above(row["recency_days"], cuts.recency)
            f = 1 + _reference_above(row["frequency"], cuts.frequency)
            m = 1 + _reference_above(row["monetary_total"], cuts.monetary)
            assert (row["r_score"], row["f_score"], row["m_score"], row["rfm_code"], row["rfm_segment"]) == \
                (r, f, m, f"{r}{f}{m}", grid[(r, f)])
    # A NaN cut point (a population with a NaN) is above no value, not even a NaN.
    nan_cuts = type(cuts)((np.nan,) * 4, cuts.frequency, cuts.monetary)
    out = add_rfm(edge, nan_cuts, FeatureConfig())
    assert out["r_score"].to_list() == [5] * edge.height
