"""What the viewer shows around our layers, however they arrive (reader, drop, sample, widget,
``fpminr gui``): one place, installed once per viewer by :func:`watch`.

* A raw stack opens on its brightest bright-field LED (``metadata[LED_KEY]``), not on napari's
  middle index (a dark-field image that looks black).
* While a model z-stack is shown, the canvas shows the current depth in µm in a text overlay
  (napari's slider shows a plane index; the slider's label reads ``z (µm)``).
* A depth map (``KIND_KEY == "depth"``) shows its colour bar (values in µm; the overlay says so).

Readers and sample functions run before napari adds their layers, so they call ``watch()``
(current viewer) and the decorations are applied when the layers are inserted.
"""

from __future__ import annotations

import math
import weakref
from typing import Any

from ._layers import KIND_KEY, LED_KEY, MODEL_KEY, RAW_KEY

_WATCHED: dict[int, weakref.ref] = {}
_SHOWN_KEY = "fpminr_led_shown"     # set once the raw stack's LED slider was moved


def _current_viewer():
    try:
        import napari

        return napari.current_viewer()
    except Exception:  # noqa: BLE001 - no Qt app / no window: nothing to decorate
        return None


def watch(viewer=None):
    """Install the decorations on ``viewer`` (default: napari's current viewer); idempotent.

    Returns the viewer, or None when there is none (e.g. a reader called outside napari).
    """
    viewer = viewer if viewer is not None else _current_viewer()
    if viewer is None:
        return None
    ref = _WATCHED.get(id(viewer))
    if ref is not None and ref() is viewer:
        return viewer
    _WATCHED[id(viewer)] = weakref.ref(viewer)
    vref = weakref.ref(viewer)

    def on_inserted(event) -> None:
        v = vref()
        if v is not None:
            decorate(v, event.value)
            if ours(event.value):
                event.value.events.visible.connect(on_change)
            update_z_overlay(v)

    def on_change(event=None) -> None:
        v = vref()
        if v is not None:
            update_z_overlay(v)

    viewer.layers.events.inserted.connect(on_inserted)
    viewer.layers.events.removed.connect(on_change)
    viewer.dims.events.point.connect(on_change)
    for layer in list(viewer.layers):
        decorate(viewer, layer)
        if ours(layer):
            layer.events.visible.connect(on_change)
    update_z_overlay(viewer)
    return viewer


def ours(layer) -> bool:
    meta = getattr(layer, "metadata", None) or {}
    return MODEL_KEY in meta


def decorate(viewer, layer) -> None:
    meta = getattr(layer, "metadata", None) or {}
    if RAW_KEY in meta and LED_KEY in meta and not meta.get(_SHOWN_KEY):
        show_led(viewer, layer, int(meta[LED_KEY]))
        meta[_SHOWN_KEY] = True
    if meta.get(KIND_KEY) == "depth":
        layer.colorbar.visible = True
    if "fpminr_levels" in meta:  # a mosaic: non-blocking views and z prefetch (_mosaic_view.py)
        from ._mosaic_view import attach

        attach(viewer, layer)


def show_led(viewer, layer, led: int) -> None:
    """Move the viewer's LED slider (the raw layer's first axis) to ``led``."""
    axis = viewer.dims.ndim - layer.ndim
    if axis < 0:
        return
    world = float(layer.translate[0]) + led * float(layer.scale[0])
    viewer.dims.set_point(axis, world)


def model_layers(viewer) -> list[Any]:
    return [ly for ly in viewer.layers
            if MODEL_KEY in getattr(ly, "metadata", {}) and ly.metadata.get(KIND_KEY) in ("amplitude", "phase")]


def current_z_um(viewer) -> float | None:
    """Depth (µm) the model layers are shown at, or None without a visible model z-stack."""
    if not any(ly.visible for ly in model_layers(viewer)) or viewer.dims.ndim < 3:
        return None
    z = float(viewer.dims.point[viewer.dims.ndim - 3])
    return z if math.isfinite(z) else None


def z_text(z_um: float) -> str:
    return f"z = {z_um:+.2f} µm"


DEPTH_TEXT = "depth map colour bar: z in µm"


def update_z_overlay(viewer) -> None:
    """The canvas text: the current depth of a visible z-stack, and the unit of a visible depth
    map's colour bar (napari's colour bar has no title)."""
    z = current_z_um(viewer)
    depth = any(ly.visible and ly.metadata.get(KIND_KEY) == "depth" for ly in viewer.layers
                if MODEL_KEY in getattr(ly, "metadata", {}))
    lines = ([z_text(z)] if z is not None else []) + ([DEPTH_TEXT] if depth else [])
    overlay = viewer.text_overlay
    if not lines:
        if overlay.text.startswith("z = ") or overlay.text.startswith(DEPTH_TEXT):
            overlay.visible = False
            overlay.text = ""
        return
    overlay.text = "\n".join(lines)
    overlay.position = "top_left"
    overlay.font_size = 14
    overlay.visible = True
