"""FPM-INR reconstruction as a generator of progress events (shared/DESIGN.md §1).

Two ways to get the representation, chosen by ``TrainConfig.init``:

* ``"seeded"`` (default): the physics-seeded pipeline of :mod:`recon.seeded` — conventional
  seed at z-Nyquist nodes, closed-form low-rank initialisation, self-supervised polish on the raw
  data (and, for ``representation="mlp"``, distillation into the paper's networks).
* ``"random"``: the paper's training from a random initialisation. Each step renders the hr
  field ``o_z = A·exp(i·φ)`` at one (or a few) depths ``z``, predicts every LED's raw amplitude
  through the physical forward model ``sqrt(I_i) = |F^-1{W_i[F{o_z}] · P · exp(i·kz·z)}|`` (one
  hr FFT, all LED windows batched) and takes an Adam step on the smooth-L1 distance to the
  measured amplitudes ``sqrt(I / background)`` (``RawData.normalized``).

Both censor saturated pixels (``RawData.valid`` False; :mod:`recon.censor`): the true intensity
there is only known to be at least the stored value, so the loss penalizes only a predicted
amplitude below the measured one.

The caller drives either by iterating :func:`iter_train`; every event names its ``phase`` and
carries an honest ``progress`` fraction and ETA. ``stop`` (a callable returning True, or a
``threading.Event``) ends it cooperatively, and the final event (``done=True``) always carries
the model so far. Divergence (a non-finite or exploding loss) raises :class:`TrainingDiverged`,
an :class:`FPMInputError` with a one-line reason.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..device import heap_pages_kept, resolve_device
from ..errors import FPMInputError
from ..optics.forward import FPMForward, frequency_grid
from ..rawdata import RawData
from .inr import FPMINR, INRArchitecture, PupilPhase
from .lowrank import LowRankField
from .censor import amplitude_ceiling, censored_prediction
from .model import Model
from .train_config import INITS, REPRESENTATIONS, TrainConfig, TrainEvent  # noqa: F401 (public here)
from .schedule import epoch_depths, step_decay_lr
from .seeded import iter_seeded
from .stop import should_stop
from .train_forward import (PreconditionGradient, coverage_preconditioner, led_amplitudes, spectrum_and_transfer,
                            window_indices)


class TrainingDiverged(FPMInputError):
    """Training produced a non-finite or exploding loss."""


def iter_train(raw: RawData, z_min_um: float, z_max_um: float, config: TrainConfig | None = None,
               stop: Callable[[], bool] | Any | None = None) -> Iterator[TrainEvent]:
    """Reconstruct an FPM-INR of ``raw`` over ``[z_min_um, z_max_um]``; yield a :class:`TrainEvent` per step."""
    cfg = config or TrainConfig()
    if not (math.isfinite(float(z_min_um)) and math.isfinite(float(z_max_um)) and float(z_max_um) > float(z_min_um)):
        raise FPMInputError(f"z range must be finite and increasing, got [{z_min_um}, {z_max_um}] um", raw.source)
    device = resolve_device(cfg.device)
    with heap_pages_kept(device):  # CPU: no page faults on every step's temporaries
        if cfg.init == "seeded":
            yield from _iter_seeded_events(raw, float(z_min_um), float(z_max_um), cfg, device, stop)
        else:
            yield from _iter_random(raw, float(z_min_um), float(z_max_um), cfg, device, stop)


def _summary(cfg: TrainConfig, device, t0: float, steps: int, stopped: bool, final_loss, **extra) -> dict:
    return {"init": cfg.init, "representation": cfg.representation, "steps": steps, "stopped": stopped,
            "final_loss": None if final_loss is None or not math.isfinite(final_loss) else float(final_loss),
            "elapsed_s": round(time.perf_counter() - t0, 3), "device": str(device), "config": cfg.to_dict(),
            **extra}


def _model_meta(raw: RawData, summary: dict) -> dict:
    return {"training": summary, "source_hash": raw.content_hash(),
            "source": None if raw.source is None else str(raw.source),
            "intensity_scale": raw.normalized().meta.get("intensity_scale")}


def _iter_seeded_events(raw: RawData, z_min_um: float, z_max_um: float, cfg: TrainConfig, device,
                        stop) -> Iterator[TrainEvent]:
    """The seeded pipeline (:func:`recon.seeded.iter_seeded`) as :class:`TrainEvent`\\ s."""
    try:
        FPMForward(raw.optics, raw.lr_shape, "cpu")  # validates the optics against the raw size
    except ValueError as exc:
        raise FPMInputError(str(exc), raw.source) from exc
    holder: dict = {}
    t0 = time.perf_counter()
    gen = iter_seeded(raw, z_min_um, z_max_um, cfg, device, stop, holder)
    step, done_work, losses = 0, 0.0, []
    preview_z = float(cfg.preview_z_um) if cfg.preview_z_um is not None else 0.5 * (z_min_um + z_max_um)
    last: TrainEvent | None = None
    while True:
        try:
            ps = next(gen)
        except StopIteration as finished:
            completed = bool(finished.value)
            break
        step += 1
        done_work += ps.work
        total = holder["cost"].total
        progress = min(done_work / total, 1.0)
        elapsed = time.perf_counter() - t0
        if math.isfinite(ps.loss):
            losses.append(ps.loss)
        preview = None
        if cfg.preview_every and step % cfg.preview_every == 0 and holder.get("net") is not None:
            preview = _preview(holder["net"], preview_z, cfg.preview_step, device)
        n_steps = _seeded_n_steps(cfg, holder)
        last = TrainEvent(0, 0, step, max(n_steps, step + 1), ps.loss, ps.lr,
                          preview_z if math.isnan(ps.z_um) else ps.z_um, elapsed,
                          elapsed / max(progress, 1e-9) * (1 - progress), preview,
                          preview_z if preview is not None else None, phase=ps.phase, progress=progress)
        yield last
    if holder.get("net") is None:  # stopped during the seed: nothing to keep yet
        raise TrainingStopped("stopped before the seed finished: no model yet", raw.source)
    net, compaction = _finished_net(holder["net"], cfg.compact_db)
    optics = raw.optics if holder.get("pupil") is None else raw.optics.replace(pupil=holder["pupil"])
    guard = holder.get("guard") or {}
    summary = _summary(cfg, device, t0, step, not completed, losses[-1] if losses else None,
                       seed_nodes=int(holder["seed_nodes"]), invariance_seed=guard.get("seed"),
                       invariance_checks=guard.get("checked"), polish_stopped_by_guard_at=guard.get("stopped_at"),
                       compaction=compaction)
    model = Model(net, optics, raw.lr_shape, _model_meta(raw, summary))
    elapsed = time.perf_counter() - t0
    phase = last.phase if last is not None else "seed"
    yield TrainEvent(0, 0, step, step, last.loss if last else float("nan"), last.lr if last else float("nan"),
                     last.z_um if last else preview_z, elapsed, 0.0, last.preview if last else None,
                     last.preview_z_um if last else None, done=True, stopped=not completed, model=model,
                     phase=phase, progress=1.0 if completed else (last.progress if last else 0.0))


def _finished_net(net, compact_db: float | None):
    """The net a model keeps, rounded to what its file holds: a low-rank field compacted at ``compact_db``
    (:meth:`LowRankField.compacted`: exact re-factorisation, truncation and per-term storage codes, no
    decoded plane changing by more than ``compact_db`` of the weakest plane's energy) with its report,
    else the net itself (report None)."""
    if isinstance(net, LowRankField) and compact_db is not None:
        rank_before = net.arch.rank
        small = net.compacted(compact_db)
        return small, {"rank_before": rank_before, **small.compaction_report}
    return net.round_to_storage_(), None


def _seeded_n_steps(cfg: TrainConfig, holder: dict) -> int:
    """Events the seeded pipeline yields at most (the polish guard may end it early)."""
    distill = cfg.distill_steps if cfg.representation == "mlp" else 0
    return cfg.seed_iterations + 1 + cfg.polish_steps + distill


def _preview(net, z_um: float, step: int, device) -> np.ndarray:
    with torch.no_grad():
        z = torch.tensor([z_um], device=device)
        if isinstance(net, LowRankField):
            (img,) = net.decode(z, ("amplitude",), step=step)
        else:
            net.eval()
            (img,) = net(z, *net.grid(step=step), parts=("amplitude",))
    return img[0].float().cpu().numpy()


class TrainingStopped(FPMInputError):
    """Stopped before any representation existed (during the seed's first passes)."""


def _iter_random(raw: RawData, z_min_um: float, z_max_um: float, cfg: TrainConfig, device, stop
                 ) -> Iterator[TrainEvent]:
    """The paper's training from a random initialisation (``init="random"``)."""
    try:
        arch = INRArchitecture(raw.hr_shape, float(z_min_um), float(z_max_um), cfg.n_z, cfg.q, cfg.plane_downsample)
        fwd = FPMForward(raw.optics, raw.lr_shape, device)
    except ValueError as exc:
        raise FPMInputError(str(exc), raw.source) from exc
    data = raw.normalized()
    measured = torch.as_tensor(np.sqrt(data.intensities), device=device)  # (N, h, w)
    ceiling = amplitude_ceiling(data, measured)  # saturated pixels: censored residual (None: no mask)
    n_leds = raw.n_leds
    led_chunks = [torch.arange(s, min(n_leds, s + (cfg.led_batch or n_leds)), device=device)
                  for s in range(0, n_leds, cfg.led_batch or n_leds)]

    window_index = window_indices(fwd, led_chunks)
    kz_shifted = torch.fft.ifftshift(fwd.kz, dim=(-2, -1))
    precondition = coverage_preconditioner(fwd, window_index, cfg.precondition) if cfg.precondition > 0 else None

    net = FPMINR(arch, seed=cfg.seed).to(device)
    groups = [{"params": list(net.parameters()), "lr": cfg.lr, "base_lr": cfg.lr}]
    pupil_model = None
    if cfg.recover_pupil:
        fy, fx = frequency_grid(raw.lr_shape, raw.optics.dx_lr_um)
        pupil_model = PupilPhase(fwd.pupil, torch.as_tensor(fy, dtype=torch.float32, device=device),
                                 torch.as_tensor(fx, dtype=torch.float32, device=device),
                                 raw.optics.na_obj / raw.optics.wavelength_um, cfg.zernike_modes).to(device)
        groups.append({"params": [pupil_model.coefficients], "lr": cfg.pupil_lr, "base_lr": cfg.pupil_lr})
    optimizer = torch.optim.Adam(groups)
    rng = np.random.default_rng(cfg.seed)
    use_amp = cfg.mixed_precision and device.type == "cuda"
    amp_dtype = torch.bfloat16 if (use_amp and torch.cuda.is_bf16_supported()) else torch.float16
    scaler = torch.amp.GradScaler("cuda") if use_amp and amp_dtype == torch.float16 else None

    steps_per_epoch = math.ceil(cfg.n_z * cfg.steps_repeat / cfg.z_per_step)
    n_steps = steps_per_epoch * cfg.epochs
    preview_z = float(cfg.preview_z_um) if cfg.preview_z_um is not None else 0.5 * (z_min_um + z_max_um)
    t0 = time.perf_counter()
    step = 0
    first_loss = None
    history: list[float] = []
    last = None

    def make_model(stopped: bool) -> Model:
        net.round_to_storage_()  # what a saved file holds: file and memory decode alike
        optics = raw.optics
        meta_pupil = {}
        if pupil_model is not None:
            with torch.no_grad():
                pupil = pupil_model().cpu().numpy()
            optics = optics.replace(pupil=pupil)
            meta_pupil = {"zernike_modes": list(pupil_model.modes),
                          "zernike_coefficients_rad": pupil_model.coefficients.detach().cpu().tolist()}
        final = float(np.mean(history[-steps_per_epoch:])) if history else None
        summary = _summary(cfg, device, t0, step, stopped, final, epochs_done=epoch if step else 0, **meta_pupil)
        return Model(net, optics, raw.lr_shape, _model_meta(raw, summary))

    epoch = 0
    for epoch in range(1, cfg.epochs + 1):
        lr_factor = step_decay_lr(epoch, 1.0, cfg.lr_decay, cfg.lr_decay_every)
        for g in optimizer.param_groups:
            g["lr"] = g["base_lr"] * lr_factor
        depths = epoch_depths(epoch, z_min_um, z_max_um, cfg.n_z, rng, cfg.steps_repeat)
        for s in range(0, len(depths), cfg.z_per_step):
            if should_stop(stop):
                yield _final(last, epoch, cfg, step, n_steps, t0, make_model(True), True)
                return
            z = torch.as_tensor(depths[s:s + cfg.z_per_step], dtype=torch.float32, device=device)
            net.train()
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                amplitude, phase = net.amplitude.forward_full(z), net.phase.forward_full(z)
            field_hr = amplitude.float() * torch.exp(1j * phase.float())  # complex64 (Z, H, W)
            pupil = pupil_model() if pupil_model is not None else None
            spectrum, transfer = spectrum_and_transfer(field_hr, z, fwd, pupil, kz_shifted)
            if precondition is not None:
                spectrum = PreconditionGradient.apply(spectrum, precondition)
            total = 0.0
            for chunk, flat_idx in zip(led_chunks, window_index):
                pred = led_amplitudes(spectrum, transfer, flat_idx, len(chunk), raw.lr_shape, chunk)  # (Z, n, h, w)
                pred = censored_prediction(pred, None if ceiling is None else ceiling[chunk])
                target = measured[chunk]
                loss = F.smooth_l1_loss(pred, target.expand_as(pred), reduction="sum") / pred.numel() \
                    * (len(chunk) / n_leds)
                retain = len(led_chunks) > 1 and chunk is not led_chunks[-1]
                (scaler.scale(loss) if scaler else loss).backward(retain_graph=retain)
                total += float(loss.detach())
            if not math.isfinite(total) or (first_loss is not None and total > 1e4 * max(first_loss, 1e-6)):
                raise TrainingDiverged(
                    f"training diverged at epoch {epoch}, step {step + 1} (loss {total:.3g}); "
                    f"try a lower learning rate (now {cfg.lr:g})", raw.source)
            first_loss = total if first_loss is None else first_loss
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            step += 1
            history.append(total)
            elapsed = time.perf_counter() - t0
            preview = None
            if cfg.preview_every and step % cfg.preview_every == 0:
                net.eval()
                with torch.no_grad():
                    (preview,) = net(torch.tensor([preview_z], device=device), *net.grid(step=cfg.preview_step),
                                     parts=("amplitude",))
                preview = preview[0].float().cpu().numpy()
            last = TrainEvent(epoch, cfg.epochs, step, n_steps, total, optimizer.param_groups[0]["lr"],
                              float(z[0]), elapsed, elapsed / step * (n_steps - step), preview,
                              preview_z if preview is not None else None)
            if step < n_steps:
                yield last
    yield _final(last, epoch, cfg, step, n_steps, t0, make_model(False), False)


def _final(last: TrainEvent | None, epoch: int, cfg: TrainConfig, step: int, n_steps: int, t0: float,
           model: Model, stopped: bool) -> TrainEvent:
    elapsed = time.perf_counter() - t0
    return TrainEvent(epoch, cfg.epochs, step, n_steps, last.loss if last else float("nan"),
                      last.lr if last else cfg.lr, last.z_um if last else float("nan"), elapsed, 0.0,
                      last.preview if last else None, last.preview_z_um if last else None,
                      done=True, stopped=stopped, model=model)


def train(raw: RawData, z_min_um: float, z_max_um: float, config: TrainConfig | None = None,
          stop=None, callback: Callable[[TrainEvent], None] | None = None) -> Model:
    """Drain :func:`iter_train` and return the model (``callback`` sees every event)."""
    event = None
    for event in iter_train(raw, z_min_um, z_max_um, config, stop):
        if callback is not None:
            callback(event)
    assert event is not None and event.model is not None
    return event.model
