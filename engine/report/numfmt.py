"""Numbers as a person reads them, by the unit ``profile_columns`` gives each column."""

from __future__ import annotations

import math

__all__ = ["value", "count", "share", "money"]


def value(unit: str, v: float | int | None) -> str:
    """``v`` in its unit: money with cents, days whole, shares and probabilities as percentages."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if unit in ("share", "probability"):
        return share(v)
    if unit == "currency":
        return money(v)
    if unit == "days":
        return f"{v:,.0f} days"
    if unit in ("orders", "count", "customers"):
        return f"{v:,.0f}" if float(v).is_integer() else f"{v:,.1f}"
    if unit in ("score", "percentile", "id"):
        return f"{v:.0f}"
    if unit in ("nats", "std"):
        return f"{v:.2f}"
    return f"{v:,.4g}"


def count(v: int) -> str:
    return f"{v:,}"


def share(v: float) -> str:
    """A fraction as a percentage; small non-zero shares keep a decimal so they do not read as 0%."""
    pct = 100 * v
    if 0 < abs(pct) < 0.1:
        return "<0.1%" if pct > 0 else "-<0.1%"
    return f"{pct:.1f}%" if 0 < abs(pct) < 10 else f"{pct:.0f}%"


def money(v: float) -> str:
    """Cents where they matter (order values), whole units for totals."""
    return f"{v:,.2f}" if abs(v) < 1000 else f"{v:,.0f}"
