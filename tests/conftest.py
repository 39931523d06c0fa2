"""Suite-wide settings.

Under pytest-xdist (``scripts/test.sh`` runs two worker processes on a 2-core machine) each worker
keeps torch to one intra-op thread: two processes of one thread each use both cores without
oversubscribing them, and the many small transforms of the tests run faster on one thread than
split over two.
"""

import os

import pytest


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


@pytest.fixture
def one_torch_thread():
    """Single-threaded torch for one test (restored afterwards): the small FFT loops of the solver
    tests run 10-20x slower with oversubscribed OpenMP threads on a shared 2-core box, also in a
    serial run (``FPMINR_TEST_WORKERS=0``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
