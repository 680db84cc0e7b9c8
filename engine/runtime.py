"""One thread budget for Polars, Numba and Faiss (OpenMP), Numba's cache directory, and the process-wide
defaults ``import segmint`` sets (OpenMP's spin, NumPy's pages, OpenBLAS' threads) where the user set none.

Call ``configure`` before Polars, Numba or Faiss are imported (the CLI does
it first thing): Polars reads POLARS_MAX_THREADS and Numba NUMBA_NUM_THREADS
when they load, and OpenMP sizes its pool on first use. Where a library is
already loaded, what can still be set is set (Numba up to its launch size,
Faiss always) and ``configure`` says what could not.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import os
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["available_cpus", "process_gone", "pid_namespace", "pids_here", "configure", "short_openmp_spin",
           "small_pages", "serial_blas",
           "set_by_segmint", "PROCESS_VARIABLES",
           "numba_cache_dir", "prune_numba_cache",
           "current_rss",
           "peak_rss", "default_memory_limit", "release_free_memory", "vm_hwm", "thread_budget", "map_threads",
           "in_order", "when_asked", "parallel_kernels_side_by_side", "few_malloc_arenas", "signals_held",
           "note_signal", "stop_if_signalled", "FEW_ROWS", "kernels_on_this_thread"]

T = TypeVar("T")
R = TypeVar("R")
# Rows so few that a call's fixed costs outweigh the work: scoring one customer's history in a call
# (Model.predict). For them Numba's parallel kernels run on the calling thread (waking OpenMP's sleeping threads
# took 0.1-0.2 ms a kernel), the memory freed is kept, and text cells are hashed without a dictionary.
FEW_ROWS = 10_000
# glibc's mallopt parameter for the most arenas (malloc.h).
_M_ARENA_MAX = -8
# GNU OpenMP spins this many times (about 0.1 ms) before an idle thread sleeps: short_openmp_spin.
OPENMP_SPIN = 10_000
# The variables the defaults of ``import segmint`` govern (short_openmp_spin, small_pages, serial_blas), set by
# segmint or the user: a process started for segmint's work (a Ray task) takes the driver's.
PROCESS_VARIABLES = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "NUMPY_MADVISE_HUGEPAGE", "MIMALLOC_ARENA_EAGER_COMMIT",
                     "OPENBLAS_NUM_THREADS")
# The environment variables segmint set itself in this process (the user had not), and the values it set.
_DEFAULTED: dict[str, str] = {}
# The file in a kernel cache folder that names the source folder it holds the compiled kernels of.
_SOURCE_MARK = "segmint-source"


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2/v1 CPU quota."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_quota()
    return max(1, min(n, quota)) if quota else max(1, n)


def pid_namespace() -> str:
    """This process's PID namespace (Linux: 'pid:[4026531836]'; "" where there is none to read). With the host
    name it says whose pids a lock or owner file names: containers on one host (docker --network host,
    Kubernetes hostNetwork) share the host name, not the pids."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def pids_here(host: str | None, namespace: str | None) -> bool:
    """Whether a pid recorded with ``host`` and ``namespace`` names a process this one can look up
    (``process_gone``). A record without a namespace (None: written before it was kept) is judged by the host
    alone, as it was. A run in another container of the same host took a live run's lease over, its pid being
    no process here, and removed its scratch."""
    return host == socket.gethostname() and namespace in (None, pid_namespace())


