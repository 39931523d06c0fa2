"""napari glue for napari-fpminr: reader, writer, dock widget, loss plot, lazy layers, samples.

Everything here calls the Qt-free core (``io``, ``optics``, ``recon``, ``volume``); nothing in
the core imports this package.
"""
