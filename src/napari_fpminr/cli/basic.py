"""``fpminr info``, ``simulate`` and ``gui``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import FPMInputError
from .common import MODEL_SUFFIX, _read_raw


def cmd_info(args) -> int:
    path = Path(args.path)
    if path.suffix.lower() == MODEL_SUFFIX:
        from ..io.model_file import model_info
        from ..io.mosaic_file import is_mosaic

        if is_mosaic(path):
            print(_mosaic_info(path))
            return 0
        from ..colour.file import colour_model_info, is_colour_model
        from ..colour.mosaic import colour_mosaic_info, is_colour_mosaic

        if is_colour_mosaic(path):
            print(colour_mosaic_info(path))
            return 0
        if is_colour_model(path):
            print(colour_model_info(path))
            return 0

        print(model_info(path))
        return 0
    if path.suffix.lower() == ".npz" and path.exists():
        from ..io.stack_files import read_stack_npz

        s = read_stack_npz(path)
        print(f"stack {path}: {s.amplitude.shape[0]} planes of {s.amplitude.shape[1]}x{s.amplitude.shape[2]} px, "
              f"pixel {s.dx_um:.4f} um, z {np.min(s.z_um):.3f}..{np.max(s.z_um):.3f} um"
              + (", with depth map" if s.depth_um is not None else ""))
        return 0
    raw = _read_raw(args, path)
    print(f"raw data {path} ({raw.meta.get('format', 'unknown format')})")
    print(f"images         {raw.n_leds} x {raw.lr_shape[0]} x {raw.lr_shape[1]} px"
          f"  -> reconstruction {raw.hr_shape[0]} x {raw.hr_shape[1]} px")
    print(raw.optics.summary())
    if raw.z_um is not None:
        print(f"stated defocus {raw.z_um:+.2f} um")
    if getattr(args, "check", False):
        from ..calib.check import check_measurement

        print()
        print(check_measurement(raw, device=getattr(args, "device", "auto")).text())
    return 0


def cmd_simulate(args) -> int:
    from ..io import write_raw
    from ..io.safety import check_output_path, writing
    from ..simulate import simulate

    out = check_output_path(Path(args.out))
    if not 8 <= args.size <= 4096:
        raise FPMInputError(f"--size must be 8..4096 raw pixels, got {args.size}")
    sim = simulate(preset=args.preset, size=args.size, seed=args.seed, noise=args.noise)
    raw_path = write_raw(sim.raw, out)
    truth_path = out.with_name(out.stem + ".truth.npz")
    with writing(truth_path):
        sim.truth.save(truth_path)
    print(f"raw data   {raw_path}")
    print(f"truth      {truth_path}")
    return 0


def cmd_gui(args) -> int:
    """napari with the widget, in its own process: the napari layer sits above the core's command line,
    which therefore imports nothing of it (tests/test_import_layers.py)."""
    import subprocess
    import sys

    return subprocess.call([sys.executable, "-m", "napari_fpminr._napari.launch", *([args.path] if args.path else [])])


def _mosaic_info(path: Path) -> str:
    """Text for ``fpminr info`` of a whole-slide mosaic model: frame, tiles, z range, size."""
    from ..io.mosaic_file import load_mosaic
    from ..tiles.focus import best_focus_text

    m = load_mosaic(path)
    lay = m.layout
    H, W = m.hr_shape
    size = path.stat().st_size
    stack = 161 * 2 * H * W * 4
    return "\n".join([
        f"FPM-INR mosaic model {path.name}: {lay.n_tiles} tiles of {lay.tile} raw px (overlap {lay.overlap}) "
        f"over a {lay.frame_shape[0]}x{lay.frame_shape[1]} px raw frame",
        f"reconstruction {H} x {W} px, pixel {m.dx_hr_um:.4f} um, z {m.z_min_um:g}..{m.z_max_um:g} um",
        f"file size      {size / 1e6:.3f} MB; a 161-plane float32 amplitude+phase stack of the whole field is "
        f"{stack / 1e6:.1f} MB: compression {stack / size:.1f}x",
        m.summary().splitlines()[-1],
        best_focus_text(m),
    ])