def process_gone(pid: int) -> bool:
    """Whether process ``pid`` of this host has ended: none is there, or it is a zombie (ended, not yet reaped:
    in a container whose first process does not reap, a killed run's stays one, and its output was "being
    written" until its lease ran out). Another user's process is taken to run."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"   # the state follows the name in brackets
    except (OSError, IndexError):
        return False


def numba_cache_dir() -> Path:
    """NUMBA_CACHE_DIR if set, else ~/.cache/segmint/numba, else (an unwritable home) a folder
    under the system temporary directory: compiled kernels need somewhere to go."""
    candidates = [os.environ.get("NUMBA_CACHE_DIR"), Path.home() / ".cache" / "segmint" / "numba",
                  Path(tempfile.gettempdir()) / f"segmint-numba-{_user()}"]
    for candidate in candidates:
        if not candidate:
            continue
        path = Path(candidate)
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / f".probe-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
            return path
        except OSError:
            continue
    from segmint.engine.errors import ConfigError

    msg = f"no writable folder for compiled kernels; set NUMBA_CACHE_DIR to one (tried {candidates[1:]})"
    raise ConfigError(msg)


def prune_numba_cache(cache: Path) -> None:
    """Record in this install's kernel cache the folder it compiles, and remove the caches of installs
    whose folder is gone.

    Numba names a cache folder after the source folder (``kernels_<sha1 of its path>``) and never removes
    one: every clean clone or reinstall left another behind (18 folders, 117 MB, on the development
    machine). A folder without the record (another program's, an earlier segmint's) is left alone; one
    whose folder exists is kept, whoever installed it.
    """
    import hashlib
    import importlib.util
    import shutil

    spec = importlib.util.find_spec("segmint.kernels")   # where, without importing Numba
    if spec is None or not spec.submodule_search_locations:
        return
    kernels = os.path.abspath(next(iter(spec.submodule_search_locations)))
    own = cache / f"{os.path.basename(kernels)}_{hashlib.sha1(kernels.encode()).hexdigest()}"
    try:
        own.mkdir(exist_ok=True)
        mark = own / _SOURCE_MARK
        if not mark.is_file():   # whole or absent to a process reading it: a partial path would read as gone
            partial = own / f"{_SOURCE_MARK}.{os.getpid()}"
            partial.write_text(kernels)
            os.replace(partial, mark)
        for folder in cache.iterdir():
            source = folder / _SOURCE_MARK
            if folder != own and source.is_file() and not Path(source.read_text()).is_dir():
                shutil.rmtree(folder, ignore_errors=True)
    except OSError:
        return   # a cache that cannot be tidied still works


def current_rss() -> int:
    """Bytes resident in memory for this process now (0 where the platform does not say)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return peak_rss()


