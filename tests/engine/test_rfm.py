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

