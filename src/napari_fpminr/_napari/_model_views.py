"""Views of a trained model in the dock widget: lazy z-stack layers, all-in-focus, saving.

A mixin of :class:`~._widget.ReconstructionWidget` (it uses the widget's viewer, controls and
state); kept apart so that each file stays focused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QFileDialog

from ..errors import FPMInputError
from ._layers import (RAW_KEY, all_in_focus_layer_data, default_z_step_um, fused_layer_data, model_layer_data,
                      z_planes)
from ._mosaic import MOSAIC_KEY, mosaic_layer_data
from ._training import prepare_raw

__all__ = ["ModelViews", "all_in_focus_job", "matching_raw"]


class ModelViews:
    """Model layers, all-in-focus and saving for the reconstruction widget (mixin)."""

    # ---- views of a model ----------------------------------------------------------------
    def _reset_view_controls(self, model) -> None:
        self.view_z_min.setValue(float(model.z_min_um))
        self.view_z_max.setValue(float(model.z_max_um))
        self.view_z_step.setValue(default_z_step_um(model))

    def view_planes(self) -> np.ndarray:
        return z_planes(self.view_z_min.value(), self.view_z_max.value(), self.view_z_step.value())

    def show_model_layers(self, *_: Any, model=None) -> list[Any]:
        """(Re)create the lazy amplitude/phase layers of ``model`` at the chosen planes."""
        model = model if model is not None else self.current_model()
        if model is None:
            return []
        z_um = self.view_planes()
        # the raw stack's LED axis would share the z slider: hide it (still listed, one click away)
        for raw_layer in self.raw_layers():
            raw_layer.visible = False
        layers = []
        origin = self._run_origin_um if model is self.model else (0.0, 0.0)
        if is_mosaic_model(model):  # a whole slide: its multiscale layers at the chosen planes
            layer_data = mosaic_layer_data(model, z_um)
        else:
            layer_data = model_layer_data(model, z_um, name=self._layer_prefix, origin_um=origin)
        for data, meta, _kind in layer_data:
            name = meta["name"]
            if name in self.viewer.layers:
                # resampling keeps what the user chose to see (e.g. a phase layer shown on purpose)
                meta["visible"] = self.viewer.layers[name].visible
                self.viewer.layers.remove(name)
            layers.append(self.viewer.add_image(data, **meta))
        if len(z_um) > 1:
            self.viewer.dims.set_point(self.z_axis(), float(z_um[len(z_um) // 2]))
        return layers

    def z_axis(self) -> int:
        """Viewer axis of the model layers' z (they are (z, y, x), aligned to the last axes)."""
        return self.viewer.dims.ndim - 3

    def show_all_in_focus(self, *_: Any):
        """Compute the all-in-focus image and depth map on a worker thread; returns the worker.

        The layers appear when it finishes (the button is disabled meanwhile). With the model's
        training data open as a raw layer, the depth comes from the measurements.
        """
        model = self.current_model()
        if model is None or self._aif_worker is not None:
            return None
        candidates = [layer.metadata[RAW_KEY] for layer in self.raw_layers()]
        origin = (0.0, 0.0)
        if model is self.model and self._run_raw is not None and self._run_params is not None:
            # the model of a quick look was trained on a crop of the raw layer: that crop is its data
            candidates.insert(0, prepare_raw(self._run_raw, self._run_params))
            origin = self._run_origin_um
        worker = create_worker(all_in_focus_job, model, candidates, self.view_planes(), self._layer_prefix,
                               origin, _start_thread=False)
        worker.returned.connect(self._add_all_in_focus_layers)
        worker.errored.connect(lambda exc: show_error(f"all-in-focus failed: {type(exc).__name__}: {exc}"))
        worker.finished.connect(self._all_in_focus_finished)
        self._aif_worker = worker
        self.aif_btn.setText("All-in-focus: computing…")
        self._refresh_buttons()
        worker.start()
        return worker

    def _add_all_in_focus_layers(self, layer_data) -> None:
        for data, meta, _kind in layer_data:
            if meta["name"] in self.viewer.layers:
                self.viewer.layers.remove(meta["name"])
            self.viewer.add_image(data, **meta)

    def _all_in_focus_finished(self) -> None:
        self._aif_worker = None
        self.aif_btn.setText("All-in-focus + depth")
        self._refresh_buttons()

    # ---- saving --------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the current model as ``.fpminr`` (atomic)."""
        from ..io.model_file import save_model

        if self.model is None:
            raise FPMInputError("no trained model to save yet")
        path = Path(path)
        if path.suffix.lower() != ".fpminr":
            path = path.with_name(path.name + ".fpminr")
        save_model(self.model, path)
        show_info(f"saved {path}")
        return path

    def _save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save FPM-INR model", "model.fpminr",
                                              "FPM-INR model (*.fpminr)")
        if path:
            try:
                self.save(path)
            except (FPMInputError, OSError) as exc:
                show_error(str(exc))


def matching_raw(model, candidates):
    """The raw data among ``candidates`` that ``model`` was trained on (same content hash), or None."""
    if not (model.meta or {}).get("source_hash"):
        return None  # without a recorded hash, any same-size data would pass: do not guess
    return next((raw for raw in candidates if model.trained_on(raw)), None)


def is_mosaic_model(model) -> bool:
    from ..io.mosaic_file import MosaicModel

    return isinstance(model, MosaicModel)


def all_in_focus_job(model, candidates, planes, prefix, origin_um=(0.0, 0.0)):
    """Worker-thread body: find the training data (hashing), then fuse and map the depth.

    A mosaic is fused tile by tile and blended (:func:`napari_fpminr.tiles.focus.mosaic_all_in_focus`).
    """
    if is_mosaic_model(model):
        from ..tiles.focus import mosaic_all_in_focus

        fused, depth = mosaic_all_in_focus(model, planes)
        return fused_layer_data(model, fused, depth, planes, f"mosaic {model.path.stem}", key=MOSAIC_KEY)
    return all_in_focus_layer_data(model, planes, name=prefix, raw=matching_raw(model, candidates),
                                   origin_um=origin_um)
