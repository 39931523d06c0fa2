"""Settings and progress events of an FPM-INR reconstruction (see :mod:`recon.train`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import FPMInputError
from .lowrank import COMPACTION_TOLERANCE_DB
from .model import Model

INITS = ("seeded", "random")
REPRESENTATIONS = ("lowrank", "mlp")


@dataclass
class TrainConfig:
    """Reconstruction settings. Units: µm for depths; learning rates are Adam's.

    Pipeline (``init="seeded"``, the default; :mod:`recon.seeded`, measurements in
    docs/benchmarks.md):
        representation: "lowrank" (default: band-limited low-rank field, exact and tiny) or "mlp"
            (the paper's feature plane + MLP, distilled from the polished low-rank field).
        rank: separable terms of the low-rank field (8 reproduces a 41-plane stack).
        compact_db: the finished low-rank field is re-factored exactly, truncated to the rank its
            data need and its weakest terms stored in the 16-bit log-polar code, with no decoded
            plane at any depth changing by more than this (dB of the weakest plane's energy;
            :meth:`LowRankField.compacted`); None keeps the trained rank, every term float16.
        seed_iterations: quasi-Newton passes of the seed (10: converged at the layer depths).
        seed_adaptive_step: the seed's solver halves its step when a pass stalls (what tiles use;
            :mod:`napari_fpminr.recon.qnewton`).
        seed_spacing: seed node spacing as a fraction of the synthetic-NA depth of field
            ``λ/NA_syn²`` (1.0: half the complex-field z-Nyquist interval, ~2 µm and 21 nodes over
            ±20 µm for the paper's optics; 0.5 gives the same layers for twice the seed time).
        polish_steps, polish_lr, polish_z_per_step, polish_beta: self-supervised polish (Adam with
            a cosine decay to 0, continuous depths spread by a golden-ratio sequence, smooth-L1 β).
            Measured with sub-bin illumination (stack: 64² layers 26.91 / 24.43 / 23.21, tilted
            23.17; 128² layers 19.78 / 22.32 / 23.04, tilted 29.95), seed spacing 1.0:
            120 × 1 depth @ 1e-3 (default) 27.3 / 25.0 / 23.5, 25.0; 20.1 / 22.5 / 24.6, 30.1.
            100 × 1 depth 20.06 / 22.46 / 24.56, 29.99 (128²); 100 × 2 depths 20.16 / 22.56 / 24.68,
            30.18 at 1.5× the polish time. Uniform random depths instead of the sequence: 100 × 1
            gives the tilted 128² sample 29.51 (gaps in z), 150 × 1 29.92. Seed only (64², spacing
            0.5) 26.93 / 24.39 / 23.23, 23.21.
        guard_every, invariance_tolerance: the polish stops, keeping the last accepted state, when
            the z-invariance index (mean correlation of distant slices) rises more than this above
            the seed's; checked every ``guard_every`` steps.
        distill_steps, distill_lr, distill_z_per_step, distill_stride: MLP distillation (supervised,
            decoupled amplitude/phase loss, see ``recon.seeded._distill_loss``; depths spread by
            the golden-ratio sequence; a random ``stride``-strided pixel subgrid per step).
        distill_q, distill_plane_downsample: the distilled networks' feature channels and hr px per
            plane node; their z line has one node per seed node. Capacity is bounded by storage
            (≥ 80× the stack): hr/2 × 14 channels stores 88× / 91× / 92× at 64² / 128² / 256² raw,
            hr/2 × 16 77× / 80× / 80×. Measured (sub-bin illumination, seed spacing 1.0; stack 64²
            layers 26.91 / 24.43 / 23.21, tilted 23.17; 128² layers 19.78 / 22.32 / 23.04, tilted
            29.95): 2000 steps @ 5e-3, complex-field loss 26.26 / 24.63 / 23.77, tilted 24.27;
            decoupled loss 26.86 / 25.19 / 23.22, tilted 24.76, 128² 20.26 / 22.32 / 23.91, tilted
            28.76 (−1.2 dB: still converging); 2000 @ 1e-2 128² tilted 28.95; 4000 @ 5e-3 29.51;
            4000 @ 1e-2 29.38 (lower loss, lower PSNR); 4000 @ 5e-3 with 16 channels 29.59.
            Earlier (snapped illumination, complex loss): hr/4 × 32 channels 24.1 / 25.1 / 23.9 dB
            after 800 steps; lr 1e-2 spiked at 128².

    Paper's training (``init="random"``, always ``representation="mlp"``): ``epochs`` (odd: the
    z-line nodes, even: random continuous z), ``lr`` (1e-2 here, not the reference's 1e-3: one
    all-LED step per depth gives ~500 steps, and 1e-2 reaches the same floor in fewer),
    ``lr_decay`` every ``lr_decay_every`` epochs, ``steps_repeat`` visits of the depths per epoch,
    ``z_per_step`` depths per step, ``recover_pupil`` with Zernike modes ``zernike_modes`` (Noll)
    at ``pupil_lr``, ``precondition`` (spectral preconditioning of the field gradient by LED
    coverage ``c̄/(c(κ) + ε·c̄)``, 0 = off; +0.2 to +1.7 dB on six simulated cases, but the
    real green-file correlation drops from 0.91 to 0.89, so off by default).

    Shared: ``n_z``, ``q``, ``plane_downsample`` (MLP architecture: z-line nodes, feature channels,
    hr px per plane node), ``led_batch`` (LEDs per forward chunk; every step uses every LED),
    ``seed`` (initialisation and z sampling; deterministic on CPU), ``device``, ``mixed_precision``
    (bf16 autocast of the MLP on CUDA), ``recover_pupil`` (seeded: the seed's per-plane pupil
    update, then the best-fitting plane's pupil for all z), ``intensity_correction`` (seeded: the
    seed's per-LED brightness gains, fitted into the polish's data; ``None`` follows the data,
    :attr:`RawData.brightness_uncertain`), ``preview_every``/``preview_z_um``/
    ``preview_step`` (an amplitude preview slice every so many steps).
    """

    init: str = "seeded"
    representation: str = "lowrank"
    rank: int = 8
    compact_db: float | None = COMPACTION_TOLERANCE_DB
    seed_iterations: int = 10
    seed_adaptive_step: bool = False
    seed_spacing: float = 1.0
    polish_steps: int = 120
    polish_lr: float = 1e-3
    polish_z_per_step: int = 1
    polish_beta: float = 0.01
    guard_every: int = 10
    invariance_tolerance: float = 0.08
    distill_steps: int = 4000
    distill_lr: float = 5e-3
    distill_z_per_step: int = 4
    distill_stride: int = 1
    distill_q: int = 14
    distill_plane_downsample: int = 2
    epochs: int = 15
    lr: float = 1e-2
    lr_decay: float = 0.1
    lr_decay_every: int = 6
    n_z: int = 33
    q: int = 32
    plane_downsample: int = 4
    steps_repeat: int = 1
    z_per_step: int = 1
    led_batch: int | None = None
    seed: int = 0
    device: str = "auto"
    mixed_precision: bool = True
    recover_pupil: bool = False
    intensity_correction: bool | None = None
    zernike_modes: tuple[int, ...] = (5, 6, 7, 8, 9, 10, 11)
    pupil_lr: float = 2e-2
    preview_every: int = 0
    preview_z_um: float | None = None
    preview_step: int = 2
    precondition: float = 0.0

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise FPMInputError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        if self.representation not in REPRESENTATIONS:
            raise FPMInputError(f"representation must be one of {', '.join(REPRESENTATIONS)}, got {self.representation!r}")
        if self.init == "random" and self.representation != "mlp":
            raise FPMInputError("random initialisation trains the paper's MLP representation: use representation='mlp'")
        if self.epochs < 1 or self.lr <= 0 or self.z_per_step < 1 or self.steps_repeat < 1:
            raise FPMInputError("epochs, lr, z_per_step and steps_repeat must be positive")
        if self.rank < 1 or self.seed_iterations < 1 or not self.seed_spacing > 0 or self.polish_steps < 0 \
                or not self.polish_lr > 0 or self.polish_z_per_step < 1 or not self.polish_beta >= 0 \
                or self.guard_every < 1 or not self.invariance_tolerance >= 0:
            raise FPMInputError("seeded pipeline: rank, seed_iterations, seed_spacing, polish_lr, polish_z_per_step and "
                                "guard_every must be positive; polish_steps, polish_beta and invariance_tolerance >= 0")
        if self.distill_steps < 1 or not self.distill_lr > 0 or self.distill_z_per_step < 1 or self.distill_stride < 1 \
                or self.distill_q < 1 or self.distill_plane_downsample < 1:
            raise FPMInputError("distillation: steps, lr, z_per_step, stride, q and plane_downsample must be positive")
        if self.compact_db is not None and not -400.0 <= float(self.compact_db) < 0.0:
            raise FPMInputError(f"compact_db must be a negative number of dB (or None), got {self.compact_db}")
        if not self.precondition >= 0:
            raise FPMInputError(f"precondition must be >= 0, got {self.precondition}")
        if self.led_batch is not None and self.led_batch < 1:
            raise FPMInputError(f"led_batch must be >= 1, got {self.led_batch}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["zernike_modes"] = list(self.zernike_modes)
        return d


@dataclass
class TrainEvent:
    """One progress report. The last event has ``done=True`` and carries ``model``.

    ``phase``: "seed", "init", "polish", "distill" (seeded pipeline) or "train" (random init);
    ``loss`` is NaN where a phase has none (seed, init); ``progress`` is the share of the whole
    run's estimated work done (what progress bars show; ``fraction`` falls back to steps).
    ``epoch``/``n_epochs`` count the paper's epochs (0 in the seeded pipeline).
    """

    epoch: int
    n_epochs: int
    step: int
    n_steps: int
    loss: float
    lr: float
    z_um: float
    elapsed_s: float
    eta_s: float
    preview: np.ndarray | None = None
    preview_z_um: float | None = None
    done: bool = False
    stopped: bool = False
    model: Model | None = field(default=None, repr=False)
    phase: str = "train"
    progress: float | None = None

    @property
    def fraction(self) -> float:
        if self.progress is not None:
            return self.progress
        return self.step / max(1, self.n_steps)
