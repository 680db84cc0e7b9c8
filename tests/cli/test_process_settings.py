"""A CLI invocation in a test changes process-wide settings; tests.fixtures puts them back."""

import os
import signal
from pathlib import Path

import faiss
import numba
import pytest
from typer.testing import CliRunner

from segmint.cli.app import app
from tests.fixtures import THREAD_VARIABLES, restored_process_settings


def test_settings_changed_by_an_invocation_are_restored(tmp_path, monkeypatch):
    for var in THREAD_VARIABLES:
        monkeypatch.setenv(var, "7")  # values configure would not choose: a leak cannot go unseen
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "before"))
    monkeypatch.setenv("SEGMINT_OLD_VARIABLE", "x")
    env = dict(os.environ)
    threads = (numba.get_num_threads(), faiss.omp_get_max_threads())
    handler = signal.getsignal(signal.SIGTERM)
    with restored_process_settings():
        CliRunner().invoke(app, ["--threads", "1", "validate", str(tmp_path / "missing.parquet")])
        # The invocation did change them (else this test would prove nothing)...
        assert all(os.environ[var] == "1" for var in THREAD_VARIABLES)
        assert (numba.get_num_threads(), faiss.omp_get_max_threads()) == (1, 1)
        assert signal.getsignal(signal.SIGTERM) is handler   # the CLI puts its signal handlers back itself
        os.environ["NUMBA_CACHE_DIR"] = str(tmp_path / "after")
        os.environ["SEGMINT_NEW_VARIABLE"] = "x"
        del os.environ["SEGMINT_OLD_VARIABLE"]
    # ...and they are back: changed, added and removed variables alike.
    assert dict(os.environ) == env
    assert (numba.get_num_threads(), faiss.omp_get_max_threads()) == threads
    assert signal.getsignal(signal.SIGTERM) is handler


def test_a_finished_command_keeps_its_objects_out_of_the_exit_collection(tmp_path):
    # Python's exit walks every object the imports made looking for cycles (0.22-0.27 s after a run on bench
    # scenario M); main() freezes them once the command is done, also when it ends in an error. Its engine was
    # imported with the collector paused and frozen already (_load): what the command made after that is frozen
    # at its end too, leaving the exit's pass next to nothing.
    import subprocess
    import sys

    probe = tmp_path / "probe.py"
    probe.write_text(
        "import atexit, gc, importlib, sys\n"
        "from segmint.cli import app\n"
        "seen = {}\n"
        "real_import, real_load = importlib.import_module, app._load\n"
        "def spied_import(name, *args, **kwargs):\n"
        "    if name.startswith('segmint.engine'):\n"
        "        seen.setdefault('paused', not gc.isenabled())\n"
        "    return real_import(name, *args, **kwargs)\n"
        "def spied_load(modules):\n"
        "    real_load(modules)\n"
        "    seen['frozen after load'] = gc.get_freeze_count()\n"
        "app.importlib.import_module, app._load = spied_import, spied_load\n"
        "atexit.register(lambda: print(seen['paused'], seen['frozen after load'], len(gc.get_objects())))\n"
        f"sys.argv = ['segmint', 'validate', {str(tmp_path / 'missing.parquet')!r}]\n"
        "app.main()\n")
    out = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True, check=False)
    assert out.returncode == 3, out.stderr
    paused, frozen, unfrozen = out.stdout.split()[-3:]
    assert paused == "True" and int(frozen) > 1000
    assert int(unfrozen) < 100   # without main()'s freeze, the command's own 523 here


def test_threads_given_before_the_command_win_over_segmint_threads(tmp_path):
    # The command's own --threads read SEGMINT_THREADS again and replaced the 2 given before it, without a word.
    with restored_process_settings():
        CliRunner().invoke(app, ["--threads", "2", "validate", str(tmp_path / "missing.parquet")],
                           env={"SEGMINT_THREADS": "1"})
        assert numba.get_num_threads() == 2
    with restored_process_settings():
        CliRunner().invoke(app, ["validate", str(tmp_path / "missing.parquet")], env={"SEGMINT_THREADS": "1"})
        assert numba.get_num_threads() == 1   # the variable alone still applies


def test_restoring_the_environment_is_safe_while_a_native_thread_reads_it():
    # A CI worker died of a segfault in a test's teardown, likely of this: os.environ.clear() and update() free
    # glibc's environ array while a native thread reads the environment (Polars does, on every collect; that crash
    # reproduced here, not in CI's own log). Here a thread calls C's getenv in a loop, outside the GIL, while the
    # restore runs after a change like a CLI invocation's; the old restore killed this child within a second, in
    # each of six runs.
    import subprocess
    import sys

    child = """
import ctypes, os, sys, threading
from tests.fixtures import restored_process_settings

getenv = ctypes.CDLL(None).getenv
getenv.restype, getenv.argtypes = ctypes.c_char_p, [ctypes.c_char_p]
stop = threading.Event()

def read():
    while not stop.is_set():
        getenv(b"SEGMINT_NEVER_SET")   # walks all of environ

reader = threading.Thread(target=read)
reader.start()
try:
    for i in range(5000):
        with restored_process_settings():
            os.environ["NUMBA_NUM_THREADS"] = str(1 + i % 2)
finally:
    stop.set()
    reader.join()
print("restored", i + 1)
"""
    root = str(Path(__file__).resolve().parents[2])
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, cwd=root, timeout=300,
                          env=os.environ | {"PYTHONPATH": root}, check=False)
    assert (done.returncode, done.stdout.split()) == (0, ["restored", "5000"]), done.stderr[-2000:]


def test_a_commands_engine_is_imported_with_the_collector_paused_only_in_segmints_own_process(tmp_path, monkeypatch):
    # The imports' objects live as long as the process: the collector's passes over them took 0.17 s of a run on
    # bench M, 0.05 s with them frozen once loaded. A process that runs the command for its caller (CliRunner,
    # here) keeps its collector as it was.
    import gc
    import sys

    from segmint.cli import app as cli

    (tmp_path / "probe_ok.py").write_text("import gc\nENABLED = gc.isenabled()\n")
    (tmp_path / "probe_bad.py").write_text("import gc\nENABLED = gc.isenabled()\nraise ImportError('broken')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = gc.get_freeze_count()
    cli._load(("probe_ok",))
    assert sys.modules["probe_ok"].ENABLED and gc.isenabled() and gc.get_freeze_count() == before
    monkeypatch.setitem(cli._state, "own_process", True)
    monkeypatch.delitem(sys.modules, "probe_ok")
    try:
        cli._load(("probe_ok",))
        assert not sys.modules["probe_ok"].ENABLED   # paused while importing
        assert gc.isenabled() and gc.get_freeze_count() > before   # then frozen, and collecting again
        with pytest.raises(ImportError, match="broken"):
            cli._load(("probe_bad",))
        assert gc.isenabled()
    finally:
        gc.unfreeze()
