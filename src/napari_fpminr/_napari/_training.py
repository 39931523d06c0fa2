"""The bridge from the widget's form to the core trainer (runs on the worker thread).

``train_events`` is the generator handed to napari's ``create_worker``: it converts the form
values to a :class:`~napari_fpminr.recon.train.TrainConfig` and re-yields every ``TrainEvent``
of ``iter_train``; the last one carries the model (also after Stop).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields

from ._params import DEFAULT_HALF_RANGE_UM, TrainingParameters

#: previews per epoch attached by the trainer (each costs one small render)
PREVIEWS_PER_EPOCH = 2


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


def train_events(raw, params: TrainingParameters, stop) -> Iterator:
    """Yield the trainer's events; ``stop`` is checked by the trainer between steps."""
    from ..recon.train import iter_train

    yield from iter_train(prepare_raw(raw, params), params.z_min_um, params.z_max_um,
                          make_config(params), stop=stop)


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
