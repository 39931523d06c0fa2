"""Layer data for napari: the raw LED stack, and lazy continuous-z layers of a trained model.

Model layers are views of :class:`napari_fpminr.volume.Volume`: dask arrays whose chunks are
single z-slices decoded by ``Model.render`` only when napari asks for them. Nothing is decoded
when a layer is created except one small, subsampled slice used to set ``contrast_limits``
(without them napari would compute the whole volume to find its range). The z axis is in µm:
``scale[0]`` is the z step, ``translate[0]`` the first plane, axis labels ``("z (µm)", "y", "x")``.
Large fields get an xy pyramid (rendering with ``step`` 2, 4, ...), so zoomed-out views decode
few pixels. Volume names its dask graphs from ``model_id``, so a retrained model never hits a
stale cache entry.
"""

from __future__ import annotations

from typing import Any

import numpy as np

RAW_KEY = "fpminr_raw"        # layer.metadata key -> RawData
MODEL_KEY = "fpminr_model"    # layer.metadata key -> Model
Z_KEY = "fpminr_z_um"         # layer.metadata key -> z planes (µm) of a model layer
KIND_KEY = "fpminr_kind"      # "amplitude" | "phase" | "all_in_focus" | "depth"
LED_KEY = "fpminr_show_led"   # layer.metadata key -> LED index the raw stack opens on
#: label of the depth axis (raw and model layers share it, so napari aligns them): the viewer's
#: z slider is labelled in µm (it counts planes; the canvas overlay shows the depth itself)
Z_LABEL = "z (µm)"

#: fields larger than this (hr pixels, either axis) get an xy pyramid
MULTISCALE_MIN_PX = 1024
#: coarsest pyramid level / contrast preview is at most this many pixels across
PREVIEW_PX = 256

LayerData = tuple[Any, dict[str, Any], str]


def brightest_led(raw) -> int:
    """Index of the brightest bright-field LED (mean intensity), or of the brightest LED when
    the optics flag none as bright-field: the image a user should see first."""
    means = raw.intensities.reshape(raw.n_leds, -1).mean(axis=1)
    bright = np.asarray(raw.optics.bright_field, dtype=bool)
    if bright.shape == means.shape and bright.any():
        means = np.where(bright, means, -np.inf)
    return int(np.argmax(means))


def raw_layer_data(raw) -> LayerData:
    """The raw intensity stack as (LED, z, y, x) with a single z plane at the focal plane (0 µm).

    The singleton z axis (a view, no copy) keeps the LED index and the model's depth on
    separate viewer sliders when raw data and a z-stack are open together; y and x are in
    object-side µm (``pixel_um / mag``). The contrast limits come from the brightest
    bright-field image, and ``metadata[LED_KEY]`` names it: the viewer opens the LED slider
    there (:func:`napari_fpminr._napari._viewer.watch`), not on napari's middle index, which for
    a spiral or NA-ordered acquisition is a dark-field image that looks black.
    """
    dx_um = raw.optics.dx_lr_um
    name = f"{raw.source.stem} (raw)" if raw.source is not None else "FPM raw"
    led = brightest_led(raw)
    img = raw.intensities[led]
    lo, hi = (float(v) for v in np.percentile(img, (0.1, 99.9)))
    if not hi > lo:
        hi = lo + (abs(lo) or 1.0)
    meta = {
        "name": name,
        "scale": (1.0, 1.0, dx_um, dx_um),
        "units": ("pixel", "µm", "µm", "µm"),
        "axis_labels": ("LED", Z_LABEL, "y", "x"),
        "colormap": "gray",
        "contrast_limits": (min(lo, 0.0), hi),
        "metadata": {RAW_KEY: raw, LED_KEY: led},
    }
    return (raw.intensities[:, None], meta, "image")


def z_planes(z_min_um: float, z_max_um: float, z_step_um: float) -> np.ndarray:
    """Uniform planes from ``z_min_um`` to ``z_max_um`` inclusive (last step may be shorter
    only by rounding), at least one plane."""
    if not (np.isfinite(z_min_um) and np.isfinite(z_max_um) and z_step_um > 0):
        raise ValueError("z range must be finite and the z step positive")
    if z_max_um < z_min_um:
        z_min_um, z_max_um = z_max_um, z_min_um
    n = int(np.floor((z_max_um - z_min_um) / z_step_um + 1e-6)) + 1
    return (z_min_um + z_step_um * np.arange(n)).astype(np.float64)


def default_z_step_um(model) -> float:
    """A browsing step: the depth of field's order of magnitude, ~40 planes over the range."""
    span = float(model.z_max_um - model.z_min_um)
    return max(span / 40.0, 1e-3) if span > 0 else 1.0


def pyramid_steps(hr_shape: tuple[int, int]) -> list[int]:
    """xy subsampling factors of the pyramid levels: [1] for small fields, else 1, 2, 4, ..."""
    size = max(hr_shape)
    if size < MULTISCALE_MIN_PX:
        return [1]
    steps = [1]
    while size // steps[-1] > PREVIEW_PX:
        steps.append(steps[-1] * 2)
    return steps


