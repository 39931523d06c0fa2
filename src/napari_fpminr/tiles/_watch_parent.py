"""A dask worker plugin: the worker process ends as soon as the process that started it is gone.

A killed run (``kill -9``) cannot close its LocalCluster; without this its worker processes
would go on for many seconds. The plugin polls the parent process id (it changes when the
parent dies and the worker is re-parented). Kept in its own module, imported only when a local
cluster starts: it needs ``distributed``, and workers import it by name.
"""

from __future__ import annotations

import os
import threading
import time

from distributed import WorkerPlugin

__all__ = ["WatchParent"]

POLL_S = 0.1


class WatchParent(WorkerPlugin):
    name = "fpminr-watch-parent"

    def setup(self, worker) -> None:
        parent = os.getppid()

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(POLL_S)
            os._exit(1)

        threading.Thread(target=watch, name="fpminr-watch-parent", daemon=True).start()
