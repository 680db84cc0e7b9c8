"""Every CLI test leaves the process as it found it: the CLI's callback configures threads for the
whole process (segmint.engine.runtime.configure sets POLARS_MAX_THREADS, NUMBA_NUM_THREADS,
OMP_NUM_THREADS and NUMBA_CACHE_DIR in os.environ) and installs a SIGTERM handler."""

import pytest

from tests.fixtures import restored_process_settings


@pytest.fixture(autouse=True)
def _restore_process_settings():
    with restored_process_settings():
        yield
