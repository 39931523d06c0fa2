"""File > Open Sample: a simulated raw data set to train on, and a small pretrained model.

* ``sample_raw``: the simulator's ``"tilted"`` preset, a blood-smear-like slide tilted through
  the depth of field, with the paper-like optics (``optics.presets.paper_optics``).
* ``sample_model``: ``data/tilted_smear.fpminr`` shipped in the package, an FPM-INR trained on
  that set by ``scripts/make_sample_model.py``; it opens as lazy layers instantly.
"""

from __future__ import annotations

from importlib.resources import as_file, files

from ._layers import model_layer_data, raw_layer_data

SAMPLE_SIZE = 64          # raw pixels per side of the simulated sample
SAMPLE_SEED = 0
SAMPLE_MODEL = "tilted_smear.fpminr"


def simulated_raw(size: int = SAMPLE_SIZE, seed: int = SAMPLE_SEED):
    """RawData of the simulated tilted smear (the same set the shipped model was trained on)."""
    from ..simulate import simulate

    return simulate(preset="tilted", size=size, seed=seed).raw


def sample_raw():
    from ._viewer import watch

    watch()  # the raw stack opens on its brightest bright-field LED
    data, meta, kind = raw_layer_data(simulated_raw())
    meta["name"] = "tilted smear (raw)"
    return [(data, meta, kind)]


def sample_model_path():
    """Traversable of the shipped model file."""
    return files("napari_fpminr._napari") / "data" / SAMPLE_MODEL


def sample_model():
    from ..io.model_file import load_model
    from ._viewer import watch

    watch()  # z overlay in µm
    with as_file(sample_model_path()) as path:
        model = load_model(path, device="cpu")
    return model_layer_data(model, name="pretrained")
