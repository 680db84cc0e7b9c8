"""Atomic output: everything is written under a staging sibling and renamed into place.

An existing output is replaced only with ``overwrite=True``; if the work fails
or is interrupted, the previous output is left untouched and the staging
directory is removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from segmint.engine.errors import OutputExistsError

__all__ = ["check_writable", "staged_dir", "staged_file"]


def check_writable(out: str | Path, *, overwrite: bool) -> Path:
    """Fail early (before any work) if ``out`` exists and may not be replaced."""
    out = Path(out)
    if out.exists() and not overwrite:
        msg = f"output {out} already exists; pass --overwrite to replace it or choose another --out"
        raise OutputExistsError(msg)
    return out


@contextlib.contextmanager
def staged_dir(out: str | Path, *, overwrite: bool) -> Iterator[Path]:
    """Yield an empty staging directory; on success it becomes ``out`` with ``_SUCCESS`` inside."""
    out = check_writable(out, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.staging-{uuid.uuid4().hex[:8]}"
    stage.mkdir()
    try:
        yield stage
        (stage / "_SUCCESS").write_text("")
        _replace(stage, out, overwrite=overwrite)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


@contextlib.contextmanager
def staged_file(out: str | Path, *, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary path beside ``out``; on success it is renamed onto ``out``."""
    out = check_writable(out, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.staging-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        if out.is_dir():
            msg = f"output {out} is a directory; give a file path for --out"
            raise OutputExistsError(msg)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _replace(stage: Path, out: Path, *, overwrite: bool) -> None:
    # Re-checked here: another process may have created ``out`` meanwhile.
    check_writable(out, overwrite=overwrite)
    if not out.exists():
        stage.rename(out)
        return
    # Two renames: the old output stays whole until the new one is complete.
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    out.rename(old)
    try:
        stage.rename(out)
    except BaseException:
        old.rename(out)
        raise
    if old.is_dir():
        shutil.rmtree(old)
    else:
        old.unlink()
