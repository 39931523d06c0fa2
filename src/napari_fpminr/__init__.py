"""napari-fpminr: Fourier ptychographic z-stacks as compact implicit neural representations.

The core (``optics``, ``recon``, ``io``, ``volume``, ``cli``) imports neither napari nor Qt;
the napari glue lives in ``napari_fpminr._napari``.
"""

__version__ = "0.1.0"
