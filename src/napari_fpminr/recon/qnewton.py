"""The sequential quasi-Newton FPM solver behind :mod:`recon.conventional` (shared/DESIGN.md §1).

For every requested depth ``z`` the hr spectrum ``O_z`` is recovered independently from all LED
images by sequential Fourier-space updates, LEDs in order of illumination NA (bright field first),
``iterations`` passes. The transfer function of plane ``z`` is ``T_z = P · exp(i·kz·z)`` (pupil
times defocus), so the plane reconstructs the sample "seen at depth z" exactly as the forward
model defines it. One update for LED ``i`` (window ``W_i`` of the centred hr spectrum):

    ψ   = W_i[O] · T_z                                  (low-res spectrum, centred)
    f   = F^-1{ψ};  f' = sqrt(I_i) · f / |f|             (amplitude projection, phase kept)
    ΔΨ  = F{f'} - ψ
    W_i[O] += α · |T_z| · conj(T_z) · ΔΨ / (max|T_z| · (|T_z|² + δ))      (quasi-Newton, Tian 2014)

with ``α = 1``, ``δ = 1``.

Saturated pixels (``RawData.valid`` False) are censored: the camera stored its full-well value,
so the true intensity is only known to be ``>= I_i`` there. The projection keeps the estimate's
amplitude where it is already above that bound and raises it to ``sqrt(I_i)`` where it falls
short, ``f' = max(|f|, sqrt(I_i)) · f/|f|`` (valid pixels get the usual replacement), which is
the projection onto the set of fields consistent with what was measured; the adaptive step's
misfit counts only the shortfall below the bound there (:mod:`napari_fpminr.recon.censor`).
Without a mask the arithmetic is exactly the unmasked one, and LEDs with no saturated pixel skip
the extra step. Step size: ``ΔΨ`` (so the object step, and the pupil step below) is
multiplied by the plane's step gain ``g`` (adaptive step size, Zuo, Sun & Chen, Opt. Express 24,
20724 (2016)) when ``adaptive=True``: ``g = 1`` at first, halved after every pass that lowered the plane's
misfit ``E = Σ_i Σ_px (|f| - sqrt(I_i))²`` (summed over the pass, before each update) by less than
:data:`ADAPTIVE_TOL` of the previous pass's. With a constant unit step, each LED's update writes its
own image's misfit into the spectrum, and the last bright-field LEDs (the highest-NA ones, nearest
the pupil edge, whose images a tile's field-dependent illumination fits least well) have the final
word on the low frequencies: on a 128 px tile of the simulated slide one such LED costs 8 dB with a
constant step and 2 dB with the adaptive one (docs/benchmarks.md). Tiled runs use the adaptive step;
single-piece reconstructions keep ``g = 1`` by default (``adaptive=False``; the paper's protocol):
on exact single-piece simulations both reach the same PSNR, and the adaptive step's stack maps the
tilted smear's depth less well (median error 1.28 µm against under 1 µm).

Intensity correction (``intensity_correction=True``; ``--correct-intensity``, off by default, see
:attr:`RawData.brightness_uncertain`; the calibration's board refit uses it to clean its object). A real LED's brightness is known only to the calibration's
estimate (a few % rms: the quick reconstruction it is fitted against biases it), and a wrong
brightness is a wrong target ``sqrt(I_i)`` that the sequential updates write into the spectrum
every pass. From pass :data:`INTENSITY_START_PASS` on, each LED's step first fits its amplitude gain
against the current estimate, ``g_i = Σ v·|f|·sqrt(I_i) / Σ v·I_i`` (least squares over the valid
pixels ``v``, per plane), and projects onto ``g_i·sqrt(I_i)`` instead (the intensity-correction
step of Bian et al., Opt. Express 21, 32400 (2013), fitted in closed form). After every pass the
gains are rescaled so that the bright-field LEDs' mean intensity gain is 1 (the object and the
gains share one overall scale). Gains are clamped to [0.2, 5].

LEDs off the hr frequency grid (sub-bin tilts, see
:mod:`napari_fpminr.optics.forward`) get their own transfer ``T_{z,i} = A·P_disk(k + δ_i)·
exp(i·kz(k + δ_i)·z)``: the disk and defocus at the LED's shifted coordinates times the pupil's
aberration ``A`` (1 for an ideal pupil): per-LED disks and axial wavenumbers inside the pupil
box are precomputed, and so are the transfers of a plane batch when they fit in 128 MB (else
they are built per LED step); on the grid, one shared transfer as before. The optional pupil step is the analogue with the roles swapped,
``T_z += β · |W| · conj(W) · ΔΨ / (max|W| · (|W|² + δ_p · max|W|²))`` restricted to the pupil
support (``δ_p`` is relative to ``max|W|²`` because spectra are normalized so that a transparent
sample has DC 1); it starts after the first pass and gives one recovered pupil per plane. With
sub-bin LEDs the step updates the aberration ``A`` instead (``ΔA = ΔT·conj(P_disk·exp(i·kz·z))``
at the LED's shifted coordinates, exact since that factor has unit modulus on its disk).

Scale: intensities are normalized (:meth:`RawData.normalized`), the initial estimate is the
Fourier-interpolated (zero-padded spectrum) ``sqrt`` of the lowest-NA image, and the FFT
normalizations are those of :class:`FPMForward`, so a transparent sample reconstructs with
amplitude ≈ 1.

Implementation: complex64 throughout; window positions are precomputed integers so every
window is a view of ``O`` updated in place; for even raw sizes the centring shifts are folded
into the FFTs (``ifft2(ifftshift(X)) = (-1)^(m+n) · ifft2(X)`` and the amplitude projection
commutes with that sign pattern), so no shift copies are made; all Fourier-space arithmetic is
restricted to the bounding box of the pupil support and the forward FFT only computes that box. ``mode="batched"`` updates all
planes (or chunks of ``plane_chunk`` planes when memory requires) in one tensor per LED step;
``mode="per_plane"`` runs the same arithmetic one plane at a time (the paper's protocol). Both
give the same result to float32 round-off.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ..errors import FPMInputError
from ..optics.forward import FPMForward
from ..rawdata import RawData
from .censor import projected_amplitude, saturated_mask
from .stop import should_stop

__all__ = ["QNewtonSolver", "ADAPTIVE_TOL"]

_EPS2 = 1e-12  # guards |f| = 0 in the amplitude projection (intensities are ~1 in bright field)
_CTF_TABLE_BYTES = 128 << 20  # per-LED transfers of a plane batch are precomputed up to this size
#: relative misfit decrease per pass below which the adaptive step gain halves (Zuo et al. 2016)
ADAPTIVE_TOL = 0.01
#: first pass (0-based) in which the per-LED intensity correction is fitted: the object has formed
INTENSITY_START_PASS = 1


class QNewtonSolver:
    """Sequential qNewton FPM updates for a batch of planes of one dataset."""

    def __init__(self, raw: RawData, device: torch.device, alpha: float, delta: float,
                 beta: float, delta_pupil: float, subpixel: bool = True, adaptive: bool = False,
                 intensity_correction: bool = False):
        data = raw.normalized().sorted_by_na()
        try:
            self.fwd = FPMForward(data.optics, data.lr_shape, device, subpixel=subpixel)
        except ValueError as exc:
            raise FPMInputError(str(exc), raw.source) from None
        self.device = device
        self.h, self.w = data.lr_shape
        self.H, self.W = self.fwd.hr_shape
        self.tops = [int(v) for v in self.fwd.window_top.cpu()]
        self.lefts = [int(v) for v in self.fwd.window_left.cpu()]
        self.measured = torch.as_tensor(np.sqrt(data.intensities), device=device)
        self.n_leds = data.n_leds
        # saturated pixels (censored data term): 0/1 per pixel, and which LEDs have any
        self.saturated = saturated_mask(data, device)
        self.censored_leds = [False] * self.n_leds if self.saturated is None else \
            [bool(v) for v in self.saturated.flatten(1).amax(1).cpu()]
        self.alpha, self.delta, self.beta, self.delta_pupil = alpha, delta, beta, delta_pupil
        self.adaptive = bool(adaptive)
        self.intensity_correction = bool(intensity_correction)
        self.led_gain: torch.Tensor | None = None  # (Z, N) fitted gains of the last batch (NA order)
        self.bright_field = torch.as_tensor(np.asarray(data.optics.bright_field), device=device)
        self.valid = None if self.saturated is None else 1.0 - self.saturated
        self.even = self.h % 2 == 0 and self.w % 2 == 0
        self.support = self.fwd.support.to(torch.complex64)
        rows = torch.nonzero(self.fwd.support.any(dim=1)).flatten().cpu()
        cols = torch.nonzero(self.fwd.support.any(dim=0)).flatten().cpu()
        if rows.numel() == 0:
            raise FPMInputError("the objective pupil covers no frequency of the raw grid", raw.source)
        pad = 0 if self.fwd.on_grid else 1  # shifted disks reach at most one bin further
        self.bbox = (max(0, int(rows[0]) - pad), min(self.h, int(rows[-1]) + 1 + pad),
                     max(0, int(cols[0]) - pad), min(self.w, int(cols[-1]) + 1 + pad))
        if not self.fwd.on_grid:  # per-LED disks and axial wavenumbers inside the box
            r0, r1, c0, c1 = self.bbox
            disk, self.led_kz = self.fwd.shifted_ctf(None, self.bbox)
            self.led_disk = disk.to(torch.float32)
            ideal = data.optics.pupil is None
            self.aberration = None if ideal else self.fwd.extend_pupil(self.fwd.pupil)[r0:r1, c0:c1].contiguous()
        # initial spectrum: zero-padded spectrum of the lowest-NA amplitude image
        first = torch.fft.fftshift(torch.fft.fft2(self.measured[0].to(torch.complex64), norm="forward"))
        self.init_spectrum = torch.zeros((self.H, self.W), dtype=torch.complex64, device=device)
        top, left = self.H // 2 - self.h // 2, self.W // 2 - self.w // 2
        self.init_spectrum[top:top + self.h, left:left + self.w] = first

    # Centred spectrum <-> field on the raw grid. For even sizes the fields carry the
    # (-1)^(m+n) pattern, so no shifts are needed; the forward transform is pruned to the pupil
    # box (rows transformed in full, then only the box columns along y).
    def _to_field(self, psi: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if self.even:
            return torch.fft.ifft2(psi, norm="forward", out=out)
        return torch.fft.ifft2(torch.fft.ifftshift(psi, dim=(-2, -1)), norm="forward", out=out)

    def _box_spectrum(self, f: torch.Tensor) -> torch.Tensor:
        r0, r1, c0, c1 = self.bbox
        if self.even:
            rows = torch.fft.fft(f, dim=-1, norm="forward")[:, :, c0:c1]
            return torch.fft.fft(rows, dim=-2, norm="forward")[:, r0:r1, :]
        return torch.fft.fftshift(torch.fft.fft2(f, norm="forward"), dim=(-2, -1))[:, r0:r1, c0:c1]

    def _projection_delta(self, win: torch.Tensor, transfer: torch.Tensor, n: int, psi: torch.Tensor,
                          field: torch.Tensor, scale: torch.Tensor, work: torch.Tensor,
                          bound: torch.Tensor | None) -> torch.Tensor:
        """ΔΨ inside the pupil box for LED ``n``: ``F{a·f/|f|} - ψ`` with ``f = F^-1{ψ}``,
        ``ψ = W_n[O]·T`` and the target amplitude ``a = sqrt(I_n)``, or ``max(|f|, sqrt(I_n))`` at
        saturated pixels (censored, :mod:`recon.censor`), times the planes' step gains (adaptive
        step); adds the LED's misfit ``Σ(|f| - a)²`` to the pass's (at a saturated pixel only the
        shortfall below the bound counts). ``psi`` is zero outside the box; ``field``/``scale``/
        ``work``/``bound`` are work buffers (``bound`` only with saturated pixels)."""
        r0, r1, c0, c1 = self.bbox
        psi_box = psi[:, r0:r1, c0:c1]
        psi_box.copy_(win).mul_(transfer)
        self._to_field(psi, field)
        # amplitude projection f <- a·f/|f|, with |f|² from real and imaginary parts
        torch.mul(field.real, field.real, out=scale)
        scale.addcmul_(field.imag, field.imag)
        target = self.measured[n]
        if self.led_gain is not None:
            if self.fitting_intensity:
                self._fit_led_gain(n, scale, target, work)
            target = torch.mul(target, self.led_gain[:, n, None, None], out=self.target_buf)
        if self.censored_leds[n]:
            target = projected_amplitude(torch.sqrt(scale, out=bound), target, self.saturated[n], out=bound)
        if self.adaptive:  # the pass's misfit Σ(|f| - a)², per plane
            torch.sqrt(scale, out=work).sub_(target)
            self.misfit += torch.linalg.vector_norm(work, dim=(-2, -1)).square()
        scale.add_(_EPS2).rsqrt_().mul_(target)
        field.mul_(scale)
        delta = self._box_spectrum(field).sub_(psi_box)
        return delta.mul_(self.gain) if self.adaptive else delta

    def _fit_led_gain(self, n: int, intensity: torch.Tensor, measured: torch.Tensor, work: torch.Tensor) -> None:
        """Per-plane least-squares amplitude gain of LED ``n``: ``g = Σ v·|f|·a / Σ v·a²`` with
        ``|f|`` the estimate's amplitude (``intensity`` = ``|f|²``), ``a = sqrt(I_n)`` and ``v`` 0
        at saturated pixels (1 elsewhere), so the corrected target ``g·a`` is the multiple of the
        measurement nearest the prediction (module docstring, intensity correction)."""
        torch.sqrt(intensity, out=work).mul_(measured)
        den = measured.square()
        if self.valid is not None:
            work.mul_(self.valid[n])
            den = den * self.valid[n]
        num = work.sum(dim=(-2, -1), dtype=torch.float64)
        gain = num / den.sum(dtype=torch.float64).clamp_min(1e-30)
        self.led_gain[:, n] = gain.clamp(0.2, 5.0).to(torch.float32)

    def _normalize_led_gains(self) -> None:
        """Pin the scale the gains share with the object: mean bright-field intensity gain 1."""
        bf = self.led_gain[:, self.bright_field] if bool(self.bright_field.any()) else self.led_gain
        self.led_gain /= bf.square().mean(dim=1, keepdim=True).sqrt().clamp_min(1e-12)

    def _pupil_step(self, old_win: torch.Tensor) -> torch.Tensor:
        """The pupil update's weight ``β·|W|·conj(W) / (max|W|·(|W|² + δ_p·max|W|²))`` for the
        object window ``W`` before its own update (module docstring)."""
        mag = old_win.abs()
        peak = mag.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
        return (self.beta * mag / (peak * (mag.square() + self.delta_pupil * peak.square()))) * old_win.conj()

    def object_step(self, transfer: torch.Tensor) -> torch.Tensor:
        mag = transfer.abs()
        peak = mag.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
        return (self.alpha * mag / (peak * (mag.square() + self.delta))) * transfer.conj()

    def run(self, z_um: np.ndarray, iterations: int, pupil_update: bool, stop) -> Iterator[int]:
        """Reconstruct planes ``z_um``, yielding the number of finished passes after each one.

        When it returns, ``self.result`` holds (hr fields (Z, H, W), per-plane pupils or None,
        passes done).
        """
        if not self.fwd.on_grid:
            yield from self._run_subbin(z_um, iterations, pupil_update, stop)
            return
        zc = z_um.size
        r0, r1, c0, c1 = self.bbox
        spec = self.init_spectrum.expand(zc, self.H, self.W).clone()
        # everything in Fourier space lives inside the pupil support's bounding box
        transfer = self.fwd.transfer(z_um)[:, r0:r1, c0:c1].contiguous()
        support = self.support[r0:r1, c0:c1]
        step = self.object_step(transfer)

        def update(n: int, update_pupil: bool, buffers) -> None:
            nonlocal step
            win = self._window(spec, n)
            delta_box = self._projection_delta(win, transfer, n, *buffers)
            if update_pupil:
                old = win.clone()
                win.addcmul_(step, delta_box)
                transfer.addcmul_(self._pupil_step(old) * support, delta_box)
                step = self.object_step(transfer)
            else:
                win.addcmul_(step, delta_box)

        done = yield from self._passes(zc, iterations, pupil_update, stop, update)
        pupils = None
        if pupil_update:
            # the recovered pupil proper: the plane's transfer without its own defocus
            pupils = self._boxed(transfer * self.fwd.defocus(z_um)[:, r0:r1, c0:c1].conj())
        self.result = (FPMForward.inverse_spectrum(spec), pupils, done)

    def _run_subbin(self, z_um: np.ndarray, iterations: int, pupil_update: bool, stop) -> Iterator[int]:
        """:meth:`run` with one transfer per LED (sub-bin tilts): ``T_i = A·disk_i·exp(i·kz_i·z)``."""
        zc = z_um.size
        r0, r1, c0, c1 = self.bbox
        spec = self.init_spectrum.expand(zc, self.H, self.W).clone()
        z = torch.as_tensor(z_um, dtype=torch.float32, device=self.device)[:, None, None]
        aberration = None
        if self.aberration is not None or pupil_update:
            base = self.aberration if self.aberration is not None else torch.ones(
                (r1 - r0, c1 - c0), dtype=torch.complex64, device=self.device)
            aberration = base.expand(zc, r1 - r0, c1 - c0).clone()
        ideal_gain = self.alpha / (1.0 + self.delta)  # object step of a unit-modulus transfer on its disk
        # per-LED disk·defocus of this plane batch, precomputed when it fits (no trig in the LED loop)
        table = None
        if self.n_leds * zc * (r1 - r0) * (c1 - c0) * 8 <= _CTF_TABLE_BYTES:
            table = torch.polar(self.led_disk[:, None].expand(-1, zc, -1, -1), self.led_kz[:, None] * z[None])

        def update(n: int, update_pupil: bool, buffers) -> None:
            ctf = table[n] if table is not None else torch.polar(self.led_disk[n].expand(zc, -1, -1),
                                                                 self.led_kz[n] * z)  # disk·defocus
            transfer = ctf if aberration is None else ctf * aberration
            win = self._window(spec, n)
            delta_box = self._projection_delta(win, transfer, n, *buffers)
            if aberration is None:  # unit-modulus transfer on its disk: step = gain·conj(T)
                win.addcmul_(transfer.conj(), delta_box, value=ideal_gain)
                return
            step = self.object_step(transfer)
            if update_pupil:
                old = win.clone()
                win.addcmul_(step, delta_box)
                aberration.addcmul_(self._pupil_step(old) * ctf.conj(), delta_box)
            else:
                win.addcmul_(step, delta_box)

        done = yield from self._passes(zc, iterations, pupil_update, stop, update)
        pupils = self._boxed(aberration * self.fwd.support[r0:r1, c0:c1]) if pupil_update else None
        self.result = (FPMForward.inverse_spectrum(spec), pupils, done)

    def _passes(self, zc: int, iterations: int, pupil_update: bool, stop, update) -> Iterator[int]:
        """Run ``iterations`` sequential passes of ``update(n, update_pupil, buffers)`` over the
        LEDs (NA order) for a batch of ``zc`` planes; yields the passes done after each one and
        returns how many finished (fewer when ``stop`` fired). The pupil step starts after the
        first pass; ``buffers`` are the work arrays of :meth:`_projection_delta`. The planes' step
        gains start at 1 and halve after a pass that lowered their misfit by under
        :data:`ADAPTIVE_TOL` (module docstring)."""
        psi = torch.zeros((zc, self.h, self.w), dtype=torch.complex64, device=self.device)  # zero outside the box
        real = dict(dtype=torch.float32, device=self.device)
        buffers = (psi, torch.empty_like(psi), torch.empty((zc, self.h, self.w), **real),
                   torch.empty((zc, self.h, self.w), **real),
                   None if self.saturated is None else torch.empty((zc, self.h, self.w), **real))
        self.gain = torch.ones((zc, 1, 1), dtype=torch.float32, device=self.device)
        self.led_gain = torch.ones((zc, self.n_leds), dtype=torch.float32, device=self.device) \
            if self.intensity_correction else None
        self.target_buf = torch.empty((zc, self.h, self.w), **real) if self.intensity_correction else None
        self.fitting_intensity = False
        previous = None
        done = 0
        for it in range(iterations):
            update_pupil = pupil_update and it >= 1
            self.fitting_intensity = self.led_gain is not None and it >= INTENSITY_START_PASS
            self.misfit = torch.zeros(zc, dtype=torch.float64, device=self.device)
            for n in range(self.n_leds):
                if should_stop(stop):
                    return done
                update(n, update_pupil, buffers)
            if self.fitting_intensity:
                self._normalize_led_gains()
            if self.adaptive:
                if previous is not None:
                    stalled = (previous - self.misfit) < ADAPTIVE_TOL * previous
                    self.gain[stalled] *= 0.5
                previous = self.misfit
            done = it + 1
            yield done
        return done

    def _window(self, spec: torch.Tensor, n: int) -> torch.Tensor:
        """LED ``n``'s pupil box of the centred hr spectra ``spec`` (a view: updated in place)."""
        r0, r1, c0, c1 = self.bbox
        top, left = self.tops[n] + r0, self.lefts[n] + c0
        return spec[:, top:top + r1 - r0, left:left + c1 - c0]

    def _boxed(self, box: torch.Tensor) -> torch.Tensor:
        """Per-plane raw-grid arrays ``(Z, h, w)``: ``box`` inside the pupil box, zero outside."""
        r0, r1, c0, c1 = self.bbox
        out = torch.zeros((box.shape[0], self.h, self.w), dtype=torch.complex64, device=self.device)
        out[:, r0:r1, c0:c1] = box
        return out
