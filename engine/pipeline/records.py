"""Job results as JSON: the done markers of ``--resume`` are data, never code (no pickle).

``dumps`` encodes a job result (one of the result dataclasses of the pipeline's stages, with
dicts, lists, tuples, datetimes, numbers, strings and None inside) as strict JSON; ``loads``
rebuilds it exactly: tuple dict keys, tuples, datetimes and non-finite floats survive the
round trip. Any other type is refused on both sides, so a marker can never name a class to build.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import math
from typing import Any

import numpy as np

__all__ = ["dumps", "loads"]


def dumps(value: Any) -> bytes:
    return json.dumps(_encode(value), allow_nan=False, separators=(",", ":")).encode()


def loads(data: bytes) -> Any:
    return _decode(json.loads(data))


@functools.cache
def _types() -> dict[str, type]:
    """The result types a marker may hold (imported late: they live in the stages that use this)."""
    from segmint.engine.analytics.cohorts import CohortPartials
    from segmint.engine.io.clean import RowStats
    from segmint.engine.pipeline.bucket import BucketResult, Counts, Shares
    from segmint.engine.pipeline.score import ScoreResult
    from segmint.engine.profile import KpiPartials

    return {t.__name__: t for t in (CohortPartials, RowStats, BucketResult, Counts, Shares, ScoreResult, KpiPartials)}


def _encode(value: Any) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else {"$f": repr(value)}
    if isinstance(value, dt.datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, tuple):
        return {"$t": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {"$d": [[_encode(k), _encode(v)] for k, v in value.items()]}
    name = type(value).__name__
    if dataclasses.is_dataclass(value) and _types().get(name) is type(value):
        return {"$c": name, "f": {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    msg = f"a job result holds a {type(value).__module__}.{name}, which a done marker cannot record"
    raise TypeError(msg)


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "$f" in value:
        return float(value["$f"])
    if "$dt" in value:
        return dt.datetime.fromisoformat(value["$dt"])
    if "$t" in value:
        return tuple(_decode(v) for v in value["$t"])
    if "$d" in value:
        return {_hashable(_decode(k)): _decode(v) for k, v in value["$d"]}
    if "$c" in value:
        cls = _types().get(value["$c"])
        if cls is None:
            msg = f"a done marker names {value['$c']!r}, which is not a job result"
            raise ValueError(msg)
        return cls(**{name: _decode(v) for name, v in value["f"].items()})
    msg = f"a done marker holds an object with keys {sorted(value)}"
    raise ValueError(msg)


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, (list, tuple)) else key
