"""Domain errors. Each carries the process exit code the CLI should use.

Messages are one line naming the problem and the fix; the CLI prints them
without a traceback unless ``--debug`` is given.
"""

from __future__ import annotations


class SegmintError(Exception):
    """Base of every error segmint raises on purpose."""

    exit_code = 1


class ConfigError(SegmintError):
    """Bad option or configuration (exit code 2)."""

    exit_code = 2


class InputContractError(SegmintError):
    """Input violates the data contract: missing/mistyped column, empty, corrupt (exit 3)."""

    exit_code = 3


class OutputExistsError(SegmintError):
    """Output already exists and ``--overwrite`` was not given (exit 4)."""

    exit_code = 4
