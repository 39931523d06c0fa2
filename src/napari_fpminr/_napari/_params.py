"""The training-parameter form of the reconstruction widget (plain Qt, no napari).

Values are read into :class:`TrainingParameters` (units in the names); ``fill_from_raw``
pre-fills the form from a raw data set: the z range is centred on the defocus the file states
(``RawData.z_um``, 0 when unknown) and the upsampling is the one the optics need.

Two presets (issue 9): **quick look** (the default on CPU: a centred crop of
``QUICK_CROP_PX`` raw pixels and ±``QUICK_HALF_RANGE_UM`` µm around the stated defocus, a useful
first result in about a minute on a 2-core CPU for the UConn 128² × 225-LED files) and **full
field** (the whole image, the paper's ±20 µm). The widget shows the expected time of the chosen
settings before Start (:func:`._training.estimate_seconds`).
"""

from __future__ import annotations

from dataclasses import dataclass

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QSpinBox,
    QWidget,
)

#: half-width of the default z range around the stated defocus (the paper's ±20 µm)
DEFAULT_HALF_RANGE_UM = 20.0
#: the quick-look preset: centred crop (raw px per side) and z half-range (µm)
QUICK_CROP_PX = 64
QUICK_HALF_RANGE_UM = 10.0
PRESETS = ("quick look", "full field")
INITS = ("seeded", "random")
REPRESENTATIONS = ("lowrank", "mlp")


@dataclass(frozen=True)
class TrainingParameters:
    z_min_um: float
    z_max_um: float
    n_z: int
    epochs: int
    q: int
    lr: float
    upsample: int
    device: str
    seed: int
    pupil_recovery: bool
    crop_px: int = 0                 # centred square crop of the raw images (0: whole field)
    init: str = "seeded"             # "seeded" (physics-seeded pipeline) | "random" (paper's training)
    representation: str = "lowrank"  # "lowrank" | "mlp" (random init always trains the mlp)


def _dspin(lo: float, hi: float, value: float, decimals: int, step: float, suffix: str = "") -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setRange(lo, hi)
    box.setDecimals(decimals)
    box.setSingleStep(step)
    box.setValue(value)
    if suffix:
        box.setSuffix(suffix)
    return box


def _spin(lo: int, hi: int, value: int, tip: str) -> QSpinBox:
    box = QSpinBox()
    box.setRange(lo, hi)
    box.setValue(value)
    box.setToolTip(tip)
    return box


