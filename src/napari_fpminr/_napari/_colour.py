"""Layer data of a colour model: one lazy RGB z-stack, per-channel amplitude and phase hidden beneath.

The RGB layer is a dask array ``(z, y, x, 3)`` uint8 (``rgb=True``), one chunk per z-slice decoded
by :meth:`ColourModel.rgb` only when napari shows it; large fields get an xy pyramid (``step``
2, 4, ...), so zoomed-out views decode few pixels. The z axis is in µm (scale = the z step,
translate = the first plane, the green channel's axis). Per channel, registered amplitude and
phase layers (white-balanced, on the common frame) are there but hidden, phases first.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np

from ._layers import KIND_KEY, MODEL_KEY, Z_KEY, Z_LABEL, LayerData, _robust_limits, pyramid_steps, z_planes

__all__ = ["colour_layer_data", "COLOUR_KEY"]

COLOUR_KEY = "fpminr_colour_model"  # layer.metadata key -> ColourModel


def _lazy(model, z_um: np.ndarray, step: int, fn, shape_tail: tuple[int, ...], dtype, name: str) -> da.Array:
    H, W = model.hr_shape
    h, w = len(range(0, H, step)), len(range(0, W, step))
    blocks = [da.from_delayed(dask.delayed(fn, pure=True)(float(z), step, name), shape=(h, w) + shape_tail,
                              dtype=dtype)[None] for z in z_um]
    return da.concatenate(blocks, axis=0)


def colour_layer_data(model, z_um: np.ndarray | None = None, name: str | None = None,
                      origin_um: tuple[float, float] = (0.0, 0.0)) -> list[LayerData]:
    """Hidden per-channel phase and amplitude layers, then the visible RGB layer on top."""
    from ..colour.model import CHANNELS

    if z_um is None:
        span = model.z_max_um - model.z_min_um
        z_um = z_planes(model.z_min_um, model.z_max_um, max(span / 40.0, 1e-3) if span > 0 else 1.0)
    z_um = np.asarray(z_um, dtype=np.float64)
    steps = pyramid_steps(tuple(model.hr_shape))
    dx = float(model.dx_hr_um)
    z_step = float(z_um[1] - z_um[0]) if len(z_um) > 1 else 1.0
    base = name or "FPM-INR colour"
    common = {"translate": (float(z_um[0]), float(origin_um[0]), float(origin_um[1])),
              "scale": (z_step, dx, dx), "units": ("µm", "µm", "µm"), "axis_labels": (Z_LABEL, "y", "x"),
              "multiscale": len(steps) > 1}
    meta = {MODEL_KEY: model, COLOUR_KEY: model, Z_KEY: z_um}
    key = model.model_id

    def rgb_slice(z: float, step: int, _name: str) -> np.ndarray:
        return model.rgb([z], step=step)[0]

    layers: list[LayerData] = []
    preview_step = steps[-1] if len(steps) > 1 else max(1, int(np.ceil(max(model.hr_shape) / 256)))
    mid = float(z_um[len(z_um) // 2])
    preview = model.render([mid], step=preview_step, parts=("amplitude", "phase"))
    for c, channel in enumerate(CHANNELS):
        for part in ("phase", "amplitude"):
            def part_slice(z: float, step: int, _name: str, c=c, part=part) -> np.ndarray:
                return getattr(model.render([z], step=step, parts=(part,)), part)[0, c]

            levels = [_lazy(model, z_um, s, part_slice, (), np.float32, f"{key}-{channel}-{part}-{s}") for s in steps]
            limits = _robust_limits(getattr(preview, part)[0, c], symmetric=part == "phase")
            layers.append((levels if len(levels) > 1 else levels[0],
                           dict(common, name=f"{base} {channel} {part}", visible=False, contrast_limits=limits,
                                colormap="twilight_shifted" if part == "phase" else "gray",
                                metadata=dict(meta, **{KIND_KEY: f"{channel} {part}"})), "image"))
    levels = [_lazy(model, z_um, s, rgb_slice, (3,), np.uint8, f"{key}-rgb-{s}") for s in steps]
    layers.append((levels if len(levels) > 1 else levels[0],
                   dict(common, name=f"{base} RGB", rgb=True, contrast_limits=(0, 255),
                        metadata=dict(meta, **{KIND_KEY: "rgb"})), "image"))
    return layers


#: colour mosaic chunks (hr px of the level shown) and the coarsest level's size
MOSAIC_CHUNK_PX = 512
MOSAIC_PREVIEW_PX = 512


class ColourMosaicLevels:
    """Dask pyramid ``(z, y, x, 3)`` uint8 of a colour mosaic; counts the chunks it decodes."""

    def __init__(self, mosaic, z_um: np.ndarray):
        self.mosaic = mosaic
        self.z_um = np.asarray(z_um, np.float64)
        self.decoded_chunks = 0
        H, W = mosaic.hr_shape
        self.steps = [1]
        while max(H, W) // self.steps[-1] > MOSAIC_PREVIEW_PX:
            self.steps.append(self.steps[-1] * 2)

    def _chunk(self, iz: int, step: int, cy: int, cx: int) -> np.ndarray:
        H, W = self.mosaic.hr_shape
        ny, nx = -(-H // step), -(-W // step)
        y0, x0 = cy * MOSAIC_CHUNK_PX, cx * MOSAIC_CHUNK_PX
        h, w = min(MOSAIC_CHUNK_PX, ny - y0), min(MOSAIC_CHUNK_PX, nx - x0)
        region = (y0 * step, x0 * step, min((h - 1) * step + 1, H - y0 * step), min((w - 1) * step + 1, W - x0 * step))
        self.decoded_chunks += 1
        return self.mosaic.rgb(float(self.z_um[iz]), region, step)

    def level(self, step: int) -> da.Array:
        H, W = self.mosaic.hr_shape
        ny, nx = -(-H // step), -(-W // step)
        split = lambda n: tuple(min(MOSAIC_CHUNK_PX, n - s) for s in range(0, n, MOSAIC_CHUNK_PX))  # noqa: E731
        chunks = ((1,) * self.z_um.size, split(ny), split(nx), (3,))

        def block(block_info=None):
            loc = block_info[None]["chunk-location"]
            return self._chunk(loc[0], step, loc[1], loc[2])[None]

        return da.map_blocks(block, dtype=np.uint8, chunks=chunks, meta=np.empty((0, 0, 0, 0), np.uint8))

    def levels(self) -> list[da.Array]:
        return [self.level(s) for s in self.steps]


def colour_mosaic_layer_data(mosaic, z_um: np.ndarray | None = None, name: str | None = None) -> list[LayerData]:
    """One lazy multiscale RGB layer over the whole slide, z in µm (the green channel's axis)."""
    if z_um is None:
        span = mosaic.z_max_um - mosaic.z_min_um
        z_um = z_planes(mosaic.z_min_um, mosaic.z_max_um, max(span / 40.0, 1e-3) if span > 0 else 1.0)
    z_um = np.asarray(z_um, np.float64)
    levels = ColourMosaicLevels(mosaic, z_um)
    arrays = levels.levels()
    dz = float(z_um[1] - z_um[0]) if z_um.size > 1 else 1.0
    dx = float(mosaic.dx_hr_um)
    meta = {"name": name or f"colour mosaic {mosaic.path.stem} RGB", "rgb": True, "scale": (dz, dx, dx),
            "translate": (float(z_um[0]), 0.0, 0.0), "units": ("µm", "µm", "µm"),
            "axis_labels": (Z_LABEL, "y", "x"), "multiscale": len(arrays) > 1, "contrast_limits": (0, 255),
            "metadata": {COLOUR_KEY: mosaic, Z_KEY: z_um, KIND_KEY: "rgb", "fpminr_levels": levels}}
    return [(arrays if len(arrays) > 1 else arrays[0], meta, "image")]
