"""The bridge from the widget's form to the core trainer (runs on the worker thread).

``train_events`` is the generator handed to napari's ``create_worker``: it converts the form
values to a :class:`~napari_fpminr.recon.train.TrainConfig`, runs ``iter_train`` and hands its
``TrainEvent``s to the GUI in coalesced batches; the last one carries the model (also after Stop).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields

import numpy as np

from ..progress import format_seconds
from ._params import QUICK_CROP_PX, QUICK_HALF_RANGE_UM, TrainingParameters

#: previews per epoch attached by the trainer (each costs one small render)
PREVIEWS_PER_EPOCH = 2
#: at most this often the worker hands progress to the GUI thread
GUI_INTERVAL_S = 0.05


def _config_defaults() -> dict:
    from ..recon.train import TrainConfig

    return {f.name: f.default for f in fields(TrainConfig)}


def default_parameters() -> TrainingParameters:
    """Form defaults: the trainer's own defaults, the quick-look field and range."""
    d = _config_defaults()
    return TrainingParameters(
        z_min_um=-QUICK_HALF_RANGE_UM, z_max_um=QUICK_HALF_RANGE_UM, n_z=int(d["n_z"]),
        epochs=int(d["epochs"]), q=int(d["q"]), lr=float(d["lr"]), upsample=0,
        device=str(d["device"]), seed=int(d["seed"]), pupil_recovery=bool(d["recover_pupil"]),
        crop_px=QUICK_CROP_PX, init=str(d.get("init", "random")),
        representation=str(d.get("representation", "mlp")),
    )


def _pipeline_fields(params: TrainingParameters) -> dict:
    """init/representation for a core that knows them (older cores: the paper's training)."""
    d = _config_defaults()
    out = {}
    if "init" in d:
        out["init"] = params.init
    if "representation" in d:
        out["representation"] = "mlp" if params.init == "random" else params.representation
    return out


def planned_steps(params: TrainingParameters) -> int:
    """Progress events the run will yield at most (for the preview interval)."""
    d = _config_defaults()
    if params.init == "seeded" and "seed_iterations" in d:
        distill = int(d["distill_steps"]) if params.representation == "mlp" else 0
        return int(d["seed_iterations"]) + 1 + int(d["polish_steps"]) + distill
    return max(1, params.n_z * int(d["steps_repeat"])) * params.epochs