class ParameterForm(QWidget):
    """Preset, crop, z range, pipeline (init, representation), planes, epochs, Q, learning rate,
    upsample, device, seed, pupil recovery. ``changed`` fires on any edit."""

    changed = Signal()

    def __init__(self, defaults: TrainingParameters, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._raw = None
        self.preset = QComboBox()
        self.preset.addItems(PRESETS)
        self.preset.setToolTip("quick look: a centred crop and ±10 µm, about a minute on a CPU; "
                               "full field: the whole image and the paper's ±20 µm")
        self.crop = _spin(0, 100_000, defaults.crop_px,
                          "reconstruct a centred square of this many raw pixels per side (0: the whole field)")
        self.crop.setSpecialValueText("whole field")
        self.crop.setSuffix(" px")
        self.z_min = _dspin(-5000, 5000, defaults.z_min_um, 2, 1.0, " µm")
        self.z_max = _dspin(-5000, 5000, defaults.z_max_um, 2, 1.0, " µm")
        self.z_min.setToolTip("lowest depth of the reconstructed volume (µm, DESIGN.md sign)")
        self.z_max.setToolTip("highest depth of the reconstructed volume (µm)")
        self.init = QComboBox()
        self.init.addItems(INITS)
        self.init.setCurrentText(defaults.init)
        self.init.setToolTip("seeded: conventional seed at z-Nyquist planes, low-rank initialisation, "
                             "self-supervised polish (default); random: the paper's training from a "
                             "random start (always the MLP representation)")
        self.representation = QComboBox()
        self.representation.addItems(REPRESENTATIONS)
        self.representation.setCurrentText(defaults.representation)
        self.representation.setToolTip("lowrank: band-limited low-rank field (default, exact, tiny); "
                                       "mlp: the paper's feature plane + MLP")
        self.n_z = _spin(2, 1001, defaults.n_z, "MLP: planes of the z feature line u(z); any z is interpolated")
        self.epochs = _spin(1, 1000, defaults.epochs, "random init: training epochs")
        self.q = _spin(1, 512, defaults.q, "MLP: feature channels Q of the plane M and line u")
        self.lr = _dspin(1e-6, 1.0, defaults.lr, 6, 1e-4)
        self.lr.setToolTip("random init: Adam learning rate (decays x0.1 on the trainer's schedule)")
        self.upsample = _spin(0, 16, defaults.upsample, "hr pixels per raw pixel; 0 = smallest that fits")
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda"])
        self.device.setCurrentText(defaults.device)
        self.device.setToolTip("auto = CUDA when available, else CPU")
        self.seed = _spin(0, 2**31 - 1, defaults.seed, "random seed (initialisation and z sampling)")
        self.pupil = QCheckBox("recover pupil aberrations")
        self.pupil.setChecked(defaults.pupil_recovery)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        for label, w in (("preset", self.preset), ("field", self.crop), ("z min", self.z_min),
                         ("z max", self.z_max), ("init", self.init), ("representation", self.representation),
                         ("z planes", self.n_z), ("epochs", self.epochs), ("Q", self.q),
                         ("learning rate", self.lr), ("upsample", self.upsample), ("device", self.device),
                         ("seed", self.seed), ("pupil", self.pupil)):
            form.addRow(label, w)
        self.preset.currentIndexChanged.connect(self._preset_changed)
        self.init.currentIndexChanged.connect(self._pipeline_changed)
        self.representation.currentIndexChanged.connect(self._pipeline_changed)
        emit = lambda *_: self.changed.emit()  # noqa: E731
        for box in (self.crop, self.n_z, self.epochs, self.q, self.upsample, self.seed,
                    self.z_min, self.z_max, self.lr):
            box.valueChanged.connect(emit)
        for combo in (self.preset, self.init, self.representation, self.device):
            combo.currentIndexChanged.connect(emit)
        self.pupil.toggled.connect(emit)
        self._pipeline_changed()

    def _pipeline_changed(self, *_) -> None:
        """Random init trains the MLP; epochs/lr belong to it, planes/Q to the MLP."""
        random = self.init.currentText() == "random"
        if random and self.representation.currentText() != "mlp":
            self.representation.setCurrentText("mlp")
        self.representation.setEnabled(not random)
        mlp = self.representation.currentText() == "mlp"
        self.epochs.setEnabled(random)
        self.lr.setEnabled(random)
        self.n_z.setEnabled(mlp)
        self.q.setEnabled(mlp)

    def _preset_changed(self, *_) -> None:
        if self._raw is not None:
            self.apply_preset(self._raw)

    def values(self) -> TrainingParameters:
        lo, hi = sorted((self.z_min.value(), self.z_max.value()))
        return TrainingParameters(
            z_min_um=lo, z_max_um=hi, n_z=self.n_z.value(), epochs=self.epochs.value(),
            q=self.q.value(), lr=self.lr.value(), upsample=self.upsample.value(),
            device=self.device.currentText(), seed=self.seed.value(),
            pupil_recovery=self.pupil.isChecked(), crop_px=self.crop.value(),
            init=self.init.currentText(), representation=self.representation.currentText(),
        )

    def set_values(self, p: TrainingParameters) -> None:
        self.z_min.setValue(p.z_min_um)
        self.z_max.setValue(p.z_max_um)
        self.n_z.setValue(p.n_z)
        self.epochs.setValue(p.epochs)
        self.q.setValue(p.q)
        self.lr.setValue(p.lr)
        self.upsample.setValue(p.upsample)
        self.device.setCurrentText(p.device)
        self.seed.setValue(p.seed)
        self.pupil.setChecked(p.pupil_recovery)
        self.crop.setValue(p.crop_px)
        self.init.setCurrentText(p.init)
        self.representation.setCurrentText(p.representation)

    def quick(self) -> bool:
        return self.preset.currentText() == PRESETS[0]

    def fill_from_raw(self, raw) -> None:
        """Use the optics' upsampling and apply the preset to this data set."""
        self._raw = raw
        self.upsample.setValue(int(raw.optics.upsample))
        self.pupil.setChecked(not raw.is_simulated)  # real-data default: a real objective is no ideal disk
        self.apply_preset(raw)

    def apply_preset(self, raw) -> None:
        """z range centred on the file's stated defocus; the quick look also crops the field
        (not data with a calibrated pupil: the core cannot crop those, so they stay whole)."""
        z0 = float(raw.z_um) if raw.z_um is not None else 0.0
        half = QUICK_HALF_RANGE_UM if self.quick() else DEFAULT_HALF_RANGE_UM
        self.z_min.setValue(z0 - half)
        self.z_max.setValue(z0 + half)
        croppable = raw.optics.pupil is None
        size = min(raw.lr_shape)
        self.crop.setValue(QUICK_CROP_PX if self.quick() and croppable and size > QUICK_CROP_PX else 0)