def _robust_limits(img: np.ndarray, symmetric: bool = False) -> tuple[float, float]:
    finite = img[np.isfinite(img)]
    if finite.size == 0:
        return (0.0, 1.0)
    if symmetric:
        m = float(np.percentile(np.abs(finite - np.median(finite)), 99.5))
        c = float(np.median(finite))
        m = m if m > 0 else 1.0
        return (c - m, c + m)
    lo, hi = (float(v) for v in np.percentile(finite, (0.5, 99.5)))
    if not hi > lo:
        hi = lo + 1.0
    return (lo, hi)


def contrast_limits(model, z_um: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]]:
    """(amplitude, phase) limits from one subsampled slice at the middle plane."""
    step = max(1, int(np.ceil(max(model.hr_shape) / PREVIEW_PX)))
    z_mid = float(z_um[len(z_um) // 2])
    amp, phase = model.render(np.array([z_mid]), step=step)
    return _robust_limits(np.asarray(amp[0])), _robust_limits(np.asarray(phase[0]), symmetric=True)


def _z_scale_translate(z_um: np.ndarray) -> tuple[float, float]:
    step = float(z_um[1] - z_um[0]) if len(z_um) > 1 else 1.0
    return step, float(z_um[0])


def model_layer_data(model, z_um: np.ndarray | None = None, name: str | None = None,
                     origin_um: tuple[float, float] = (0.0, 0.0)) -> list[LayerData]:
    """Lazy phase and amplitude layers of ``model`` sampled at the uniform planes ``z_um``.

    Order and visibility are a deliberate choice, the same wherever model layers appear
    (training, a dropped ``.fpminr``, ``fpminr gui model.fpminr``, the sample model): the
    **phase comes first and hidden**, the **amplitude last, i.e. on top and visible**. For
    stained samples (blood smears) the amplitude is the image a user looks for; an opaque phase
    layer on top would hide it. The phase is one eye-click away in the layer list.
    """
    from ..volume import Volume

    if z_um is None:
        z_um = z_planes(model.z_min_um, model.z_max_um, default_z_step_um(model))
    z_um = np.asarray(z_um, dtype=np.float64)
    volume = Volume(model)
    steps = pyramid_steps(tuple(model.hr_shape))
    amp_levels = [volume.amplitude(z_um, step=s) for s in steps]
    phase_levels = [volume.phase(z_um, step=s) for s in steps]
    amp_limits, phase_limits = contrast_limits(model, z_um)
    z_step, z0 = _z_scale_translate(z_um)
    dx = float(model.dx_hr_um)
    base = name or "FPM-INR"
    common = {
        "scale": (z_step, dx, dx),
        "translate": (z0, float(origin_um[0]), float(origin_um[1])),
        "units": ("µm", "µm", "µm"),
        "axis_labels": (Z_LABEL, "y", "x"),
        "multiscale": len(steps) > 1,
    }
    layers = []
    for kind, levels, limits, cmap in (
        ("phase", phase_levels, phase_limits, "twilight_shifted"),
        ("amplitude", amp_levels, amp_limits, "gray"),
    ):
        meta = dict(
            common,
            name=f"{base} {kind}",
            colormap=cmap,
            contrast_limits=limits,
            visible=kind == "amplitude",
            metadata={MODEL_KEY: model, Z_KEY: z_um, KIND_KEY: kind},
        )
        layers.append((levels if len(levels) > 1 else levels[0], meta, "image"))
    return layers


def all_in_focus_layer_data(model, z_um: np.ndarray, name: str | None = None, raw=None,
                            origin_um: tuple[float, float] = (0.0, 0.0)) -> list[LayerData]:
    """Eager all-in-focus amplitude and depth map (µm) computed over the planes ``z_um``.

    With ``raw`` (the model's training data) the depth comes from the measurements, else from
    the sharpness of the complex field (see :mod:`napari_fpminr.volume`).
    """
    from ..volume import Volume

    fused, depth_um = Volume(model).all_in_focus(np.asarray(z_um, dtype=np.float64), raw=raw)
    return fused_layer_data(model, fused, depth_um, z_um, name or "FPM-INR", origin_um)


def fused_layer_data(model, fused, depth_um, z_um, base: str, origin_um=(0.0, 0.0), key: str = MODEL_KEY
                     ) -> list[LayerData]:
    """All-in-focus amplitude and depth-map layers (``metadata[key]`` holds ``model``)."""
    fused = np.asarray(fused, dtype=np.float32)
    depth_um = np.asarray(depth_um, dtype=np.float32)
    dx = float(model.dx_hr_um)
    common = {"scale": (dx, dx), "translate": (float(origin_um[0]), float(origin_um[1])),
              "units": ("µm", "µm"), "axis_labels": ("y", "x")}
    return [
        (fused, dict(common, name=f"{base} all-in-focus", colormap="gray",
                     contrast_limits=_robust_limits(fused),
                     metadata={key: model, Z_KEY: np.asarray(z_um), KIND_KEY: "all_in_focus"}), "image"),
        (depth_um, dict(common, name=f"{base} depth (µm)", colormap="turbo",
                        contrast_limits=(float(np.min(z_um)), float(np.max(z_um)) + 1e-6), opacity=0.6,
                        metadata={key: model, Z_KEY: np.asarray(z_um), KIND_KEY: "depth"}), "image"),
    ]
