"""The colour job: three prepared raw data sets (R, G, B) -> a registered colour model or stack.

Built once here; ``fpminr reconstruct R G B --colour`` and the napari widget only translate.

1. channels ordered by wavelength (longest first: red, green, blue); one hr grid for all (the
   largest upsample any channel needs; the raw pixel and image size must agree);
2. focus and lateral registration measured on a central crop (:mod:`.focus`);
3. each channel reconstructed alone with its own optics and pupil decision, over the common z
   range shifted by its focus offset (``inr``: one model per channel; ``fpm``: one stack);
4. the lateral shift measured again between the registered reconstructions at the common best
   focus and added (a recovered pupil's tilt moves a channel's image); then its field-varying part:
   shifts on a 4 × 4 grid of overlapping patches, an affine map ``t + A·(p - centre)`` fitted to them
   by least squares and applied where it moves a corner by ≥ ``AFFINE_MIN_RAW_PX`` and explains ≥
   ``AFFINE_MIN_EXPLAINED`` of the patch shifts' variance (the UConn blue channel: 0.11 % / 0.13 %
   larger than green along y / x, lateral colour; red's -0.04 % moves a corner by under 0.05 raw px);
   white balance from the bare background
   there (:func:`register.white_levels`), and the residual shifts recorded: over the whole field and the
   worst of its four quadrants;
5. ``inr``: each channel's low-rank field re-factored exactly, truncated to the rank its data need
   and its weakest terms stored in the 16-bit log-polar code (:meth:`ColourModel.compacted`,
   ``compact_db``; the channels are trained uncompacted so that this happens once), after the
   affine part is baked into the coefficients (so that no later step re-rounds the coarse terms) and
   before the white balance and the residual shifts are measured.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch

from ..errors import FPMInputError
from ..rawdata import RawData
from ..recon.lowrank import COMPACTION_TOLERANCE_DB
from .affine import affine_record, affine_resample, bake_affine, fit_affines, wanted
from .focus import FocusResult, ScanOptions, iter_focus_scan, scan_centre
from .model import CHANNELS, REFERENCE, ChannelRegistration, ColourModel, ColourSlices
from .register import fourier_shift, register_fields, white_levels

__all__ = ["ColourEvent", "ColourJob", "ColourStack", "iter_colour", "order_channels"]

FOCUS_SHARE = 0.15  # share of the progress bar taken by the focus scan


@dataclass
class ColourJob:
    """What to build. ``z_min_um``/``z_max_um``: the common range (green's z); ``planes_um``: the
    stack planes (``fpm``); ``train_config``: a :class:`TrainConfig` (``inr``); ``recover_pupil``:
    per channel; ``scan``: the focus scan settings; ``scan_centre_um``: where a channel without a
    stated depth is scanned (default: the middle of the range); ``compact_db``: the tolerance of the
    compaction of the ``inr`` model (:meth:`ColourModel.compacted`; None keeps every channel's rank);
    ``affine``: fit and apply the field-varying (affine) part of the lateral registration (:func:`affine.fit_affines`)."""

    method: str = "inr"
    z_min_um: float = -10.0
    z_max_um: float = 10.0
    planes_um: np.ndarray | None = None
    train_config: object | None = None
    iterations: int = 25
    recover_pupil: tuple[bool, bool, bool] = (False, False, False)
    scan: ScanOptions = field(default_factory=ScanOptions)
    scan_centre_um: float | None = None
    device: str = "auto"
    compact_db: float | None = COMPACTION_TOLERANCE_DB
    affine: bool = True


@dataclass
class ColourStack:
    """A colour stack (``fpm``): :class:`ColourSlices` at ``z_um`` and its registration."""

    slices: ColourSlices
    z_um: np.ndarray
    dx_um: float
    registration: tuple[ChannelRegistration, ...]
    meta: dict = field(default_factory=dict)


@dataclass
class ColourEvent:
    """Progress: ``stage`` ("focus", "reconstruct", "register", "done"), ``channel`` (0..2 or None),
    ``fraction`` of the whole job, ``message``; ``loss`` of the channel being trained (NaN otherwise);
    the last event carries ``result`` (:class:`ColourModel` or :class:`ColourStack`) and ``focus``."""

    stage: str
    channel: int | None
    fraction: float
    message: str
    loss: float = float("nan")
    step: int = 0
    result: ColourModel | ColourStack | None = None
    focus: FocusResult | None = None
    stopped: bool = False


def order_channels(raws: Sequence[RawData]) -> tuple[list[RawData], list[int]]:
    """The three data sets sorted red, green, blue (longest wavelength first) and the permutation used;
    refuses anything but three wavelengths of one raw grid."""
    if len(raws) != 3:
        raise FPMInputError(f"a colour data set needs three acquisitions (red, green, blue), got {len(raws)}")
    order = sorted(range(3), key=lambda i: -raws[i].optics.wavelength_um)
    lam = [raws[i].optics.wavelength_um for i in order]
    if not lam[0] > lam[1] > lam[2]:
        raise FPMInputError(f"the three acquisitions need three different wavelengths, got {lam} um",
                            raws[order[1]].source)
    ordered = [raws[i] for i in order]
    for r in ordered[1:]:
        if r.lr_shape != ordered[0].lr_shape:
            raise FPMInputError(f"raw images are {r.lr_shape[0]}x{r.lr_shape[1]} px here and "
                                f"{ordered[0].lr_shape[0]}x{ordered[0].lr_shape[1]} px in the red channel: "
                                "one field needs one image size (use --crop)", r.source)
        if abs(r.optics.dx_lr_um - ordered[0].optics.dx_lr_um) > 1e-3 * ordered[0].optics.dx_lr_um:
            raise FPMInputError(f"raw pixel {r.optics.dx_lr_um:.4f} um differs from the red channel's "
                                f"{ordered[0].optics.dx_lr_um:.4f} um: one field needs one camera", r.source)
    return ordered, order


def common_grid(raws: Sequence[RawData]) -> list[RawData]:
    """The channels on one hr grid: every channel at the largest upsample any of them needs."""
    up = max(r.optics.upsample for r in raws)
    return [r if r.optics.upsample == up else r.with_optics(upsample=up) for r in raws]


def iter_colour(raws: Sequence[RawData], job: ColourJob, stop=None) -> Iterator[ColourEvent]:
    """Run ``job`` on prepared R, G, B data (already in that order: :func:`order_channels`)."""
    if job.method not in ("inr", "fpm"):
        raise FPMInputError(f"unknown colour method {job.method!r} (inr or fpm)")
    raws = common_grid(raws)
    t0 = time.monotonic()
    mid = 0.5 * (job.z_min_um + job.z_max_um) if job.scan_centre_um is None else job.scan_centre_um
    centres = [scan_centre(r, mid) for r in raws]
    focus = None
    for frac, msg, focus in iter_focus_scan(raws, centres, job.scan, REFERENCE, job.device, stop):
        yield ColourEvent("focus", None, FOCUS_SHARE * frac, msg)
    if focus is None:
        yield ColourEvent("done", None, FOCUS_SHARE, "stopped during the focus scan", stopped=True)
        return
    offsets = [f - focus.focus_um[REFERENCE] for f in focus.focus_um]
    regs = [ChannelRegistration(r.optics.wavelength_um, focus.focus_um[c], offsets[c], focus.shift_px[c])
            for c, r in enumerate(raws)]
    share = (1.0 - FOCUS_SHARE) / 3
    results = []
    for c, raw in enumerate(raws):
        base = FOCUS_SHARE + c * share
        label = f"{CHANNELS[c]} ({1000 * raw.optics.wavelength_um:.0f} nm)"
        result = None
        if job.method == "inr":
            from ..recon.train import TrainConfig, iter_train

            cfg = dataclasses.replace(job.train_config or TrainConfig(device=job.device),
                                      recover_pupil=bool(job.recover_pupil[c]), compact_db=None)
            for ev in iter_train(raw, job.z_min_um + offsets[c], job.z_max_um + offsets[c], cfg, stop=stop):
                yield ColourEvent("reconstruct", c, base + share * ev.fraction, f"{label}: {ev.phase}",
                                  loss=float(ev.loss), step=int(ev.step))
                result = ev.model if ev.model is not None else result
                if ev.stopped:
                    yield ColourEvent("done", c, base, "stopped", stopped=True, focus=focus)
                    return
            result.meta.update(_provenance(raw))
        else:
            from ..recon.conventional import iter_conventional

            planes = np.asarray(job.planes_um, np.float64) + offsets[c]
            for ev in iter_conventional(raw, planes, iterations=job.iterations, device=job.device,
                                        pupil_update=bool(job.recover_pupil[c]), stop=stop):
                yield ColourEvent("reconstruct", c, base + share * ev.fraction, f"{label}: planes "
                                  f"{ev.planes_done}/{ev.n_planes}, iteration {ev.iteration}/{ev.n_iterations}")
                result = ev.stack if ev.stack is not None else result
                if ev.stopped:
                    yield ColourEvent("done", c, base, "stopped", stopped=True, focus=focus)
                    return
        results.append(result)
    yield ColourEvent("register", None, 0.99, "white balance and residual shift")
    meta = {"focus_scan": {"z_um": [z.tolist() for z in focus.scan_z_um],
                           "score": [s.tolist() for s in focus.scan_score]},
            "elapsed_s": round(time.monotonic() - t0, 2), "method": job.method,
            "sources": [str(r.source) if r.source else None for r in raws]}
    if job.method == "inr":
        result = ColourModel(tuple(results), tuple(regs), meta)
        _balance_model(result, job.affine, job.compact_db)
    else:
        result = _colour_stack(results, regs, np.asarray(job.planes_um, np.float64), meta, job.affine)
    yield ColourEvent("done", None, 1.0, "colour " + ("model" if job.method == "inr" else "stack") + " ready",
                      result=result, focus=focus)


def _provenance(raw: RawData) -> dict:
    out = {}
    for key in ("calibration", "preparation"):
        if key in raw.meta:
            out[key] = raw.meta[key]
    return out


def _focus_plane(z_range: tuple[float, float], best: float) -> float:
    return float(np.clip(best, *z_range))


def residual_shifts_raw_px(fields: np.ndarray, upsample: int, band_cycles_per_px: float) -> list[list[float]]:
    """Shift (raw px, (dy, dx)) of each registered channel's field ``(3, H, W)`` relative to the reference."""
    return [[v / upsample for v in register_fields(fields[REFERENCE], fields[c], band_cycles_per_px)]
            for c in range(3)]


def quadrant_shifts_raw_px(fields: np.ndarray, upsample: int, band_cycles_per_px: float) -> list[float]:
    """Largest residual shift (raw px, length) of each channel over the four quadrants of the field:
    how well one lateral shift registers the whole field (distortion, local misfit)."""
    H, W = fields.shape[-2:]
    out = []
    for c in range(3):
        worst = 0.0
        for r0 in (0, H // 2):
            for c0 in (0, W // 2):
                q = fields[:, r0:r0 + H // 2, c0:c0 + W // 2]
                dy, dx = register_fields(q[REFERENCE], q[c], band_cycles_per_px)
                worst = max(worst, float(np.hypot(dy, dx)) / upsample)
        out.append(worst)
    return out


def _band(optics_list, dx_hr_um: float) -> float:
    return min(o.na_synthetic / o.wavelength_um for o in optics_list) * dx_hr_um


def _refine_shifts(fields: np.ndarray, regs, band: float) -> None:
    """Add the shift still measured between the registered reconstructions to each registration.

    The scan measures the shift on a crop before the reconstructions; a recovered pupil can move a
    channel's image (its tilt), so the final shift is the one between the reconstructions."""
    for c in range(3):
        if c != REFERENCE:
            dy, dx = register_fields(fields[REFERENCE], fields[c], band)
            regs[c].shift_px = (regs[c].shift_px[0] + dy, regs[c].shift_px[1] + dx)


def _fields_at(model: ColourModel, z: float) -> np.ndarray:
    """The registered complex fields ``(3, H, W)`` of ``model`` at depth ``z`` (its phase-ramp cache
    cleared first: the shifts or the channels may have changed since it was filled)."""
    model._ramps.clear()
    s = model.render([z], parts=("amplitude", "phase"))
    return s.amplitude[0] * np.exp(1j * s.phase[0])


def _balance_model(model: ColourModel, affine: bool = True, compact_db: float | None = None) -> None:
    """Final shift on the reconstructions, its affine part (low-rank channels), the compaction at ``compact_db``
    (:meth:`ColourModel.compacted`, in place; None: none), white from the bare background at the common best
    focus, and the residual shifts recorded (whole field and worst quadrant), on the final model."""
    z = _focus_plane(model.z_range_um, model.registration[REFERENCE].focus_um)
    band = _band([m.optics for m in model.channels], model.dx_hr_um)
    for r in model.registration:
        r.white = 1.0
    _refine_shifts(_fields_at(model, z), model.registration, band)
    fields = _fields_at(model, z)
    changed = False  # the model differs from ``fields``: render them again at the end
    if affine:
        from ..recon.lowrank import LowRankField

        fits = fit_affines(fields, model.upsample, band)
        records = []
        for c, fit in enumerate(fits):
            apply = wanted(fit, model.hr_shape, model.upsample) and isinstance(model.channels[c].net, LowRankField)
            if apply:
                bake_affine(model, c, fit)
            records.append(affine_record(fit, model.hr_shape, model.upsample, apply))
        model.meta["affine"] = records
        if any(r and r["applied"] for r in records):
            model.meta["residual_quadrant_shift_only_raw_px"] = quadrant_shifts_raw_px(fields, model.upsample, band)
            changed = True
    if compact_db is not None:
        small = model.compacted(compact_db)
        model.channels, model.meta["compaction"] = small.channels, small.meta["compaction"]
        changed = True
    if changed:
        fields = _fields_at(model, z)
    for r, w in zip(model.registration, white_levels(np.abs(fields) ** 2), strict=True):
        r.white = float(w)
    model.meta["common_focus_um"] = z
    model.meta["residual_shift_raw_px"] = residual_shifts_raw_px(fields, model.upsample, band)
    model.meta["residual_quadrant_raw_px"] = quadrant_shifts_raw_px(fields, model.upsample, band)


def _registered(stacks, regs) -> np.ndarray:
    """Each channel's stack on the common frame: ``out(p) = S(p + t + A·(p - centre))``."""
    fields = []
    for c, st in enumerate(stacks):
        f = torch.polar(torch.as_tensor(st.amplitude), torch.as_tensor(st.phase))
        dy, dx = regs[c].shift_px
        f = fourier_shift(f, -dy, -dx)
        A = np.asarray(regs[c].linear, np.float64).reshape(2, 2)
        if np.any(A):
            centre = (np.asarray(f.shape[-2:], np.float64) - 1) / 2
            f = affine_resample(f, np.eye(2) + A, -A @ centre)
        fields.append(f.numpy())
    return np.stack(fields, axis=1)  # (Z, 3, H, W)


def _colour_stack(stacks, regs, planes: np.ndarray, meta: dict, affine: bool = True) -> ColourStack:
    k = int(np.argmin(np.abs(planes - regs[REFERENCE].focus_um)))
    band = _band([s.optics for s in stacks], stacks[0].dx_hr_um)
    _refine_shifts(_registered(stacks, regs)[k], regs, band)
    fields = _registered(stacks, regs)
    if affine:
        upsample = max(1, round(stacks[REFERENCE].optics.upsample))
        shape = fields.shape[-2:]
        fits = fit_affines(fields[k], upsample, band)
        records = []
        for c, fit in enumerate(fits):
            apply = wanted(fit, shape, upsample)
            if apply:
                t = np.asarray(regs[c].shift_px, np.float64) + fit.shift
                regs[c].shift_px = (float(t[0]), float(t[1]))
                regs[c].linear = tuple(float(v) for v in fit.linear.reshape(-1))
            records.append(affine_record(fit, shape, upsample, apply))
        meta = dict(meta, affine=records)
        if any(r and r["applied"] for r in records):
            meta["residual_quadrant_shift_only_raw_px"] = quadrant_shifts_raw_px(fields[k], upsample, band)
            fields = _registered(stacks, regs)
    intensity = np.abs(fields) ** 2
    for r, w in zip(regs, white_levels(intensity[k]), strict=True):
        r.white = float(w)
    white = np.array([r.white for r in regs], np.float32)[None, :, None, None]
    upsample = max(1, round(stacks[REFERENCE].optics.upsample))
    meta = dict(meta, common_focus_um=float(planes[k]),
                residual_shift_raw_px=residual_shifts_raw_px(fields[k], upsample, band),
                residual_quadrant_raw_px=quadrant_shifts_raw_px(fields[k], upsample, band))
    slices = ColourSlices((intensity / white).astype(np.float32), (np.abs(fields) / np.sqrt(white)).astype(np.float32),
                          np.angle(fields).astype(np.float32))
    return ColourStack(slices, planes, float(stacks[REFERENCE].dx_hr_um), tuple(regs), meta)


def iter_colour_prepared(raws: Sequence[RawData], job: ColourJob, stop=None, device="auto") -> Iterator[ColourEvent]:
    """:func:`iter_colour` after ordering the three data sets and applying the real-data defaults to each
    (:func:`napari_fpminr.calib.prepare.iter_prepare`, one channel after the other; the pupil decision per
    channel is the preparation's). What the napari widget runs on its worker thread."""
    from ..calib.prepare import PrepareOptions, iter_prepare

    ordered, _ = order_channels(raws)
    prepared, pupils = [], []
    for c, raw in enumerate(ordered):
        last = None
        for last in iter_prepare(raw, PrepareOptions(), device=device, stop=stop):
            yield ColourEvent("prepare", c, 0.0, f"{CHANNELS[c]}: {last.message}"[:90])
        if last is None or last.preparation is None:
            yield ColourEvent("done", c, 0.0, "stopped while preparing the data", stopped=True)
            return
        prepared.append(last.preparation.raw)
        pupils.append(bool(last.preparation.recover_pupil))
    yield from iter_colour(prepared, dataclasses.replace(job, recover_pupil=tuple(pupils)), stop=stop)
