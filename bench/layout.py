"""Refuse to time a segmint imported without its package's process settings.

A source tree put on ``PYTHONPATH`` as a link named ``segmint`` to its root imports segmint as a namespace
package: ``engine/public/__init__.py``, where the install maps ``segmint``, never runs, and with it neither
``small_pages``, ``few_malloc_arenas``, ``short_openmp_spin`` nor ``serial_blas``. Such a run's map took about
0.4 s more on bench M, and two rounds compared trees so without knowing it (bench/README.md, forty-second round).
"""

from __future__ import annotations

from types import ModuleType

from segmint.engine.errors import ConfigError

__all__ = ["check_installed_layout"]


def check_installed_layout(package: ModuleType) -> None:
    """ConfigError where ``package`` (the imported ``segmint``) is a namespace package, not the installed one."""
    if getattr(package, "__file__", None) is None:
        msg = ("segmint is imported as a namespace package (a link to a source tree's root on PYTHONPATH?), without "
               "its process settings, which benches would time: install it (pip install -e .) or put the tree on "
               "PYTHONPATH in the installed layout (bench/README.md)")
        raise ConfigError(msg)
