"""Buy-till-you-die purchase simulation for the synthetic generator.

Per customer: first purchase at ``birth``; after each order the customer
drops out with probability ``dropout``; otherwise the next order follows an
exponential gap with rate ``rate`` (orders/day), until ``horizon``. Orders have
one or more lines; a line may later be refunded (a negative line on the same
order). Serial, seeded once: same seed, same output.
"""

from __future__ import annotations

import numpy as np

from segmint.kernels._jit import serial

__all__ = ["simulate_purchases"]


@serial
def simulate_purchases(seed, persona, birth, rate, dropout, spend_mu, favourite,
                       horizon, spend_sigma, refund_p, lines_mean, chan_cum,
                       cat_focus, n_categories):
    """Simulate every customer's order lines.

    Parameters
    ----------
    seed : int
    persona : int64[n]           # IN  persona of each customer
    birth : float64[n]           # IN  first purchase, days since window start
    rate, dropout, spend_mu : float64[n]  # IN  customer-level process parameters
    favourite : int64[n]         # IN  the customer's favourite category
    horizon : float              # IN  window length in days
    spend_sigma, refund_p, lines_mean, cat_focus : float64[P]  # IN  persona-level
    chan_cum : float64[P, C]     # IN  cumulative channel probabilities
    n_categories : int

    Returns
    -------
    cust int64, day float64, order int64, amount float64, channel int8,
    category int16 : arrays of equal length, one entry per line.
    """
    np.random.seed(seed)
    cap = max(16, birth.shape[0] * 8)
    cust = np.empty(cap, np.int64)
    day = np.empty(cap, np.float64)
    order = np.empty(cap, np.int64)
    amount = np.empty(cap, np.float64)
    channel = np.empty(cap, np.int8)
    category = np.empty(cap, np.int16)
    m = 0
    next_order = 0
    for i in range(birth.shape[0]):
        p = persona[i]
        t = birth[i]
        while True:
            n_lines = 1 + np.random.poisson(lines_mean[p] - 1.0)
            value = np.exp(spend_mu[i] + spend_sigma[p] * np.random.standard_normal())
            u = np.random.random()
            ch = 0
            while ch < chan_cum.shape[1] - 1 and u >= chan_cum[p, ch]:
                ch += 1
            weights = np.random.exponential(1.0, n_lines)
            weights /= weights.sum()
            for j in range(n_lines):
                if np.random.random() < cat_focus[p]:
                    cat = favourite[i]
                else:
                    cat = np.random.randint(0, n_categories)
                line_amount = np.round(value * weights[j], 2)
                refund_at = t + np.random.uniform(1.0, 30.0)
                refund = np.random.random() < refund_p[p] and refund_at < horizon
                if m + 2 > cap:
                    cap *= 2
                    cust = _grow(cust, cap)
                    day = _grow(day, cap)
                    order = _grow(order, cap)
                    amount = _grow(amount, cap)
                    channel = _grow(channel, cap)
                    category = _grow(category, cap)
                for r in range(2 if refund else 1):
                    cust[m] = i
                    day[m] = refund_at if r else t
                    order[m] = next_order
                    amount[m] = -line_amount if r else line_amount
                    channel[m] = ch
                    category[m] = cat
                    m += 1
            next_order += 1
            if np.random.random() < dropout[i]:
                break
            t += np.random.exponential(1.0 / rate[i])
            if t >= horizon:
                break
    return cust[:m], day[:m], order[:m], amount[:m], channel[:m], category[:m]


@serial
def _grow(a, cap):
    b = np.empty(cap, a.dtype)
    b[: a.shape[0]] = a
    return b