def release_free_memory() -> None:
    """Give back to the system what the allocators keep after frees: Arrow's pool, and glibc's heap
    where glibc is the C library. Called between stages and jobs, so that what one freed is not still
    resident under the next (under --memory-limit 1GB on 800 k customers the cluster stage began at
    630 MB, 180 MB of it memory freed and kept; it peaked 1.12 GB against 0.92 GB with this)."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def peak_rss() -> int:
    """Peak bytes resident for this process so far (0 where the platform does not say).

    Linux: VmHWM, which starts afresh at exec. getrusage's ru_maxrss does not: a process started
    by a larger one (a Python harness, a scheduler's worker) would report its parent's size."""
    hwm = vm_hwm()
    if hwm:
        return hwm
    try:
        import resource
    except ImportError:  # Windows
        return 0
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def vm_hwm(pid: int | str = "self") -> int:
    """Peak bytes resident of a process (this one by default) from Linux's /proc VmHWM; 0 where
    /proc does not say (another platform, or the process has exited)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def default_memory_limit() -> int:
    """A quarter of the memory this process may use (cgroup limit or MemAvailable): room for the
    budgeted data and whatever else runs on the machine."""
    candidates = []
    try:
        cg = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if cg != "max":
            candidates.append(int(cg))
    except (OSError, ValueError):
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    return (min(candidates) if candidates else 8 * 2**30) // 4


@functools.cache
def _malloc_trim() -> Any:
    """glibc's malloc_trim, or None (another C library, another platform)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):   # TypeError: Windows, where CDLL needs a name
        return None


def _user() -> str:
    try:
        return str(os.getuid())
    except AttributeError:  # Windows
        return os.environ.get("USERNAME", "user")


def configure(threads: int | None = None) -> tuple[int, list[str]]:
    """Apply the thread budget (default: available_cpus()); returns it and what could not be applied."""
    n = available_cpus() if threads is None else threads
    if n < 1:
        from segmint.engine.errors import ConfigError

        msg = f"--threads must be >= 1, got {n}"
        raise ConfigError(msg)
    late = []
    short_openmp_spin()
    cache = numba_cache_dir()
    os.environ["NUMBA_CACHE_DIR"] = str(cache)
    prune_numba_cache(cache)
    for var in ("POLARS_MAX_THREADS", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ[var] = str(n)
    if "polars" in sys.modules:
        import polars as pl

        if pl.thread_pool_size() != n:
            late.append(f"polars already started with {pl.thread_pool_size()} threads")
    if "numba" in sys.modules:
        import numba

        if n > numba.config.NUMBA_NUM_THREADS:
            late.append(f"numba already started with {numba.config.NUMBA_NUM_THREADS} threads")
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    if "faiss" in sys.modules:
        import faiss

        faiss.omp_set_num_threads(n)
    return n, late


def thread_budget() -> int:
    """The thread budget in force: Numba's thread count, which ``configure`` sets (cgroup-aware by default)."""
    import numba

    return numba.get_num_threads()


def map_threads(fn: Callable[[T], R], items: Sequence[T], most: int | None = None) -> list[R]:
    """``[fn(item) for item in items]`` on as many threads as the thread budget (Numba's count) allows, and
    at most ``most``, for work that releases the GIL (NumPy, Numba's kernels; parallel kernels side by side only
    where ``parallel_kernels_side_by_side``); results in order, and the error the list comprehension would
    raise: that of the first item, in order, that fails (each thread takes its items in order, and none starts
    an item past a failure it knows of, so every item before the first failing one ran).

    The calling thread takes the first share. An interrupt (Ctrl-C) stops every thread at its next item and is
    raised once each has finished the item it was on: none writes after its caller cleaned up. Helpers run with
    the caller's thread counts (Numba's and Faiss' OpenMP's are per thread: a new thread had the defaults).
    Plain threads, not an executor: Python stops executors once the main thread ends, which would stop a run
    going on in another thread."""
    import threading

    n = min(len(items), thread_budget(), most or len(items))
    if n <= 1:
        return [fn(item) for item in items]
    out: list[Any] = [None] * len(items)
    errors: dict[int, BaseException] = {}
    first_error = [len(items)]     # the lowest item that failed so far
    lock = threading.Lock()
    interrupted = threading.Event()
    counts = _thread_counts()

    def failed(i: int, exc: BaseException) -> None:
        with lock:
            errors[i] = exc
            first_error[0] = min(first_error[0], i)

    def work(first: int, catch: type[BaseException]) -> None:
        for i in range(first, len(items), n):
            if interrupted.is_set() or i > first_error[0]:
                return
            try:
                out[i] = fn(items[i])
            except catch as exc:  # noqa: BLE001 - raised in the caller
                failed(i, exc)
                return

    def helper(first: int, done: threading.Event) -> None:
        try:
            _apply_thread_counts(counts)
            work(first, BaseException)
        except BaseException as exc:  # noqa: BLE001 - raised in the caller, as its first item's error
            failed(first, exc)
        finally:
            done.set()

    # Waited for through events, not Thread.join: Python 3.11 takes a thread whose join a Ctrl-C interrupted
    # for finished, and a second join returns at once.
    ends: list[threading.Event] = []
    try:
        for first in range(1, n):
            done = threading.Event()
            threading.Thread(target=helper, args=(first, done), name="segmint-map", daemon=True).start()
            ends.append(done)
        work(0, Exception)
        for done in ends:
            done.wait()
    except BaseException:   # an interrupt, not an item's error (a second one ends this wait too)
        interrupted.set()
        for done in ends:
            done.wait()
        raise
    if errors:
        raise errors[first_error[0]]
    return out


@contextlib.contextmanager
def kernels_on_this_thread(only_this: bool) -> Iterator[None]:
    """While it lasts (and ``only_this``), Numba's parallel kernels called from this thread run on it alone. Their
    results are the same whatever the thread count."""
    import numba

    if not only_this:
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def parallel_kernels_side_by_side() -> bool:
    """Whether two threads may launch Numba's parallel kernels at once: OpenMP's and TBB's threading layers
    allow it; the workqueue layer, Numba's fallback where neither is installed, ends the process."""
    import numba

    numba.get_num_threads()   # starts the layer's threads, as the first parallel kernel does: the layer is chosen then
    return numba.threading_layer() in ("omp", "tbb")


def _thread_counts() -> tuple[int, int | None]:
    """This thread's Numba thread count, and Faiss' OpenMP one where Faiss is loaded."""
    import numba

    return numba.get_num_threads(), (sys.modules["faiss"].omp_get_max_threads() if "faiss" in sys.modules else None)


def _apply_thread_counts(counts: tuple[int, int | None]) -> None:
    """Set in this thread what differs from ``counts`` (``_thread_counts`` of the caller)."""
    import numba

    if numba.get_num_threads() != counts[0]:
        numba.set_num_threads(counts[0])
    if counts[1] is not None and sys.modules["faiss"].omp_get_max_threads() != counts[1]:
        sys.modules["faiss"].omp_set_num_threads(counts[1])


def in_order(streams: Iterator[Iterator[T]], ahead: int) -> Iterator[T]:
    """The items of each of ``streams`` (generators), streams in order, made on a helper thread and on the
    caller: the helper makes items ahead, the caller, rather than wait for one, makes an item of a stream no
    thread is on. At most two threads work at once, and neither waits while there is an item left to make:
    where a helper decoded and the caller only mapped what it decoded, the caller waited for it (scenario L's
    read phase, 9.9 of its 16.5 s).

    No more than ``ahead`` items are made or being made beyond the one the caller holds, but for the stream
    the caller is on when nothing of it is made (so that it always goes on). A stream's error, or
    ``streams``', is raised where its item would have come; an interrupt (Ctrl-C, a signal the CLI raises)
    while the caller makes an item or opens a stream, at once. Left early, the helper finishes the item it is
    on, and every stream and ``streams`` are closed. A plain daemon thread, not an executor: Python shuts
    executors down when the main thread ends, which would stop a run going on in another thread."""
    import collections
    import threading

    class Stream:
        def __init__(self, items: Iterator[T] | None, error: BaseException | None = None) -> None:
            self.items, self.made = items, collections.deque()
            self.busy, self.done, self.error = False, error is not None, error

    cond = threading.Condition()
    open_: collections.deque[Stream] = collections.deque()   # the caller's stream first, then the next ones
    # more: ``streams`` may hold more; opening: a thread is taking the next of them (outside the lock: a
    # file's footer is read then).
    state = {"more": True, "opening": False, "stop": False}
    opens = object()   # work(): open the next stream

    def held() -> int:
        return sum(s.busy + len(s.made) for s in open_)

    def finished() -> bool:
        return not state["more"] and not state["opening"] and all(s.done for s in open_)

    def work() -> Stream | object | None:
        """What to do next (under ``cond``): a stream to make an item of, marked busy; ``opens``; or None where
        there is nothing now."""
        first = open_[0] if open_ else None
        if first is not None and not first.busy and not first.done and not first.made:
            chosen = first   # the caller's stream goes on whatever else is held
        elif held() >= ahead:
            return None
        elif (chosen := next((s for s in open_ if not s.busy and not s.done), None)) is None:
            if state["opening"] or not state["more"]:
                return None
            state["opening"] = True
            return opens
        chosen.busy = True
        return chosen

    def do(task: Stream | object) -> None:
        """Make an item of a stream, or open the next stream; an interrupt on the caller raised at once."""
        error = None
        if task is opens:
            try:
                items: Iterator[T] | None = next(streams)
            except StopIteration:
                items = None
            except BaseException as exc:  # noqa: BLE001 - raised to the caller in its place
                items, error = None, exc
            with cond:
                state["opening"] = False
                if items is None:
                    state["more"] = False
                if items is not None or error is not None:
                    open_.append(Stream(items, error))
                cond.notify_all()
        else:
            assert isinstance(task, Stream)
            try:
                item, end = next(task.items), False
            except StopIteration:
                item, end = None, True
            except BaseException as exc:  # noqa: BLE001 - raised to the caller in its place
                item, end, error = None, True, exc
            with cond:
                if end:
                    task.done, task.error = True, error
                else:
                    task.made.append(item)
                task.busy = False
                cond.notify_all()
        if error is not None and not isinstance(error, Exception) and threading.current_thread() is not thread:
            raise error

    def helper() -> None:
        if counts is not None:
            _apply_thread_counts(counts)
        while True:
            with cond:
                while not state["stop"] and (task := work()) is None:
                    if finished():
                        return
                    cond.wait()
                if state["stop"]:
                    return   # nothing was taken: work() is not asked once stop is set
            do(task)

    # The caller's thread counts where its items may run kernels (Numba's and Faiss' are per thread).
    counts = _thread_counts() if "numba" in sys.modules else None
    thread = threading.Thread(target=helper, name="segmint-read", daemon=True)
    try:
        # Started inside the try: a Ctrl-C landing while start() waits for the thread would leave it running.
        thread.start()
        while True:
            with cond:
                task = None
                while True:
                    first = open_[0] if open_ else None
                    if first is not None and first.made:
                        item = first.made.popleft()
                        cond.notify_all()
                        break
                    if first is not None and first.done:
                        open_.popleft()
                        if first.error is not None:
                            raise first.error
                        continue
                    if first is None and finished():
                        return
                    if (task := work()) is not None:
                        break
                    cond.wait()
            if task is not None:
                do(task)
                continue
            yield item
            item = None   # not held here while the next is made: the caller may have let it go
    finally:
        with cond:
            state["stop"] = True
            cond.notify_all()
        if thread.ident is not None and threading.current_thread() is not thread:
            thread.join()
        for stream in open_:
            if stream.items is not None and hasattr(stream.items, "close"):
                stream.items.close()
        if hasattr(streams, "close"):
            streams.close()


def when_asked(fn: Callable[..., R], *args: Any) -> Iterator[R]:
    """``fn(*args)`` as a stream of one item, made on the thread that asks for it (an ``in_order`` stream)."""
    yield fn(*args)


# The signals a command's handlers (the CLI's) have raised as exceptions: a library may catch one and go on.
_RECEIVED: list[int] = []


def note_signal(signum: int | None) -> None:
    """Record a signal the caller's handler raises (``None``: forget those of an earlier command)."""
    if signum is None:
        _RECEIVED.clear()
    else:
        _RECEIVED.append(signum)


def stop_if_signalled() -> None:
    """Before an output is committed: a signal whose exception a library swallowed (Polars went on through a
    Ctrl-C, and ``generate`` replaced its output, exit 0) is raised again, so the command stops as it asked."""
    if _RECEIVED:
        _take(_RECEIVED)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM taken only once the block is done: what it does runs whole (an output's commit and
    the removal of its scratch and lease, where a signal left the lock or the scratch behind). Then the signal held
    is raised by its own handler (``_take``), also where the block failed (its error is then the signal's context).
    Outside the main thread, where Python runs handlers, nothing is held, nor an ignored signal (a handler set from C
    after Python started is not known to Python, which puts back the one it knew)."""
    held: list[int] = []
    kept: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(sig) not in (None, signal.SIG_IGN):   # None: a handler Python cannot put back
                kept[sig] = signal.signal(sig, lambda signum, _frame: held.append(signum))
    try:
        yield
    finally:   # a failed block too: a SIGTERM lost there left a service running after its shutdown request
        _restore(kept)
        if held:
            _take(held)


def _restore(handlers: dict[int, Any]) -> None:
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


def _take(signals: list[int]) -> None:
    """Raise one of ``signals`` by its handler: SIGTERM before SIGINT (a shutdown request outranks an interrupt)."""
    signal.raise_signal(signal.SIGTERM if signal.SIGTERM in signals else signals[-1])


def short_openmp_spin() -> None:
    """Idle OpenMP threads spin briefly, then sleep, unless the user chose a policy.

    Faiss' wheel brings its own OpenMP runtime (GNU libgomp, with its BLAS) and Numba uses the
    system's: the spinning threads of one steal the cores the other needs when their calls
    alternate. GNU's default spins for about 3 ms after every parallel region; ``PASSIVE`` sleeps at
    once and pays a wake-up at every one of Faiss' many short regions. 10,000 spins (about 0.1 ms)
    beat both, measured on 2 cores: assigning 909,090 customers to 8 centroids took 0.21 s with the
    default, 0.075-0.08 s passive and 0.045-0.047 s with this spin (bench/README.md). Other OpenMP
    runtimes (LLVM's, Intel's) read only ``OMP_WAIT_POLICY`` and sleep. Effective only before either
    library loads.
    """
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        _default("GOMP_SPINCOUNT", str(OPENMP_SPIN))
    _default("OMP_WAIT_POLICY", "PASSIVE")


def serial_blas() -> None:
    """OpenBLAS (NumPy's and SciPy's wheels each bring one) on the calling thread, unless the user chose
    (OPENBLAS_NUM_THREADS set).

    segmint's BLAS calls are small (the CLV optimizer's, a few dot products); its parallel work is Numba's
    and Faiss'. OpenBLAS' own worker threads spin after each threaded call, and once as they start: on 2
    cores they took a core from the CLV fit's Numba threads (fit on bench scenario M 1.78 -> 1.29-1.35 s,
    two runs each) and 0.1 s at NumPy's import. Effective for a library loaded after it.
    """
    _default("OPENBLAS_NUM_THREADS", "1")


def few_malloc_arenas() -> None:
    """glibc's malloc in two arenas, unless the user chose (MALLOC_ARENA_MAX set; another C library: nothing).

    glibc gives a thread that allocates while others do an arena of its own, up to 8 per core, and keeps
    what is freed there. A map job makes its chunks' values on a helper thread of its own (the NumPy
    arrays of a chunk are allocated there): on scenario L each bucket's job left about 30 MB more resident
    than the last, 340 -> 644 MB over 12 buckets, where two arenas held it at 340-420 MB and took the
    same time (0.69-0.75 s a bucket). segmint's threads allocate little in glibc's heap: Arrow and Polars
    have allocators of their own, and Numba's kernels allocate once per block of work. glibc keeps the
    arenas it has made: in a process whose threads made more before ``import segmint``, this caps no more.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):   # TypeError: Windows, where CDLL needs a name
        return
    mallopt(_M_ARENA_MAX, 2)


