"""Physics-seeded FPM-INR: seed conventionally, initialise in closed form, polish on the raw data.

The default reconstruction of :func:`recon.train.iter_train` (``TrainConfig.init="seeded"``):

1. **Seed.** The batched quasi-Newton solver (:mod:`recon.conventional`) reconstructs the
   complex fields at z nodes spaced by ``seed_spacing × λ/NA_syn²`` (the synthetic-NA depth of
   field), with pupil recovery when asked. A field whose angles reach ``NA_syn`` has a z
   spectrum ``(1 - √(1 - NA_syn²))/λ ≈ NA_syn²/(2λ)`` wide, on one side of ``1/λ``, so complex
   samples every ``2λ/NA_syn²`` determine it: the default 1.0 samples twice as finely as that
   (21 nodes over ±20 µm for the paper's optics), and scores like the 161-plane stack at the
   layer depths.
2. **Initialise.** A truncated SVD across z of the band-limited seed spectra gives the
   :class:`~recon.lowrank.LowRankField` (rank ``R``) in closed form, in a fraction of a second.
3. **Polish.** Adam on the spectral factors and the z line, self-supervised on the raw
   amplitudes with the paper's loss (smooth-L1, small β), continuous depths spread evenly over
   the range by a golden-ratio sequence (one per step by default), every LED, cosine-decayed
   learning rate. The forward model reads the LED windows
   straight from the factors' spectra: no hr FFT per step.

   Saturated pixels (``RawData.valid`` False) are censored in the seed and in this loss: the
   camera stored its full-well value, so the true intensity there is only known to be at least
   the stored one, and a predicted amplitude above ``sqrt(I)`` agrees with the data. Only
   ``predicted < measured`` is penalized there (the prediction is clipped from above at the
   measured amplitude before the smooth-L1, :mod:`recon.censor`); without a mask nothing changes.

   Polishing lowers the misfit, and an unconstrained polish also makes slices at distant depths
   more alike (measured on the layered sample: the correlation of the slices at −12 and +12 µm
   rises from the stack's 0.04 to 0.33 at lr 1e-2 — free per-plane fields polished the same way
   do the same, so it is the loss, not the low rank). The polish therefore watches the
   **z-invariance index** (mean correlation of amplitude slices at node pairs at least a quarter
   of the range apart) every ``guard_every`` steps and stops, keeping the last state within the
   tolerance, once it has risen more than ``invariance_tolerance`` above the seed's.
4. **MLP option** (``representation="mlp"``): the paper's feature-plane networks are distilled
   from the polished low-rank fields (supervised, random continuous z, strided pixel subgrids).

Every phase yields :class:`~recon.train.TrainEvent`\\ s with ``phase`` set ("seed", "init",
"polish", "distill"), an honest ``progress`` fraction from a cost model of the phases, and the
cooperative ``stop`` is polled between every LED update (seed) or step (others).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..optics.forward import FPMForward
from ..rawdata import RawData
from .conventional import iter_conventional
from .inr import FPMINR, INRArchitecture
from .lowrank import LowRankArchitecture, LowRankField
from .stop import should_stop
from .box_forward import PupilBox
from .censor import amplitude_ceiling, censored_prediction

__all__ = ["CostModel", "PhaseStep", "estimate_work", "invariance_index", "iter_seeded", "seed_node_depths"]


def seed_node_depths(optics, z_min_um: float, z_max_um: float, spacing: float = 1.0) -> np.ndarray:
    """Seed depths over ``[z_min, z_max]``, spaced at most ``spacing · λ/NA_syn²`` (ends included)."""
    dof = optics.wavelength_um / optics.na_synthetic ** 2
    n = int(math.ceil((float(z_max_um) - float(z_min_um)) / (spacing * dof) - 1e-9)) + 1
    return np.linspace(float(z_min_um), float(z_max_um), max(n, 2))


@dataclass
class PhaseStep:
    """One unit of work of a phase: ``loss`` NaN where there is none; ``work`` in cost units."""

    phase: str
    loss: float
    lr: float
    z_um: float
    work: float


class CostModel:
    """Relative cost of the phases, in raw-image FFTs (one LED window at one depth = 1).

    A seed pass costs ``n_nodes·N`` (one forward and one inverse raw FFT per LED and plane, the
    pupil-box FFT counted as one); a polish step ``3·z_per_step·N`` (forward + backward); a
    distillation step is FFT-free and counted as ``4·z_per_step·(sampled hr pixels)/(raw
    pixels)``. Good to ~30 % on CPU, which keeps the progress bar and ETA honest across phases;
    :func:`estimate_work` gives the whole run's total before it starts.
    """

    def __init__(self, n_leds: int, n_nodes: int, lr_shape: tuple[int, int], hr_shape: tuple[int, int], cfg):
        distill_steps = cfg.distill_steps if cfg.representation == "mlp" else 0
        sampled = float(hr_shape[0]) * float(hr_shape[1]) / max(1, int(cfg.distill_stride)) ** 2
        self.seed = float(n_nodes * n_leds)
        self.polish = float(3 * cfg.polish_z_per_step * n_leds)
        self.distill = 4.0 * cfg.distill_z_per_step * sampled / (float(lr_shape[0]) * float(lr_shape[1]))
        self.init = 2.0 * n_nodes
        self.total = (cfg.seed_iterations * self.seed + self.init + cfg.polish_steps * self.polish
                      + distill_steps * self.distill)


def estimate_work(raw: RawData, z_min_um: float, z_max_um: float, cfg) -> float:
    """Total work of a seeded run (:class:`CostModel` units), for estimates before it starts."""
    nodes = seed_node_depths(raw.optics, z_min_um, z_max_um, cfg.seed_spacing)
    return CostModel(raw.n_leds, nodes.size, raw.lr_shape, raw.hr_shape, cfg).total


def invariance_index(net: LowRankField, nodes: np.ndarray, n_probe: int = 9) -> float:
    """Mean correlation of amplitude slices at probe node pairs ≥ a quarter of the range apart.

    A z-stack that refocuses has distant slices that differ (low index); a z-invariant one has
    an index near 1. Measured on ``n_probe`` depths spread over the range.
    """
    z = np.linspace(nodes[0], nodes[-1], n_probe)
    with torch.no_grad():
        (amp,) = net.decode(torch.as_tensor(z, dtype=torch.float32, device=net.index.device), ("amplitude",))
    a = amp.reshape(n_probe, -1).double()
    a = a - a.mean(1, keepdim=True)
    a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-30)
    corr = a @ a.T
    far = torch.as_tensor(np.abs(z[:, None] - z[None, :]) >= 0.25 * (z[-1] - z[0]) - 1e-9, device=corr.device)
    return float(corr[far].mean())


def _aligned_pupil(stack, raw_normalized: RawData, device) -> np.ndarray | None:
    """One pupil for all depths: the recovered pupil of the seed plane that fits the data best."""
    if stack.pupil is None:
        return None
    from .metrics import measurement_misfit

    misfit = measurement_misfit(raw_normalized, stack.complex_field(), stack.z_um, device=device, pupil=stack.pupil)
    return stack.pupil[int(np.argmin(misfit))]


def iter_seeded(raw: RawData, z_min_um: float, z_max_um: float, cfg, device: torch.device, stop=None,
                holder: dict | None = None) -> Iterator[PhaseStep]:
    """Run seed → init → polish (→ distill); yield a :class:`PhaseStep` per unit of work.

    ``holder`` receives ``"net"`` (the representation so far: a :class:`LowRankField`, or an
    :class:`FPMINR` once distillation starts), ``"pupil"`` (complex ``(h, w)`` or None),
    ``"cost"`` (the :class:`CostModel`) and ``"guard"`` (the invariance measurements). The
    generator returns True when it finished, False when stopped.
    """
    holder = {} if holder is None else holder
    nodes = seed_node_depths(raw.optics, z_min_um, z_max_um, cfg.seed_spacing)
    data = raw.normalized()
    cost = CostModel(raw.n_leds, nodes.size, raw.lr_shape, raw.hr_shape, cfg)
    holder.update(cost=cost, seed_nodes=nodes.size)

    # 1. seed (a stop keeps the seed's current estimate when every node has one)
    stack = None
    for ev in iter_conventional(raw, nodes, iterations=cfg.seed_iterations, pupil_update=cfg.recover_pupil,
                                device=device, stop=stop, adaptive_step=cfg.seed_adaptive_step,
                                intensity_correction=cfg.intensity_correction):
        if ev.stack is not None:
            stack = ev.stack
            break
        yield PhaseStep("seed", float("nan"), float("nan"), float("nan"), cost.seed)
    stopped = stack is None or bool(stack.meta.get("complete") is False)
    if stack is None or stack.n_planes < nodes.size:
        return False

    # 2. initialise: truncated SVD across z
    arch = LowRankArchitecture.for_optics(raw.optics, raw.lr_shape, z_min_um, z_max_um, nodes.size, cfg.rank)
    fields = torch.as_tensor(stack.complex_field(), device=device)
    net = LowRankField.from_stack(arch, fields, nodes)
    del fields
    pupil = _aligned_pupil(stack, data, device)
    holder.update(net=net, pupil=pupil)
    yield PhaseStep("init", float("nan"), float("nan"), float("nan"), cost.init)
    if stopped:
        return False

    # 3. polish on the raw data (with the seed's per-LED brightness correction, when it fitted one)
    gain = None if stack.led_gain is None else np.median(stack.led_gain, axis=0)
    finished = yield from _polish(net, data, pupil, nodes, cfg, device, stop, cost, holder, gain)
    if not finished:
        return False

    # 4. optional distillation into the paper's feature-plane networks
    if cfg.representation == "mlp":
        # z line on the seed's nodes; plane and width of the distilled networks: see TrainConfig
        mlp = FPMINR(INRArchitecture(raw.hr_shape, float(z_min_um), float(z_max_um), nodes.size, cfg.distill_q,
                                     cfg.distill_plane_downsample), seed=cfg.seed).to(device)
        finished = yield from _distill(mlp, net, cfg, device, stop, cost, holder)
        return finished
    return True


def _polish(net: LowRankField, data: RawData, pupil, nodes: np.ndarray, cfg, device, stop, cost: CostModel,
            holder: dict, led_gain: np.ndarray | None = None) -> Iterator[PhaseStep]:
    """Self-supervised Adam polish of the factors with the invariance guard (see module doc).

    ``led_gain``: per-LED amplitude gains ``(N,)`` the seed fitted (intensity correction,
    :mod:`recon.qnewton`; the median over the seed's planes): the measured amplitudes are fitted
    as ``g_i·sqrt(I_i)``."""
    steps = int(cfg.polish_steps)
    if steps == 0:
        return True
    fwd = FPMForward(data.optics, data.lr_shape, device)
    n_leds = data.n_leds
    measured = torch.as_tensor(np.sqrt(data.intensities), device=device)
    if led_gain is not None:
        measured = measured * torch.as_tensor(led_gain, dtype=measured.dtype, device=device)[:, None, None]
    ceiling = amplitude_ceiling(data, measured)  # saturated pixels: censored residual (None: no mask)
    chunks = _led_chunks(n_leds, cfg.led_batch, device)
    box = PupilBox.of(fwd)
    flat_index = [box.gather_indices(fwd, chunk) for chunk in chunks]
    transfers = [_BoxTransfer(fwd, box, chunk, pupil) for chunk in chunks]
    optimizer = _Adam(list(net.parameters()), lr=cfg.polish_lr)
    offset = float(np.random.default_rng(cfg.seed).uniform())
    z_lo, z_hi = float(nodes[0]), float(nodes[-1])
    guard = {"seed": invariance_index(net, nodes), "checked": [], "stopped_at": None}
    holder["guard"] = guard
    accepted = copy.deepcopy(net.state_dict())
    for k in range(steps):
        if should_stop(stop):
            net.load_state_dict(accepted)  # the last state the guard has checked
            return False
        lr = cfg.polish_lr * 0.5 * (1 + math.cos(math.pi * k / steps))
        for g in optimizer.param_groups:
            g["lr"] = lr
        z = torch.as_tensor(_spread_depths(k, cfg.polish_z_per_step, z_lo, z_hi, offset), dtype=torch.float32,
                            device=device)
        optimizer.zero_grad(set_to_none=True)
        spectrum = net.full_spectrum(z, norm="forward")
        total = 0.0
        for chunk, idx, transfer in zip(chunks, flat_index, transfers):
            pred = box.amplitudes(spectrum, transfer(z), idx, len(chunk))
            pred = censored_prediction(pred, None if ceiling is None else ceiling[chunk])
            loss = F.smooth_l1_loss(pred, measured[chunk].expand_as(pred), beta=cfg.polish_beta) * (len(chunk) / n_leds)
            loss.backward(retain_graph=chunk is not chunks[-1])
            total += float(loss.detach())
        if not math.isfinite(total):
            net.load_state_dict(accepted)
            return True
        optimizer.step()
        if (k + 1) % cfg.guard_every == 0 or k + 1 == steps:
            index = invariance_index(net, nodes)
            guard["checked"].append((k + 1, index))
            if index > guard["seed"] + cfg.invariance_tolerance:
                net.load_state_dict(accepted)
                guard["stopped_at"] = k + 1
                yield PhaseStep("polish", total, lr, float(z[0]), cost.polish * (steps - k))
                return True
            accepted = copy.deepcopy(net.state_dict())
        yield PhaseStep("polish", total, lr, float(z[0]), cost.polish)
    return True


_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def _spread_depths(step: int, per_step: int, z_lo: float, z_hi: float, offset: float) -> np.ndarray:
    """Depths of polish step ``step``: the golden-ratio (Weyl) sequence over ``[z_lo, z_hi]``.

    Consecutive depths fill the range evenly (any run of ``n`` of them leaves no gap wider than
    ~2.6/n of it), where independent uniform draws leave gaps of ~log(n)/n: with one depth per
    step and ~100 steps every part of the volume is polished about equally often.
    """
    k = step * per_step + np.arange(per_step)
    return z_lo + (z_hi - z_lo) * np.mod(offset + k * _GOLDEN, 1.0)


def _distill(mlp: FPMINR, teacher: LowRankField, cfg, device, stop, cost: CostModel, holder: dict
             ) -> Iterator[PhaseStep]:
    """Supervised fit of the feature-plane networks to the low-rank fields at random continuous z.

    Adam at lr 1e-2 can spike late (measured on the 128² layered sample: 20.5/22.1/23.8 dB after
    750 steps, 4 dB after 1000): every ``steps/20`` steps the window's mean loss is compared with
    the best so far; a window twice as bad restores the best state and halves the learning rate,
    and the run ends on the best state if its last steps are clearly worse.
    """
    steps = int(cfg.distill_steps)
    optimizer = torch.optim.Adam(mlp.parameters(), lr=cfg.distill_lr)
    rng = np.random.default_rng(cfg.seed + 1)
    z_offset = float(rng.uniform())
    H, W = mlp.arch.hr_shape
    stride = max(1, int(cfg.distill_stride))
    a = mlp.arch
    holder["net"] = mlp
    window, recent, last, lr_scale = max(10, steps // 20), [], [math.inf], 1.0
    best = (math.inf, None)  # (mean loss of a window of steps, state after it): kept against late spikes
    for k in range(steps):
        if should_stop(stop):
            _restore_best(mlp, best, recent or last)
            return False
        lr = lr_scale * cfg.distill_lr * 0.5 * (1 + math.cos(math.pi * k / steps))
        for g in optimizer.param_groups:
            g["lr"] = lr
        z = torch.as_tensor(_spread_depths(k, cfg.distill_z_per_step, a.z_min_um, a.z_max_um, z_offset),
                            dtype=torch.float32, device=device)
        oy, ox = (int(v) for v in rng.integers(stride, size=2))
        rows = torch.arange(oy, H, stride, device=device)
        cols = torch.arange(ox, W, stride, device=device)
        with torch.no_grad():
            target = teacher.field(z)[:, rows][:, :, cols]
        mlp.train()
        optimizer.zero_grad(set_to_none=True)
        if stride == 1:
            amplitude, phase = mlp.amplitude.forward_full(z), mlp.phase.forward_full(z)
        else:
            amplitude, phase = mlp(z, rows, cols)
        loss = _distill_loss(amplitude.float(), phase.float(), target)
        loss.backward()
        optimizer.step()
        recent.append(float(loss.detach()))
        if len(recent) == window:
            mean = float(np.mean(recent))
            if mean < best[0]:
                best = (mean, copy.deepcopy(mlp.state_dict()))
            elif not mean <= 2.0 * best[0]:  # Adam spiked (measured at 128²): back to the best, half the lr
                mlp.load_state_dict(best[1])
                optimizer = torch.optim.Adam(mlp.parameters(), lr=lr)
                lr_scale *= 0.5
                mean = best[0]
            recent, last = [], [mean]
        yield PhaseStep("distill", float(loss.detach()), lr, float(z[0]), cost.distill)
    _restore_best(mlp, best, recent or last)
    return True


def _distill_loss(amplitude: torch.Tensor, phase: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Decoupled field loss: ``mean (A - |T|)² + mean ||T|·e^{iφ} - T|²`` for the teacher field ``T``.

    Its minimum is the complex-field loss's (``A = |T|``, ``φ = arg T``), but the amplitude network
    is fitted to the teacher's amplitude whatever the phase network's error, and the phase
    network to the teacher's phase weighted by its intensity (``2|T|²(1 - cos(φ - arg T))``:
    dark pixels' phase does not matter). Measured through the whole pipeline (per-layer PSNR,
    stack 64² 26.91 / 24.43 / 23.21, tilted 23.17): complex-field loss 26.26 / 24.63 / 23.77,
    tilted 24.27; decoupled 26.86 / 25.19 / 23.22, tilted 24.76; 128² layers (stack 19.78 /
    22.32 / 23.04) 20.26 / 22.32 / 23.91.
    """
    t_amp = target.abs()
    amp_loss = (amplitude - t_amp).square().mean()
    phase_loss = 2.0 * (t_amp.square() * (1.0 - torch.cos(phase - target.angle()))).mean()
    return amp_loss + phase_loss


def _restore_best(mlp: FPMINR, best: tuple, recent: list[float]) -> None:
    """Back to the best window's state when the last steps fit the teacher clearly worse (a spike)."""
    last = float(np.mean(recent))
    if best[1] is not None and not (last <= 1.5 * best[0]):
        mlp.load_state_dict(best[1])
    mlp.eval()


class _Adam:
    """Adam (Kingma & Ba 2015; β 0.9/0.999, ε 1e-8) for the polish, exactly torch's update rule.

    Why not ``torch.optim.Adam``: constructing the first one in a process costs ~1 s of imports
    (measured on the 2-core CPU with torch 2.13), as much as the whole polish of a 64² field.
    Same interface as used here: ``param_groups[0]["lr"]``, ``zero_grad``, ``step``.
    """

    def __init__(self, params: list[torch.Tensor], lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = params
        self.param_groups = [{"lr": lr}]
        self.betas, self.eps, self.t = betas, eps, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        lr = self.param_groups[0]["lr"]
        c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            m.mul_(b1).add_(p.grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            p.addcdiv_(m, (v / c2).sqrt_().add_(self.eps), value=-lr / c1)


class _BoxTransfer:
    """Boxed transfer function of one LED chunk at any depths: ``(Z, b_y, b_x)`` on the grid,
    ``(Z, n, b_y, b_x)`` for sub-bin tilts (disk and defocus at each LED's shifted coordinates,
    see :mod:`optics.forward`); everything but the depth is computed once."""

    def __init__(self, fwd: FPMForward, box: PupilBox, leds: torch.Tensor, pupil):
        device = fwd.device
        given = None if pupil is None else torch.as_tensor(pupil, dtype=torch.complex64, device=device)
        self.per_led = not getattr(fwd, "on_grid", True)
        if self.per_led:
            support, kz = fwd.shifted_ctf(leds)
            self.amplitude = box.crop(support.to(torch.float32))
            self.kz = box.crop(kz)
            aberration = None
            if given is not None or fwd.optics.pupil is not None:
                aberration = box.crop(fwd.extend_pupil(fwd.pupil if given is None else given))
            self.aberration = aberration
        else:
            base = fwd.pupil if given is None else given * fwd.support
            self.amplitude = box.crop(base)
            self.kz = box.crop(fwd.kz)
            self.aberration = None

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        zz = z[:, None, None, None] if self.per_led else z[:, None, None]
        phase = torch.polar(torch.ones_like(self.kz), self.kz[None] * zz)
        out = self.amplitude[None] * phase
        return out if self.aberration is None else out * self.aberration


def _led_chunks(n_leds: int, led_batch: int | None, device) -> list[torch.Tensor]:
    size = led_batch or n_leds
    return [torch.arange(s, min(n_leds, s + size), device=device) for s in range(0, n_leds, size)]
