"""The training-parameter form of the reconstruction widget (plain Qt, no napari).

Values are read into :class:`TrainingParameters` (units in the names); ``fill_from_raw``
pre-fills the form from a raw data set: the z range is centred on the defocus the file states
(``RawData.z_um``, 0 when unknown) and the upsampling is the one the optics need.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    """z range, planes, epochs, Q, learning rate, upsample, device, seed, pupil recovery."""

    def __init__(self, defaults: TrainingParameters, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.z_min = _dspin(-5000, 5000, defaults.z_min_um, 2, 1.0, " µm")
        self.z_max = _dspin(-5000, 5000, defaults.z_max_um, 2, 1.0, " µm")
        self.z_min.setToolTip("lowest depth of the reconstructed volume (µm, DESIGN.md sign)")
        self.z_max.setToolTip("highest depth of the reconstructed volume (µm)")
        self.n_z = _spin(2, 1001, defaults.n_z, "planes of the z feature line u(z); any z is interpolated")
        self.epochs = _spin(1, 1000, defaults.epochs, "training epochs")
        self.q = _spin(1, 512, defaults.q, "feature channels Q of the plane M and line u")
        self.lr = _dspin(1e-6, 1.0, defaults.lr, 6, 1e-4)
        self.lr.setToolTip("Adam learning rate (decays x0.1 on the trainer's schedule)")
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
        for label, w in (("z min", self.z_min), ("z max", self.z_max), ("z planes", self.n_z),
                         ("epochs", self.epochs), ("Q", self.q), ("learning rate", self.lr),
                         ("upsample", self.upsample), ("device", self.device), ("seed", self.seed),
                         ("pupil", self.pupil)):
            form.addRow(label, w)

    def values(self) -> TrainingParameters:
        lo, hi = sorted((self.z_min.value(), self.z_max.value()))
        return TrainingParameters(
            z_min_um=lo, z_max_um=hi, n_z=self.n_z.value(), epochs=self.epochs.value(),
            q=self.q.value(), lr=self.lr.value(), upsample=self.upsample.value(),
            device=self.device.currentText(), seed=self.seed.value(),
            pupil_recovery=self.pupil.isChecked(),
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

    def fill_from_raw(self, raw) -> None:
        """Centre z on the file's stated defocus and use the optics' upsampling."""
        z0 = float(raw.z_um) if raw.z_um is not None else 0.0
        self.z_min.setValue(z0 - DEFAULT_HALF_RANGE_UM)
        self.z_max.setValue(z0 + DEFAULT_HALF_RANGE_UM)
        self.upsample.setValue(int(raw.optics.upsample))
