"""Background decoding of the view's neighbouring z planes (and of a view not decoded yet).

:class:`Prefetcher` owns ONE daemon thread. :meth:`Prefetcher.schedule` replaces whatever it was
doing with a new request (the view at ``iz`` of level ``step``): first the tiles of that view not
decoded yet (so that a canvas showing a coarser placeholder gets its finer level), then the same
view at ``iz ± 1``, ``iz ± 2`` ... up to ``depth`` planes away. A request that is superseded stops
between tile batches (:meth:`MosaicPyramid.tile_images` checks its ``cancelled`` callable), so a
fast scroll never queues up work. ``on_ready(iz, step)`` is called (from the thread) after each
plane of the request is complete. No Qt here: the napari glue (:mod:`._mosaic_view`) connects it
to the viewer's events and the main thread.
"""

from __future__ import annotations

import threading
from typing import Callable

__all__ = ["Prefetcher"]


class Prefetcher:
    def __init__(self, levels: list, depth: int = 1, on_ready: Callable[[int, int], None] | None = None):
        self.levels = list(levels)  # MosaicLevels of the visible parts (amplitude; phase when shown)
        self.depth = int(depth)
        self.on_ready = on_ready
        self._generation = 0
        self._job = None
        self._request = None
        self._cv = threading.Condition()
        self._idle = threading.Event()
        self._idle.set()
        self._closed = False
        self.completed = 0  # planes decoded to the end (tests, benchmarks)
        self.error: Exception | None = None  # the last failure of a background decode
        self._thread = threading.Thread(target=self._run, name="fpminr-prefetch", daemon=True)
        self._thread.start()

    def schedule(self, iz: int, step: int, region, visible_parts=None) -> None:
        """Decode the view ``region`` (level px: top, left, h, w) of level ``step`` at ``iz``, then its z neighbours."""
        request = (int(iz), int(step), tuple(int(v) for v in region), visible_parts)
        with self._cv:
            if request == self._request and not self._idle.is_set():
                return  # already at work on exactly this
            self._request = request
            self._generation += 1
            self._job = (self._generation,) + request
            self._idle.clear()
            self._cv.notify()

    def cancel(self) -> None:
        with self._cv:
            self._generation += 1
            self._job = None
            self._cv.notify()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the current request is done or cancelled (tests and benchmarks)."""
        return self._idle.wait(timeout)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._generation += 1
            self._job = None
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._job is None and not self._closed:
                    self._idle.set()
                    self._cv.wait()
                if self._closed:
                    self._idle.set()
                    return
                gen, iz, step, region, parts = self._job
                self._job = None

            def cancelled(gen=gen) -> bool:
                return self._generation != gen

            try:
                self._work(iz, step, region, parts, cancelled)
            except Exception as exc:  # noqa: BLE001 - reported through on_ready; the reader decodes again
                self.error = exc
                if self.on_ready is not None:
                    self.on_ready(iz, step)  # a stand-in waiting for this view is re-read (see _mosaic_view)

    def _work(self, iz, step, region, parts, cancelled) -> None:
        order = [iz] + [iz + s * d for d in range(1, self.depth + 1) for s in (1, -1)]
        for z in order:
            for lv in self.levels:
                if parts is not None and lv.part not in parts:
                    continue
                if not 0 <= z < lv.z_um.size or lv.ready(z, step, region):
                    continue
                if cancelled():
                    return
                lv.view(z, step, region, cancelled)  # one batch: every tile under the view
            if cancelled():
                return
            self.completed += 1
            if self.on_ready is not None:
                self.on_ready(z, step)
