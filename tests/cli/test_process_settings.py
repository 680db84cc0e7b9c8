"""A CLI invocation in a test changes process-wide settings; tests.fixtures puts them back."""

import os
import signal

import faiss
import numba
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
    # scenario M); main() freezes them once the command is done, also when it ends in an error.
    import subprocess
    import sys

    probe = ("import atexit, gc, sys; from segmint.cli.app import main; "
             "atexit.register(lambda: print('frozen', gc.get_freeze_count())); "
             f"sys.argv = ['segmint', 'validate', {str(tmp_path / 'missing.parquet')!r}]; main()")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert out.returncode == 3, out.stderr
    assert int(out.stdout.split()[-1]) > 1000


def test_threads_given_before_the_command_win_over_segmint_threads(tmp_path):
    # The command's own --threads read SEGMINT_THREADS again and replaced the 2 given before it, without a word.
    with restored_process_settings():
        CliRunner().invoke(app, ["--threads", "2", "validate", str(tmp_path / "missing.parquet")],
                           env={"SEGMINT_THREADS": "1"})
        assert numba.get_num_threads() == 2
    with restored_process_settings():
        CliRunner().invoke(app, ["validate", str(tmp_path / "missing.parquet")], env={"SEGMINT_THREADS": "1"})
        assert numba.get_num_threads() == 1   # the variable alone still applies
