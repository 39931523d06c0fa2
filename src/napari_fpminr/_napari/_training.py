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

from ._params import DEFAULT_HALF_RANGE_UM, TrainingParameters

#: previews per epoch attached by the trainer (each costs one small render)
PREVIEWS_PER_EPOCH = 2
#: at most this often the worker hands progress to the GUI thread
GUI_INTERVAL_S = 0.05


def default_parameters() -> TrainingParameters:
    """Form defaults: the trainer's own defaults and the paper's ±20 µm range."""
    from ..recon.train import TrainConfig

    d = {f.name: f.default for f in fields(TrainConfig)}
    return TrainingParameters(
        z_min_um=-DEFAULT_HALF_RANGE_UM, z_max_um=DEFAULT_HALF_RANGE_UM, n_z=int(d["n_z"]),
        epochs=int(d["epochs"]), q=int(d["q"]), lr=float(d["lr"]), upsample=0,
        device=str(d["device"]), seed=int(d["seed"]), pupil_recovery=bool(d["recover_pupil"]),
    )


def make_config(params: TrainingParameters):
    """TrainConfig from the form, with a couple of previews per epoch for the live view."""
    from ..recon.train import TrainConfig

    steps_per_epoch = max(1, params.n_z * int(TrainConfig.steps_repeat))
    return TrainConfig(
        epochs=params.epochs, lr=params.lr, n_z=params.n_z, q=params.q, seed=params.seed,
        device=params.device, recover_pupil=params.pupil_recovery,
        preview_every=max(1, steps_per_epoch // PREVIEWS_PER_EPOCH),
    )


def prepare_raw(raw, params: TrainingParameters):
    """Apply the form's upsampling (0 keeps the data's own) to the raw data's optics."""
    if params.upsample and params.upsample != raw.optics.upsample:
        return raw.with_optics(upsample=params.upsample)
    return raw


@dataclass
class ProgressBatch:
    """What the GUI thread receives: the latest event plus every (step, loss) since the last
    batch, and the latest preview image among them (or None)."""

    event: object
    points: list[tuple[int, float]] = field(default_factory=list)
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
    for event in iter_train(prepare_raw(raw, params), params.z_min_um, params.z_max_um,
                            make_config(params), stop=stop):
        if event.step > last_step:          # the final event repeats the last step after a Stop
            batch.points.append((int(event.step), float(event.loss)))
            last_step = event.step
        if event.preview is not None:
            batch.preview = event.preview
        batch.event = event
        now = time.monotonic()
        if event.done or now - last_emit >= interval_s:
            yield batch
            batch = ProgressBatch(event=None)
            last_emit = now


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
