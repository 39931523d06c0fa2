"""Conventional per-plane qNewton FPM: quality on simulations, depth selectivity, real data, modes."""

import threading
from pathlib import Path

import numpy as np
import pytest

from napari_fpminr.errors import FPMInputError
from napari_fpminr.simulate import simulate
from napari_fpminr.recon.conventional import iter_conventional, reconstruct_stack
from napari_fpminr.recon.metrics import measurement_misfit, psnr_scaled

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def stopped_at_once():
    event = threading.Event()
    event.set()
    return event


def test_single_layer_at_its_true_depth_reaches_30_db():
    sim = simulate("single", size=48, seed=4, z_um=6.0)
    stack = reconstruct_stack(sim.raw, [6.0], device="cpu")
    amplitude, phase = stack.at(6.0)
    assert amplitude.shape == sim.truth.amplitude.shape[1:]
    assert psnr_scaled(amplitude, sim.truth.amplitude[0]) >= 30.0
    assert psnr_scaled(phase, sim.truth.phase[0]) >= 25.0
    # amplitudes are on the scale of normalized data: a transparent pixel is 1/sqrt(mean bright field)
    background = ~np.isfinite(sim.truth.depth_um)
    expected = 1.0 / np.sqrt(sim.raw.background_level())
    assert np.median(amplitude[background]) == pytest.approx(expected, rel=0.03)
    # and it is a real improvement over the initial (upsampled bright-field) estimate
    init = reconstruct_stack(sim.raw, [6.0], stop=stopped_at_once(), device="cpu")
    assert init.meta["complete"] is False
    assert psnr_scaled(amplitude, sim.truth.amplitude[0]) > psnr_scaled(init.amplitude[0], sim.truth.amplitude[0]) + 8


def test_each_layer_is_sharpest_at_its_own_depth():
    sim = simulate("layers", size=40, seed=1, radius_um=(1.0, 2.0))  # sparse enough for little crosstalk
    dof_um = sim.raw.optics.wavelength_um / sim.raw.optics.na_obj**2
    planes = np.concatenate([sim.truth.z_um + off for off in (-2 * dof_um, 0.0, 2 * dof_um)])
    stack = reconstruct_stack(sim.raw, planes, iterations=10, device="cpu")
    for layer, z in enumerate(sim.truth.z_um):
        mask = sim.truth.mask(layer)
        at_depth = psnr_scaled(stack.at(z)[0], sim.truth.amplitude[layer], mask)
        for off in (-2 * dof_um, 2 * dof_um):
            away = psnr_scaled(stack.at(z + off)[0], sim.truth.amplitude[layer], mask)
            assert at_depth > away + 3.0, (layer, off, at_depth, away)


def test_per_plane_and_batched_modes_agree():
    sim = simulate("layers", size=24, seed=2)
    z = [-9.0, 0.5, 4.0]
    for pupil_update, adaptive in ((False, False), (True, False), (True, True)):
        # the adaptive step keeps one gain per plane: batching must not couple the planes
        kwargs = dict(iterations=4, pupil_update=pupil_update, device="cpu", adaptive_step=adaptive)
        a = reconstruct_stack(sim.raw, z, mode="batched", **kwargs)
        b = reconstruct_stack(sim.raw, z, mode="per_plane", **kwargs)
        c = reconstruct_stack(sim.raw, z, mode="batched", plane_chunk=2, **kwargs)
        for other in (b, c):
            np.testing.assert_allclose(other.amplitude, a.amplitude, rtol=0, atol=1e-4)
            np.testing.assert_allclose(np.angle(other.complex_field() * a.complex_field().conj()), 0, atol=1e-3)
        assert (a.pupil is not None) == pupil_update


def test_odd_raw_size_matches_the_physics_too():
    sim = simulate("single", size=33, seed=0, z_um=-3.0)
    stack = reconstruct_stack(sim.raw, [-3.0], iterations=15, device="cpu")
    assert psnr_scaled(stack.amplitude[0], sim.truth.amplitude[0]) >= 28.0


def test_progress_events_and_cooperative_stop():
    sim = simulate("single", size=16, seed=0)
    events = list(iter_conventional(sim.raw, [0.0, 1.0, 2.0], iterations=4, mode="per_plane", device="cpu"))
    assert all(e.stack is None for e in events[:-1]) and events[-1].stack is not None
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert events[-1].planes_done == 3 and events[-1].stack.meta["complete"] is True
    assert all(e.eta_s is not None and e.eta_s >= 0 for e in events)

    stop = threading.Event()
    gen = iter_conventional(sim.raw, [0.0, 1.0, 2.0], iterations=4, mode="per_plane", stop=stop, device="cpu")
    first = next(gen)
    assert first.iteration == 1 and first.planes_done == 0
    stop.set()
    rest = list(gen)
    assert rest[-1].stopped and rest[-1].stack.meta["complete"] is False
    assert rest[-1].stack.n_planes == 1  # only the plane that was started
    # a plain callable works as well
    calls = iter(range(10_000))
    last = list(iter_conventional(sim.raw, [0.0], iterations=50, stop=lambda: next(calls) > 100, device="cpu"))[-1]
    assert last.stopped and last.iteration < 50


def test_bad_requests_are_user_errors():
    sim = simulate("single", size=16, seed=0)
    with pytest.raises(FPMInputError, match="finite"):
        reconstruct_stack(sim.raw, [0.0, float("nan")])
    with pytest.raises(FPMInputError, match="mode"):
        reconstruct_stack(sim.raw, [0.0], mode="sideways")
    with pytest.raises(FPMInputError, match="iterations"):
        reconstruct_stack(sim.raw, [0.0], iterations=0)


@pytest.mark.skipif(not (DATA / "bloodsmear_green.mat").exists(), reason="shared real data not available")
def test_real_green_blood_smear_misfit_drops_at_stated_defocus():
    from napari_fpminr.io import read_raw

    raw = read_raw(DATA / "bloodsmear_green.mat")
    assert raw.z_um == pytest.approx(10.0)
    data = raw.normalized()
    # snapped LED windows throughout (the sub-bin model is judged in tests/recon/test_subpixel_recon.py)
    init = reconstruct_stack(raw, [10.0], stop=stopped_at_once(), device="cpu", subpixel=False)
    before = measurement_misfit(data, init.complex_field(), [10.0], device="cpu", subpixel=False)[0]
    # the real system is aberrated (see blood_aberration.mat): recover the pupil along with the object
    stack = reconstruct_stack(raw, [10.0], iterations=10, pupil_update=True, device="cpu", subpixel=False)
    after = measurement_misfit(data, stack.complex_field(), [10.0], device="cpu", pupil=stack.pupil,
                               subpixel=False)[0]
    assert after <= 0.7 * before, (before, after)
    assert np.all(np.isfinite(stack.amplitude)) and 0.5 < np.median(stack.amplitude) < 1.5
