"""Feature matrix for clustering: signed log1p on heavy-tailed columns, then standardise;
customer attributes (``--cluster-attrs``) one-hot after them.

``sign(x) * log1p(|x|)`` keeps refunds (negative spend) finite. The fitted
means and standard deviations are stored in the model so new customers are
transformed on the training scale. A constant column gets std 1 (it then
contributes nothing to distances). An attribute contributes one column per level
seen in the fitting sample (the MAX_LEVELS most frequent), 0 or ``weight``; a missing
or unseen value has every column 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from segmint.engine.errors import ConfigError, InputContractError
from segmint.kernels.moments import column_moments

__all__ = ["Scaler", "fit_scaler", "checks_pass", "MAX_LEVELS"]

MAX_LEVELS = 32
_BLOCK_ROWS = 8192
_SLICE_ROWS = 16 * _BLOCK_ROWS
# Scoring cannot change the model's features: "cluster on features every customer has" could not be done.
_SCORING_FIX = ("the model clusters on it: cluster on features every customer has ([features] cluster_features), or "
                "score only customers who have it (with the tables it comes from)")
# Types NumPy holds as they are (not Int128, not Decimal): converted to float64 by NumPy as by Polars.
_NUMPY_NUMBERS = frozenset((pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64,
                            pl.Float32, pl.Float64))


@dataclass(frozen=True)
class Scaler:
    features: tuple[str, ...]
    log: tuple[bool, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    attributes: tuple[tuple[str, tuple[str, ...]], ...] = ()   # (attribute, its levels)
    weight: float = 1.0

    @property
    def columns(self) -> tuple[str, ...]:
        """The matrix's columns: the features, then ``attribute=level`` per one-hot column."""
        return (*self.features, *(f"{a}={level}" for a, levels in self.attributes for level in levels))

    def transform(self, table: pl.DataFrame) -> np.ndarray:
        """float32[n, d] C-contiguous matrix, as Faiss wants it."""
        _require(table, self.features)
        self._require_attributes(table.columns)
        # Block by block, column by column, into the float32 matrix: no float64 copy of the whole matrix (on
        # 800 k customers those copies were 150 MB above the matrix, the run's peak under --memory-limit 1GB).
        one_hot = [(a, levels) for a, levels in self.attributes if levels]
        x = np.empty((table.height, len(self.columns)), np.float32)
        for rows, values in _blocks(table, self.features, self.log):
            self._scale_into(x, rows, values)
        j = len(self.features)
        for a, levels in one_hot:
            text = table[a].cast(pl.String)
            for level in levels:
                x[:, j] = _is_level(table[a], text, level).fill_null(False).to_numpy() * self.weight
                j += 1
        _check_finite(x, self.columns, _SCORING_FIX)
        return x

    def transform_arrays(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        """``transform`` of customers given by their features' arrays, the same bits: for a model without
        customer attributes (``Model.predict``, which makes no table of its features)."""
        missing = [f for f in self.features if f not in features]
        if missing:
            msg = f"cluster feature(s) {missing} are not available; available: {list(features)}"
            raise ConfigError(msg)
        self._require_attributes(())
        n = len(features[self.features[0]]) if self.features else 0
        x = np.empty((n, len(self.columns)), np.float32)
        self._scale_into(x, slice(None), [_column(features[f], flag) for f, flag in zip(self.features, self.log,
                                                                                       strict=True)])
        _check_finite(x, self.columns, _SCORING_FIX)
        return x

    def _scale_into(self, x: np.ndarray, rows: slice, values: list[np.ndarray]) -> None:
        """The features' values (float64, logged where asked) of ``rows``, scaled into the float32 ``x``."""
        with np.errstate(over="ignore"):   # a value beyond float32 becomes inf, which _check_finite names
            for j, v in enumerate(values):
                x[rows, j] = (v - self.mean[j]) / self.std[j]

    def _require_attributes(self, columns: Sequence[str]) -> None:
        missing = [a for a, _ in self.attributes if a not in columns]
        if missing:
            msg = (f"this model clusters on the customer attribute(s) {missing}: score with 'segmint assign' "
                   f"and --customers with --customer-attrs {','.join(a for a, _ in self.attributes)}")
            raise ConfigError(msg)

    def scale(self, raw: np.ndarray) -> np.ndarray:
        """Raw values (float[n, d], in ``columns`` order, attributes as 0/1) to the scaled space."""
        x = np.array(raw, dtype=np.float64)
        d = len(self.features)
        for j, flag in enumerate(self.log):
            if flag:
                x[:, j] = _signed_log(x[:, j])
        x[:, :d] = (x[:, :d] - np.asarray(self.mean)) / np.asarray(self.std)
        x[:, d:] *= self.weight
        return x

    def unscale(self, x: np.ndarray) -> np.ndarray:
        """Points of the scaled space (float[n, d]) back to raw values: ``scale``'s inverse."""
        raw = np.array(x, dtype=np.float64)
        d = len(self.features)
        raw[:, :d] = raw[:, :d] * np.asarray(self.std) + np.asarray(self.mean)
        raw[:, d:] /= self.weight
        for j, flag in enumerate(self.log):
            if flag:
                raw[:, j] = np.sign(raw[:, j]) * np.expm1(np.abs(raw[:, j]))
        return raw

    def to_dict(self) -> dict:
        return {"features": list(self.features), "log": list(self.log),
                "mean": list(self.mean), "std": list(self.std),
                "attributes": [[a, list(levels)] for a, levels in self.attributes], "weight": self.weight}

    @classmethod
    def from_dict(cls, d: dict) -> Scaler:
        attributes = tuple((str(a), tuple(map(str, levels))) for a, levels in d.get("attributes", []))
        return cls(tuple(d["features"]), tuple(d["log"]), tuple(d["mean"]), tuple(d["std"]), attributes,
                   float(d.get("weight", 1.0)))


def fit_scaler(table: pl.DataFrame, features: Sequence[str], log_features: Sequence[str],
               rows: np.ndarray | None = None, attributes: Sequence[str] = (), weight: float = 1.0) -> Scaler:
    """Fit on the customers in ``table`` (or on its ``rows``, a sample given by position)."""
    _require(table, features)
    # A misspelled name ("frequncy") left its feature unlogged without a word. Names of features this data
    # lacks (category_entropy without categories, clv where its fit was skipped) are no error.
    stray = _stray(table, log_features)
    if stray:
        msg = f"features.log_features names {stray}, which are not features; available: {_numeric_features(table)}"
        raise ConfigError(msg)
    log = tuple(f in log_features for f in features)
    sample = table if rows is None else table[rows]
    x = _raw(sample, features, log)
    # Before the moments: one missing value made its column's mean NaN, and the refusal counted every customer.
    _check_finite(x, features)
    mean, std = column_moments(x) if x.shape[0] and x.shape[1] > 1 else (x.mean(axis=0), x.std(axis=0))
    # A constant column's computed mean and std carry rounding (std 1.2e-15 for frequency 1 everywhere, after
    # log1p): a customer who differed in it sat 1e14 standard deviations from every centroid. Only columns of
    # a std that small are read again (min and max over M's sample cost 0.05 s).
    constant = np.zeros(x.shape[1], bool)
    if x.shape[0]:
        small = np.flatnonzero(std <= 1e-9 * np.maximum(np.abs(mean), 1.0))
        constant[small] = x[:, small].min(axis=0) == x[:, small].max(axis=0)
        mean[constant] = x[0, constant]
    std[constant | (std == 0)] = 1.0
    levels = tuple((a, _levels(sample, a)) for a in attributes)
    # Clustered on nothing, exit 0: the customers table matched no customer's id, or the attribute had no value.
    empty = [a for a, known in levels if not known]
    if empty:
        msg = (f"--cluster-attrs {', '.join(empty)}: no customer clustered has a value (the customers table's ids "
               f"match none of the transactions', or the column is empty); check the ids' form in both tables "
               f"(and --customers-id-col), or leave it out of --cluster-attrs")
        raise InputContractError(msg)
    return Scaler(tuple(features), log, tuple(map(float, mean)), tuple(map(float, std)), levels, weight)


def _levels(table: pl.DataFrame, attribute: str) -> tuple[str, ...]:
    """The MAX_LEVELS most frequent non-null values, most frequent first (ties by value); refused where
    they are not categories (a ConfigError naming the fix): a number of more than MAX_LEVELS values
    (an amount, an age in years), or values so many that the levels kept hold under half the customers
    with one (an email, a postcode). Either was one-hot on a few arbitrary values, without a word."""
    counts = (table.select(pl.col(attribute).cast(pl.String).alias("v")).drop_nulls().group_by("v").len()
              .sort(["len", "v"], descending=[True, False]))
    kept = counts.head(MAX_LEVELS)
    known = int(counts["len"].sum())
    fix = (f"clustering takes an attribute as categories, one column for each of its {MAX_LEVELS} most frequent "
           f"values: group its values into at most {MAX_LEVELS} (bands, regions) in the customers table, or leave "
           f"it out of --cluster-attrs")
    if table.schema[attribute].is_numeric() and counts.height > MAX_LEVELS:
        msg = f"--cluster-attrs {attribute} is a number with {counts.height:,} values; {fix}"
        raise ConfigError(msg)
    if 2 * int(kept["len"].sum()) < known:
        msg = (f"--cluster-attrs {attribute} has {counts.height:,} values, and its {MAX_LEVELS} most frequent hold "
               f"{int(kept['len'].sum()):,} of the {known:,} customers with one; {fix}")
        raise ConfigError(msg)
    return tuple(kept["v"].to_list())


def _is_level(values: pl.Series, text: pl.Series, level: str) -> pl.Series:
    """Where ``values`` (``text``: as text) are the level (``_levels``' text of a value): the same text, or for
    numbers the same value,
    so that a batch's 1.0 (an integer column pandas made float for a missing value) is the model's level "1"
    (its customers sat at 0 on every level of the attribute, in other segments, exit 0). Integers compare exactly
    (2^53 + 1 is not 2^53, as floats would have it), and a Float32 value keeps its own text ("0.1")."""
    same = text == level
    if not values.dtype.is_numeric():
        return same
    try:
        number = float(level)
    except ValueError:
        return same
    if math.isnan(number):
        return same
    if values.dtype.is_integer():
        whole = int(level) if level.strip().lstrip("+-").isdigit() else int(number) if number.is_integer() else None
        try:
            return same if whole is None else same | (values == whole)
        except OverflowError:   # a level beyond the column's type (-1 beside UInt8): no value is it
            return same
    return same | (values.cast(pl.Float64) == number)


def _require(table: pl.DataFrame, features: Sequence[str]) -> None:
    # The types of the columns named alone: a table's whole schema took 0.3 ms of scoring one customer.
    dtypes = dict(zip(table.columns, table.dtypes, strict=True))
    missing = [f for f in features if f not in dtypes]
    if missing:
        msg = f"cluster feature(s) {missing} are not available; available: {_numeric_features(table)}"
        raise ConfigError(msg)
    # The id clustered as a number, a text code ("545") as 545, exit 0; a status or an attribute failed a cast.
    other = [f for f in features if not _is_feature(f, dtypes[f])]
    if other:
        msg = (f"cluster feature(s) {other} are not numeric features; available: {_numeric_features(table)} (a "
               f"customers table's attributes cluster with --cluster-attrs)")
        raise ConfigError(msg)


def _feature_names() -> set[str]:
    """Every numeric feature segmint makes but the channel shares (named by the data's channels)."""
    from segmint.engine.analytics.clv import CLV_COLUMNS
    from segmint.engine.analytics.funnel import EVENT_FEATURES
    from segmint.engine.features.build import LINE_FEATURES
    from segmint.kernels.sequence import ORDER_FEATURES

    return {*ORDER_FEATURES, *LINE_FEATURES, *CLV_COLUMNS, *EVENT_FEATURES, "r_score", "f_score", "m_score"}


def checks_pass(table: pl.DataFrame, features: Sequence[str], log_features: Sequence[str]) -> bool:
    """Whether ``fit_scaler``'s and ``transform``'s checks of the names pass on ``table``'s columns: every
    feature a numeric column of it, every log feature a feature."""
    numeric = set(_numeric_features(table))
    return all(f in numeric for f in features) and not _stray(table, log_features)


def _stray(table: pl.DataFrame, log_features: Sequence[str]) -> list[str]:
    return [f for f in log_features if f not in _numeric_features(table) and f not in _feature_names()
            and not f.startswith("channel_share_")]


def _numeric_features(table: pl.DataFrame) -> list[str]:
    """The numeric (or boolean: 0/1) columns a feature list may name (not the id, nor the internal hash)."""
    return [c for c, t in table.schema.items() if _is_feature(c, t)]


def _is_feature(name: str, dtype: pl.DataType) -> bool:
    return (dtype.is_numeric() or dtype == pl.Boolean) and name != "customer_id" and not name.startswith("__")


def _raw(table: pl.DataFrame, features: Sequence[str], log: Sequence[bool]) -> np.ndarray:
    """float64[n, d] C-ordered (the layout fit_scaler's statistics are summed in), filled a block of rows and
    a column at a time: no second copy of the matrix."""
    x = np.empty((table.height, len(features)))
    for rows, values in _blocks(table, features, log):
        for j, v in enumerate(values):
            x[rows, j] = v
    return x


def _check_finite(x: np.ndarray, columns: Sequence[str],
                  fix: str = "cluster on features every customer has ([features] cluster_features)") -> None:
    """Refuse a matrix with a missing or overflowing value: no centroid is nearest to it, and such a customer
    would be placed in a segment at random (the default features are never missing)."""
    finite = np.isfinite(x)
    if finite.all():
        return
    col = int(np.argwhere(~finite)[0][1])
    # Counted, no example: an id is personal data, and error lines end up in logs.
    msg = (f"cluster feature {columns[col]!r} is missing or not a finite number for "
           f"{int((~finite[:, col]).sum()):,} customer(s); {fix}")
    raise ConfigError(msg)


def _blocks(table: pl.DataFrame, features: Sequence[str], log: Sequence[bool]) -> Iterator[tuple[slice, list]]:
    """The features as float64 (signed-log1p where ``log``), _BLOCK_ROWS rows at a time: each block's rows
    and its values per feature. A C-ordered matrix filled a column at a time over all its rows reads and
    writes the whole matrix once per column; a block of it stays in cache across its columns (0.22 -> 0.09 s
    for 909 k x 13). Polars is asked for _SLICE_ROWS rows of a column at once, in the column's own type (no
    copy where they lie in one chunk and have no nulls), and NumPy converts a block at a time: no float64
    copy of whole columns, no Polars call per block."""
    for start in range(0, table.height, _SLICE_ROWS):
        part = table.slice(start, _SLICE_ROWS)
        columns = [_numpy(part[name]) for name in features]
        for lo in range(0, part.height, _BLOCK_ROWS):
            rows = slice(lo, lo + _BLOCK_ROWS)
            yield slice(start + lo, start + lo + _BLOCK_ROWS), [_column(c[rows], flag)
                                                                 for c, flag in zip(columns, log, strict=True)]


def _numpy(column: pl.Series) -> np.ndarray:
    """Integers and floats without nulls as they are (NumPy converts them to float64 as Polars does);
    anything else through Polars' cast: nulls to NaN, and its errors for what is not a number."""
    if column.dtype in _NUMPY_NUMBERS and not column.null_count():   # a set: comparing types one by one took 7 us
        return column.to_numpy()
    return column.cast(pl.Float64).to_numpy()


def _column(values: np.ndarray, log: bool) -> np.ndarray:
    """Values of a feature as float64, signed-log1p transformed where ``log``."""
    v = values.astype(np.float64, copy=False)
    return _signed_log(v) if log else v


def _signed_log(v: np.ndarray) -> np.ndarray:
    return np.sign(v) * np.log1p(np.abs(v))
