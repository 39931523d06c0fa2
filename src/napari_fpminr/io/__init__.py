"""Raw-data input/output: format detection, readers (one module per format) and writers.

``read_raw(path)`` -> :class:`RawData`; ``write_raw(raw, path)``; ``detect_format(path)``.
"""

from .atomic import atomic_write
from .formats import detect_format, read_raw
from .raw_writers import write_raw
from ..rawdata import RawData

__all__ = ["RawData", "atomic_write", "detect_format", "read_raw", "write_raw"]
