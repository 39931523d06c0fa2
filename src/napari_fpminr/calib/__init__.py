"""Self-calibration of the illumination: LED board geometry, per-LED brightness, background.

Qt-free core at the level of :mod:`napari_fpminr.recon` (uses optics, rawdata and the conventional
solver; never io, cli, volume or napari). :func:`iter_calibrate` fits a :class:`Calibration`;
:meth:`Calibration.apply` returns corrected :class:`~napari_fpminr.rawdata.RawData`.
"""

from .pipeline import METHODS, CalibrationProgress, calibrate, iter_calibrate
from .model import CALIBRATION_VERSION, Calibration
from .prepare import Preparation, PrepareOptions, iter_prepare, prepare

__all__ = ["CALIBRATION_VERSION", "METHODS", "Calibration", "CalibrationProgress", "Preparation", "PrepareOptions",
           "calibrate", "iter_calibrate", "iter_prepare", "prepare"]
