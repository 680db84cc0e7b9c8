"""Plain Python/NumPy references for every kernel: slow, obvious, and the contract."""

from __future__ import annotations

import math

import numpy as np

DAY_US = 86_400_000_000


def order_features_ref(orders: list[tuple[int, float, int]], as_of_us: int, n_channels: int):
    """orders: (ts_us, net amount, channel) of one customer, sorted by ts. Returns (row dict, shares).

    Purchases are the orders with amount >= 0; returns (amount < 0) count only in the total."""
    total = sum(o[1] for o in orders)
    purchases = [o for o in orders if o[1] >= 0]
    if not purchases:
        row = dict.fromkeys(("recency_days", "tenure_days", "frequency", "aov", "ipt_mean_days", "ipt_std_days",
                             "lt_frequency", "lt_recency", "lt_T", "lt_monetary"), math.nan)
        return row | {"monetary_total": total}, [0.0] * n_channels
    ts = [o[0] for o in purchases]
    days = [t // DAY_US for t in ts]
    distinct = sorted(set(days))
    gaps = [b - a for a, b in zip(distinct, distinct[1:])]
    first_day = distinct[0]
    as_of_day = as_of_us // DAY_US
    daily = {d: 0.0 for d in distinct}
    for d, o in zip(days, purchases):
        daily[d] += o[1]
    later = [daily[d] for d in distinct[1:]]
    row = {
        "recency_days": (as_of_us - max(ts)) / DAY_US,
        "tenure_days": (as_of_us - min(ts)) / DAY_US,
        "frequency": len(purchases),
        "monetary_total": total,
        "aov": total / len(purchases),
        "ipt_mean_days": float(np.mean(gaps)) if gaps else float(as_of_day - first_day),
        "ipt_std_days": float(np.std(gaps)) if gaps else 0.0,
        "lt_frequency": len(distinct) - 1,
        "lt_recency": float(distinct[-1] - first_day),
        "lt_T": float(as_of_day - first_day),
        "lt_monetary": float(np.mean(later)) if later else 0.0,
    }
    shares = [sum(1 for o in purchases if o[2] == c) / len(purchases) for c in range(n_channels)]
    return row, shares


def line_features_ref(lines: list[tuple[float, int]]):
    """lines: (amount, category code or -1) of one customer."""
    gross = sum(a for a, _ in lines if a > 0)
    refunded = -sum(a for a, _ in lines if a < 0)
    refund_share = min(refunded / gross, 1.0) if gross > 0 else (1.0 if refunded > 0 else 0.0)
    cats = [c for _, c in lines if c >= 0]
    counts = {c: cats.count(c) for c in set(cats)}
    entropy = -sum((n / len(cats)) * math.log(n / len(cats)) for n in counts.values()) if cats else 0.0
    return refund_share, len(counts), entropy


def gamma_gamma_ll_ref(x: float, m: float, p: float, q: float, v: float) -> float:
    """Log-likelihood of one customer's mean spend m over x transactions under Gamma-Gamma
    (Fader & Hardie 2013, "The Gamma-Gamma Model of Monetary Value", eq. 5):
    f(m | p, q, v, x) = Gamma(px + q) / (Gamma(px) Gamma(q)) * v^q m^(px - 1) x^(px) / (v + m x)^(px + q)."""
    px = p * x
    return (math.lgamma(px + q) - math.lgamma(px) - math.lgamma(q) + q * math.log(v)
            + (px - 1) * math.log(m) + px * math.log(x) - (px + q) * math.log(v + m * x))


def purchase_days_ref(rng: np.random.Generator, birth, rate, dropout, horizon: float) -> list[list[float]]:
    """Order days of each customer under the process kernels/synth.py documents, with its own random
    numbers: the first order at ``birth``; after each order the customer drops out with probability
    ``dropout``, else the next order follows an exponential gap of rate ``rate`` (orders/day),
    unless that falls at or after ``horizon``."""
    days = []
    for t, lam, d in zip(birth, rate, dropout, strict=True):
        mine = [float(t)]
        while rng.random() >= d:
            t = t + rng.exponential(1 / lam)
            if t >= horizon:
                break
            mine.append(float(t))
        days.append(mine)
    return days


def kmeanspp_greedy_ref(x: np.ndarray, first: int, uniforms: np.ndarray, k: int) -> np.ndarray:
    """scikit-learn's greedy k-means++ written with NumPy, fed the same random numbers."""
    x = x.astype(np.float64)
    idx = [first]
    closest = ((x - x[first]) ** 2).sum(axis=1)
    for c in range(1, k):
        cum = np.cumsum(closest)
        cand = np.minimum(np.searchsorted(cum, uniforms[c - 1] * cum[-1]), len(x) - 1)
        dist = np.minimum(closest, ((x[None, :, :] - x[cand][:, None, :]) ** 2).sum(axis=2))
        best = int(np.argmin(dist.sum(axis=1)))
        idx.append(int(cand[best]))
        closest = dist[best]
    return np.array(idx)


_M64 = (1 << 64) - 1


def splitmix64_ref(z: int) -> int:
    z &= _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def hash_int_ref(value: int, seed: int) -> int:
    return splitmix64_ref((value & _M64) + seed * 0x9E3779B97F4A7C15)


def hash_text_ref(text: str, seed: int) -> int:
    h = 0xCBF29CE484222325
    for byte in text.encode():
        h = ((h ^ byte) * 0x100000001B3) & _M64
    return splitmix64_ref(h ^ seed)
