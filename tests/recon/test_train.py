"""FPM-INR training: events, cooperative stop, determinism, divergence, physics of the fit."""

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_fpminr.errors import FPMInputError
from napari_fpminr.rawdata import RawData
from napari_fpminr.optics import FPMForward, Optics
from napari_fpminr.recon.train import TrainConfig, TrainingDiverged, iter_train, train


def grid_optics(n_side=5, spacing_na=0.06, upsample=2):
    c = (np.arange(n_side) - n_side // 2) * spacing_na
    nx, ny = np.meshgrid(c, c)
    return Optics(wavelength_um=0.52, na_obj=0.2, mag=10.0, pixel_um=3.45,
                  na_illum=np.stack([nx.ravel(), ny.ravel()], 1), upsample=upsample)


def thin_layer(hr_shape, seed=0, n_blobs=6):
    """A thin sample: smooth absorbing and phase blobs on a transparent background."""
    rng = np.random.default_rng(seed)
    H, W = hr_shape
    y, x = np.mgrid[:H, :W]
    amp = np.ones(hr_shape)
    ph = np.zeros(hr_shape)
    for _ in range(n_blobs):
        cy, cx, r = rng.uniform(0.2 * H, 0.8 * H), rng.uniform(0.2 * W, 0.8 * W), rng.uniform(2, 4)
        g = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * r * r))
        amp -= 0.4 * g
        ph += 0.8 * g
    return (amp * np.exp(1j * ph)).astype(np.complex64)


def layer_raw(size=16, z0_um=2.0, seed=0, pupil=None):
    optics = grid_optics().replace(pupil=pupil)
    fwd = FPMForward(optics, (size, size))
    field = thin_layer(fwd.hr_shape, seed)
    intens = fwd.intensities(torch.as_tensor(field), z0_um)[0].numpy()
    return RawData(intens, optics), field


FAST = dict(device="cpu", epochs=2, n_z=5, steps_repeat=2)


def test_events_carry_progress_and_the_last_one_the_model():
    raw, _ = layer_raw()
    events = list(iter_train(raw, -4, 4, TrainConfig(**FAST, preview_every=4)))
    n = len(events)
    assert n == events[0].n_steps == 2 * 5 * 2
    assert [e.step for e in events] == list(range(1, n + 1))
    assert [e.epoch for e in events] == [1] * 10 + [2] * 10
    assert all(-4 <= e.z_um <= 4 for e in events)
    odd = {round(e.z_um, 6) for e in events if e.epoch == 1}
    assert odd == {-4.0, -2.0, 0.0, 2.0, 4.0}  # odd epochs: the z-line nodes
    assert len({round(e.z_um, 6) for e in events if e.epoch == 2} - odd) >= 8  # even: random z
    assert all(e.elapsed_s >= 0 and e.eta_s >= 0 for e in events)
    assert events[-1].eta_s == 0 and events[-1].done and not events[-1].stopped
    assert all(e.model is None for e in events[:-1])
    previews = [e for e in events[:-1] if e.preview is not None]
    assert [e.step for e in previews] == [4, 8, 12, 16] and previews[0].preview.shape == (16, 16)
    model = events[-1].model
    assert model.hr_shape == (32, 32) and model.z_min_um == -4 and model.meta["source_hash"] == raw.content_hash()
    assert model.meta["training"]["steps"] == n
    assert np.mean([e.loss for e in events[-5:]]) < np.mean([e.loss for e in events[:5]])


@pytest.mark.parametrize("kind", ["callable", "event"])
def test_stop_ends_training_and_keeps_the_model_so_far(kind):
    raw, _ = layer_raw()
    seen = []
    ev = threading.Event()
    stop = (lambda: len(seen) >= 3) if kind == "callable" else ev
    events = []
    for e in iter_train(raw, -4, 4, TrainConfig(**FAST), stop=stop):
        seen.append(e)
        events.append(e)
        if len(seen) >= 3:
            ev.set()
    assert len(events) == 4 and events[-1].done and events[-1].stopped
    model = events[-1].model
    assert model.meta["training"]["stopped"] and model.meta["training"]["steps"] == 3
    amp, phase = model.render(0.0)
    assert amp.shape == (1, 32, 32) and np.isfinite(amp).all()


def test_training_is_deterministic_by_seed_on_cpu():
    raw, _ = layer_raw()
    cfg = TrainConfig(**FAST, seed=7)
    a = [e.loss for e in iter_train(raw, -4, 4, cfg)]
    b = [e.loss for e in iter_train(raw, -4, 4, cfg)]
    c = [e.loss for e in iter_train(raw, -4, 4, TrainConfig(**FAST, seed=8))]
    assert a == b and a != c


