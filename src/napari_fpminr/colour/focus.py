"""Focus and lateral registration of the colour channels, measured from the data.

Per channel, a conventional focus scan on a central crop: planes over the search range at
``step_um``, then a finer scan (``step_um / 4``) around the sharpest one (when the sharpest
plane is at an end of the scan, the scan first goes on beyond that end, up to ``MAX_EXTENSIONS``
times); the best focus is the
sharpest plane of the fine scan (:func:`register.best_focus`). The channel's field at its best
focus is then correlated with the reference (green) channel's at its own best focus
(:func:`register.register_fields`, on the amplitude-weighted phase gradients): that is the lateral
shift. Focus offsets are ``best focus(c) - best focus(green)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from ..rawdata import RawData
from ..recon.conventional import iter_conventional
from .register import best_focus, register_fields

__all__ = ["FocusResult", "ScanOptions", "iter_focus_scan", "scan_centre"]

#: a scan whose sharpest plane is at its end goes on beyond it, at most this many times its half range
MAX_EXTENSIONS = 3


@dataclass(frozen=True)
class ScanOptions:
    """Focus scan settings: ``half_range_um`` around each channel's centre, ``step_um`` coarse
    spacing, ``crop_px`` raw px of the central crop, ``iterations`` per plane."""

    half_range_um: float = 8.0
    step_um: float = 1.0
    crop_px: int = 64
    iterations: int = 10


@dataclass
class FocusResult:
    """Best focus per channel (own z, µm), the scores of the coarse scan, and the fields at focus."""

    focus_um: list[float]
    shift_px: list[tuple[float, float]]  # hr px of each channel relative to the reference
    scan_z_um: list[np.ndarray]
    scan_score: list[np.ndarray]


def scan_centre(raw: RawData, default_um: float) -> float:
    """Where a channel's scan is centred: its stated depth when the file gives one, else ``default_um``."""
    return float(raw.z_um) if raw.z_um is not None else float(default_um)


def _central(raw: RawData, crop: int) -> RawData:
    h, w = raw.lr_shape
    ch, cw = min(crop, h), min(crop, w)
    return raw.crop((h - ch) // 2, (w - cw) // 2, ch, cw)


def _solve(raw: RawData, planes: np.ndarray, opts: ScanOptions, device, stop):
    stack = None
    for ev in iter_conventional(raw, planes, iterations=opts.iterations, device=device, stop=stop):
        stack = ev.stack if ev.stack is not None else stack
        yield ev.fraction, None
    yield 1.0, stack


def iter_focus_scan(raws: Sequence[RawData], centres_um: Sequence[float], opts: ScanOptions = ScanOptions(),
                    reference: int = 1, device="auto", stop=None) -> Iterator[tuple[float, str, FocusResult | None]]:
    """Yields ``(fraction, message, None)`` while scanning and finally ``(1.0, message, FocusResult)``."""
    n = len(raws)
    focus, fields, zs, scores = [], [], [], []
    for c, raw in enumerate(raws):
        crop = _central(raw, opts.crop_px)
        # stages: 0 coarse (extended while the sharpest plane is at an end), 1 fine, 2 the plane at focus
        best = None
        s = 0
        planes = np.arange(-opts.half_range_um, opts.half_range_um + 1e-9, opts.step_um) + centres_um[c]
        all_planes = np.empty(0)
        all_fields = None
        extensions = 0
        while s < 3:
            stack = None
            for frac, stack in _solve(crop, planes, opts, device, stop):
                yield (c + (min(s, 2) + frac) / 3) / n, f"focus scan {'RGB'[c]}: {('coarse', 'fine', 'at focus')[s]}", None
            if stack is None or stack.meta.get("complete") is False:
                return
            f = torch.as_tensor(stack.amplitude * np.exp(1j * stack.phase))
            if s == 0:
                # the sharpest plane at an end of the scanned planes: scan on beyond it (at most
                # MAX_EXTENSIONS times the range), so that a far-off stated depth is still bracketed
                all_fields = f if all_fields is None else torch.cat([all_fields, f])
                all_planes = np.concatenate([all_planes, planes])
                order = np.argsort(all_planes)
                all_planes, all_fields = all_planes[order], all_fields[torch.as_tensor(order)]
                best, score = best_focus(all_fields, all_planes)
                k = int(np.argmax(score))
                width = opts.half_range_um
                if k in (0, all_planes.size - 1) and extensions < MAX_EXTENSIONS:
                    extensions += 1
                    sign = -1.0 if k == 0 else 1.0
                    edge = all_planes[k]
                    planes = edge + sign * np.arange(opts.step_um, width + 1e-9, opts.step_um)
                    continue
                zs.append(all_planes)
                scores.append(score)
                planes = best + np.arange(-opts.step_um, opts.step_um + 1e-9, opts.step_um / 4)
            elif s == 1:
                best, _ = best_focus(f, planes)
                planes = np.array([best])
            else:
                fields.append(stack.amplitude[0] * np.exp(1j * stack.phase[0]))
            s += 1
        focus.append(float(best))
    # the band every channel covers: the smallest synthetic aperture (the longest wavelength's), in cycles/px
    band = min(r.optics.na_synthetic / r.optics.wavelength_um for r in raws) * raws[reference].optics.dx_hr_um
    shifts = [register_fields(fields[reference], fields[c], band) if c != reference else (0.0, 0.0)
              for c in range(n)]
    yield 1.0, "focus scan done", FocusResult(focus, shifts, zs, scores)
