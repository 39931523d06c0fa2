"""Lazy volumes and all-in-focus fusion / depth maps."""

import numpy as np
import pytest
import torch

from napari_fpminr.optics import Optics
from napari_fpminr.recon.inr import FPMINR, INRArchitecture
from napari_fpminr.recon.model import Model
from napari_fpminr.recon.stack import Stack
from napari_fpminr.volume import Volume, all_in_focus, normal_variance


def blur_stack(sharp, z_um, depth_map):
    """Each plane shows the texture sharp where |z - depth| is small, blurred (low contrast) elsewhere."""
    out = []
    for z in z_um:
        contrast = np.exp(-((z - depth_map) / 3.0) ** 2)
        out.append(1.0 + contrast * (sharp - 1.0))
    return np.stack(out).astype(np.float32)


def test_all_in_focus_picks_the_sharp_plane_and_its_depth():
    rng = np.random.default_rng(0)
    H, W = 160, 224
    sharp = 1.0 + 0.3 * rng.standard_normal((H, W))
    depth = np.where(np.arange(W)[None, :] < W // 2, -6.0, 8.0) * np.ones((H, 1))
    z = np.linspace(-10, 10, 21)
    stack = blur_stack(sharp, z, depth)
    fused, depth_est = all_in_focus(stack, z, patch=32, stride=8)
    assert fused.shape == depth_est.shape == (H, W)
    inner = np.abs(np.arange(W) - W // 2) > 32  # away from the step, where patches straddle it
    assert np.allclose(depth_est[:, inner], depth[:, inner])
    np.testing.assert_allclose(fused[:, inner], sharp[:, inner], atol=1e-5)
    # near the boundary the blend lies between the two depths
    assert depth_est.min() >= -6 and depth_est.max() <= 8


def test_normal_variance_is_variance_over_mean():
    a = torch.rand(3, 64, 64) + 0.5
    nv = normal_variance(a, 64, 16)
    x = a.double()
    want = ((x - x.mean((1, 2), keepdim=True)) ** 2).sum((1, 2)) / (64 * 64 * x.mean((1, 2)))
    torch.testing.assert_close(nv[:, 0, 0], want)


def small_model():
    na = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1]])
    optics = Optics(wavelength_um=0.52, na_obj=0.25, mag=10, pixel_um=3.45, na_illum=na, upsample=2)
    net = FPMINR(INRArchitecture((40, 48), -5, 5, n_z=4, q=8), seed=2)
    with torch.no_grad():
        net.amplitude.plane.add_(torch.randn(net.amplitude.plane.shape))
    return Model(net, optics, (20, 24))


def test_model_volume_is_lazy_one_chunk_per_slice_and_named_by_state():
    model = small_model()
    vol = Volume(model)
    calls = []
    orig = model.render_parts

    def counting(*a, **k):
        calls.append(a[0])
        return orig(*a, **k)

    model.render_parts = counting
    z = [-5.0, -1.2, 0.7, 5.0]
    amp = vol.amplitude(z, step=2)
    assert amp.shape == (4, 20, 24) and amp.chunks[0] == (1, 1, 1, 1) and not calls
    sl = amp[2].compute()
    assert len(calls) == 1 and calls[0] == [0.7]
    want = orig([0.7], ("amplitude",), None, 2)[0][0]
    np.testing.assert_array_equal(sl, want)
    ph = vol.phase(z)
    assert ph.shape == (4, 40, 48) and ph.name != amp.name
    name = amp.name
    assert Volume(model).amplitude(z, step=2).name == name  # same state, same name (cache reuse)
    with torch.no_grad():
        model.net.amplitude.b3.add_(0.5)
    assert Volume(model).amplitude(z, step=2).name != name


