"""All Numba compile policy in one place.

``cache=True`` writes compiled code under NUMBA_CACHE_DIR when set (it must be
writable). No ``fastmath``: it would let LLVM reorder float sums, and outputs
must be identical across runs.

A kernel's cached code is keyed on the source of every module in this folder,
not on its own file alone as Numba keys it: kernels compile in functions of
other modules (``customer_pass`` calls ``sequence.line_row`` and
``hashing.mix64``), so an edit to one of those alone left the cached callers
running the old code, with no error (an editable install after a pull). Any
edit here therefore recompiles every kernel. A NUMBA_CACHE_LOCATOR_CLASSES the
user sets replaces this, as it replaces Numba's own choice.
"""

from __future__ import annotations

import hashlib
import os

import numba
from numba.core import caching

__all__ = ["serial", "parallel", "folder_stamp"]

_FOLDER = os.path.dirname(os.path.abspath(__file__))
_NUMBA_LOCATORS = tuple(c for c in caching.CacheImpl._locator_classes if c.__name__ != "_KernelsLocator")


class _KernelsLocator:
    """Numba's own locator for a function of this folder, its stamp Numba's (the file's) and the folder's."""

    def __init__(self, inner: object) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        if name == "_inner":   # not set yet (a copy in the making): no recursion
            raise AttributeError(name)
        return getattr(self._inner, name)

    def get_source_stamp(self) -> tuple[object, str]:
        # Never weaker than Numba's own stamp (a zipped or frozen install has no folder of sources to read).
        return self._inner.get_source_stamp(), _FOLDER_STAMP

    @classmethod
    def from_function(cls, py_func, py_file):
        if os.path.dirname(os.path.abspath(py_file)) != _FOLDER:
            return None
        for numba_locator in _NUMBA_LOCATORS:
            inner = numba_locator.from_function(py_func, py_file)
            if inner is not None:
                return cls(inner)
        return None


def folder_stamp(folder: str) -> str:
    """A digest of the folder's Python sources (their names and contents); files that cannot be read (an
    editor's dangling lock link, a file removed meanwhile) are left out, as is a folder that cannot be listed."""
    h = hashlib.sha256()
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".py") and not n.startswith("."))
    except OSError:
        return ""
    for name in names:
        try:
            with open(os.path.join(folder, name), "rb") as f:
                h.update(name.encode() + b"\0" + hashlib.sha256(f.read()).digest())
        except OSError:
            continue
    return h.hexdigest()


# Read once, as the kernels load: a module compiled later in this process (with the others' code as loaded
# now) is saved under the sources as they were then, so a new process with newer sources compiles again.
_FOLDER_STAMP = folder_stamp(_FOLDER)
caching.CacheImpl._locator_classes = [_KernelsLocator, *_NUMBA_LOCATORS]

serial = numba.njit(cache=True, nogil=True)
parallel = numba.njit(cache=True, nogil=True, parallel=True)
