"""All Numba compile policy in one place.

``cache=True`` writes compiled code under NUMBA_CACHE_DIR when set (it must be
writable). No ``fastmath``: it would let LLVM reorder float sums, and outputs
must be identical across runs.
"""

from __future__ import annotations

import numba

__all__ = ["serial", "parallel"]

serial = numba.njit(cache=True, nogil=True)
parallel = numba.njit(cache=True, nogil=True, parallel=True)
