"""Numba kernels: pure functions over NumPy arrays, no I/O, no Polars.

Each kernel has a plain Python/NumPy reference in tests/reference.py and is
tested against it on random inputs.
"""
