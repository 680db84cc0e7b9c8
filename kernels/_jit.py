"""All Numba compile policy in one place.

``cache=True`` writes compiled code under NUMBA_CACHE_DIR when set (it must be
writable). No ``fastmath``: it would let LLVM reorder float sums, and outputs
must be identical across runs.

A kernel's cached code is keyed on the source of every module in this folder,
not on its own file alone as Numba keys it: kernels compile in functions of
other modules (``customer_pass`` calls ``sequence.line_row`` and
``hashing.mix64``), so an edit to one of those alone left the cached callers
running the old code, with no error (an editable install after a pull).
"""

from __future__ import annotations

import functools
import hashlib
import os

import numba
from numba.core import caching

__all__ = ["serial", "parallel"]

_FOLDER = os.path.dirname(os.path.abspath(__file__))
_NUMBA_LOCATORS = tuple(c for c in caching.CacheImpl._locator_classes if c.__name__ != "_KernelsLocator")


class _KernelsLocator:
    """Numba's own locator for a function of this folder, its cache stamped with the whole folder's source."""

    def __init__(self, inner: object) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def get_source_stamp(self) -> str:
        return _folder_stamp(_FOLDER)

    @classmethod
    def from_function(cls, py_func, py_file):
        if os.path.dirname(os.path.abspath(py_file)) != _FOLDER:
            return None
        for numba_locator in _NUMBA_LOCATORS:
            inner = numba_locator.from_function(py_func, py_file)
            if inner is not None:
                return cls(inner)
        return None


def _folder_stamp(folder: str) -> str:
    """A digest of the folder's Python sources, recomputed when any of them changes size or time."""
    names = sorted(n for n in os.listdir(folder) if n.endswith(".py"))
    stats = tuple((n, os.stat(os.path.join(folder, n)).st_mtime_ns, os.stat(os.path.join(folder, n)).st_size)
                  for n in names)
    return _digest(folder, stats)


@functools.lru_cache(maxsize=8)
def _digest(folder: str, stats: tuple[tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    for name, _, _ in stats:
        h.update(name.encode() + b"\0")
        with open(os.path.join(folder, name), "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


caching.CacheImpl._locator_classes = [_KernelsLocator, *_NUMBA_LOCATORS]

serial = numba.njit(cache=True, nogil=True)
parallel = numba.njit(cache=True, nogil=True, parallel=True)
