"""Time the CLV fits on simulated customers: ``python -m segmint.bench.clv_fit --customers 10000000``.

Customers are drawn from the BG/NBD process itself (gamma purchase rates,
beta dropout after each repeat purchase) and Gamma-Gamma spend, so the
recovered parameters can be checked against the truth in the same run.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from segmint.engine.analytics.clv import fit_bgnbd, fit_gamma_gamma
from segmint.engine.analytics.clv_simulate import simulate_bgnbd, simulate_spend

__all__ = ["main"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    truth_bg, truth_gg = (0.3, 400.0, 0.8, 2.5), (5.0, 4.0, 20.0)
    x, tx, T = simulate_bgnbd(rng, args.customers, *truth_bg, t_range=(200.0, 600.0))
    keep = x > 0
    m = simulate_spend(rng, x[keep], *truth_gg)
    fit_bgnbd(x[:1000], tx[:1000], T[:1000])  # compile the kernels outside the timings
    fit_gamma_gamma(x[keep][:1000], m[:1000])
    t0 = time.perf_counter()
    bg = fit_bgnbd(x, tx, T)
    t1 = time.perf_counter()
    gg = fit_gamma_gamma(x[keep], m)
    t2 = time.perf_counter()
    print(json.dumps({
        "customers": args.customers, "repeat_customers": int(keep.sum()),
        "bgnbd": {"truth": truth_bg, "fitted": bg[:4], "seconds": round(t1 - t0, 2)},
        "gamma_gamma": {"truth": truth_gg, "fitted": gg[:3], "seconds": round(t2 - t1, 2)},
    }, indent=1))


if __name__ == "__main__":
    main()