def set_by_segmint() -> frozenset[str]:
    """The PROCESS_VARIABLES that hold a default segmint set in this process where the user had set none: what
    a peer run as the user would run it must not inherit. ``configure``'s thread budget (POLARS_MAX_THREADS,
    NUMBA_NUM_THREADS, OMP_NUM_THREADS) is not among them: it is the user's --threads."""
    return frozenset(var for var, value in _DEFAULTED.items() if os.environ.get(var) == value)


def small_pages() -> None:
    """NumPy's arrays and Arrow's memory on ordinary pages, unless the user chose (NUMPY_MADVISE_HUGEPAGE,
    MIMALLOC_ARENA_EAGER_COMMIT set).

    NumPy asks for transparent huge pages on every array above 4 MB. Where the kernel's THP defrag
    setting is "madvise" (its default), a first touch of such memory may stall on synchronous
    compaction (numpy/numpy#31590): 880 MB of fresh NumPy memory took 0.12 to 2.1 s to touch with huge
    pages and 0.30 to 0.32 s without, four runs each on the development machine, and the map of bench
    scenario M (one bucket) 5.8-6.2 s against 4.2-4.5 s. A run in many buckets, which reuses the huge
    pages each bucket frees, came out even (scenario L, bench/README.md). Set before NumPy loads, or
    switched where it has.

    Arrow's allocator (mimalloc 3) commits its arenas whole where the system overcommits, on huge pages, and
    gives its free memory back between jobs and as it purges: every bucket of scenario L then zeroed fresh
    huge pages as its batches were decoded (`clear_page_erms`, 4% of the run's samples). Committed as used
    instead (MIMALLOC_ARENA_EAGER_COMMIT=0), L's read phase took 11.5-11.7 s against 14.0 s, its system time
    2.5 s against 5.3 s (in turn; bench/README.md). Not MIMALLOC_ALLOW_THP=0, which did as well but turns
    huge pages off for the whole process and every process it starts (prctl PR_SET_THP_DISABLE). mimalloc
    reads its options when it loads, so this is set before pyarrow loads; a process that loaded pyarrow
    first keeps mimalloc's default.
    """
    if "pyarrow" not in sys.modules:
        _default("MIMALLOC_ARENA_EAGER_COMMIT", "0")
    if "NUMPY_MADVISE_HUGEPAGE" in os.environ:
        return
    _default("NUMPY_MADVISE_HUGEPAGE", "0")
    if "numpy" in sys.modules:
        try:  # NumPy's own switch (private): without it, NumPy keeps what it read when it loaded
            from numpy._core.multiarray import _set_madvise_hugepage
        except ImportError:
            return
        _set_madvise_hugepage(False)


def _default(var: str, value: str) -> None:
    if var not in os.environ:
        os.environ[var] = value
        _DEFAULTED[var] = value


def _cgroup_quota() -> int | None:
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            return math.ceil(int(quota) / int(period))
    except (OSError, ValueError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if quota > 0:
            return math.ceil(quota / period)
    except (OSError, ValueError):
        pass
    return None