def test_led_batches_give_the_same_step_as_all_leds_at_once():
    raw, _ = layer_raw()
    cfg = dict(FAST, epochs=1, steps_repeat=1)
    full = list(iter_train(raw, -4, 4, TrainConfig(**cfg)))
    chunked = list(iter_train(raw, -4, 4, TrainConfig(**cfg, led_batch=7)))
    # same loss over all LEDs at every step (gradients accumulated over the LED chunks)
    np.testing.assert_allclose([e.loss for e in full], [e.loss for e in chunked], rtol=1e-4)
    for x, y in zip(full[-1].model.render([-1.0, 3.0]), chunked[-1].model.render([-1.0, 3.0])):
        np.testing.assert_allclose(x, y, atol=5e-3)


def test_divergence_stops_with_a_one_line_reason():
    raw, _ = layer_raw()
    with pytest.raises(TrainingDiverged) as err:
        for _ in iter_train(raw, -4, 4, TrainConfig(**FAST, lr=1e9)):
            pass
    assert isinstance(err.value, FPMInputError)
    assert "diverged" in str(err.value) and "learning rate" in str(err.value) and "\n" not in str(err.value)


def test_bad_z_range_is_an_input_error():
    raw, _ = layer_raw()
    with pytest.raises(FPMInputError, match="z range"):
        next(iter_train(raw, 3, -3, TrainConfig(**FAST)))


def test_joint_pupil_recovery_finds_a_known_astigmatism_and_coma():
    from napari_fpminr.optics.forward import frequency_grid
    from napari_fpminr.recon.inr import PupilPhase

    optics = grid_optics()
    lr = (16, 16)
    fy, fx = (torch.as_tensor(v, dtype=torch.float32) for v in frequency_grid(lr, optics.dx_lr_um))
    truth = {5: 0.6, 6: -0.8, 8: 0.4}  # Noll: oblique and vertical astigmatism, horizontal coma (rad rms)
    modes = (5, 6, 7, 8)
    pp = PupilPhase(torch.ones(lr, dtype=torch.complex64), fy, fx, optics.na_obj / optics.wavelength_um, modes)
    with torch.no_grad():
        pp.coefficients.copy_(torch.tensor([truth.get(j, 0.0) for j in modes]))
        pupil = pp().numpy()
    raw, _ = layer_raw(size=16, z0_um=1.0, pupil=pupil)
    ideal = raw.with_optics(pupil=None)
    cfg = TrainConfig(device="cpu", epochs=6, lr=1e-2, n_z=3, steps_repeat=12, lr_decay_every=4,
                      recover_pupil=True, zernike_modes=modes, pupil_lr=3e-2)
    model = train(ideal, 0.0, 2.0, cfg)
    got = dict(zip(model.meta["training"]["zernike_modes"], model.meta["training"]["zernike_coefficients_rad"]))
    for j in modes:
        assert abs(got[j] - truth.get(j, 0.0)) < 0.15, (j, got)
    # the recovered pupil travels with the model's optics
    assert model.optics.pupil is not None
    err = np.angle(model.optics.pupil * np.conj(pupil))[np.abs(pupil) > 0]
    assert np.sqrt(np.mean(err ** 2)) < 0.2


WARM = dict(device="cpu", n_z=5, warm_start_iterations=2, warm_start_steps=6, warm_start_z_per_step=3,
            warm_start_stride=2)


def test_warm_start_streams_events_before_the_epochs():
    raw, _ = layer_raw()
    events = list(iter_train(raw, -4, 4, TrainConfig(**WARM, epochs=1)))
    n = len(events)
    assert n == events[0].n_steps == 2 + 6 + 5
    assert [e.step for e in events] == list(range(1, n + 1))
    assert [e.epoch for e in events] == [0] * 8 + [1] * 5
    assert all(np.isnan(e.loss) for e in events[:2])  # conventional passes: no loss
    assert all(np.isfinite(e.loss) and e.loss >= 0 for e in events[2:])
    assert {round(e.z_um, 6) for e in events[2:8]} <= {-4.0, -2.0, 0.0, 2.0, 4.0}  # fit on the nodes
    assert events[-1].done and events[-1].model.meta["training"]["steps"] == n
    with pytest.raises(FPMInputError):
        TrainConfig(device="cpu", epochs=0)  # nothing to do without a warm start


