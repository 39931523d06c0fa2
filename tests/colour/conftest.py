"""Shared fixtures of the colour tests: a small colour model built without training."""

import numpy as np
import pytest
import torch

from napari_fpminr.colour.model import ChannelRegistration, ColourModel
from napari_fpminr.colour.stained import simulate_stained
from napari_fpminr.recon.lowrank import LowRankArchitecture, LowRankField
from napari_fpminr.recon.model import Model


def _channel(raw, field, z_min, z_max):
    arch = LowRankArchitecture.for_optics(raw.optics, raw.lr_shape, z_min, z_max, 5, 2)
    z = np.linspace(z_min, z_max, 5)
    # a field that changes with z: the truth, dimmed linearly towards z_max
    fields = torch.as_tensor(np.stack([field * (1.0 - 0.05 * (zz - z_min)) for zz in z]).astype(np.complex64))
    return Model(LowRankField.from_stack(arch, fields, z), raw.optics, raw.lr_shape, {"source_hash": "x"})


@pytest.fixture(scope="session")
def colour_model():
    s = simulate_stained(24, seed=1)
    offsets = (2.0, 0.0, -1.0)
    channels = tuple(_channel(s.raws[c], s.truth[c], -3 + offsets[c], 3 + offsets[c]) for c in range(3))
    regs = tuple(ChannelRegistration(r.optics.wavelength_um, offsets[c], offsets[c], shift, white)
                 for c, (r, shift, white) in enumerate(zip(s.raws, [(0.0, 1.5), (0.0, 0.0), (-0.5, 0.0)],
                                                           [1.1, 1.0, 0.9], strict=True)))
    return ColourModel(channels, regs, {"note": "test"})


