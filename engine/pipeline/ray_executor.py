"""Ray Core tasks as the pipeline's executor (``--executor ray``).

Each job is one task. A task takes a whole node's CPUs by default (the smallest node's
count on a cluster, segmint's thread budget on a local Ray): the kernels inside a job are
multi-threaded, and one bucket per node at a time is what the plan sized buckets for.
The thread budget reaches each task through its env (Ray reuses worker processes, Polars
and Numba ignore OMP_NUM_THREADS, and Faiss keeps the count its process first saw), and
every node compiles the Numba kernels once, before any job (concurrent cold compiles race).

Only small records cross the wire: the job without its Plan, and the Plan once per stage
through the object store (a Plan lists every input chunk, about 90 bytes each: 0.9 MB for
10,000 files, which would otherwise travel with each of 10,000 partition jobs).

Failures: a crashed worker and an OSError (object-store and network errors reach Python as
OSError) are retried; segmint's own errors fail fast, re-raised here as the same class with
the bucket or chunk named; a task that runs out of memory becomes a ConfigError naming the fix.
When one task fails, the others are cancelled (their workers killed) and waited for before the
run cleans up, so no task writes into an output or scratch folder after it was removed. A retried
task rewrites the same files, and the commit lists only the files the finished tasks reported
(engine.io.sink), so a first attempt's leftovers never reach the output.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from segmint.engine.errors import ConfigError, SegmintError
from segmint.engine.runtime import PROCESS_VARIABLES, available_cpus, numba_cache_dir

__all__ = ["RayExecutor", "start_local_ray", "MAX_RETRIES", "RETRY_EXCEPTIONS"]

J = TypeVar("J")
R = TypeVar("R")

# Ray's default, stated: attempts after the first, for a crashed worker or a RETRY_EXCEPTIONS error.
MAX_RETRIES = 3
RETRY_EXCEPTIONS = (OSError,)
# Only job records, one Plan per stage and small results pass through the object store.
_OBJECT_STORE_BYTES = 128 * 2**20
_LOOPBACK = "127.0.0.1"
# How long a failed run waits for its cancelled tasks to stop before it cleans up.
_STOP_SECONDS = 60


class RayExecutor:
    """Jobs as Ray tasks: on a local Ray started for the run (``address=None``), or on a running
    cluster (``"auto"``, ``"host:port"``, ``"ray://host:port"``). A Ray already initialised in
    this process is used as it is, and left running. ``cpus`` is each task's CPU count;
    ``needs_shared_storage`` says whether tasks may run on another machine than this process."""

    name = "ray"

    def __init__(self, address: str | None = None, cpus_per_task: int | None = None) -> None:
        self._ray = ray = _import_ray(local=address is None)
        self._owned = not ray.is_initialized() and address is None
        if self._owned:
            start_local_ray(_thread_budget(), _OBJECT_STORE_BYTES)
        elif not ray.is_initialized():
            _join(ray, address)
        try:
            nodes = _task_nodes(ray)
            self.needs_shared_storage = _elsewhere(ray, address, nodes)
            self.cpus = cpus_per_task or min(_cpus(n) for n in nodes)
            if self.cpus < 1 or self.cpus > max(_cpus(n) for n in nodes):
                msg = (f"cpus_per_task {self.cpus} does not fit a Ray node: they have "
                       f"{sorted({_cpus(n) for n in nodes})} CPUs")
                raise ConfigError(msg)
            options = {"num_cpus": self.cpus, "runtime_env": {"env_vars": _task_env(self.cpus)}}
            self._task = ray.remote(_run).options(max_retries=MAX_RETRIES, retry_exceptions=list(RETRY_EXCEPTIONS),
                                                  **options)
            self._warm(nodes, options)
        except BaseException:
            self.close()
            raise

    def map(self, fn: Callable[[J], R], jobs: Sequence[J], *, tick: Callable[[int, int], None]) -> list[R]:
        """``[fn(job) for job in jobs]`` as tasks, in job order; ``tick(done, total)`` as they finish."""
        ray = self._ray
        if not ray.is_initialized():
            # A task submitted now would start Ray's default local instance: on every interface.
            msg = "this RayExecutor is closed (or Ray was shut down); create another"
            raise RuntimeError(msg)
        plans: dict[int, Any] = {}    # id(plan) -> its ObjectRef, one per Plan
        index = {}
        for i, job in enumerate(jobs):
            wire, plan = _detach_plan(job)
            if plan is not None and id(plan) not in plans:
                plans[id(plan)] = ray.put(plan)
            index[self._task.remote(fn, wire, plans.get(id(plan)))] = i
        results: list[Any] = [None] * len(jobs)
        waiting, done = list(index), 0
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            more, waiting = ray.wait(waiting, num_returns=len(waiting), timeout=0) if waiting else ([], [])
            for ref in ready + more:
                try:
                    results[index[ref]] = ray.get(ref)
                except Exception as err:
                    _stop(ray, waiting)     # fail fast: the run is over
                    translated = _driver_error(ray, err, jobs[index[ref]])
                    if translated is None:
                        raise
                    raise translated from err
                done += 1
                tick(done, len(jobs))
        return results

    def close(self) -> None:
        if self._owned and self._ray.is_initialized():
            self._ray.shutdown()

    def check_shared(self, path: str) -> None:
        """Refuse a local ``path`` that some node's tasks would not see: relative (each worker has its own
        working directory), or a folder not mounted on every node (a probe file written here must be
        visible there)."""
        if not Path(path).is_absolute():
            msg = (f"{path} is a relative path; on a Ray cluster give storage every node reaches: s3://..., "
                   f"gs://..., az://..., or an absolute path mounted on every node")
            raise ConfigError(msg)
        folder = next(p for p in Path(path).parents if p.is_dir())
        probe = folder / f".segmint-probe-{uuid.uuid4().hex[:12]}"
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        see = self._ray.remote(os.path.exists)
        probe.write_bytes(b"")
        try:
            nodes = _task_nodes(self._ray)
            seen = self._ray.get([see.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
                                              num_cpus=0).remote(str(probe)) for n in nodes])
        finally:
            probe.unlink(missing_ok=True)
        blind = [n["NodeManagerAddress"] for n, ok in zip(nodes, seen, strict=True) if not ok]
        if blind:
            msg = (f"{path} is not on storage every Ray node reaches (node(s) {', '.join(blind)} cannot see "
                   f"{folder}); give s3://..., gs://..., az://..., or a folder mounted on every node")
            raise ConfigError(msg)

    def _warm(self, nodes: list[dict[str, Any]], options: dict[str, Any]) -> None:
        """Compile (or load) the kernels once per node, in workers with the tasks' env, so they are reused."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        warm = self._ray.remote(_warmup)
        self._ray.get([warm.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
                                    **options).remote() for n in nodes if _cpus(n) >= self.cpus])


