"""A colour model in napari: one lazy RGB z-stack layer (z in µm), per-channel layers hidden."""

import numpy as np
import pytest
import torch

from napari_fpminr.colour.file import save_colour_model
from napari_fpminr.colour.model import ChannelRegistration, ColourModel
from napari_fpminr.colour.stained import simulate_stained
from napari_fpminr.recon.lowrank import LowRankArchitecture, LowRankField
from napari_fpminr.recon.model import Model


def _colour_model(size=24):
    s = simulate_stained(size, seed=3)
    channels, regs = [], []
    for c, raw in enumerate(s.raws):
        arch = LowRankArchitecture.for_optics(raw.optics, raw.lr_shape, -4.0, 4.0, 5, 2)
        z = np.linspace(-4.0, 4.0, 5)
        fields = torch.as_tensor(np.stack([s.truth[c] * (1 - 0.01 * abs(zz)) for zz in z]).astype(np.complex64))
        channels.append(Model(LowRankField.from_stack(arch, fields, z), raw.optics, raw.lr_shape))
        regs.append(ChannelRegistration(raw.optics.wavelength_um, 0.0, 0.0, (0.0, 0.0), 1.0))
    return ColourModel(tuple(channels), tuple(regs))


@pytest.fixture
def colour_file(tmp_path):
    return save_colour_model(_colour_model(), tmp_path / "slide.fpminr")


def test_reader_opens_a_colour_model_as_one_lazy_rgb_stack(colour_file):
    from napari_fpminr._napari._reader import get_reader

    layers = get_reader(str(colour_file))(str(colour_file))
    *channels, (rgb, meta, kind) = layers
    assert kind == "image" and meta["rgb"] and meta.get("visible", True)
    assert rgb.dtype == np.uint8 and rgb.ndim == 4 and rgb.shape[-1] == 3
    assert rgb.chunks[0] == (1,) * rgb.shape[0]  # one decode per z-slice, on demand
    assert meta["axis_labels"][0] == "z (µm)" and meta["units"][0] == "µm"
    z0, step = meta["translate"][0], meta["scale"][0]
    assert z0 == pytest.approx(-4.0) and z0 + step * (rgb.shape[0] - 1) == pytest.approx(4.0)
    model = meta["metadata"]["fpminr_colour_model"]
    np.testing.assert_array_equal(np.asarray(rgb[2]), model.rgb([z0 + 2 * step])[0])
    assert len(channels) == 6 and not any(m.get("visible", True) for _, m, _ in channels)
    assert {m["name"].split()[-2] for _, m, _ in channels} == {"red", "green", "blue"}
    # the slide's background is white, the stained cells are not
    img = np.asarray(rgb[rgb.shape[0] // 2]).reshape(-1, 3)
    assert np.percentile(img, 90, axis=0).min() >= 245
    assert img.min() < 150


@pytest.mark.gui
def test_colour_stack_on_a_real_canvas(make_napari_viewer, colour_file):
    viewer = make_napari_viewer(show=True)
    layers = viewer.open(str(colour_file), plugin="napari-fpminr")
    rgb = layers[-1]
    assert rgb.rgb and rgb.visible and all(not layer.visible for layer in layers[:-1])
    viewer.reset_view()
    shot = np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3]
    pixels = shot.reshape(-1, 3).astype(float)
    image = pixels[pixels.max(axis=1) > 20]  # the slide, not the black canvas around it
    assert image.shape[0] > 0.2 * pixels.shape[0]
    assert np.percentile(image, 97, axis=0).min() > 240  # white glass
    stained = image[image.min(axis=1) < 200]
    assert stained.shape[0] > 0.1 * image.shape[0]  # and the cells, eosin pink: green absorbed most
    assert np.median(stained[:, 1]) < min(np.median(stained[:, 0]), np.median(stained[:, 2]))


def test_widget_colour_section_trains_three_channels_in_turn(make_napari_viewer, qtbot):
    from napari_fpminr._napari._layers import raw_layer_data
    from napari_fpminr._napari._widget import ReconstructionWidget

    viewer = make_napari_viewer()
    slide = simulate_stained(24, seed=4)
    for name, raw in zip(("blue", "red", "green"), (slide.raws[2], slide.raws[0], slide.raws[1]), strict=True):
        data, meta, _ = raw_layer_data(raw)
        viewer.add_image(data, **dict(meta, name=name))
    widget = ReconstructionWidget(viewer)  # kept: the panel is its child
    panel = widget.colour_panel
    assert [c.currentText() for c in panel.combos] == ["red", "green", "blue"]  # preselected by wavelength
    panel.crop.setValue(0)
    panel.z_min.setValue(-4)
    panel.z_max.setValue(4)
    panel.train_overrides = {"polish_steps": 8}
    from napari_fpminr.colour.focus import ScanOptions

    panel.scan = ScanOptions(half_range_um=5, step_um=2, crop_px=24)
    stages = []
    panel.start()
    panel.worker.yielded.connect(lambda ev: stages.append((ev.stage, ev.channel)))
    qtbot.waitUntil(lambda: panel.worker is None, timeout=300_000)
    assert panel.progress.value() == 1000
    assert [c for s, c in stages if s == "reconstruct"] == sorted(c for s, c in stages if s == "reconstruct")
    assert all(len(plot.data()[0]) > 0 for plot in panel.loss_plots)  # a loss curve per channel
    rgb = viewer.layers[-1]
    assert rgb.rgb and rgb.name.endswith("RGB") and panel.model is not None
    assert abs(panel.model.registration[0].z_offset_um - 3.0) < 0.75


def test_colour_mosaic_browses_as_one_lazy_multiscale_rgb_layer(tmp_path, monkeypatch):
    """Three tiled channel mosaics (the tiles job API) + a colour header open as ONE multiscale RGB layer
    whose chunks are decoded only when asked for."""
    from napari_fpminr._napari import _colour
    from napari_fpminr._napari._reader import get_reader
    from napari_fpminr.colour.focus import ScanOptions
    from napari_fpminr.colour.mosaic import channel_paths, iter_colour_mosaic

    monkeypatch.setattr(_colour, "MOSAIC_CHUNK_PX", 48)  # a small slide, several chunks and levels
    monkeypatch.setattr(_colour, "MOSAIC_PREVIEW_PX", 48)
    slide = simulate_stained(64, seed=5)
    out = tmp_path / "slide.fpminr"
    events = list(iter_colour_mosaic(list(slide.raws), out, 40, 16, (-3.0, 3.0),
                                     train={"polish_steps": 5, "seed_iterations": 3},
                                     scan=ScanOptions(half_range_um=5, step_um=2, crop_px=32), device="cpu"))
    assert events[-1].result is not None and all(p.is_file() for p in channel_paths(out))
    (levels, meta, kind), = get_reader(str(out))(str(out))
    assert kind == "image" and meta["rgb"] and meta["multiscale"] and len(levels) >= 2
    assert all(lv.shape[-1] == 3 and lv.dtype == np.uint8 for lv in levels)
    assert levels[1].shape[1] == -(-levels[0].shape[1] // 2)  # each level half the one before
    assert meta["axis_labels"][0] == "z (µm)"
    lv = meta["metadata"]["fpminr_levels"]
    assert lv.decoded_chunks == 0  # nothing decoded until napari asks
    corner = np.asarray(levels[0][levels[0].shape[0] // 2, :48, :48])
    assert lv.decoded_chunks == 1  # one chunk of one plane
    assert np.percentile(corner.reshape(-1, 3), 90, axis=0).min() >= 240  # white glass
    assert corner.min() < 200  # stained cells