@pytest.mark.parametrize("stop_after", [1, 4])  # during the conventional passes, during the fit
def test_stop_during_the_warm_start_keeps_the_model_so_far(stop_after):
    raw, _ = layer_raw()
    seen = []
    events = []
    for e in iter_train(raw, -4, 4, TrainConfig(**WARM, epochs=1), stop=lambda: len(seen) >= stop_after):
        seen.append(e)
        events.append(e)
    assert events[-1].done and events[-1].stopped and len(events) == stop_after + 1
    assert all(e.epoch == 0 for e in events)
    amp, _ = events[-1].model.render(0.0)
    assert np.isfinite(amp).all()


def test_warm_start_alone_reproduces_the_conventional_refocused_fields():
    """With epochs=0 the networks hold the seed: at a node the INR amplitude matches the
    conventional plane there (and a network that was not fitted does not)."""
    from napari_fpminr.recon.conventional import reconstruct_stack

    raw, _ = layer_raw(size=16, z0_um=2.0)
    conv = reconstruct_stack(raw, [2.0, -4.0], iterations=3, device="cpu").amplitude
    cfg = dict(device="cpu", n_z=5, warm_start_iterations=3, warm_start_steps=200, warm_start_z_per_step=5,
               warm_start_stride=1)
    model = train(raw, -4, 4, TrainConfig(**cfg, epochs=0))
    fresh = train(raw, -4, 4, TrainConfig(**dict(cfg, warm_start_steps=0), epochs=0))  # seed only, no fit
    amp = model.render([2.0, -4.0])[0]
    for k in range(2):
        corr = np.corrcoef(amp[k].ravel(), conv[k].ravel())[0, 1]
        assert corr >= 0.9, (k, corr)
    assert np.corrcoef(fresh.render([2.0])[0][0].ravel(), conv[0].ravel())[0, 1] < 0.5


# ---- quality against the conventional per-plane baseline (simulated truth, real data) ----------
REPO = Path(__file__).resolve().parents[2]
GREEN = REPO.parent / "shared" / "data" / "bloodsmear_green.mat"


def _layer_psnrs(stack_amp, zs, truth):
    from napari_fpminr.recon.metrics import psnr_scaled

    return [psnr_scaled(stack_amp[int(np.argmin(np.abs(zs - z)))], truth.amplitude[l], mask=truth.mask(l))
            for l, z in enumerate(truth.z_um)]


# Known shortfall (measured, 64² layers seed 0, same process, 1 thread): default INR ~19.5 dB mean
# per layer vs ~25.8 dB for the conventional qNewton planes. The INR fits the measurements as well
# as the conventional planes (relative misfit 0.10-0.18 at every z for both), but its planes barely
# change with z, so the off-centre layers are never brought into focus. Strict xfail: this test
# turns into a failure (XPASS) as soon as training is fixed, and must then lose the marker.
# The optional physically seeded warm start (TrainConfig.warm_start_iterations) raises the INR to
# 23.4 dB (layers) / 21.1 dB (tilted) in ~10 / ~8 s, still below the stack's 25.8 / 23.7 dB.
@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="FPM-INR below the conventional stack per layer on multi-layer samples")
@pytest.mark.parametrize("preset", ["layers", "tilted"])
def test_inr_beats_the_conventional_stack_per_layer_and_all_in_focus(preset):
    from napari_fpminr.optics.simulate import simulate
    from napari_fpminr.recon.conventional import reconstruct_stack
    from napari_fpminr.recon.metrics import psnr_scaled
    from napari_fpminr.volume import all_in_focus

    sim = simulate(preset, size=64, seed=23)
    truth = sim.truth
    zs = np.linspace(-20, 20, 21)  # includes the layer depths -12, 0, +12 and the tilted centre 0
    conv = reconstruct_stack(sim.raw, zs, device="cpu").amplitude
    model = train(sim.raw, -20, 20, TrainConfig(device="cpu", seed=1))  # default training
    inr = model.render(zs)[0]
    inr_layers, conv_layers = _layer_psnrs(inr, zs, truth), _layer_psnrs(conv, zs, truth)
    assert all(a >= b for a, b in zip(inr_layers, conv_layers)), (inr_layers, conv_layers)
    aif_truth = np.prod(truth.amplitude, axis=0)
    (f_inr, _), (f_conv, _) = (all_in_focus(s, zs, patch=40, stride=8) for s in (inr, conv))
    assert psnr_scaled(f_inr, aif_truth) >= psnr_scaled(f_conv, aif_truth)


