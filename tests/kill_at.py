"""``python -m tests.kill_at ARGS...``: the segmint CLI, killed by SIGKILL (as a scheduler's timeout kills)
just before its Nth write, copy or delete on a store.

``SEGMINT_TEST_KILL_AT=N`` picks the operation (1-based); 0 runs to the end. Every operation is
logged, one line each (``name path``), to the file named by ``SEGMINT_TEST_OPS_FILE``, so a test
can first list a run's operations and then kill a run of the same command at chosen ones.
"""

from __future__ import annotations

import atexit
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from segmint.engine.io import store

_OPERATIONS = ("write_bytes", "write_parquet", "put_new", "put_if", "copy", "remove")
_log: list[str] = []


def _killing(fn: Callable[..., Any], name: str, at: int) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        target = args[1] if name in ("write_parquet", "copy") else args[0]
        _log.append(f"{name} {target[0] if isinstance(target, list) else target}")
        if len(_log) == at:
            os.kill(os.getpid(), signal.SIGKILL)
        return fn(*args, **kwargs)
    return wrapped


def _one_by_one(remove: Callable[..., Any]) -> Callable[..., Any]:
    """Deletes one path per call, so a kill can fall between two deletes of one list."""
    def wrapped(paths: list[str], options: Any = None) -> None:
        for path in paths:
            remove([path], options)
    return wrapped


def main() -> None:
    at = int(os.environ.get("SEGMINT_TEST_KILL_AT", "0"))
    for name in _OPERATIONS:
        setattr(store, name, _killing(getattr(store, name), name, at))
    store.remove = _one_by_one(store.remove)
    ops_file = os.environ.get("SEGMINT_TEST_OPS_FILE")
    if ops_file:
        atexit.register(lambda: Path(ops_file).write_text("".join(f"{line}\n" for line in _log)))
    from segmint.cli.app import main as cli

    cli()


if __name__ == "__main__":
    main()
