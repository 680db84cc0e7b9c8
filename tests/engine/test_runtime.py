"""Thread budget and warmup."""

import os

import pytest

from segmint.engine import runtime
from segmint.engine.errors import ConfigError


def test_available_cpus_respects_affinity_and_quota(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(runtime, "_cgroup_quota", lambda: 3)
    assert runtime.available_cpus() == 3
    monkeypatch.setattr(runtime, "_cgroup_quota", lambda: None)
    assert runtime.available_cpus() == 4


def test_configure_sets_every_library_and_the_cache(monkeypatch, tmp_path):
    import faiss
    import numba

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cache"))
    before = numba.get_num_threads()
    try:
        n, late = runtime.configure(1)
        assert n == 1 and numba.get_num_threads() == 1 and faiss.omp_get_max_threads() == 1
        assert os.environ["POLARS_MAX_THREADS"] == "1" and os.environ["NUMBA_NUM_THREADS"] == "1"
        assert (tmp_path / "cache").is_dir()
        assert any("polars already started" in p for p in late) or late == []
    finally:
        runtime.configure(before)


def test_bad_thread_count_is_a_config_error():
    with pytest.raises(ConfigError, match="--threads"):
        runtime.configure(-1)


def test_warmup_compiles_every_kernel():
    from segmint.engine.warmup import warmup

    import importlib
    import pkgutil

    import numba

    import segmint.kernels as kernels

    public = set()
    for info in pkgutil.iter_modules(kernels.__path__):
        module = importlib.import_module(f"segmint.kernels.{info.name}")
        public |= {name for name in getattr(module, "__all__", ())
                   if isinstance(getattr(module, name), numba.core.dispatcher.Dispatcher)}
    seconds = warmup()
    assert public and set(seconds) == public
