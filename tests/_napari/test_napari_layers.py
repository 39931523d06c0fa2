"""Layer builders: z sampling, pyramid levels, and that model layers decode lazily."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from napari_fpminr._napari._layers import (
    KIND_KEY,
    MODEL_KEY,
    Z_KEY,
    model_layer_data,
    pyramid_steps,
    z_planes,
)


def test_z_planes_are_inclusive_and_uniform():
    z = z_planes(-20, 20, 0.25)
    assert len(z) == 161 and z[0] == -20 and z[-1] == pytest.approx(20)
    assert np.allclose(np.diff(z), 0.25)
    assert list(z_planes(3, 1, 1)) == [1, 2, 3]
    assert list(z_planes(0, 0.5, 1.0)) == [0.0]
    with pytest.raises(ValueError):
        z_planes(0, 1, 0)


def test_pyramid_only_for_large_fields():
    assert pyramid_steps((512, 512)) == [1]
    assert pyramid_steps((2048, 1500)) == [1, 2, 4, 8]


@pytest.fixture(scope="module")
def tiny_model():
    from napari_fpminr.simulate import simulate
    from napari_fpminr.recon.train import TrainConfig, train

    raw = simulate(preset="tilted", size=24, seed=2).raw
    return train(raw, -6.0, 6.0, TrainConfig(epochs=1, n_z=3, q=4, device="cpu"))


class _CountingNet:
    """Wraps the model's rendering to record how many z planes each decode asks for (whatever
    the representation behind it)."""

    def __init__(self, model, monkeypatch):
        self.calls: list[int] = []
        for name in ("render_parts",):   # render() goes through it too
            original = getattr(model, name)

            def counted(z_um, *args, _original=original, **kwargs):
                self.calls.append(int(np.asarray(z_um).size))
                return _original(z_um, *args, **kwargs)

            monkeypatch.setattr(model, name, counted)


def test_model_layers_decode_only_viewed_slices(tiny_model, monkeypatch):
    counter = _CountingNet(tiny_model, monkeypatch)
    z = z_planes(-6, 6, 0.5)
    (phase, phase_meta, _), (amp, amp_meta, kind) = model_layer_data(tiny_model, z, name="t")
    assert kind == "image" and isinstance(amp, da.Array) and isinstance(phase, da.Array)
    assert amp.shape == (25, *tiny_model.hr_shape) and amp.chunksize[0] == 1
    assert sum(counter.calls) <= 1              # only the contrast estimate: one plane
    lo, hi = amp_meta["contrast_limits"]
    assert hi > lo
    assert amp_meta["metadata"][MODEL_KEY] is tiny_model and amp_meta["metadata"][KIND_KEY] == "amplitude"
    assert np.array_equal(amp_meta["metadata"][Z_KEY], z)
    assert amp_meta["scale"][0] == pytest.approx(0.5) and amp_meta["translate"][0] == pytest.approx(-6)
    counter.calls.clear()
    plane = np.asarray(amp[7])
    assert sum(counter.calls) == 1 and plane.shape == tuple(tiny_model.hr_shape)
    expected, _ = tiny_model.render([z[7]])
    np.testing.assert_allclose(plane, expected[0], rtol=1e-5, atol=1e-6)


def test_writer_saves_the_model_behind_a_layer(tiny_model, tmp_path, monkeypatch):
    from napari_fpminr._napari import _writer
    from napari_fpminr.io.model_file import load_model

    shown = []
    monkeypatch.setattr(_writer, "show_error", shown.append)
    _, (_amp, meta, _) = model_layer_data(tiny_model, z_planes(-6, 6, 3), name="t")
    written = _writer.write_model(str(tmp_path / "saved"), None, meta)
    assert written == [str(tmp_path / "saved.fpminr")]
    assert load_model(written[0]).model_id == tiny_model.model_id
    assert _writer.write_model(str(tmp_path / "x.fpminr"), np.zeros((2, 2)), {"name": "plain", "metadata": {}}) == []
    assert len(shown) == 1 and "plain" in shown[0] and not (tmp_path / "x.fpminr").exists()
