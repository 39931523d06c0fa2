"""The FPM-INR representation: exact fast evaluation, continuous z, regions/steps, Zernike pupil."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_fpminr.recon.inr import FPMINR, INRArchitecture, PupilPhase, noll_to_nm, zernike


def naive_eval(net, z_um, H, W):
    """Textbook order: upsample M to hr, multiply by u(z), then the full MLP at every hr pixel."""
    plane = net.plane.permute(2, 0, 1)[None]  # (1, Q, Hc, Wc)
    up = F.interpolate(plane, size=(H, W), mode="bilinear", align_corners=False)[0]  # (Q, H, W)
    out = []
    for z in z_um:
        a = net.arch
        t = (z - a.z_min_um) / (a.z_max_um - a.z_min_um) * (a.n_z - 1)
        i0 = min(int(math.floor(t)), a.n_z - 2)
        u = net.zline[i0] * (1 - (t - i0)) + net.zline[i0 + 1] * (t - i0)
        feat = (up * u[:, None, None]).permute(1, 2, 0)  # (H, W, Q)
        h = torch.relu(feat @ net.w1.T + net.b1)
        h = torch.relu(h @ net.w2.T + net.b2)
        out.append((h @ net.w3.T + net.b3)[..., 0])
    return torch.stack(out)


@pytest.mark.parametrize("hr_shape", [(48, 40), (37, 29)])
def test_coarse_first_layer_equals_textbook_evaluation(hr_shape):
    arch = INRArchitecture(hr_shape, -10.0, 10.0, n_z=5, q=8)
    net = FPMINR(arch, seed=3)
    with torch.no_grad():  # random, non-trivial weights
        for p in net.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    z = [-10.0, -3.7, 0.0, 6.25, 10.0]
    want = naive_eval(net.amplitude, z, *hr_shape)
    rows, cols = net.grid()
    zt = torch.tensor(z)
    with torch.no_grad():
        fast = net.amplitude(zt, rows, cols, row_chunk=7)
    full = net.amplitude.forward_full(zt)  # training path (autograd on)
    torch.testing.assert_close(fast, want.detach(), atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(full.detach(), want.detach(), atol=2e-5, rtol=1e-5)


def test_region_and_step_match_the_full_render_and_z_is_continuous():
    arch = INRArchitecture((64, 64), 0.0, 8.0, n_z=3, q=8)
    net = FPMINR(arch, seed=1)
    with torch.no_grad():
        net.phase.zline.copy_(torch.randn(3, 8, generator=torch.Generator().manual_seed(0)))
        rows, cols = net.grid()
        full = net.phase(torch.tensor([2.0]), rows, cols)[0]
        r, c = net.grid(region=(10, 5, 30, 41), step=3)
        part = net.phase(torch.tensor([2.0]), r, c)[0]
        torch.testing.assert_close(part, full[10:40:3, 5:46:3])
        # between nodes the features (hence the first layer) interpolate linearly in z
        u = net.phase.z_features(torch.tensor([0.0, 4.0, 1.0]))
        torch.testing.assert_close(u[2], 0.75 * u[0] + 0.25 * u[1])
        # and a small change of z changes the render a little, not at all or abruptly
        a = net.phase(torch.tensor([2.0, 2.01, 6.0]), rows, cols)
        assert 0 < (a[1] - a[0]).abs().max() < 0.05 * (a[2] - a[0]).abs().max()
    with pytest.raises(ValueError):
        net.grid(region=(60, 0, 10, 10))


def test_zernike_modes_are_orthonormal_on_the_unit_disk():
    assert [noll_to_nm(j) for j in (1, 4, 5, 6, 7, 11)] == [(0, 0), (2, 0), (2, -2), (2, 2), (3, -1), (4, 0)]
    n = 301
    y, x = torch.meshgrid(torch.linspace(-1, 1, n, dtype=torch.float64),
                          torch.linspace(-1, 1, n, dtype=torch.float64), indexing="ij")
    rho, th = torch.hypot(x, y), torch.atan2(y, x)
    disk = rho <= 1
    basis = torch.stack([zernike(j, rho, th)[disk] for j in range(1, 12)])
    gram = basis @ basis.T / disk.sum()
    np.testing.assert_allclose(gram.numpy(), np.eye(11), atol=0.03)


def test_pupil_phase_starts_at_the_base_pupil_and_applies_coefficients():
    base = torch.ones(16, 16, dtype=torch.complex64)
    f = torch.fft.fftshift(torch.fft.fftfreq(16))
    fy, fx = torch.meshgrid(f, f, indexing="ij")
    pp = PupilPhase(base, fy, fx, 0.4, (5, 6))
    torch.testing.assert_close(pp(), base)
    with torch.no_grad():
        pp.coefficients.copy_(torch.tensor([0.0, 0.7]))
    rho = torch.hypot(fx, fy) / 0.4
    want = 0.7 * zernike(6, rho, torch.atan2(fy, fx)) * (rho <= 1)
    torch.testing.assert_close(torch.angle(pp()), want.float(), atol=1e-5, rtol=0)


def test_parameter_count_matches_the_design():
    arch = INRArchitecture((256, 256), -20, 20, n_z=17, q=32)
    net = FPMINR(arch)
    per_net = 64 * 64 * 32 + 17 * 32 + (32 * 32 + 32) * 2 + 32 + 1
    assert net.n_parameters() == 2 * per_net


@pytest.mark.parametrize("region", [None, (5, 3, 30, 27), (7, 0, 9, 40), (1, 1, 1, 1)])
def test_gather_free_render_path_equals_the_general_path(region):
    """Unit-step regions of a grid divisible by the plane use the phase-lerp path; it must match
    the general (gather) path, which the textbook test above pins down."""
    from napari_fpminr.recon.inr import _axis_interp

    arch = INRArchitecture((48, 40), -10.0, 10.0, n_z=5, q=8)
    net = FPMINR(arch, seed=4)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel() + 1)))
        rows, cols = net.grid(region)
        z = torch.tensor([-3.7, 6.0])
        fast = net.amplitude(z, rows, cols, row_chunk=7)
        coarse = net.amplitude.coarse_first_layer(z)
        general = net.amplitude._head_chunked(coarse, *_axis_interp(cols, 40, arch.plane_shape[1]),
                                              *_axis_interp(rows, 48, arch.plane_shape[0]), 5)
    torch.testing.assert_close(fast, general, atol=1e-6, rtol=1e-6)
