"""Suite-wide settings.

Under pytest-xdist (``scripts/test.sh`` runs two worker processes on a 2-core machine) each worker
keeps torch to one intra-op thread: two processes of one thread each use both cores without
oversubscribing them, and the many small transforms of the tests run faster on one thread than
split over two.
"""

import os


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
