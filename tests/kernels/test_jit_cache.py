"""Cached kernels follow every kernel module's source, not only their own file's."""

import os
import subprocess
import sys
import textwrap

from segmint.kernels import _jit, lines

_DRIVER = textwrap.dedent("""
    import sys
    import segmint.kernels._jit as jit
    jit._FOLDER = sys.argv[1]     # the folder whose modules are kernels (this test's, not segmint's)
    jit._FOLDER_STAMP = jit.folder_stamp(sys.argv[1])
    sys.path.insert(0, sys.argv[1])
    import main
    print(main.g())
""")


def test_an_edit_to_a_module_a_cached_kernel_calls_recompiles_it(tmp_path):
    """``main.g`` (cached) calls ``dep.f``; dep.py alone changes between two processes. Numba keys a cache on
    the function's own file and ran the old ``f`` in the second process; keyed on the whole folder, the new."""
    folder = tmp_path / "k"
    folder.mkdir()
    (folder / "main.py").write_text("from segmint.kernels._jit import serial\nfrom dep import f\n\n\n"
                                    "@serial\ndef g():\n    return f()\n")
    driver = tmp_path / "drive.py"
    driver.write_text(_DRIVER)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    seen = []
    for value in (1, 2):
        (folder / "dep.py").write_text(f"from numba import njit\n\n\n@njit\ndef f():\n    return {value}\n")
        out = subprocess.run([sys.executable, str(driver), str(folder)], env=env, capture_output=True, text=True,
                             check=True)
        seen.append(int(out.stdout.strip()))
    assert seen == [1, 2]
    assert list((tmp_path / "cache").rglob("*.nbi"))   # it was cached, and the cache was not used stale


def test_kernels_are_stamped_with_the_whole_folder_and_other_functions_as_numba_does(tmp_path):
    locator = lines.customer_pass._cache._impl.locator   # the one the dispatcher uses
    assert type(locator) is _jit._KernelsLocator
    assert locator.get_source_stamp() == (locator._inner.get_source_stamp(), _jit.folder_stamp(_jit._FOLDER))
    assert locator.get_cache_path() == locator._inner.get_cache_path()   # Numba's folder: pruned as before

    def elsewhere():
        return 1

    assert _jit._KernelsLocator.from_function(elsewhere, __file__) is None
    # The stamp follows any module's content; unreadable entries (an editor's dangling lock link) are left out.
    for name, text in (("a.py", "x = 1\n"), ("b.py", "y = 1\n")):
        (tmp_path / name).write_text(text)
    before = _jit.folder_stamp(str(tmp_path))
    (tmp_path / ".#b.py").symlink_to("user@host.1234:1")
    (tmp_path / "gone.py").symlink_to(tmp_path / "nowhere.py")
    assert _jit.folder_stamp(str(tmp_path)) == before
    (tmp_path / "b.py").write_text("y = 22\n")
    assert _jit.folder_stamp(str(tmp_path)) != before
    assert _jit.folder_stamp(str(tmp_path / "missing")) == ""
