"""The radix sort and the sort chooser against np.sort, bit for bit."""

import numpy as np
import pytest

from segmint.engine import sorting
from segmint.kernels.radix import sort_finite


def _cases(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5000, 40_000))
    tiny = np.finfo(np.float64).tiny
    biggest = np.finfo(np.float64).max
    yield "uniform", rng.random(n) * 1000
    yield "signed", rng.standard_normal(n) * 10.0 ** rng.integers(-300, 300, n)
    yield "counts", rng.integers(0, 60, n).astype(np.float64)   # most digits shared: passes skipped
    yield "cents", np.round(rng.lognormal(3, 1, n), 2)
    yield "ties", rng.choice([-3.5, 0.25, 7.0, 1e9], n)
    yield "constant", np.full(n, -2.75)                           # no pass at all
    yield "sorted", np.sort(rng.standard_normal(n))
    yield "reversed", np.sort(rng.standard_normal(n))[::-1].copy()
    yield "extremes", rng.choice([-biggest, biggest, -tiny, tiny, tiny / 8, -tiny / 8, 1.0, -1.0], n)
    yield "subnormals", (rng.random(n) - 0.5) * tiny
    yield "positive zeros", np.where(rng.random(n) < 0.3, 0.0, rng.standard_normal(n))
    yield "negative zeros", np.where(rng.random(n) < 0.3, -0.0, rng.standard_normal(n))
    yield "one", np.array([rng.standard_normal()])
    yield "empty", np.zeros(0)


@pytest.mark.parametrize("seed", range(4))
def test_the_radix_sort_is_numpys_sort(seed):
    for name, values in _cases(seed):
        out = np.full(values.size, np.nan)
        assert sort_finite(values, out, np.empty(values.size, np.uint64)), name
        assert out.tobytes() == np.sort(values).tobytes(), name


def test_both_signs_of_zero_are_left_to_numpy():
    values = np.array([1.0, -0.0, 3.0, 0.0, -2.0])
    out = np.full(values.size, np.nan)
    assert not sort_finite(values, out, np.empty(values.size, np.uint64))
    assert np.isnan(out).all()   # not written


@pytest.mark.parametrize("radix", [True, False])
def test_sorted_finite_is_numpys_sort_whichever_sort_runs(monkeypatch, radix):
    monkeypatch.setattr(sorting, "_radix_faster", radix)
    rng = np.random.default_rng(7)
    mixed = np.where(rng.random(9000) < 0.2, rng.choice([0.0, -0.0], 9000), rng.standard_normal(9000))
    for _, values in [*_cases(11), ("both zeros", mixed), ("strided", rng.standard_normal(20_000)[::2])]:
        assert sorting.sorted_finite(values).tobytes() == np.sort(values).tobytes()


def test_the_choice_is_measured_once(monkeypatch):
    monkeypatch.setattr(sorting, "_radix_faster", None)
    timed = []
    monkeypatch.setattr(sorting, "_best_time", lambda sort, values: timed.append(sort) or len(timed))
    first = sorting._radix_is_faster()
    assert len(timed) == 2 and sorting._radix_is_faster() == first and len(timed) == 2
    assert first is True   # the radix sort's time (1) against NumPy's (2): 1 <= 0.8 * 2
