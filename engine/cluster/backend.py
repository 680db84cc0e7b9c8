"""Where k-means arrays live: the host (NumPy + Faiss CPU) or the card (CuPy + Faiss GPU).

Lloyd iterations (engine.cluster.lloyd) and assignment (engine.cluster.assign)
are written once against ``ArrayBackend``. The host backend is the CPU path's, so
the Lloyd code the GPU runs is exercised on every machine, GPU or not. The nearest
centroid of the final assignment differs by backend: exact float64 sums on the host,
Faiss' float32 search on the card.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:  # Faiss is loaded when clustering starts, not with the pipeline
    import faiss

__all__ = ["ArrayBackend", "HostBackend", "CudaBackend", "gpu_missing", "HOST_BATCH_ROWS"]

# Rows a host assignment batch converts to float32 at a time (when x is another dtype).
HOST_BATCH_ROWS = 65_536
# Card memory an assignment batch may take: x in float32, its float64 copy and the
# differences to two centroids, Faiss' outputs for two neighbours. A quarter of what is
# free leaves room for Faiss' own tiles.
_CARD_SHARE = 0.25


class ArrayBackend(Protocol):
    name: str
    xp: ModuleType      # numpy or cupy: the array functions used on this backend's arrays

    def to_device(self, a: np.ndarray) -> Any: ...
    def to_host(self, a: Any) -> np.ndarray: ...
    def flat_index(self, d: int) -> faiss.Index: ...
    def search(self, index: faiss.Index, x: Any, nn: int) -> tuple[Any, Any]: ...
    def batch_rows(self, d: int) -> int: ...
    def centroid_index(self, centroids: np.ndarray) -> Any:
        """``centroids`` (host float64[k, d]) as ``nearest`` takes them, made once per assignment."""
        ...

    def nearest(self, x: Any, index: Any, segment: np.ndarray, distance: np.ndarray, margin: np.ndarray) -> None:
        """Into host ``segment``, ``distance`` and ``margin``: each row's nearest centroid of ``index``
        (``centroid_index``), its float64-summed distance, and (k > 1) the distance to the second
        nearest minus it, in float32."""
        ...


class HostBackend:
    """NumPy arrays and Faiss' CPU flat index (exact L2, BLAS)."""

    name = "cpu"
    xp = np

    def to_device(self, a: np.ndarray) -> np.ndarray:
        return a

    def to_host(self, a: np.ndarray) -> np.ndarray:
        return np.asarray(a)

    def flat_index(self, d: int) -> faiss.Index:
        import faiss

        return faiss.IndexFlatL2(d)

    def search(self, index: faiss.Index, x: np.ndarray, nn: int) -> tuple[np.ndarray, np.ndarray]:
        return index.search(np.ascontiguousarray(x, dtype=np.float32), nn)

    def batch_rows(self, d: int) -> int:
        return HOST_BATCH_ROWS

    def centroid_index(self, centroids: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(centroids.T)   # float64[d, k], as the kernel reads them

    def nearest(self, x: np.ndarray, index: np.ndarray, segment: np.ndarray, distance: np.ndarray,
                margin: np.ndarray) -> None:
        """Exact: float64 distances to every centroid (kernels.distances)."""
        from segmint.kernels.distances import nearest_centroids

        nearest_centroids(x, index, segment, distance, margin)


class CudaBackend:
    """CuPy arrays on the current CUDA device and Faiss' GPU flat index searching them in place.

    Faiss runs on CuPy's current stream, so its kernels and CuPy's are ordered without syncs.
    """

    name = "gpu"

    def __init__(self) -> None:
        import cupy
        import faiss

        self.xp = cupy
        self._device = cupy.cuda.runtime.getDevice()
        self._res = faiss.StandardGpuResources()
        stream = faiss.cast_integer_to_cudastream_t(cupy.cuda.get_current_stream().ptr)
        self._res.setDefaultStream(self._device, stream)

    def to_device(self, a: np.ndarray) -> Any:
        return self.xp.asarray(a)

    def to_host(self, a: Any) -> np.ndarray:
        return self.xp.asnumpy(a)

    def flat_index(self, d: int) -> faiss.Index:
        import faiss

        cfg = faiss.GpuIndexFlatConfig()
        cfg.device = self._device
        return faiss.GpuIndexFlatL2(self._res, d, cfg)

    def search(self, index: faiss.Index, x: Any, nn: int) -> tuple[Any, Any]:
        import faiss

        xp = self.xp
        x = xp.ascontiguousarray(x, dtype=xp.float32)
        dist = xp.empty((x.shape[0], nn), xp.float32)
        labels = xp.empty((x.shape[0], nn), xp.int64)
        index.search_c(x.shape[0], faiss.cast_integer_to_float_ptr(x.data.ptr), nn,
                       faiss.cast_integer_to_float_ptr(dist.data.ptr),
                       faiss.cast_integer_to_idx_t_ptr(labels.data.ptr))
        return dist, labels

    def centroid_index(self, centroids: np.ndarray) -> tuple[faiss.Index, Any]:
        """Faiss' flat index of the centroids (float32) and the centroids on the card (float64)."""
        index = self.flat_index(centroids.shape[1])
        index.add(centroids.astype(np.float32))
        return index, self.to_device(centroids)

    def nearest(self, x: Any, index: tuple[faiss.Index, Any], segment: np.ndarray, distance: np.ndarray,
                margin: np.ndarray) -> None:
        """Faiss' float32 search picks the nearest two (it may swap two within float32 rounding of each
        other, which the host's exact kernel does not); their distances are then summed in float64."""
        flat, wide = index
        k = wide.shape[0]
        _, idx = self.search(flat, x, min(2, k))
        segment[:] = self.to_host(idx[:, 0])
        first = _row_distance(self.xp, x, wide[idx[:, 0]])
        distance[:] = self.to_host(first)
        if k > 1:
            margin[:] = self.to_host(_row_distance(self.xp, x, wide[idx[:, 1]]) - first)

    def batch_rows(self, d: int) -> int:
        free, _ = self.xp.cuda.runtime.memGetInfo()
        per_row = d * (4 + 8 + 2 * 8) + 2 * (4 + 8) + 3 * 8
        return max(1, int(free * _CARD_SHARE) // per_row)


def _row_distance(xp: ModuleType, x: Any, c: Any) -> Any:
    diff = x.astype(xp.float64) - c
    return xp.sqrt(xp.einsum("ij,ij->i", diff, diff)).astype(xp.float32)


def gpu_missing() -> str | None:
    """Why the GPU path cannot run here, or None when it can (Faiss sees a GPU and CuPy works)."""
    import faiss

    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        return "Faiss sees no GPU (the installed faiss is the CPU build, or no CUDA device is visible)"
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed (pip install 'segmint[gpu]')"
    try:
        if cupy.cuda.runtime.getDeviceCount() == 0:
            return "CuPy sees no CUDA device"
    except cupy.cuda.runtime.CUDARuntimeError as exc:
        return f"CuPy cannot use the GPU ({exc})"
    return None
