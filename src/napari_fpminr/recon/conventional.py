"""Conventional per-plane FPM reconstruction (the paper's "FPM" baseline; shared/DESIGN.md §1).

The public face of the conventional solver: :func:`iter_conventional` (a generator of progress
events with cooperative stop) and :func:`reconstruct_stack`. It checks the inputs, splits the planes
into batches that fit a memory budget (:func:`_auto_chunk`), runs the sequential quasi-Newton
updates of :class:`~napari_fpminr.recon.qnewton.QNewtonSolver` (the algorithm, sub-bin tilts and
pupil recovery are described there) and assembles the :class:`Stack`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..device import heap_pages_kept, resolve_device
from ..errors import FPMInputError
from ..rawdata import RawData
from .qnewton import QNewtonSolver
from .stack import Stack

__all__ = ["ConventionalProgress", "iter_conventional", "reconstruct_stack"]

MODES = ("batched", "per_plane")


@dataclass
class ConventionalProgress:
    """Progress of a conventional reconstruction; the last event carries ``stack``.

    ``iteration`` counts finished passes over the LEDs of the planes in progress;
    ``planes_done`` the planes fully finished; ``fraction`` the share of the total work done.
    """

    iteration: int
    n_iterations: int
    planes_done: int
    n_planes: int
    elapsed_s: float
    eta_s: float | None
    fraction: float = 0.0
    stack: Stack | None = None
    stopped: bool = False


def _check_inputs(raw: RawData, z_um, iterations: int, mode: str) -> np.ndarray:
    z = np.asarray(z_um, dtype=np.float64).reshape(-1)
    if z.size == 0 or not np.all(np.isfinite(z)):
        raise FPMInputError(f"z planes must be a non-empty list of finite depths (µm), got {z_um!r}", raw.source)
    if int(iterations) != iterations or iterations < 1:
        raise FPMInputError(f"iterations must be a positive integer, got {iterations!r}", raw.source)
    if mode not in MODES:
        raise FPMInputError(f"unknown mode {mode!r}; use 'batched' or 'per_plane'", raw.source)
    return z


def _auto_chunk(hr_shape: tuple[int, int], lr_shape: tuple[int, int], device: torch.device) -> int:
    """Planes per batch so that the hr spectra and work buffers stay within a memory budget.

    On the CPU the budget is small (64 MB): batching pays by amortising per-LED overheads over
    planes, but a whole 161-plane stack of large fields no longer fits the caches and each LED
    update then streams it from memory (measured on 2 cores at 256² raw: 161 planes in one batch
    88 ms/plane/iteration, 10-plane batches ~66, plane by plane ~55-66; at 64² and 128² raw,
    batches of 32-161 planes are equally fast and 2-6x faster than plane by plane).
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = free // 3
    else:
        budget = 64 << 20
    per_plane = 8 * (hr_shape[0] * hr_shape[1] + 8 * lr_shape[0] * lr_shape[1])
    return max(1, int(budget // per_plane))


def iter_conventional(raw: RawData, z_um, *, iterations: int = 25, mode: str = "batched",
                      pupil_update: bool = False, device="auto", stop=None, plane_chunk: int | None = None,
                      alpha: float = 1.0, delta: float = 1.0, beta: float = 1.0,
                      delta_pupil: float = 1.0, subpixel: bool = True,
                      adaptive_step: bool = False,
                      intensity_correction: bool | None = None) -> Iterator[ConventionalProgress]:
    """Reconstruct the planes ``z_um`` (µm) of ``raw`` independently; yields progress events.

    One event per finished pass over the LEDs (of the plane batch in progress). The last event
    has ``.stack``: a :class:`Stack` of the planes in ``z_um`` order. ``stop`` (a callable or a
    ``threading.Event``) is polled before every LED update; when it fires the last event has
    ``stopped=True`` and a stack of the planes started so far at their current estimate
    (``meta["complete"] = False``). ``subpixel=False`` snaps every LED to its nearest hr
    frequency bin (the reference implementation's model) instead of the exact sub-bin transfer.
    ``adaptive_step=True`` halves a plane's step whenever a pass stops lowering its misfit (Zuo et
    al. 2016; :mod:`napari_fpminr.recon.qnewton`): what tiles use, whose data the per-tile model
    cannot fit exactly. ``intensity_correction`` fits a residual brightness gain per LED and plane
    (:mod:`napari_fpminr.recon.qnewton`); ``None`` follows the data (on when the real-data preparation
    flagged the brightness as an estimate, :attr:`RawData.brightness_uncertain`). Saturated pixels (``raw.valid`` False) are censored: the true intensity
    is only known to be at least the stored one, and the projection only raises an estimate that
    falls short of it (:mod:`napari_fpminr.recon.qnewton`).
    """
    z = _check_inputs(raw, z_um, iterations, mode)
    iterations = int(iterations)
    if intensity_correction is None:
        intensity_correction = raw.brightness_uncertain
    dev = resolve_device(device)
    t0 = time.perf_counter()
    with torch.no_grad(), heap_pages_kept(dev):  # CPU: no page faults on every LED step's temporaries
        solver = QNewtonSolver(raw, dev, alpha, delta, beta, delta_pupil, subpixel, adaptive_step,
                               intensity_correction)
        if mode == "per_plane":
            chunk = 1
        else:
            chunk = int(plane_chunk) if plane_chunk else _auto_chunk(solver.fwd.hr_shape, solver.fwd.lr_shape, dev)
        n_planes = z.size
        amplitudes, phases, pupils, gains = [], [], [], []
        planes_done = 0
        stopped = False
        last_iter = 0
        for start in range(0, n_planes, chunk):
            z_chunk = z[start:start + chunk]
            for last_iter in solver.run(z_chunk, iterations, pupil_update, stop):
                elapsed = time.perf_counter() - t0
                finished = last_iter == iterations
                work = planes_done * iterations + last_iter * z_chunk.size
                eta = elapsed / work * (n_planes * iterations - work)
                yield ConventionalProgress(last_iter, iterations,
                                           planes_done + (z_chunk.size if finished else 0),
                                           n_planes, elapsed, eta, fraction=work / (n_planes * iterations))
            fields, transfer, done = solver.result
            amplitudes.append(fields.abs().cpu().numpy())
            phases.append(fields.angle().cpu().numpy())
            if transfer is not None:
                pupils.append(transfer.cpu().numpy())
            if solver.led_gain is not None:
                gains.append(solver.led_gain.cpu().numpy())
            if done < iterations:
                stopped = True
                break
            planes_done += z_chunk.size

        elapsed = time.perf_counter() - t0
        n_out = sum(a.shape[0] for a in amplitudes)
        meta: dict[str, Any] = {
            "method": "fpm", "algorithm": "quasi-newton", "iterations": iterations, "alpha": alpha,
            "delta": delta, "adaptive_step": bool(adaptive_step), "pupil_update": bool(pupil_update),
            "intensity_correction": bool(intensity_correction), "mode": mode, "device": str(dev),
            "elapsed_s": elapsed, "complete": not stopped,
            "subpixel": not solver.fwd.on_grid,
            "source": None if raw.source is None else str(raw.source),
        }
        stack = Stack(amplitude=np.concatenate(amplitudes), phase=np.concatenate(phases), z_um=z[:n_out],
                      optics=raw.optics, meta=meta, pupil=np.concatenate(pupils) if pupils else None,
                      led_gain=_in_input_order(np.concatenate(gains), raw) if gains else None)
        work = planes_done * iterations + (last_iter * z_chunk.size if stopped else 0)
        yield ConventionalProgress(last_iter, iterations, planes_done, n_planes, elapsed, 0.0,
                                   fraction=work / (n_planes * iterations), stack=stack, stopped=stopped)


def _in_input_order(gains_by_na: np.ndarray, raw: RawData) -> np.ndarray:
    """Per-LED values ``(Z, N)`` in the solver's NA order put back in ``raw``'s LED order."""
    out = np.empty_like(gains_by_na)
    out[:, raw.optics.led_order_by_na()] = gains_by_na
    return out


def reconstruct_stack(raw: RawData, z_um, **kwargs: Any) -> Stack:
    """Run :func:`iter_conventional` to the end and return its :class:`Stack`."""
    last = None
    for last in iter_conventional(raw, z_um, **kwargs):
        pass
    assert last is not None and last.stack is not None
    return last.stack