def start_local_ray(num_cpus: int, object_store_memory: int) -> None:
    """A Ray for this process alone: every listener on 127.0.0.1, no dashboard, no usage stats,
    no auth token written to ~/.ray (nothing but this machine can reach it)."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray = _import_ray(local=True)
    ray.init(address="local", num_cpus=num_cpus, object_store_memory=object_store_memory,
             include_dashboard=False, _node_ip_address=_LOOPBACK, logging_level=logging.WARNING)
    addresses = {n["NodeManagerAddress"] for n in ray.nodes()}
    if addresses != {_LOOPBACK}:
        ray.shutdown()
        msg = (f"the local Ray listened on {sorted(addresses)}, not only {_LOOPBACK}; set "
               f"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before Ray is first imported")
        raise ConfigError(msg)


def _import_ray(*, local: bool) -> Any:
    if local:
        # Ray reads this once, when imported, and then binds every listener to 127.0.0.1
        # instead of every interface: an exposed Ray port runs code for whoever reaches it.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        constants = sys.modules.get("ray._private.ray_constants")
        if constants is not None:   # Ray was imported before segmint could set it
            constants.ENABLE_RAY_CLUSTER = False
    try:
        import ray
    except ImportError:
        msg = "--executor ray needs Ray: pip install -e '.[ray]'"
        raise ConfigError(msg) from None
    return ray


def _join(ray: Any, address: str) -> None:
    if address.startswith("ray://") and importlib.util.find_spec("grpc") is None:
        msg = f"--ray-address {address} connects through Ray Client, which needs grpcio: pip install 'ray[client]'"
        raise ConfigError(msg)
    ray.init(address=address, logging_level=logging.WARNING)


def _thread_budget() -> int:
    """The configured threads (``runtime.configure`` sets NUMBA_NUM_THREADS), else every CPU."""
    return int(os.environ.get("NUMBA_NUM_THREADS") or available_cpus())


def _task_nodes(ray: Any) -> list[dict[str, Any]]:
    nodes = [n for n in ray.nodes() if n["Alive"] and _cpus(n) >= 1]
    if not nodes:
        msg = ("the Ray cluster has no live node with CPUs for tasks (a head started with --num-cpus 0 "
               "and no workers yet?); start at least one worker")
        raise ConfigError(msg)
    return nodes


def _elsewhere(ray: Any, address: str | None, nodes: list[dict[str, Any]]) -> bool:
    """Whether tasks may run on another machine than this process: then bucket and output
    files must be on storage every node reaches."""
    if address is not None and address.startswith("ray://"):
        return True     # Ray Client: this process is not on the cluster at all
    here = ray.get_runtime_context().get_node_id()
    return any(n["NodeID"] != here for n in nodes)


def _cpus(node: dict[str, Any]) -> int:
    return int(node["Resources"].get("CPU", 0))


def _task_env(cpus: int) -> dict[str, str]:
    n = str(cpus)
    return {"POLARS_MAX_THREADS": n, "NUMBA_NUM_THREADS": n, "OMP_NUM_THREADS": n,
            "NUMBA_CACHE_DIR": str(numba_cache_dir()),
            **{var: os.environ[var] for var in PROCESS_VARIABLES if var in os.environ}}


def _detach_plan(job: Any) -> tuple[Any, Any]:
    """The job without its Plan, and the Plan (sent once per stage); other jobs go whole."""
    if dataclasses.is_dataclass(job) and any(f.name == "plan" for f in dataclasses.fields(job)):
        return dataclasses.replace(job, plan=None), job.plan
    return job, None


def _run(fn: Callable[[Any], Any], job: Any, plan: Any) -> Any:
    """The task: put the Plan back into the job, run it."""
    return fn(job if plan is None else dataclasses.replace(job, plan=plan))


def _warmup() -> None:
    from segmint.engine.warmup import warmup

    warmup()


def _stop(ray: Any, refs: list[Any]) -> None:
    """Cancel tasks still running (their workers killed) and wait until they have stopped, so that
    none writes after the caller has cleaned up what the run wrote."""
    for ref in refs:
        ray.cancel(ref, force=True)
    if refs:
        ray.wait(refs, num_returns=len(refs), timeout=_STOP_SECONDS)


def _driver_error(ray: Any, err: Exception, job: Any) -> Exception | None:
    """What the driver raises for a failed task; None: the error as Ray raised it."""
    label = _label(job)
    cause = getattr(err, "cause", None)
    if isinstance(err, ray.exceptions.RayTaskError) and isinstance(cause, SegmintError):
        return type(cause)(f"{label}: {cause}")
    if isinstance(err, ray.exceptions.OutOfMemoryError):
        return ConfigError(f"{label} ran out of memory on its worker; {_memory_fix(job)}")
    if isinstance(err, ray.exceptions.WorkerCrashedError):
        return ConfigError(f"{label}: its worker died {MAX_RETRIES + 1} times, most likely out of memory; "
                           f"{_memory_fix(job)}")
    return None


def _label(job: Any) -> str:
    if hasattr(job, "bucket"):
        return f"bucket {job.bucket}"
    return f"chunk {job.index} of the {job.role} input"


def _memory_fix(job: Any) -> str:
    if hasattr(job, "bucket"):
        return f"rerun with more buckets (--buckets {2 * job.plan.buckets})"
    return "rerun with a lower --memory-limit (smaller chunks) or give the workers more memory"
