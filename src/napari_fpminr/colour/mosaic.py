"""Colour mosaics: one tiled INR job per channel (the tiles job API, unchanged) and a small header.

A colour mosaic is three ordinary mosaic files, ``OUT.red.fpminr``, ``OUT.green.fpminr``,
``OUT.blue.fpminr`` (each written by :func:`napari_fpminr.tiles.run.iter_tiles` and
:func:`napari_fpminr.io.mosaic_file.save_mosaic`, exactly as ``fpminr reconstruct --tile``), and
``OUT.fpminr``: a safetensors file without tensors whose JSON metadata references them, with the
registration (format ``fpminr-colour-mosaic``, version 1):

    {"format": "fpminr-colour-mosaic", "format_version": 1,
     "channels": ["OUT.red.fpminr", "OUT.green.fpminr", "OUT.blue.fpminr"],   # file names beside it
     "registration": [ChannelRegistration.to_dict()] x 3, "meta": {...}}

The registration is measured once, on a central crop of the whole field (:mod:`.focus`); each
channel's tiles are trained over the common z range shifted by its focus offset. Decoding goes
through the channel mosaics' own ``render`` (whatever their decoding does inside), then white
balance and sRGB; the lateral shift is applied to the nearest hr pixel of the level shown (the
mosaic decodes regions, not periodic fields; sub-pixel colour registration is the single
colour model's).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import FPMInputError
from ..io.atomic import atomic_write
from ..rawdata import RawData
from .colourmath import _LUT, _LUT_SIZE
from .focus import ScanOptions, iter_focus_scan, scan_centre
from .job import ColourEvent, common_grid
from .model import CHANNELS, REFERENCE, ChannelRegistration

__all__ = ["COLOUR_MOSAIC_FORMAT", "ColourMosaic", "channel_paths", "colour_mosaic_info", "is_colour_mosaic",
           "iter_colour_mosaic", "load_colour_mosaic", "save_colour_mosaic"]

COLOUR_MOSAIC_FORMAT = "fpminr-colour-mosaic"
COLOUR_MOSAIC_VERSION = 1


def channel_paths(out) -> list[Path]:
    """``OUT.red.fpminr``, ``OUT.green.fpminr``, ``OUT.blue.fpminr`` beside ``OUT.fpminr``."""
    out = Path(out)
    return [out.with_name(f"{out.stem}.{name}{out.suffix}") for name in CHANNELS]


def iter_colour_mosaic(raws: Sequence[RawData], out, tile: int, overlap: int, z_range: tuple[float, float],
                       train: dict | None = None, scan: ScanOptions = ScanOptions(), stop=None,
                       device="auto") -> Iterator[ColourEvent]:
    """Register the three channels (R, G, B order), run one tiled INR job per channel, write the header."""
    from ..io.mosaic_file import save_mosaic
    from ..tile_layout import TileLayout
    from ..tiles.local_na import tile_leds
    from ..tiles.run import TiledJob, iter_tiles, work_dir_for
    from ..tiles.source import MemorySource, open_source

    raws = common_grid(raws)
    mid = 0.5 * (z_range[0] + z_range[1])
    focus = None
    for frac, msg, focus in iter_focus_scan(raws, [scan_centre(r, mid) for r in raws], scan, REFERENCE, device, stop):
        yield ColourEvent("focus", None, 0.1 * frac, msg)
    if focus is None:
        yield ColourEvent("done", None, 0.1, "stopped during the focus scan", stopped=True)
        return
    offsets = [f - focus.focus_um[REFERENCE] for f in focus.focus_um]
    regs = [ChannelRegistration(r.optics.wavelength_um, focus.focus_um[c], offsets[c], focus.shift_px[c])
            for c, r in enumerate(raws)]
    paths = channel_paths(out)
    for c, (raw, path) in enumerate(zip(raws, paths, strict=True)):
        same_grid = raw.source is not None and raw.optics.upsample == raw.with_optics(upsample=0).optics.upsample
        source = open_source(raw.source) if same_grid else MemorySource.from_raw(raw)
        o = source.header.optics
        layout = TileLayout(source.frame_shape, tile, overlap, o.upsample, o.dx_lr_um)
        zr = [z_range[0] + offsets[c], z_range[1] + offsets[c]]
        job = TiledJob(source, layout, "inr", zr, work_dir_for(path), leds=tile_leds(source.header),
                       options={"train": dict({"device": device}, **(train or {}))})
        event = None
        for event in iter_tiles(job, stop=stop):
            yield ColourEvent("reconstruct", c, 0.1 + 0.9 * (c + event.fraction) / 3,
                              f"{CHANNELS[c]}: {event.text()}"[:90])
        if event is None or not event.done:
            yield ColourEvent("done", c, 0.1 + 0.3 * c, "stopped", stopped=True, focus=focus)
            return
        save_mosaic(path, layout, list(event.markers.values()), job.work_dir, o, (min(zr), max(zr)),
                    meta={"job_hash": job.job_hash, "channel": CHANNELS[c]})
    # white balance: each channel's bare-glass level at the common focus, on a coarse view of the field
    from .register import white_levels

    mosaics = _load_channels(paths, Path(out))
    step = max(1, max(mosaics[0].hr_shape) // 512)
    views = []
    for c, m in enumerate(mosaics):
        z = float(np.clip(focus.focus_um[c], m.z_min_um, m.z_max_um))
        (amp,) = m.render([z], None, step, parts=("amplitude",))
        views.append(np.asarray(amp[0], np.float64) ** 2)
    for r, w in zip(regs, white_levels(np.stack(views)), strict=True):
        r.white = float(w)
    save_colour_mosaic(out, paths, regs, {"common_focus_um": focus.focus_um[REFERENCE], "tile": tile,
                                          "overlap": overlap})
    yield ColourEvent("done", None, 1.0, "colour mosaic written", result=load_colour_mosaic(out), focus=focus)


def save_colour_mosaic(out, channel_files: Sequence[Path], registration, meta: dict | None = None) -> Path:
    """Write the colour mosaic header (file names relative to its folder), atomically."""
    from safetensors.numpy import save_file

    out = Path(out)
    header = {"format": COLOUR_MOSAIC_FORMAT, "format_version": COLOUR_MOSAIC_VERSION,
              "channels": [Path(p).name for p in channel_files],
              "registration": [r.to_dict() for r in registration], "meta": dict(meta or {})}
    with atomic_write(out) as tmp:
        save_file({"colour_mosaic": np.zeros(1, np.uint8)}, str(tmp), metadata={"fpminr": json.dumps(header)})
    return out


def _header(path: Path) -> dict | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            text = (f.metadata() or {}).get("fpminr")
        header = json.loads(text) if text else None
    except Exception:  # noqa: BLE001 - unreadable: not a colour mosaic
        return None
    return header if isinstance(header, dict) and header.get("format") == COLOUR_MOSAIC_FORMAT else None


def is_colour_mosaic(path) -> bool:
    """True for a colour mosaic header file (never raises)."""
    path = Path(path)
    return path.is_file() and path.suffix.lower() == ".fpminr" and _header(path) is not None


def _load_channels(paths, where: Path):
    from ..io.mosaic_file import load_mosaic

    out = []
    for p in paths:
        if not Path(p).is_file():
            raise FPMInputError(f"the colour mosaic's channel file {Path(p).name} is missing beside it", where)
        out.append(load_mosaic(p))
    return out


class ColourMosaic:
    """Three channel mosaics and their registration; :meth:`rgb` decodes a region of a common z-plane."""

    def __init__(self, path: Path, channels, registration):
        self.path = Path(path)
        self.channels = list(channels)
        self.registration = list(registration)
        shapes = {tuple(m.hr_shape) for m in self.channels}
        if len(shapes) != 1:
            raise FPMInputError(f"the channel mosaics cover different hr grids {sorted(shapes)}", path)

    @property
    def hr_shape(self) -> tuple[int, int]:
        return tuple(self.channels[REFERENCE].hr_shape)

    @property
    def dx_hr_um(self) -> float:
        return float(self.channels[REFERENCE].dx_hr_um)

    @property
    def z_min_um(self) -> float:
        return max(m.z_min_um - r.z_offset_um for m, r in zip(self.channels, self.registration, strict=True))

    @property
    def z_max_um(self) -> float:
        return min(m.z_max_um - r.z_offset_um for m, r in zip(self.channels, self.registration, strict=True))

    @property
    def model_id(self) -> str:
        return f"colour-mosaic-{self.path.name}-{self.path.stat().st_mtime_ns}"

    def rgb(self, z_um: float, region=None, step: int = 1) -> np.ndarray:
        """8-bit sRGB ``(h, w, 3)`` of ``region`` (top, left, height, width; hr px) at common depth ``z_um``."""
        H, W = self.hr_shape
        top, left, h, w = (0, 0, H, W) if region is None else (int(v) for v in region)
        n_y, n_x = len(range(0, h, step)), len(range(0, w, step))
        out = np.full((n_y, n_x, 3), 255, np.uint8)
        for c, (m, r) in enumerate(zip(self.channels, self.registration, strict=True)):
            # the channel's pixel (y + dy, x + dx) shows the reference's (y, x): read the shifted region
            dy, dx = (int(round(v / step)) * step for v in r.shift_px)
            t0, l0 = min(max(top + dy, 0), H - 1), min(max(left + dx, 0), W - 1)
            hh, ww = min(h, H - t0), min(w, W - l0)
            z = float(np.clip(z_um + r.z_offset_um, m.z_min_um, m.z_max_um))
            (amp,) = m.render([z], (t0, l0, hh, ww), step, parts=("amplitude",))
            a = np.asarray(amp[0], np.float32)
            idx = np.clip(a * a * ((_LUT_SIZE - 1) / r.white) + 0.5, 0, _LUT_SIZE - 1).astype(np.int32)
            out[: idx.shape[0], : idx.shape[1], c] = _LUT[idx]
        return out


def load_colour_mosaic(path) -> ColourMosaic:
    """Read a colour mosaic header and open its three channel mosaics."""
    path = Path(path)
    header = _header(path)
    if header is None:
        raise FPMInputError("not a colour mosaic file", path)
    if header.get("format_version") != COLOUR_MOSAIC_VERSION:
        raise FPMInputError(f"unsupported colour mosaic format version {header.get('format_version')!r}", path)
    files, regs = header.get("channels"), header.get("registration")
    if not (isinstance(files, list) and isinstance(regs, list) and len(files) == len(regs) == 3
            and all(isinstance(f, str) and Path(f).name == f for f in files)):
        raise FPMInputError("colour mosaic metadata must name three channel files beside it", path)
    try:
        registration = [ChannelRegistration.from_dict(r) for r in regs]
    except (KeyError, TypeError, ValueError) as exc:
        raise FPMInputError(f"bad colour registration: {exc}", path) from None
    return ColourMosaic(path, _load_channels([path.with_name(f) for f in files], path), registration)


def colour_mosaic_info(path) -> str:
    """Text for ``fpminr info COLOUR_MOSAIC``: the channel files and the registration."""
    m = load_colour_mosaic(path)
    H, W = m.hr_shape
    lines = [f"colour mosaic {Path(path).name} (colour mosaic format version {COLOUR_MOSAIC_VERSION}): "
             f"{H} x {W} px of {m.dx_hr_um:.4f} um, z {m.z_min_um:g} .. {m.z_max_um:g} um (the green channel's axis)"]
    for name, ch, r in zip(CHANNELS, m.channels, m.registration, strict=True):
        lines.append(f"  {name:5s} {1000 * r.wavelength_um:.0f} nm: {ch.path.name}, best focus {r.focus_um:+.2f} um "
                     f"(offset {r.z_offset_um:+.2f} um), shift ({r.shift_px[0]:+.2f}, {r.shift_px[1]:+.2f}) hr px, "
                     f"white {r.white:.3f}")
    return "\n".join(lines)
