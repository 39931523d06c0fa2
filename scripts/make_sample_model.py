"""Train the small FPM-INR shipped as File > Open Sample > "Pretrained FPM-INR z-stack".

    .venv/bin/python scripts/make_sample_model.py

Trains on exactly the raw set of the "Simulated tilted blood smear" sample
(``_napari._sample_data.simulated_raw``: tilted preset, 64² raw px, seed 0) over ±20 µm on the
CPU with the default pipeline (seeded low-rank field), and writes src/napari_fpminr/_napari/data/tilted_smear.fpminr
(must stay < 1 MB). Prints the training summary and the file size.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

TARGET = Path(__file__).resolve().parents[1] / "src" / "napari_fpminr" / "_napari" / "data" / "tilted_smear.fpminr"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=TARGET)
    args = parser.parse_args(argv)

    from napari_fpminr._napari._sample_data import simulated_raw
    from napari_fpminr.io.model_file import load_model, save_model
    from napari_fpminr.recon.train import TrainConfig, train

    raw = simulated_raw()
    t0 = time.perf_counter()
    model = train(raw, -20.0, 20.0, TrainConfig(device="cpu", seed=0))
    print(f"trained in {time.perf_counter() - t0:.1f} s: {model!r}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, args.out)
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({size / 1024:.0f} KiB)")
    if size >= 1_000_000:
        print("error: the sample model must stay under 1 MB", file=sys.stderr)
        return 1
    again = load_model(args.out, device="cpu")
    assert again.model_id == model.model_id, "round trip changed the model"
    return 0


if __name__ == "__main__":
    sys.exit(main())
