"""The GPU path on a real card: same results as the CPU path. Skipped without a usable GPU.

Run on a GPU machine with ``pytest -m gpu``.
"""

import json

import numpy as np
import polars as pl
import pytest

from segmint.engine.cluster.assign import assign
from segmint.engine.cluster.backend import gpu_missing
from segmint.engine.cluster.kmeans import kmeanspp_init
from segmint.engine.cluster.lloyd import lloyd
from tests.fixtures import faiss_lloyd, planted

MISSING = gpu_missing()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(MISSING is not None, reason=f"no usable GPU: {MISSING}")]


@pytest.fixture(scope="module")
def card():
    from segmint.engine.cluster.backend import CudaBackend

    return CudaBackend()


def test_gpu_lloyd_matches_faiss_cpu_from_the_same_init(card):
    x = planted(11, n=200_000, k=32, d=16, scale=5.0)
    init = kmeanspp_init(x, 64, seed=0)
    ours, ours_inertia = lloyd(card, card.to_device(x), init, niter=20, seed=0)
    _, cpu_inertia = faiss_lloyd(x, init, niter=20, seed=0)
    assert abs(ours_inertia / cpu_inertia - 1) < 1e-3
    assert abs(assign(x, ours).inertia / cpu_inertia - 1) < 2e-3


def test_gpu_lloyd_is_deterministic(card):
    x = planted(3, n=100_000, d=8)
    init = kmeanspp_init(x, 16, seed=1)
    resident = card.to_device(x)
    a, b = lloyd(card, resident, init, 10, 1), lloyd(card, resident, init, 10, 1)
    assert a[0].tobytes() == b[0].tobytes() and a[1] == b[1]


def test_gpu_assignment_equals_the_host_one(card):
    x = planted(5, n=300_000, d=16)
    centroids = kmeanspp_init(x, 50, seed=2)
    host, gpu = assign(x, centroids), assign(x, centroids, card)
    # Float32 search on different hardware may break near-exact ties the other way.
    clear = host.margin > 1e-3
    assert np.array_equal(host.segment[clear], gpu.segment[clear])
    assert clear.mean() > 0.99
    np.testing.assert_allclose(gpu.distance[clear], host.distance[clear], rtol=1e-6)


def test_run_with_device_gpu(small_data, tmp_path):
    from typer.testing import CliRunner

    from segmint.cli.app import app

    outs = {}
    for device in ("cpu", "gpu"):
        out = tmp_path / device
        res = CliRunner().invoke(app, ["run", str(small_data / "transactions"), "--out", str(out), "--k", "6",
                                       "--seed", "3", "--device", device])
        assert res.exit_code == 0, res.output
        assert f"clustering ({device})" in res.output
        assert json.loads((out / "run.json").read_text())["clustering"]["device"] == device
        outs[device] = pl.read_parquet(out / "assignments").sort("customer_id")
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(outs["cpu"]["segment"], outs["gpu"]["segment"]) > 0.99
