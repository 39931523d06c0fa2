"""The polish's pupil-box forward model reproduces the full forward model's amplitudes."""

import numpy as np
import pytest
import torch

from napari_fpminr.optics.forward import FPMForward
from napari_fpminr.simulate import paper_optics
from napari_fpminr.recon.box_forward import PupilBox
from napari_fpminr.recon.seeded import _BoxTransfer


@pytest.mark.parametrize("with_pupil", [False, True])
def test_box_amplitudes_equal_the_full_forward_model(with_pupil):
    """Off-grid LED tilts (paper optics on a 32x40 raw grid), with and without an aberrated pupil."""
    rng = np.random.default_rng(0)
    optics = paper_optics(25)
    if with_pupil:
        optics = optics.replace(pupil=np.exp(1j * rng.uniform(-1, 1, (32, 40))).astype(np.complex64))
    fwd = FPMForward(optics, (32, 40))
    H, W = fwd.hr_shape
    field = torch.as_tensor(rng.normal(size=(2, H, W)) + 1j * rng.normal(size=(2, H, W)), dtype=torch.complex64)
    z = torch.tensor([-7.0, 3.5])
    expected = fwd.amplitudes(field, z)

    box = PupilBox.of(fwd)
    assert box.shape[0] < 32 and box.shape[1] < 40  # the pupil does not fill the raw spectrum
    leds = torch.arange(fwd.n_leds)
    spectrum = torch.fft.fft2(field, norm="forward").flatten(1)
    got = box.amplitudes(spectrum, _BoxTransfer(fwd, box, leds, None)(z), box.gather_indices(fwd, leds), fwd.n_leds)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