@pytest.mark.slow
@pytest.mark.skipif(not GREEN.exists(), reason="shared/data (UConn files) not available")
def test_real_green_blood_smear_agrees_with_conventional_at_the_stated_depth():
    from napari_fpminr.io import read_raw
    from napari_fpminr.recon.conventional import reconstruct_stack

    raw = read_raw(GREEN).crop(32, 32, 48, 48)
    assert raw.z_um == pytest.approx(10.0)
    conv = reconstruct_stack(raw, [10.0], device="cpu").amplitude[0]
    model = train(raw, 0.0, 20.0, TrainConfig(device="cpu", n_z=5, epochs=8, steps_repeat=4))
    inr = model.render([10.0])[0][0]
    b = inr.shape[0] // 8  # periodic-boundary artefacts differ between the methods at the crop edge
    corr = np.corrcoef(inr[b:-b, b:-b].ravel(), conv[b:-b, b:-b].ravel())[0, 1]
    assert corr >= 0.9, corr


@pytest.mark.parametrize("led_batch", [None, 10])
def test_training_forward_model_equals_fpmforward(led_batch):
    """The fused training path (uncentred windows, uncentred transfer) predicts exactly the raw
    amplitudes of FPMForward for the same field and depths: same windows, kz, defocus sign, scale."""
    from napari_fpminr.optics.simulate import paper_optics
    from napari_fpminr.recon.train_forward import led_amplitudes, spectrum_and_transfer, window_indices

    optics = paper_optics()
    for lr in [(16, 16), (15, 17)]:
        fwd = FPMForward(optics, lr)
        g = torch.Generator().manual_seed(0)
        H, W = fwd.hr_shape
        field = ((1 + 0.3 * torch.randn(2, H, W, generator=g))
                 * torch.exp(1j * torch.randn(2, H, W, generator=g))).to(torch.complex64)
        z = torch.tensor([-7.3, 5.0])
        want = fwd.amplitudes(field, z)
        n = optics.n_leds
        chunks = [torch.arange(s, min(n, s + (led_batch or n))) for s in range(0, n, led_batch or n)]
        spectrum, transfer = spectrum_and_transfer(field, z, fwd, None, torch.fft.ifftshift(fwd.kz))
        got = torch.cat([led_amplitudes(spectrum, transfer, idx, len(c), lr)
                         for c, idx in zip(chunks, window_indices(fwd, chunks))], dim=1)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_coverage_preconditioner_normalises_by_how_many_leds_see_a_frequency():
    """Paper optics: all 69 LEDs are bright-field, so (nearly) every window sees DC (the outermost,
    at NA 0.248, may fall just outside the discrete pupil) and DC gets weight c̄/(c(0) + ε c̄);
    frequencies beyond the synthetic aperture are seen by none and get no gradient; the filter
    is what the backward pass applies to the spectrum gradient."""
    from napari_fpminr.optics.simulate import paper_optics
    from napari_fpminr.recon.train_forward import PreconditionGradient, coverage_preconditioner, window_indices

    optics = paper_optics()
    fwd = FPMForward(optics, (16, 16))
    H, W = fwd.hr_shape
    chunks = [torch.arange(0, 40), torch.arange(40, optics.n_leds)]
    weights = coverage_preconditioner(fwd, window_indices(fwd, chunks), 0.05)
    whole = coverage_preconditioner(fwd, window_indices(fwd, [torch.arange(optics.n_leds)]), 0.05)
    torch.testing.assert_close(weights, whole)  # LED chunks add up to the same coverage
    seen = weights > 0
    cov = torch.zeros(H * W)
    for idx in window_indices(fwd, [torch.arange(optics.n_leds)]):
        power = torch.fft.ifftshift(fwd.pupil.abs().square()).reshape(-1)
        cov.index_add_(0, idx, power.repeat(optics.n_leds))
    assert 0.9 * optics.n_leds <= float(cov[0]) <= optics.n_leds  # DC is uncentred index 0
    assert float(cov.max()) == float(cov[0])  # no frequency is seen by more LEDs than DC
    c_bar = float(cov[cov > 0].mean())
    assert float(weights[0]) == pytest.approx(c_bar / (float(cov[0]) + 0.05 * c_bar), rel=1e-5)
    fy = torch.fft.fftfreq(H, optics.dx_hr_um)[:, None]
    fx = torch.fft.fftfreq(W, optics.dx_hr_um)[None, :]
    beyond = (torch.hypot(fx, fy) > 1.05 * optics.na_synthetic / optics.wavelength_um).reshape(-1)
    # inside it, gaps between the discrete LED disks near the rim leave ~20 % unseen at this size
    assert not seen[beyond].any() and seen[~beyond].float().mean() > 0.75
    spectrum = torch.randn(2, H * W, dtype=torch.complex64, requires_grad=True)
    grad = torch.randn(2, H * W, dtype=torch.complex64)
    PreconditionGradient.apply(spectrum, weights).backward(grad)
    torch.testing.assert_close(spectrum.grad, grad * weights)
