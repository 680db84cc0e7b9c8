"""Customers drawn from the BG/NBD and Gamma-Gamma processes themselves, so that a fit can be
checked against the parameters that generated its data (the CLV tests and ``segmint.bench.clv_fit``)."""

from __future__ import annotations

import numpy as np

__all__ = ["simulate_bgnbd", "simulate_nbd", "simulate_spend"]


def simulate_bgnbd(rng: np.random.Generator, n: int, r: float, alpha: float, a: float, b: float,
                   t_range: tuple[float, float] = (20.0, 60.0)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, t_x, T) of n customers observed for T ~ U(t_range) time units: purchase rates
    Gamma(r, scale 1/alpha), dropout probability Beta(a, b) after each repeat purchase."""
    lam = rng.gamma(r, 1 / alpha, n)
    p = rng.beta(a, b, n)
    T = rng.uniform(*t_range, n)
    x = np.zeros(n)
    tx = np.zeros(n)
    t = np.zeros(n)
    active = np.ones(n, bool)
    while active.any():
        idx = np.flatnonzero(active)
        t[idx] += rng.exponential(1 / lam[idx])
        bought = t[idx] <= T[idx]
        buyers = idx[bought]
        x[buyers] += 1
        tx[buyers] = t[buyers]
        dies = rng.random(buyers.size) < p[buyers]
        active[idx[~bought]] = False
        active[buyers[dies]] = False
    return x, tx, T


def simulate_nbd(rng: np.random.Generator, n: int, r: float, alpha: float,
                 t_range: tuple[float, float] = (20.0, 60.0)) -> tuple[np.ndarray, ...]:
    """(x, t_x, T, rate) of n customers who never drop out (the NBD: the BG/NBD at a -> 0), observed for
    T ~ U(t_range) time units after their first purchase: Poisson purchases at a Gamma(r, scale 1/alpha)
    rate, so x ~ Poisson(rate T) and, given x, the purchase times are x uniforms on (0, T]."""
    lam = rng.gamma(r, 1 / alpha, n)
    T = rng.uniform(*t_range, n)
    x = rng.poisson(lam * T).astype(np.float64)
    # The largest of x uniforms on (0, 1] is U^(1/x).
    tx = np.where(x > 0, T * rng.random(n) ** (1 / np.maximum(x, 1)), 0.0)
    return x, tx, T, lam


def simulate_spend(rng: np.random.Generator, x: np.ndarray, p: float, q: float, v: float) -> np.ndarray:
    """Mean spend of x transactions per customer under Gamma-Gamma (x > 0)."""
    nu = rng.gamma(q, 1 / v, x.size)
    return rng.gamma(p * x, 1 / (nu * x))