def test_stack_volume_takes_nearest_planes_and_model_all_in_focus_runs():
    z = np.array([-2.0, 0.0, 2.0])
    amp = np.stack([np.full((8, 8), v, np.float32) for v in (1, 2, 3)])
    optics = small_model().optics
    vol = Volume(Stack(amp, np.zeros_like(amp), z, optics))
    got = vol.amplitude([-1.9, 0.6, 5.0]).compute()
    np.testing.assert_array_equal(got[:, 0, 0], [1, 2, 3])
    fused, depth = Volume(small_model()).all_in_focus(np.linspace(-5, 5, 6), patch=16, stride=4)
    assert fused.shape == depth.shape == (40, 48) and np.isfinite(fused).all()
    finite = np.isfinite(depth)  # NaN only where no patch has structure
    assert finite.mean() > 0.5 and np.all((depth[finite] >= -5) & (depth[finite] <= 5))
    with pytest.raises(TypeError):
        Volume(object())


def test_depth_from_the_measurements_uses_the_pupils_the_fields_were_made_with():
    """A stack with per-plane recovered pupils answers each depth with its nearest plane's pupil
    (the residual against the raw data must use the pupil each field was reconstructed with)."""
    z = np.array([-2.0, 0.0, 2.0])
    amp = np.ones((3, 8, 8), np.float32)
    optics = small_model().optics
    pupils = np.stack([np.full((4, 4), v, np.complex64) for v in (1, 2j, 3)])
    vol = Volume(Stack(amp, np.zeros_like(amp), z, optics, pupil=pupils))
    got = vol._pupils_at(np.array([-1.9, 0.6, 5.0, -7.0]))
    np.testing.assert_array_equal(got[:, 0, 0], [1, 2j, 3, 1])
    assert Volume(Stack(amp, np.zeros_like(amp), z, optics))._pupils_at(z) is None  # ideal pupil


def test_sub_plane_peak_and_no_structure_is_nan():
    """Coarse planes (2 µm) still give the depth to a fraction of a µm; flat regions have no depth."""
    rng = np.random.default_rng(1)
    H, W = 64, 96
    sharp = 1.0 + 0.3 * rng.standard_normal((H, W))
    sharp[:, :32] = 1.0  # a transparent third: no structure
    depth = np.full((H, W), 1.3)
    z = np.arange(-8.0, 8.01, 2.0)
    fused, depth_est = all_in_focus(blur_stack(sharp, z, depth), z, patch=16, stride=4)
    assert np.isnan(depth_est[:, :16]).all()  # only fully flat patches cover these pixels
    est = depth_est[:, 40:]
    assert np.isfinite(est).all() and np.abs(est - 1.3).max() < 0.3
    assert np.isfinite(fused).all()


def test_edges_measure_finds_the_focus_of_a_phase_object_where_nv_cannot():
    """A pure phase object is amplitude-flat in focus: NV peaks off focus, the complex measure at focus."""
    from napari_fpminr.optics import angular_spectrum

    rng = np.random.default_rng(2)
    n, dx = 96, 0.17
    y, x = np.mgrid[:n, :n]
    phase0 = np.zeros((n, n))
    for _ in range(8):
        cy, cx, r = rng.uniform(0, n, 2).tolist() + [rng.uniform(5, 10)]
        phase0 += 0.8 / (1 + np.exp((np.hypot(y - cy, x - cx) - r) / 1.0))
    field = torch.as_tensor(np.exp(1j * phase0), dtype=torch.complex64)
    z = np.arange(-6.0, 6.01, 0.5)
    stack = torch.stack([angular_spectrum(field, float(-v), 0.52, dx, na_limit=0.5) for v in z]).numpy()
    amp, ph = np.abs(stack), np.angle(stack)
    _, d_edges = all_in_focus(amp, z, patch=32, stride=8, phase=ph)
    _, d_nv = all_in_focus(amp, z, patch=32, stride=8, measure="nv")
    assert np.nanmedian(np.abs(d_edges)) < 0.5
    assert np.nanmedian(np.abs(d_nv)) > 1.0
    with pytest.raises(ValueError, match="phase"):
        all_in_focus(amp, z, measure="edges")
