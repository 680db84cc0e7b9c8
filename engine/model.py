"""The reusable model: everything needed to score new customers on the training scale.

Stored as ``model/model.json`` (plain JSON, no pickle): column mapping,
feature settings, channel vocabulary, RFM cut points, scaler, centroids,
segment names, CLV parameters, micro-segments, how the run cleaned its rows (--dedupe-on)
and read its events, and provenance (versions, config hash, training as-of).
Float32 centroids round-trip exactly through JSON's float64. ``Model.load``
checks everything it reads (schema, shapes, finite numbers): a truncated or
edited file is refused with the field at fault, never used half-read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, fields
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from segmint.engine.analytics.clv import ClvParams
from segmint.engine.cluster.micro import MicroModel
from segmint.engine.config import ClvConfig, Columns, FeatureConfig, LifecycleConfig, RunConfig, parse_as_of
from segmint.engine.errors import ConfigError, InputContractError
from segmint.engine.features.build import FeatureArrays
from segmint.engine.features.rfm import RfmCuts
from segmint.engine.io import store
from segmint.engine.io.committed import is_output, open_output
from segmint.engine.io.sink import write_json
from segmint.engine.preprocess import Scaler
from segmint.engine.runtime import FEW_ROWS, kernels_on_this_thread

__all__ = ["Model", "FORMAT_VERSION", "versions"]

FORMAT_VERSION = 3
# Version 2 lacked dedupe_on and events: read from the run's run.json where the model is loaded from its run.
_READABLE_VERSIONS = (2, 3)
_EVENT_KEYS = ("customer", "time", "time_format", "event_type", "session")


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
    segment_ids: tuple[int, ...] = ()  # id of each centroid row (stable across runs with --previous)
    next_segment_id: int = 0           # the next id never used by this model's lineage
    outlier_distance: tuple[float, ...] = ()  # per row: customers farther from the centroid are outliers
    micro: MicroModel | None = None    # micro-segment centroids per row
    dedupe_on: tuple[str, ...] | None = None   # the run's --dedupe-on: how scoring cleans rows by default
    events: dict[str, str | None] | None = None   # the run's events mapping (EventSource's columns, no paths)

    def __post_init__(self) -> None:
        if not self.segment_ids:  # a fresh model numbers its segments 0..k-1
            object.__setattr__(self, "segment_ids", tuple(range(self.centroids.shape[0])))
        object.__setattr__(self, "next_segment_id", max(self.next_segment_id, max(self.segment_ids) + 1))

    @property
    def k(self) -> int:
        return self.centroids.shape[0]

    def predict(self, transactions: Any, *, as_of: str | dt.date | None = None, time_format: str | None = None,
                dedupe_on: Sequence[str] | None = None, max_reject_share: float = 0.5,
                pseudonymize_ids: bool = False) -> pl.DataFrame:
        """Score customers in this process: one row per customer with segment, name, distance,
        margin, the outlier flag and micro-segment, RFM scores and activity status and, when the model has
        them, CLV columns.

        ``transactions`` is a Polars (LazyFrame, pandas) DataFrame or a pyarrow Table with the model's mapped
        columns, checked as ``segmint assign`` checks its files. ``as_of`` defaults to now (UTC): real-time
        scoring measures recency up to the present; given, rows after it are left out, and none is "in the
        future" (as with ``--as-of``). ``time_format``: how these rows write their times, where not as the
        model's data did (``assign --time-format``). ``dedupe_on``: the columns that make rows duplicates
        (``--dedupe-on``); by default the model's run's. Rows that cannot be used (see ``segmint validate``)
        are left out, as are customers without a purchase (returns only) and duplicates; where none can be used,
        or more than ``max_reject_share`` for a reason of their own (their time, amount or id; rows after a
        given ``as_of`` not counted, as ``assign --max-reject-share`` counts them), it says why.
        ``pseudonymize_ids``: the customer ids come back as their pseudonyms under SEGMINT_ID_KEY (as
        ``--pseudonymize-ids`` writes them; a model of a run pseudonymised with another key is refused), else as
        given.
        """
        from segmint.engine.features.table import features_of
        from segmint.engine.io.contract import check_frame
        from segmint.engine.io.frames import polars_frame

        frame = polars_frame(transactions)
        missing = [c for c in self.columns.source_columns() if c not in frame.columns]
        if missing:   # it raised Polars' ColumnNotFoundError, not a segmint error
            msg = (f"the transactions given lack {', '.join(map(repr, missing))}, which the model was trained with "
                   f"(its columns: {', '.join(self.columns.source_columns())}); give every one of them")
            raise InputContractError(msg)
        if engagement := self.event_features():
            msg = (f"this model clusters on the event feature(s) {list(engagement)}, which predict cannot compute "
                   f"(it reads no events): score with segmint assign --events")
            raise ConfigError(msg)
        if isinstance(max_reject_share, bool) or not isinstance(max_reject_share, int | float) \
                or not 0 <= max_reject_share <= 1:
            msg = f"max_reject_share must be a number in [0, 1], got {max_reject_share!r}"
            raise ConfigError(msg)
        cfg = self._config(time_format, dedupe_on)
        check_frame(frame, cfg.columns)
        if not isinstance(pseudonymize_ids, bool | np.bool_):   # the text "no" was True
            raise ConfigError(f"pseudonymize_ids must be True or False, got {pseudonymize_ids!r}")
        if pseudonymize_ids:
            frame = self._pseudonymized(frame)
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        at = _as_of(as_of) if as_of is not None else now
        # A given as-of leaves no row "in the future", as --as-of does: the clock is not consulted (rows later
        # than it were dropped though as_of was given).
        with kernels_on_this_thread(frame.height < FEW_ROWS):
            mapped = features_of(frame, cfg, as_of=at, now=dt.datetime.max if as_of is not None else now,
                                 as_of_given=as_of is not None, channels=self.channels, mode="arrays")
            _check_usable(mapped, cfg, max_reject_share)
            assert mapped.arrays is not None
            return self._scored(mapped.arrays)

    def _scored(self, features: FeatureArrays) -> pl.DataFrame:
        """The columns of assign's that a real-time call acts on, of customers of these features; a micro-segment
        and the outlier flag where the model has them (a micro-segment model scored one customer without its
        micro-segment). The score stage's steps (engine.pipeline.score) on the features' arrays, and one frame of
        what they give: a frame of each step's columns took 1.5 ms of scoring one customer."""
        from segmint.engine.analytics.clv import clv_values
        from segmint.engine.cluster.assign import assign
        from segmint.engine.cluster.device import backend_for
        from segmint.engine.features.build import customer_status
        from segmint.engine.features.rfm import rfm_scores
        from segmint.engine.io.arrow_numpy import frame
        from segmint.engine.pipeline.score import placement

        columns = features.columns
        scores, rfm_segment = rfm_scores(columns["recency_days"], columns["frequency"], columns["monetary_total"],
                                         self.rfm_cuts, self.features.rfm_grid)
        rfm = {name: scores[name] for name in ("r_score", "f_score", "m_score")}
        clv = clv_values(columns, self.clv, self.clv_config) if self.clv is not None and self.clv_config is not None \
            else {}
        scoring = self.scoring()
        x = self.scaler.transform_arrays({**columns, **rfm, **clv})
        placed = placement(x, assign(x, self.centroids, backend_for(scoring.device)), scoring)
        segment = placed.pop("segment")
        ids = np.asarray(self.segment_ids, np.int64)
        by_id = np.argsort(ids)   # each segment's row of names, found among the ids in order
        name = self._names[by_id[np.searchsorted(ids[by_id], segment)]]
        return frame({"customer_id": features.ids, "segment": segment, "name": name, **placed, **rfm,
                      "rfm_segment": rfm_segment, "activity_status": customer_status(columns, self.features.lifecycle),
                      **clv})

    def _pseudonymized(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` with its customer ids as their pseudonyms, under the key of this model's run where it names
        one (another key gives every customer another pseudonym than the run's assignments hold)."""
        from segmint.engine.io.pseudonym import pseudonymized, require_key

        require_key("pseudonymize_ids=True")
        self.check_key()
        return pseudonymized(frame, self.columns.customer)

    def check_key(self) -> None:
        """Refuse SEGMINT_ID_KEY where it is not the key this model's run pseudonymised its ids with (where the
        model names one): another key gives every customer another pseudonym than the run's assignments hold."""
        from segmint.engine.io.pseudonym import key_fingerprint

        run_key = self.provenance.get("pseudonym_key")
        if run_key is not None and run_key != key_fingerprint():
            msg = ("this model's run pseudonymised customer ids with another key: give SEGMINT_ID_KEY that run's "
                   "key, so that a customer has one pseudonym in both")
            raise ConfigError(msg)

    def event_features(self) -> tuple[str, ...]:
        """The event features (``--events``') this model clusters on."""
        from segmint.engine.analytics.funnel import EVENT_FEATURES

        return tuple(f for f in self.scaler.features if f in EVENT_FEATURES)

    def scoring(self, device: str = "cpu") -> Any:
        """The fitted state that scores customers (engine.pipeline.score.Scoring)."""
        from segmint.engine.pipeline.score import Scoring

        return Scoring(self.features, self.rfm_cuts, self.clv, self.clv_config, self.scaler, self.centroids, device,
                       self.segment_ids, self.outlier_distance, self.micro)

    def _config(self, time_format: str | None, dedupe_on: Sequence[str] | None) -> RunConfig:
        """The settings ``predict`` maps rows with: the model's, and what the call gives. Made once per such
        pair: a RunConfig checks its fields' types on construction (1.5 ms, a third of a call)."""
        if isinstance(dedupe_on, str):   # its letters were taken for column names ('c', 'u', 's', ...)
            fix = f"[{dedupe_on!r}]" if dedupe_on.strip() else "[] for none"
            msg = f"dedupe_on must be a list of column names, got the text {dedupe_on!r}: give {fix}"
            raise ConfigError(msg)
        dedupe = self.dedupe_on if dedupe_on is None else tuple(dedupe_on) or None
        key = (time_format, dedupe)
        if key not in self._configs:
            columns = self.columns if time_format is None else \
                dataclasses.replace(self.columns, time_format=time_format)
            self._configs[key] = RunConfig(columns=columns, features=self.features, dedupe_on=dedupe)
        return self._configs[key]

    @functools.cached_property
    def _names(self) -> pl.Series:
        """The segment names by row, to gather from (a gather took an expression's plan: 0.3 ms a call)."""
        return pl.Series("name", self.names, dtype=pl.String)

    @functools.cached_property
    def _configs(self) -> dict[tuple[str | None, tuple[str, ...] | None], RunConfig]:
        return {}

    def save(self, directory: str | Path, options: store.Options | None = None) -> None:
        write_json(store.join(directory, "model.json"), {
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
            "segment_ids": list(self.segment_ids),
            "next_segment_id": self.next_segment_id,
            "outlier_distance": list(self.outlier_distance),
            "micro": self.micro.to_dict() if self.micro is not None else None,
            "dedupe_on": list(self.dedupe_on) if self.dedupe_on is not None else None,
            "events": self.events,
        }, options)

    @classmethod
    def load(cls, directory: str | Path, options: store.Options | None = None) -> Model:
        """A finished run's output (its committed model), its ``model/`` folder, or a ``model.json``
        file (local or on an object store)."""
        store.check_scheme(directory)
        directory = store.canonical(directory)
        output = None
        if is_output(directory, options):
            output = open_output(directory, options)
            path = output.path("model/model.json") if output.has("model/model.json") else None
        else:
            # A model folder copied out of a run, or a folder holding one.
            candidates = [store.join(directory, "model", "model.json"), store.join(directory, "model.json"), directory]
            path = next((c for c in candidates if c.endswith(".json") and _is_file(c, options)), None)
        if path is None:
            msg = f"no model at {directory}: give a run directory written by 'segmint run' or its model/ folder"
            raise ConfigError(msg)
        try:
            doc = json.loads(store.read_bytes(path, options).decode())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            msg = f"the model file {path} cannot be read ({exc}); rerun 'segmint run' to rebuild it"
            raise InputContractError(msg) from None
        run_config: dict[str, Any] = {}
        if output is not None and isinstance(doc, dict) and doc.get("format_version") == 2:
            with contextlib.suppress(InputContractError, OSError, KeyError, TypeError):   # what format 2 lacked
                run_config = dict(output.read_json("run.json")["config"])
        try:
            model = _from_doc(doc, run_config)
        except ConfigError as exc:   # settings segmint refuses (one column in two roles), made or edited so
            msg = f"the model {path} holds settings segmint refuses ({exc}); rerun 'segmint run' to rebuild it"
            raise InputContractError(msg) from None
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"the model file {path} is damaged or edited ({exc}); rerun 'segmint run' to rebuild it"
            raise InputContractError(msg) from None
        if output is not None and model.provenance.get("pseudonymized_ids") is not False and \
                "pseudonym_key" not in model.provenance:
            # A model of a segmint that kept its run's key fingerprint in run.json alone (check_key: assign read it
            # there, predict did not, and another key's pseudonyms came back, exit 0).
            with contextlib.suppress(InputContractError, OSError, KeyError, TypeError):
                doc = output.read_json("run.json")
                key = doc.get("pseudonym_key") if isinstance(doc, dict) else None
                if key is not None:
                    model = dataclasses.replace(model, provenance={**model.provenance, "pseudonym_key": key})
        return model


def _as_of(value: Any) -> dt.datetime:
    """``predict``'s as_of as naive UTC: text as --as-of takes it, a date (its end) or a datetime with a zone
    (a TypeError before)."""
    if not isinstance(value, str | dt.date):   # a datetime is a date
        msg = f"as_of must be text, a date or a datetime, not {type(value).__name__}"
        raise ConfigError(msg)
    return parse_as_of(value if isinstance(value, str) else value.isoformat(), "as_of=")


def _check_usable(mapped: Any, cfg: RunConfig, limit: float) -> None:
    """Rows given, none of them usable for a reason of the row itself (its time, amount or id; not a customer
    left out as returns-only): the result would be empty without a word, where ``assign`` stops (exit 3). Or
    more than ``limit`` of them rejected for such a reason: a minority of rows in another time unit or form
    left those customers' histories short, and their segments wrong, without a word."""
    from segmint.engine.features.build import REASON_NAMES
    from segmint.engine.io.clean import above_share
    from segmint.kernels.lines import DUPLICATE

    # A customer whose amounts sum beyond the float range is left out for its rows' amounts: a fault of the rows
    # as non_finite_amount is (it was left out of the result without a word).
    row_level = {r: n for r, n in mapped.rejected.items()
                 if n and (REASON_NAMES.index(r) + 1 < DUPLICATE or r == "amount_overflow")}
    fix = (f"give times as the model's data wrote them (time_format={cfg.columns.time_format!r}) or pass "
           f"time_format=" if "unparseable_timestamp" in row_level else "see segmint validate")
    # Copies (dedupe_on's duplicates) are the rows they repeat: two overflowing rows sent twice were half of the
    # rows, not all, and came back as an empty frame, exit 0. The share below counts them as assign does.
    copies = mapped.rejected.get("duplicate", 0)
    if mapped.rows_in > copies and sum(row_level.values()) == mapped.rows_in - copies:
        reasons = ", ".join(f"{r} {n}" for r, n in {**row_level, "duplicate": copies}.items() if n)
        msg = f"none of the {mapped.rows_in} rows given can be used ({reasons}); {fix}"
        raise InputContractError(msg)
    # Of a row's own faults only: a one-customer call whose customer only returned, or whose history came twice,
    # is left out or deduplicated as documented, not refused. A given as_of's later rows are left out by choice.
    judged = mapped.rows_in - mapped.rows_after_as_of
    faults = {r: n for r, n in row_level.items() if r != "after_as_of"}
    later_faults = mapped.rows_after_as_of - mapped.rejected["after_as_of"]   # after it, with an earlier reason
    if judged and above_share(rejected := sum(faults.values()) - later_faults, judged, limit):
        reasons = ", ".join(f"{r} {n}" for r, n in faults.items())
        msg = (f"{rejected} of the {judged} rows given ({rejected / judged:.1%}) cannot be used ({reasons}), above "
               f"max_reject_share={limit:g}; {fix}, or raise max_reject_share")
        raise InputContractError(msg)


def _is_file(path: str, options: store.Options | None) -> bool:
    if store.is_remote(path):
        return store.exists(path, options) and not store.is_dir(path, options)
    return store.local(path).is_file()


def versions() -> dict[str, str]:
    """Versions of segmint and the libraries whose outputs it depends on."""
    found = {"faiss": _faiss_version()}
    for name in ("segmint", "polars", "numba", "numpy", "pyarrow", "scipy"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "unknown"
    return found


# Faiss' wheels on PyPI (a build from source or conda has none of them, and is asked).
_FAISS_DISTRIBUTIONS = ("faiss-cpu", "faiss-gpu-cu12", "faiss-gpu-cu11", "faiss-gpu")


def _faiss_version() -> str:
    """The version of the Faiss that clustering loads: the loaded module's, else that of the one Faiss wheel
    installed, else the module's, loaded to ask. Loading Faiss only to ask took a command that never clusters
    (``segmint features``) 0.06-0.09 s."""
    if "faiss" not in sys.modules:
        wheels = []
        for name in _FAISS_DISTRIBUTIONS:
            with contextlib.suppress(PackageNotFoundError):
                wheels.append(version(name))
        if len(wheels) == 1:
            return wheels[0]
    import faiss

    return faiss.__version__


def _from_doc(doc: Any, run_config: dict[str, Any]) -> Model:
    """``run_config``: the config in its run's run.json, where loaded from the run (else empty), for what a
    version 2 model did not keep: a run's --dedupe-on and events mapping (scoring left them out, exit 0)."""
    if not isinstance(doc, dict):
        raise TypeError("the document is not a JSON object")
    if doc.get("format_version") not in _READABLE_VERSIONS:
        raise ValueError(f"format_version {doc.get('format_version')!r}, expected {FORMAT_VERSION}")
    if doc["format_version"] == 2:   # what the file lacks (a format 2 model written since keeps dedupe_on)
        events = run_config.get("events")
        doc = {"dedupe_on": run_config.get("dedupe_on"),
               "events": {k: events.get(k) for k in _EVENT_KEYS} if isinstance(events, dict) else None} | doc
    feats = dict(doc["features"])
    feats["lifecycle"] = LifecycleConfig(**feats["lifecycle"])
    feats["rfm_grid"] = tuple((n, tuple(r), tuple(f)) for n, r, f in feats["rfm_grid"])
    for key in ("cluster_features", "log_features"):
        if feats[key] is not None:
            feats[key] = tuple(feats[key])
    scaler = Scaler.from_dict(doc["scaler"])
    centroids = np.asarray(doc["centroids"], dtype=np.float64)
    names = tuple(doc["names"])
    d = len(scaler.columns)
    if centroids.ndim != 2 or centroids.shape[1] != d or centroids.shape[0] < 1:
        raise ValueError(f"centroids have shape {centroids.shape}, expected (k, {d})")
    if not np.isfinite(centroids).all():
        raise ValueError("centroids hold a non-finite number")
    if len(names) != centroids.shape[0] or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{len(names)} names for {centroids.shape[0]} segments")
    ids = tuple(doc.get("segment_ids") or range(centroids.shape[0]))
    outliers = tuple(float(v) for v in doc.get("outlier_distance") or ())
    if outliers and (len(outliers) != centroids.shape[0] or not all(math.isfinite(v) and v >= 0 for v in outliers)):
        raise ValueError("outlier_distance must be one finite, non-negative number per segment")
    if len(ids) != centroids.shape[0] or len(set(ids)) != len(ids) or not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise ValueError(f"segment_ids {list(ids)} must be {centroids.shape[0]} distinct non-negative integers")
    if not (len(scaler.log) == len(scaler.mean) == len(scaler.std) == len(scaler.features)) or not all(
            math.isfinite(v) for v in (*scaler.mean, *scaler.std)) or min(scaler.std) <= 0:
        raise ValueError("the scaler's means and standard deviations are not finite and positive per feature")
    if not all(isinstance(v, bool) for v in scaler.log):   # "no" was a true value: every feature logged
        raise ValueError("scaler.log must be true or false per feature")
    cuts = RfmCuts.from_dict(doc["rfm_cuts"])
    for name in ("recency", "frequency", "monetary"):
        values = getattr(cuts, name)
        if len(values) != 4 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            raise ValueError(f"rfm_cuts.{name} must be 4 finite numbers")
        if list(values) != sorted(values):   # quantiles: out of order, the scores were taken as they came
            raise ValueError(f"rfm_cuts.{name} must be in increasing order")
    clv = None
    if doc.get("clv"):
        # Fields added since (with defaults) may be absent from a model written by an earlier version.
        clv = ClvParams(**{f.name: doc["clv"][f.name] for f in fields(ClvParams)
                           if f.name in doc["clv"] or f.default is MISSING})
        if clv.purchase_model not in ("bgnbd", "nbd"):
            raise ValueError(f"CLV purchase_model {clv.purchase_model!r}, expected bgnbd or nbd")
        if clv.time_unit not in ("day", "week"):
            raise ValueError(f"CLV time_unit {clv.time_unit!r}, expected day or week")
        dropout = (clv.a, clv.b) if clv.purchase_model == "bgnbd" else ()
        numbers = (clv.r, clv.alpha, *dropout, clv.p, clv.q, clv.v, clv.population_mean)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in numbers):
            raise ValueError("CLV parameters must be finite and positive")
    columns = Columns(**doc["columns"])
    dedupe = doc.get("dedupe_on")
    if dedupe is not None and (not isinstance(dedupe, list | tuple) or columns.customer not in dedupe
                               or not set(dedupe) <= set(columns.source_columns())):
        raise ValueError(f"dedupe_on {dedupe!r} must list mapped columns, the customer's among them")
    events = doc.get("events")
    if events is not None and (not isinstance(events, dict) or set(events) != set(_EVENT_KEYS) or not all(
            isinstance(events[k], str) for k in ("customer", "time", "event_type"))):
        raise ValueError(f"events {events!r} must map {', '.join(_EVENT_KEYS)}")
    return Model(
        columns=columns,
        features=FeatureConfig(**feats),
        channels=tuple(str(c) for c in doc["channels"]),
        rfm_cuts=cuts,
        scaler=scaler,
        centroids=centroids.astype(np.float32),
        names=names,
        clv=clv,
        clv_config=ClvConfig(**doc["clv_config"]) if doc.get("clv_config") else None,
        provenance=dict(doc["provenance"]),
        segment_ids=ids,
        next_segment_id=int(doc.get("next_segment_id", 0)),
        outlier_distance=outliers,
        micro=MicroModel.from_dict(doc["micro"], d, centroids.shape[0]) if doc.get("micro") else None,
        dedupe_on=tuple(dedupe) if dedupe is not None else None,
        events=events,
    )
