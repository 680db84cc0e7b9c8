"""Score and write: one bucket's customers through the fitted state, to the output.

``score_bucket`` reads the bucket's feature table, adds RFM scores and CLV, assigns
segments (when the state has centroids), writes the bucket's part of the output
under names fixed by the bucket (a retry overwrites them) and returns the KPI and
segment-mix partials. ``score_table`` is the same transformation for a table in
memory (the profile sample, ``Model.predict``).
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import polars as pl

from segmint.engine.analytics.clv import ClvParams, predict_clv
from segmint.engine import exact
from segmint.engine.cluster.assign import Assignment, assign
from segmint.engine.cluster.micro import MicroModel, assign_micro, micro_names
from segmint.engine.cluster.device import backend_for
from segmint.engine.config import ClvConfig, FeatureConfig
from segmint.engine.features.rfm import RfmCuts
from segmint.engine.features.table import add_rfm
from segmint.engine.io import arrow_numpy
from segmint.engine.io.sink import Layout
from segmint.engine.pipeline.bucket import HASH, Shares, read_features, release_features
from segmint.engine.pipeline.plan import Plan
from segmint.engine.preprocess import Scaler
from segmint.engine.profile import KpiPartials, kpi_partials
from segmint.engine.runtime import map_threads

__all__ = ["Scoring", "ScoreJob", "ScoreResult", "score_bucket", "scored_bucket", "finish_bucket", "write_scored",
           "score_table", "prepare", "assign_segments", "placement", "LT_COLUMNS"]

LT_COLUMNS = ("lt_frequency", "lt_recency", "lt_T", "lt_monetary")


@dataclass(frozen=True)
class Scoring:
    """The fitted state a bucket is scored with (from this run's fits, or a saved model)."""

    features: FeatureConfig
    rfm_cuts: RfmCuts
    clv: ClvParams | None = None
    clv_config: ClvConfig | None = None
    scaler: Scaler | None = None
    centroids: np.ndarray | None = None   # float32[k, d]
    device: str = "cpu"
    segment_ids: tuple[int, ...] = ()     # the segment id of each centroid row; () = 0..k-1
    outlier_distance: tuple[float, ...] = ()  # per row: farther than this is an outlier; () = none
    micro: MicroModel | None = None       # micro centroids per segment row

    @property
    def k(self) -> int:
        return 0 if self.centroids is None else self.centroids.shape[0]

    @property
    def ids(self) -> tuple[int, ...]:
        return self.segment_ids or tuple(range(self.k))


@dataclass(frozen=True)
class ScoreJob:
    plan: Plan
    bucket: int
    scoring: Scoring
    output: str        # "assignments", "features" or "clv": what the bucket writes
    layout: Layout
    release: bool = False   # remove the bucket's feature table once scored (bucket.release_features)
    shares: Shares | None = None   # its table's share columns where they are not the run's (bucket.Shares)


@dataclass(frozen=True)
class ScoreResult:
    bucket: int
    kpis: KpiPartials | None
    mix: dict[tuple[int, str, str | None], int]    # (segment, attribute, value) -> customers
    micro: dict[str, tuple[int, list[float]]]      # micro-segment -> (customers, revenue partials)
    files: tuple[str, ...] = ()                     # output parts written (relative to the output's root)


def score_bucket(job: ScoreJob) -> ScoreResult:
    return finish_bucket(job, scored_bucket(job))


def scored_bucket(job: ScoreJob) -> pl.DataFrame:
    """The bucket's feature table through ``score_table``: what ``finish_bucket`` writes."""
    return score_table(read_features(job.plan, job.bucket, job.shares).drop(HASH), job.scoring)


def finish_bucket(job: ScoreJob, scored: pl.DataFrame) -> ScoreResult:
    """Write a bucket's scored rows and sum its KPIs (``write_scored``); its feature table released as asked."""
    result = write_scored(job, scored)
    if job.release:
        release_features(job.plan, job.bucket)
    return result


def write_scored(job: ScoreJob, scored: pl.DataFrame) -> ScoreResult:
    """Write a bucket's scored rows (``score_table`` of its feature table) and sum its KPIs."""
    out = job.layout
    if job.output == "features":
        files = [out.write_part(scored, "features", job.bucket)] if scored.height else []
        return ScoreResult(job.bucket, None, {}, {}, tuple(files))
    if job.output == "clv":
        columns = ["customer_id", *LT_COLUMNS, *[c for c in scored.columns if c in _CLV]]
        files = [out.write_part(scored.select(columns), "clv", job.bucket)] if scored.height else []
        return ScoreResult(job.bucket, None, {}, {}, tuple(files))
    attrs = job.plan.cfg.customers.attributes if job.plan.cfg.customers is not None else ()

    def write() -> list[str]:
        return [out.write_part(part, f"assignments/segment={segment}", job.bucket)
                for (segment,), part in scored.partition_by("segment", as_dict=True, include_key=False).items()]

    # The KPI sums beside the writes, in what Polars' compression leaves of the cores (NumPy and serial kernels,
    # no OpenMP runtime): bench M's writes and sums 0.51-0.54 -> 0.49-0.50 s. Their arrays (about 50 bytes a
    # customer) are held beside the segments' copies: the stage's peak RSS on M 834.5 -> 836.5-837.0 MB.
    files, kpis = map_threads(lambda step: step(), [write, lambda: kpi_partials(scored, job.scoring.ids)])
    return ScoreResult(job.bucket, kpis, _mix(scored, attrs), _micro(scored), tuple(sorted(files)))


def score_table(table: pl.DataFrame, scoring: Scoring) -> pl.DataFrame:
    """RFM scores, CLV (with parameters) and, with centroids, segment, distance, margin, outlier and
    micro-segment (placed after customer_id) for every row of a feature table."""
    return assign_segments(prepare(table, scoring), scoring)


def prepare(table: pl.DataFrame, scoring: Scoring) -> pl.DataFrame:
    """RFM scores and CLV: the columns clustering may use."""
    table = add_rfm(table, scoring.rfm_cuts, scoring.features)
    if scoring.clv is not None and scoring.clv_config is not None:
        table = table.hstack(predict_clv(table, scoring.clv, scoring.clv_config))
    return table


def assign_segments(table: pl.DataFrame, scoring: Scoring,
                    placed: tuple[np.ndarray, Assignment] | None = None) -> pl.DataFrame:
    """Segment, distance, margin, outlier and micro-segment of every row of a prepared table. ``placed``:
    its scaled matrix and its assignment to ``scoring``'s centroids, when already computed."""
    if scoring.centroids is None or scoring.scaler is None:
        return table
    if placed is None:
        x = scoring.scaler.transform(table)
        placed = x, assign(x, scoring.centroids, backend_for(scoring.device))
    x, a = placed
    # Frames put together, not columns nor a select: planning a select took 0.6 ms of scoring one customer, a
    # frame of 50 columns 0.15 ms.
    rest = [c for c in table.columns if c != "customer_id"]
    return pl.concat([table[["customer_id"]], arrow_numpy.frame(placement(x, a, scoring)), table[rest]],
                     how="horizontal")


def placement(x: np.ndarray, a: Assignment, scoring: Scoring) -> dict[str, np.ndarray | pl.Series]:
    """segment (its id), distance, margin, and the outlier flag and micro-segment where ``scoring`` has them, of
    customers scaled to ``x`` and assigned ``a``, in that order."""
    segment = np.asarray(scoring.ids, dtype=np.int32)[a.segment]
    # One segment has no second nearest: no margin (it was +inf in the Parquet files).
    out: dict[str, np.ndarray | pl.Series] = {
        "segment": segment, "distance": a.distance,
        "margin": a.margin if len(scoring.ids) > 1 else pl.repeat(None, len(a.margin), dtype=pl.Float32, eager=True)}
    if scoring.outlier_distance:
        out["outlier"] = a.distance > np.asarray(scoring.outlier_distance, np.float32)[a.segment]
    if scoring.micro is not None:
        out["micro_segment"] = pl.Series(micro_names(segment, assign_micro(x, a.segment, scoring.micro)),
                                         dtype=pl.String)
    return out


_CLV = ("p_alive", "expected_purchases", "expected_avg_value", "clv")


def _micro(table: pl.DataFrame) -> dict[str, tuple[int, list[float]]]:
    if "micro_segment" not in table.columns:
        return {}
    names = table["micro_segment"].unique().sort().to_list()
    codes = (table["micro_segment"].rank("dense").cast(pl.Int64) - 1).to_numpy()  # positions in ``names``
    counts = np.bincount(codes, minlength=len(names))
    revenue = exact.partials(codes.astype(np.int64), table["monetary_total"].to_numpy(), len(names))
    return {name: (int(n), part) for name, n, part in zip(names, counts, revenue, strict=True) if n}


def _mix(table: pl.DataFrame, attributes: tuple[str, ...]) -> dict[tuple[int, str, str | None], int]:
    out: dict[tuple[int, str, str | None], int] = {}
    for attr in attributes:
        counts = table.group_by("segment", pl.col(attr).cast(pl.String).alias("value")).len()
        for seg, value, n in counts.iter_rows():
            out[(int(seg), attr, value)] = int(n)
    return out


