"""A mosaic layer on a canvas: never block on a decode, prefetch the view's z neighbours.

:func:`attach` (called by :mod:`._viewer` when a mosaic layer is inserted) switches the layer's
:class:`~._mosaic.MosaicLevels` to non-blocking mode and gives it a :class:`~._prefetch.Prefetcher`:

* every view napari reads schedules, in the background, the view itself when it was answered with
  the coarsest level's stand-in, then the same view at ``z ± 1`` (a new read cancels the rest);
* when the stand-in's real view is decoded, the layer is refreshed on the main thread (a queued
  Qt signal), so the finer level replaces the coarser one without the canvas ever waiting.
"""

from __future__ import annotations

import weakref

from qtpy.QtCore import QObject, Signal

from ._mosaic import LEVELS_KEY
from ._prefetch import Prefetcher

__all__ = ["attach", "PREFETCH_KEY"]

PREFETCH_KEY = "fpminr_prefetch"


class _Refresher(QObject):
    """Carries "the real view is ready" from the prefetch thread to the main thread."""

    ready = Signal()


def attach(viewer, layer, depth: int = 1) -> Prefetcher | None:
    levels = layer.metadata.get(LEVELS_KEY)
    if levels is None or PREFETCH_KEY in layer.metadata:
        return layer.metadata.get(PREFETCH_KEY)
    lref = weakref.ref(layer)
    refresher = _Refresher()
    pending: set = set()

    def refresh() -> None:
        ly = lref()
        if ly is not None:
            ly.refresh()

    refresher.ready.connect(refresh)

    def on_ready(iz: int, step: int) -> None:
        if prefetcher.error is not None:
            levels.nonblocking = False  # a background decode failed: decode in the reader, where errors show
        if (iz, step) in pending:
            pending.discard((iz, step))
            refresher.ready.emit()

    prefetcher = Prefetcher([levels], depth=depth, on_ready=on_ready)

    def on_view(iz: int, step: int, region, placeholder: bool) -> None:
        ly = lref()
        if ly is None or not ly.visible:
            return
        if placeholder:
            pending.add((iz, step))
        prefetcher.schedule(iz, step, region)

    levels.on_view = on_view
    levels.nonblocking = True
    layer.metadata[PREFETCH_KEY] = prefetcher
    layer.metadata["fpminr_refresher"] = refresher  # kept alive with the layer

    def on_removed(event) -> None:
        if event.value is lref():
            levels.on_view = None
            levels.nonblocking = False
            prefetcher.close()

    viewer.layers.events.removed.connect(on_removed)
    return prefetcher
