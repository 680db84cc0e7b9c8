"""Timestamps: what segmint accepts without being told, and how it reads what it is told.

Without ``--time-format``, a text time must be ISO 8601: ``YYYY-MM-DD``, optionally
followed by ``T`` or a space and ``HH:MM[:SS[.fraction]]``, optionally followed by ``Z``
or a UTC offset (``+02:00``, ``+0200``, ``+02``). Offsets are converted to UTC; times
without one are taken as UTC. Anything else (``12/1/2010 8:26``: December 1st or
January 12th?) is never guessed: ``check_text_times`` stops the run and names the
format to pass. Datetime columns with a time zone are converted to UTC; date
columns mean midnight UTC. Integer columns need a format: an strftime pattern such
as ``%Y%m%d``, or ``epoch_s``, ``epoch_ms``, ``epoch_us``, ``epoch_ns``. A time outside
years 1 to 9999 (an epoch in a finer unit than given, a corrupt value) does not parse, nor does a value
that a coarser unit reads between 1990 and 2100 (Unix seconds among milliseconds): it is quarantined.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Sequence

import polars as pl

from segmint.engine.errors import ConfigError

__all__ = ["EPOCH_FORMATS", "ISO", "pattern", "timestamp_expr", "check_time_column", "spread_sample",
           "check_epoch_unit", "readable_epochs", "check_text_times", "suggest_format", "FIRST_US", "LAST_US",
           "TIME_SAMPLE"]

EPOCH_FORMATS = {"epoch_s": "s", "epoch_ms": "ms", "epoch_us": "us", "epoch_ns": "ns"}
# A time format that says times are ISO 8601, read as with no format: what a batch says where its model's
# run was given a format (assign --time-format iso; Model.predict(time_format="iso")).
ISO = "iso"
# Rows a time column is judged on (its unit, its text form), at planning and in each chunk of the input read.
TIME_SAMPLE = 2_000
_PER_US = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 1 / 1_000}
# Times segmint can represent end to end (Python's datetime, which outputs and run.json use).
_FIRST = dt.datetime(1, 1, 1)
_LAST = dt.datetime(9999, 12, 31, 23, 59, 59, 999999)
# A value a coarser epoch unit reads in these years is that unit's, not a time in early 1970 (_coarser_unit).
_STRAY_FROM_US = int((dt.datetime(1990, 1, 1) - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1))
_STRAY_UNTIL_US = int((dt.datetime(2100, 1, 1) - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1))
FIRST_US = int((_FIRST - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1))
LAST_US = int((_LAST - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1))

# Seconds up to 59 and offsets up to 23:59: '10:00:60' was 10:01:00 and '+99:00' an offset of four days.
_ISO = (r"^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2})(?::([0-5]\d)(?:[.,](\d{1,9}))?)?)?"
        r"\s*(Z|z|[+-](?:[01]\d|2[0-3])(?::?[0-5]\d)?)?$")
_ISO_RE = re.compile(_ISO)
_SLASH_RE = re.compile(r"^(\d{1,2})[/.\-](\d{1,2})[/.\-](\d{4}|\d{2})(?:[ T](\d{1,2}:\d{2})(:\d{2})?)?")
# What a time is written with besides digits and separators: month and day names, AM/PM, the ISO 8601 letters
# (T, Z, W for a week) and zone names. A value that is nothing else, with a digit, looks like a time; others are
# not quoted in a message (an id column mapped as the time column had its ids quoted, in a pseudonymised run too:
# error lines end up in logs). Ids of digits and separators alone still are: nothing tells them from times.
_TIME_WORDS = re.compile(r"(?<![a-z])(jan(uary)?|feb(ruary)?|mar(ch)?|apr(il)?|may|june?|july?|aug(ust)?|sept?(ember)?"
                         r"|oct(ober)?|nov(ember)?|dec(ember)?|mon|tue|wed|thu|fri|sat|sun|utc|gmt)(?![a-z])"
                         r"|(?<=[\d\s])[ap]\.?m\.?(?![a-z])|(?<=\d)t(?=\d)|(?<=\d)z$|(?<=\d-)w(?=\d)", re.IGNORECASE)
_TIME_REST = re.compile(r"[\d\s\-/.:,+]*\d[\d\s\-/.:,+]*")
_NUMBER_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def looks_like_time(text: str) -> bool:
    """Whether ``text`` is written like a time or a date in some form (``_TIME_WORDS``), or is a number."""
    return bool(_NUMBER_RE.fullmatch(text) or _TIME_REST.fullmatch(_TIME_WORDS.sub("", text)))


def pattern(fmt: str | None) -> str | None:
    """A time format as parsing reads it: ``ISO`` is no format."""
    return None if fmt == ISO else fmt


def timestamp_expr(name: str, dtype: pl.DataType, fmt: str | None) -> pl.Expr:
    """Expression giving naive-UTC Datetime("us") for column ``name``; null where it does not parse
    or lies outside years 1 to 9999."""
    parsed = _parsed(name, dtype, pattern(fmt))
    return pl.when(parsed.is_between(_FIRST, _LAST)).then(parsed)


def _parsed(name: str, dtype: pl.DataType, fmt: str | None) -> pl.Expr:
    col = pl.col(name)
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is not None:
            col = col.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        return col.cast(pl.Datetime("us"))
    if dtype == pl.Date:
        return col.cast(pl.Datetime("us"))
    if fmt in EPOCH_FORMATS:
        return _epoch(col, dtype, EPOCH_FORMATS[fmt], coarser_read=False)
    text = col.cast(pl.String).str.strip_chars()
    if fmt is None:
        return _iso(text)
    parsed = text.str.to_datetime(_permissive_offsets(fmt), strict=False, time_unit="us")
    if _has_zone(fmt):
        parsed = parsed.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    return parsed


def _epoch(col: pl.Expr, dtype: pl.DataType, unit: str, coarser_read: bool) -> pl.Expr:
    """Epoch values in ``unit``; with ``coarser_read`` False, values of a coarser unit do not parse. Integers
    exactly; numbers with a fraction (pandas writes an integer column holding a NaN as floats, 1710223236.0;
    Python's time.time() gives 1710223236.25) to the nearest microsecond."""
    if dtype.is_integer():
        return _epoch_of(col.cast(pl.Int64, strict=False), unit, coarser_read, whole=True)
    if dtype.is_float() or isinstance(dtype, pl.Decimal):
        return _epoch_of(col.cast(pl.Float64), unit, coarser_read, whole=False)
    text = col.cast(pl.String).str.strip_chars()
    return pl.coalesce(_epoch_of(text.cast(pl.Int64, strict=False), unit, coarser_read, whole=True),
                       _epoch_of(text.cast(pl.Float64, strict=False), unit, coarser_read, whole=False))


def _epoch_of(number: pl.Expr, unit: str, coarser_read: bool, *, whole: bool) -> pl.Expr:
    # Bounded before conversion: a value beyond the range would wrap around in microseconds (NaN is in no range).
    keep = number.is_between(int(FIRST_US / _PER_US[unit]), int(LAST_US / _PER_US[unit]))
    if not coarser_read:
        keep = keep & ~_coarser_unit(number, unit)
    if whole:
        return pl.from_epoch(pl.when(keep).then(number), time_unit=unit).cast(pl.Datetime("us"))
    micros = (number * _PER_US[unit]).round(0).cast(pl.Int64, strict=False)
    return pl.from_epoch(pl.when(keep).then(micros), time_unit="us")


def _coarser_unit(number: pl.Expr, unit: str) -> pl.Expr:
    """Whether an epoch value is one of a coarser unit among finer ones: a coarser unit reads it between 1990 and
    2100, and so the unit given in January or February 1970 (at least 1,000 times finer). ``check_epoch_unit``
    refuses a column of such values; a minority of them in a chunk (Unix seconds among milliseconds) was read
    as 1970 and gave its customers tenures of 20,000 days, exit 0. They do not parse (unparseable_timestamp).
    The bounds are fixed years, not the run's date: the same rows read alike whenever the run is made."""
    coarser = [u for u in _PER_US if _PER_US[u] > _PER_US[unit]]
    if not coarser:
        return pl.lit(False)
    return pl.any_horizontal(number.is_between(int(_STRAY_FROM_US / _PER_US[u]), int(_STRAY_UNTIL_US / _PER_US[u]),
                                               closed="left") for u in coarser)


def check_time_column(frame: pl.DataFrame, name: str, fmt: str | None, flag: str) -> None:
    """``check_epoch_unit``, ``check_text_times`` or, for a strftime pattern, ``_check_pattern`` on up to
    TIME_SAMPLE rows spread over ``frame`` (one chunk of an input as read: engine.pipeline.partition.read_tables).
    The plan judges the first rows of the first file with any; every chunk of the input is judged alike as it
    is read: a later file in epoch seconds among milliseconds was read as January 1970 (exit 0), one of times
    like 12/1/2010 8:26 among ISO ones rejected row by row (exit 0 under the reject share)."""
    sample = spread_sample(frame.select(name))
    fmt = pattern(fmt)
    if fmt in EPOCH_FORMATS:
        values = readable_epochs(sample, name)
        if values is not None:
            check_epoch_unit(values, name, fmt, flag)
    elif fmt is None and sample.schema[name] == pl.String:
        check_text_times(sample[name].to_list(), name, flag)
    elif fmt is not None and not sample.schema[name].is_temporal():
        _check_pattern(sample, name, fmt, flag)


def spread_sample(frame: pl.DataFrame) -> pl.DataFrame:
    """Up to TIME_SAMPLE rows spread over ``frame``; the frame itself where it holds no more (gather_every cost
    a Model.predict call on one customer's history 0.43 ms, a tenth of it)."""
    return frame if frame.height <= TIME_SAMPLE else frame.gather_every(frame.height // TIME_SAMPLE)


def check_epoch_unit(values: pl.DataFrame, name: str, fmt: str, flag: str) -> None:
    """Refuse an epoch unit too fine (Unix seconds read as milliseconds put every purchase in January 1970, and
    the run went on with exit 0) or too coarse (past year 9999: every row quarantined, exit 3 naming no unit).
    Refused only where another unit puts the same values between 1990 and a year from now: times of 1970 read
    either way are left as given. ``values``: readable ones (``readable_epochs``), judged by the middle 98% of them: one
    stray value (a 99999999999999999 among milliseconds) let every other through."""
    units = list(EPOCH_FORMATS)
    given = _middle(_read(values, name, fmt), values.height)
    if given is None:
        # A unit too coarse: milliseconds read as seconds land past year 9999, and every row was quarantined
        # with a message that named no unit.
        others = units[units.index(fmt) + 1:]
        said = f"reads under 98 in 100 of the sampled times of column {name!r} (the others past year 9999)"
    elif given[1] < dt.datetime(1971, 1, 1):
        others = units[: units.index(fmt)][::-1]
        said = f"puts the sampled times of column {name!r} in 1970 (98 in 100 of them up to {given[1]})"
    else:
        return
    plausible = dt.datetime(1990, 1, 1), dt.datetime.now() + dt.timedelta(days=366)
    for unit in others:   # the nearest first
        times = _middle(_read(values, name, unit), values.height)
        if times is not None and plausible[0] <= times[0] and times[1] <= plausible[1]:
            msg = f"{flag} {fmt} {said}; as {unit} they run from {times[0]} to {times[1]}: give {flag} {unit}"
            raise ConfigError(msg)


def readable_epochs(head: pl.DataFrame, name: str) -> pl.DataFrame | None:
    """The rows of ``head`` whose epoch value reads in some unit; None where none does."""
    readable = head.filter(_read_expr(head, name, "epoch_ns").is_not_null()
                           | _read_expr(head, name, "epoch_s").is_not_null())
    return readable if readable.height else None


def check_text_times(values: Sequence[str | None], column: str, flag: str) -> None:
    """Refuse a text time column whose sampled values are mostly not ISO 8601, naming the format to give."""
    sample = [v.strip() for v in values if v is not None and v.strip()]
    foreign = [v for v in sample if not _ISO_RE.match(v)]
    if not foreign or len(foreign) * 2 < len(sample):
        return
    shown = [v for v in foreign if looks_like_time(v)]
    if not shown:
        raise ConfigError(_not_times(column, len(foreign), len(sample)))
    hint = suggest_format(shown)
    msg = (f"column {column!r} holds times like {shown[0]!r} and {shown[-1]!r} that are not ISO 8601 "
           f"(YYYY-MM-DD[ HH:MM[:SS]][+HH:MM]); segmint never guesses day and month order: {hint}")
    raise ConfigError(msg.replace("--time-format", flag))


def _check_pattern(sample: pl.DataFrame, name: str, fmt: str, flag: str) -> None:
    """Refuse a chunk whose sampled times mostly do not read with the strftime pattern given: a file whose times
    were written another way (ISO among US dates) was quarantined row by row, exit 0 under the reject share.
    Placeholders are no other way of writing times: cells without a digit ("N/A") and cells all of one value
    that reads as no time (a column of 0s) leave their rows to be quarantined; one day's file in ISO stops."""
    text = sample[name].cast(pl.String).str.strip_chars()
    read = sample.select(timestamp_expr(name, sample.schema[name], fmt).is_not_null().alias("r"))["r"]
    filled = text.is_not_null() & (text != "")
    foreign = text.filter(filled & ~read & text.str.contains(r"\d")).to_list()
    if not foreign or len(foreign) * 2 < int(filled.sum()):
        return
    if len(set(foreign)) == 1 and not (_ISO_RE.match(foreign[0]) or _SLASH_RE.match(foreign[0])):
        return
    shown = [v for v in foreign if looks_like_time(v)]
    if not shown:
        raise ConfigError(f"{flag} '{fmt}' does not read most values of a chunk of the input: "
                          + _not_times(name, len(foreign), int(filled.sum())))
    # A model's format applies to assign's batch where none is given: "iso" says the batch is ISO 8601.
    hint = f"those are ISO 8601: give --time-format {ISO}, or no format where the format named is not a model's" \
        if all(_ISO_RE.match(v) for v in shown) else suggest_format(shown)
    msg = (f"{flag} '{fmt}' does not read most times of column {name!r} in a chunk of the input, such as "
           f"{shown[0]!r} and {shown[-1]!r}: give files whose times are written one way (for those times "
           f"alone, {hint})")
    raise ConfigError(msg.replace("--time-format", flag))


def _not_times(column: str, foreign: int, sampled: int) -> str:
    """The message for ``foreign`` of ``sampled`` values read as no time, none of which looks like one."""
    if foreign < sampled:   # beside times that read: not a column mapped by mistake
        return (f"{foreign} of the {sampled} values sampled in column {column!r} do not read as times and look like "
                f"none (not quoted: they may be ids or other data): correct or leave out those rows")
    return (f"column {column!r} holds values none of which looks like a time (no date, clock time or month in them; "
            f"not quoted: they may be ids): check which column is mapped as the time column")


def suggest_format(values: Sequence[str]) -> str:
    """What to pass as ``--time-format`` for these values (as a sentence)."""
    slash = [m for v in values if (m := _SLASH_RE.match(v))]
    if slash and len(slash) == len(values):
        sep = values[0][len(slash[0].group(1))]
        year = "%Y" if len(slash[0].group(3)) == 4 else "%y"
        clock = (" %H:%M" + (":%S" if slash[0].group(5) else "")) if slash[0].group(4) else ""
        day_first = f"%d{sep}%m{sep}{year}{clock}"
        month_first = f"%m{sep}%d{sep}{year}{clock}"
        if year == "%y":
            return _two_digit_years(slash, (day_first, month_first, f"%y{sep}%m{sep}%d{clock}"))
        if any(int(m.group(1)) > 12 for m in slash):
            return f"the first field goes above 12, so the day comes first: give --time-format '{day_first}'"
        if any(int(m.group(2)) > 12 for m in slash):
            return f"the second field goes above 12, so the month comes first: give --time-format '{month_first}'"
        return (f"give --time-format '{month_first}' if the month comes first (US) "
                f"or '{day_first}' if the day comes first")
    if all(v.isdigit() and len(v) == 8 for v in values):
        return "give --time-format '%Y%m%d'"
    if all(v.lstrip("-").isdigit() for v in values):
        return "for Unix times give --time-format epoch_s (or epoch_ms, epoch_us, epoch_ns)"
    return "give --time-format with the strftime pattern of these values (e.g. '%d %b %Y %H:%M')"


def _two_digit_years(dates: Sequence[re.Match], formats: tuple[str, str, str]) -> str:
    """The suggestion for dates of three two-digit fields: the year may be the first field as well as the last
    ('24-07-01' is 1 July 2024 as often as 24 July 2001), so a first field above 12 alone says nothing. Of day
    first, month first and year first, those every value fits (day <= 31, month <= 12) are named; one only
    where the values leave one."""
    fields = [tuple(int(m.group(i)) for i in (1, 2, 3)) for m in dates]
    limits = ((0, 1), (1, 0), (2, 1))   # the (day, month) fields of each format
    fitting = [fmt for fmt, (day, month) in zip(formats, limits, strict=True)
               if all(1 <= f[day] <= 31 and 1 <= f[month] <= 12 for f in fields)]
    if len(fitting) == 1:
        return f"only one order of day, month and two-digit year fits every value: give --time-format '{fitting[0]}'"
    named = " or ".join(f"'{fmt}'" for fmt in fitting or formats)
    return f"two-digit years leave the order of the fields open: give --time-format {named}, the one that is right"


def _iso(text: pl.Expr) -> pl.Expr:
    parts = text.str.extract_groups(_ISO)
    date, clock, seconds, fraction, zone = (parts.struct.field(str(i)) for i in range(1, 6))
    micros = fraction.str.slice(0, 6).str.pad_end(6, "0")
    canonical = pl.concat_str(date, pl.lit("T"), clock.fill_null("00:00"), pl.lit(":"), seconds.fill_null("00"),
                              pl.lit("."), micros.fill_null("000000"))
    local = canonical.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", strict=False, time_unit="us")
    return local - pl.duration(minutes=_offset_minutes(zone).fill_null(0))


def _offset_minutes(zone: pl.Expr) -> pl.Expr:
    digits = zone.str.replace_all(":", "")
    sign = pl.when(digits.str.starts_with("-")).then(-1).otherwise(1)
    hours = digits.str.slice(1, 2).cast(pl.Int64, strict=False)
    minutes = digits.str.slice(3, 2).cast(pl.Int64, strict=False).fill_null(0)
    return pl.when(zone.str.to_uppercase() == "Z").then(0).otherwise(sign * (hours * 60 + minutes))


def _permissive_offsets(fmt: str) -> str:
    """``fmt`` with its UTC offsets read as ``%#z`` reads them: ``Z`` too, as ISO 8601 and most exports write UTC
    (Polars' ``%z`` and ``%:z`` read +01:00 and +0100, not Z: every row of such a file was rejected as
    unparseable_timestamp). ``%%`` stays a literal percent sign."""
    return re.sub(r"%%|%:?z", lambda m: m.group() if m.group() == "%%" else "%#z", fmt)


def _has_zone(fmt: str) -> bool:
    return any(z in fmt for z in ("%z", "%:z", "%#z"))


def _middle(times: pl.Series, sampled: int) -> tuple[dt.datetime, dt.datetime] | None:
    """The 1st and 99th percentiles of ``times`` (values read of ``sampled``); None where under 98% read."""
    if times.len() < 0.98 * sampled:   # ``sampled`` >= 1: none read is under 98% too
        return None
    ordered = times.sort()
    return ordered[int(0.01 * (times.len() - 1))], ordered[int(math.ceil(0.99 * (times.len() - 1)))]


def _read(values: pl.DataFrame, name: str, fmt: str) -> pl.Series:
    return values.select(_read_expr(values, name, fmt).alias("t"))["t"].drop_nulls()


def _read_expr(values: pl.DataFrame, name: str, fmt: str) -> pl.Expr:
    """The values as epochs of ``fmt``'s unit, those of a coarser unit too: what the unit checks judge."""
    return _epoch(pl.col(name), values.schema[name], EPOCH_FORMATS[fmt], coarser_read=True)