def make_config(params: TrainingParameters):
    """TrainConfig from the form, with a few previews over the run for the live view."""
    from ..recon.train import TrainConfig

    n = planned_steps(params)
    previews = PREVIEWS_PER_EPOCH * (params.epochs if params.init == "random" else 3)
    return TrainConfig(
        epochs=params.epochs, lr=params.lr, n_z=params.n_z, q=params.q, seed=params.seed,
        device=params.device, recover_pupil=params.pupil_recovery,
        preview_every=max(1, n // max(1, previews)), **_pipeline_fields(params),
    )


def crop_box(raw, crop_px: int) -> tuple[int, int, int, int] | None:
    """(top, left, height, width) of the centred crop, or None for the whole field."""
    h, w = raw.lr_shape
    if not crop_px or (crop_px >= h and crop_px >= w):
        return None
    ch, cw = min(crop_px, h), min(crop_px, w)
    return ((h - ch) // 2, (w - cw) // 2, ch, cw)


def prepare_raw(raw, params: TrainingParameters):
    """Apply the form's centred crop and upsampling (0 keeps the data's own) to the raw data."""
    box = crop_box(raw, params.crop_px)
    if box is not None:
        raw = raw.crop(*box)
    if params.upsample and params.upsample != raw.optics.upsample:
        return raw.with_optics(upsample=params.upsample)
    return raw


# ---- expected time --------------------------------------------------------------------------
#: seconds per (cost unit × raw pixel) on the 2-core reference CPU, and a fixed start-up cost;
#: measured on ../shared/data/bloodsmear_green.mat (64² crop and whole field, ±10 µm) on a busy
#: 2-core machine, so rather pessimistic. ``calibrate`` replaces them with this machine's figures
#: after every run.
SECONDS_PER_UNIT_PX = {"seeded": 4e-8, "random": 3e-7}
STARTUP_S = {"seeded": 10.0, "random": 2.0}
_measured: dict[str, float] = {}


def work_units(raw, params: TrainingParameters) -> float:
    """The run's work in the core's cost units (one LED window at one depth = 1) for the seeded
    pipeline, or LED windows + hr pixels per raw pixel per step for the paper's training."""
    raw = prepare_raw(raw, params)
    n_leds = raw.n_leds
    lr_px = float(np.prod(raw.lr_shape))
    d = _config_defaults()
    if params.init == "seeded" and "seed_iterations" in d:
        from ..recon.seeded import estimate_work

        return estimate_work(raw, params.z_min_um, params.z_max_um, make_config(params))
    hr_px = float(np.prod(raw.hr_shape))
    return planned_steps(params) * (n_leds + hr_px / lr_px)


def estimate_seconds(raw, params: TrainingParameters) -> tuple[float, bool]:
    """(expected seconds on this machine's CPU, measured?) for training ``raw`` with ``params``.

    A cost model: work units × raw pixels × seconds per unit-pixel, plus start-up. The constant
    is the reference CPU's until a run on this machine measured its own (``calibrate``).
    """
    kind = "seeded" if params.init == "seeded" else "random"
    prepared = prepare_raw(raw, params)
    work = work_units(raw, params) * float(np.prod(prepared.lr_shape))
    k = _measured.get(kind, SECONDS_PER_UNIT_PX[kind])
    return STARTUP_S[kind] + k * work, kind in _measured


def calibrate(raw, params: TrainingParameters, elapsed_s: float, fraction: float) -> None:
    """Learn this machine's seconds per unit-pixel from a run (``fraction`` of it took
    ``elapsed_s``); ignored for runs too short to measure."""
    kind = "seeded" if params.init == "seeded" else "random"
    if fraction < 0.2 or elapsed_s < 1.0:
        return
    work = work_units(raw, params) * float(np.prod(prepare_raw(raw, params).lr_shape)) * fraction
    if work > 0:
        _measured[kind] = max(elapsed_s - STARTUP_S[kind] * fraction, 0.5 * elapsed_s) / work


@dataclass
class ProgressBatch:
    """What the GUI thread receives: the latest event plus every (step, loss) since the last
    batch, and the latest preview image among them (or None)."""

    event: object
    points: list[tuple[int, float, str]] = field(default_factory=list)   # (step, loss, phase)
    preview: np.ndarray | None = None


def train_events(raw, params: TrainingParameters, stop, interval_s: float = GUI_INTERVAL_S) -> Iterator[ProgressBatch]:
    """Run the trainer and yield :class:`ProgressBatch` es at most every ``interval_s``.

    Coalescing keeps the GUI's work bounded however fast the steps are, so the queue of
    signals never backs up (Stop and the final model reach the GUI at once). The final event
    (``done``, carrying the model) is always delivered. ``stop`` is checked by the trainer
    between steps.
    """
    from ..recon.train import iter_train

    batch = ProgressBatch(event=None)
    last_step = -1
    last_emit = time.monotonic()
    data = prepare_raw(raw, params)
    if not data.is_simulated:  # the real-data defaults of the CLI (calib/prepare.py), before training
        data, params = yield from _prepared(data, params, stop)
        if data is None:
            return
    for event in iter_train(data, params.z_min_um, params.z_max_um, make_config(params), stop=stop):
        if event.step > last_step:          # the final event repeats the last step after a Stop
            batch.points.append((int(event.step), float(event.loss), str(getattr(event, "phase", "train"))))
            last_step = event.step
        if event.model is not None and "preparation" in data.meta:  # the model records how its data were prepared
            event.model.meta["preparation"] = data.meta["preparation"]
        if event.preview is not None:
            batch.preview = event.preview
        batch.event = event
        now = time.monotonic()
        if event.done or now - last_emit >= interval_s:
            yield batch
            batch = ProgressBatch(event=None)
            last_emit = now


def _prepared(data, params: TrainingParameters, stop):
    """Run :func:`~napari_fpminr.calib.prepare.iter_prepare` on measured data, reporting it as the
    "prepare" phase; returns ``(prepared data, params with the pupil decision)`` (``(None, params)``
    when stopped). Data the widget's calibration section already corrected are not calibrated again;
    the form's pupil box is the user's choice (the form ticks it for measurements)."""
    import dataclasses

    from ..calib.prepare import PrepareOptions, iter_prepare
    from ..recon.train_config import TrainEvent

    opts = PrepareOptions(calibrate=False if "calibration" in data.meta else None,
                          recover_pupil=params.pupil_recovery)
    t0 = time.monotonic()
    last = None
    for last in iter_prepare(data, opts, device=params.device, stop=stop):
        ev = TrainEvent(epoch=0, n_epochs=0, step=0, n_steps=1, loss=float("nan"), lr=0.0, z_um=0.0,
                        elapsed_s=time.monotonic() - t0, eta_s=float("nan"), phase="prepare",
                        progress=0.0, stopped=bool(last.stopped))
        yield ProgressBatch(event=ev)
    prep = None if last is None else last.preparation
    if prep is None:
        return None, params
    data = dataclasses.replace(prep.raw, meta=dict(prep.raw.meta, preparation=prep.record()))
    return data, dataclasses.replace(params, pupil_recovery=prep.recover_pupil)


def warm_up() -> None:
    """Import the trainer and construct a throw-away Adam optimiser.

    torch imports ``torch._dynamo`` (~800 modules, seconds on a small CPU) the first time an
    optimiser is built; done inside the training thread it holds the GIL long enough to freeze
    the viewer for a few hundred ms. The widget runs this once in the background when it opens
    (Start is enabled when it is done), so training itself starts without that hitch.
    """
    import torch

    from ..recon import train  # noqa: F401

    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])


PHASE_NAMES = {"prepare": "preparing measured data (calibration, frames, background)",
               "seed": "seed (conventional planes)", "init": "init (low-rank SVD)", "polish": "polish",
               "distill": "distill (MLP)", "train": "train"}


def status_text(event) -> str:
    """One status line for a progress event, in every phase of the pipeline."""
    phase = getattr(event, "phase", "train")
    where = f"epoch {event.epoch}/{event.n_epochs}  " if phase == "train" and event.n_epochs else ""
    loss = f"loss {event.loss:.3g}" if np.isfinite(event.loss) else "loss —"
    return (f"{PHASE_NAMES.get(phase, phase)}: {where}step {event.step}/{event.n_steps}  {loss}  "
            f"elapsed {format_seconds(event.elapsed_s)}  ETA {format_seconds(event.eta_s)}")


def crop_origin_um(raw, params) -> tuple[float, float]:
    """(y, x) µm of the top-left corner of the trained field on the raw image."""
    box = crop_box(raw, params.crop_px)
    if box is None:
        return (0.0, 0.0)
    dx = float(raw.optics.dx_lr_um)
    return (box[0] * dx, box[1] * dx)
