"""Benchmark: FPM-INR z-stacks vs conventional per-plane FPM, measured in one run.

For each sample preset (``layers``: thin cell layers at −12, 0, +12 µm; ``tilted``: a stained
smear tilted over −4..+4 µm) and raw patch size (paper-like optics: λ 0.522 µm, NA 0.25, 10×,
3.45 µm pixel, 69 LEDs, 2× upsampling), the sample is simulated and reconstructed over ±20 µm

* conventionally, plane by plane (the paper's protocol) — timed on ``--per-plane-sample`` planes
  spread over the range and extrapolated to all planes (exact when the sample is 0 = all planes);
* conventionally, all 161 planes batched on the device (this package's fast default);
* with FPM-INR: the default (physics-seeded low-rank field), the seeded MLP option
  (``representation="mlp"``) and the paper's random-init training (``init="random"``).

Each method runs in its own child process so that its peak memory (RSS on CPU, allocated on
CUDA) is its own. Quality, from 161 rendered planes: per-layer amplitude PSNR at each layer's
depth against the band-limited truth (scale fitted, on that layer's structure pixels); the
all-in-focus PSNR (normal-variance fusion of the amplitudes) against the product of the layer
amplitudes; refocusing: the correlation of the slices at the first and last layer depth
(layers) and the median depth-map error with the sharpness measure, no raw data (tilted).
Storage compares the float32 amplitude+phase stack with the saved ``.fpminr`` file.

Run:  .venv/bin/python benchmarks/bench_zstack.py --sizes 64 128 [--presets layers tilted] [--device cuda]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

Z_RANGE_UM = 20.0


def _peak_memory_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _simulate(size: int, seed: int, preset: str = "layers"):
    from napari_fpminr.simulate import simulate

    return simulate(preset=preset, size=size, seed=seed)


def _quality(amplitude: np.ndarray, phase: np.ndarray, zs: np.ndarray, truth, preset: str) -> dict:
    """Per-layer PSNR, all-in-focus PSNR, and the refocusing figure of the preset."""
    from napari_fpminr.recon.metrics import psnr_scaled
    from napari_fpminr.volume import all_in_focus

    at = lambda z: int(np.argmin(np.abs(zs - z)))  # noqa: E731
    out = {"psnr": [psnr_scaled(amplitude[at(z)], truth.amplitude[i], mask=truth.mask(i))
                    for i, z in enumerate(truth.z_um)]}
    fused, _ = all_in_focus(amplitude, zs, patch=40, stride=8, measure="nv")
    out["aif"] = psnr_scaled(fused, np.prod(truth.amplitude, axis=0))
    if truth.z_um.size > 1:
        a, b = amplitude[at(truth.z_um[0])], amplitude[at(truth.z_um[-1])]
        out["corr"] = float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    else:
        _, depth = all_in_focus(amplitude, zs, patch=32, stride=8, phase=phase, measure="edges")
        ok = np.isfinite(truth.depth_um) & np.isfinite(depth)
        out["depth_err"] = float(np.median(np.abs(depth - truth.depth_um)[ok])) if ok.any() else float("nan")
    return out


def job_conventional(size: int, seed: int, planes: np.ndarray, mode: str, device: str, preset: str = "layers") -> dict:
    """Time the conventional stack (``mode`` batched or per_plane) on ``planes``; quality when all planes ran."""
    import torch

    from napari_fpminr.device import resolve_device
    from napari_fpminr.recon.conventional import reconstruct_stack

    dev = resolve_device(device)
    sim = _simulate(size, seed, preset)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    stack = reconstruct_stack(sim.raw, planes, mode=mode, device=dev)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    result = {"time_s": elapsed, "peak_mb": _peak_memory_mb(dev), "planes": len(planes)}
    if all(np.min(np.abs(planes - z)) < 1e-6 for z in sim.truth.z_um) and len(planes) > 16:
        result.update(_quality(stack.amplitude, stack.phase, stack.z_um, sim.truth, preset))
    return result


def job_inr(size: int, seed: int, device: str, planes: np.ndarray, preset: str, options: dict) -> dict:
    """Time one FPM-INR reconstruction (``options``: TrainConfig fields); quality from ``planes``."""
    import torch

    from napari_fpminr.device import resolve_device
    from napari_fpminr.io.model_file import save_model
    from napari_fpminr.recon.train import TrainConfig, iter_train

    dev = resolve_device(device)
    sim = _simulate(size, seed, preset)
    config = TrainConfig(device=str(dev), seed=seed, **options)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    model = None
    for event in iter_train(sim.raw, -Z_RANGE_UM, Z_RANGE_UM, config):
        model = event.model if event.model is not None else model
    if dev.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        path = save_model(model, Path(tmp) / "m.fpminr")
        model_bytes = path.stat().st_size
    amplitude, phase = model.render(planes)
    result = {"time_s": elapsed, "peak_mb": _peak_memory_mb(dev), "model_bytes": model_bytes,
              **_quality(amplitude, phase, planes, sim.truth, preset)}
    guard = (model.meta.get("training") or {}).get("polish_stopped_by_guard_at")
    if guard:
        result["guard_stop"] = guard
    return result


def job_render_1024(device: str) -> dict:
    """Median time to decode one 1024² hr slice, per representation (weights do not matter)."""
    import torch

    from napari_fpminr.device import resolve_device
    from napari_fpminr.simulate import paper_optics
    from napari_fpminr.recon.inr import FPMINR, INRArchitecture
    from napari_fpminr.recon.lowrank import LowRankArchitecture, LowRankField
    from napari_fpminr.recon.model import Model

    dev = resolve_device(device)
    optics = paper_optics()
    lr = (1024 // optics.upsample, 1024 // optics.upsample)
    mlp = FPMINR(INRArchitecture((1024, 1024), -Z_RANGE_UM, Z_RANGE_UM), seed=0)
    lowrank = LowRankField(LowRankArchitecture.for_optics(optics, lr, -Z_RANGE_UM, Z_RANGE_UM, 41, 8))
    with torch.no_grad():
        lowrank.coefficients.normal_()
        lowrank.z_line.normal_()

    def median_ms(render) -> float:
        times = []
        for i in range(7):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            render(-3.3 + i)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        return 1000 * float(np.median(times[1:]))

    out = {}
    for name, net in (("lowrank", lowrank), ("mlp", mlp)):
        model = Model(net.to(dev), optics, lr)
        out[name] = {"amplitude_ms": median_ms(lambda z: model.render_parts([z], ("amplitude",))),
                     "both_ms": median_ms(lambda z: model.render([z]))}
    return out


def in_child(fn, *args) -> dict:
    """Run ``fn(*args)`` in a fresh spawned process (own peak memory, no shared caches)."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(fn, args)


def sample_planes(planes: np.ndarray, k: int) -> np.ndarray:
    if k <= 0 or k >= len(planes):
        return planes
    return planes[np.linspace(0, len(planes) - 1, k).round().astype(int)]


def machine_description(device: str) -> str:
    import torch

    from napari_fpminr.device import resolve_device

    dev = resolve_device(device)
    if dev.type == "cuda":
        return f"{torch.cuda.get_device_name(dev)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} (CPU, {torch.get_num_threads()} threads)"


INR_METHODS = {  # benchmark row -> TrainConfig fields
    "FPM-INR (default: seeded low-rank)": {},
    "FPM-INR seeded MLP (--representation mlp)": {"representation": "mlp"},
    "FPM-INR paper (--init random)": {"init": "random", "representation": "mlp"},
}


def bench_case(preset: str, size: int, args) -> dict:
    from napari_fpminr.recon.schedule import default_z_planes

    planes = default_z_planes(-Z_RANGE_UM, Z_RANGE_UM, 2 * Z_RANGE_UM / (args.planes - 1))
    row = {"preset": preset, "size": size, "hr": 2 * size}
    say = lambda what: print(f"[{preset} {size}²] {what} ...", file=sys.stderr, flush=True)  # noqa: E731
    say(f"conventional batched, {len(planes)} planes")
    row["batched"] = in_child(job_conventional, size, args.seed, planes, "batched", args.device, preset)
    sub = sample_planes(planes, args.per_plane_sample)
    say(f"conventional plane by plane, {len(sub)} planes")
    pp = in_child(job_conventional, size, args.seed, sub, "per_plane", args.device, preset)
    pp["time_s"] *= len(planes) / len(sub)
    pp["extrapolated_from"] = len(sub) if len(sub) < len(planes) else None
    row["per_plane"] = pp
    row["inr"] = {}
    for name, options in INR_METHODS.items():
        if size > args.max_size_all_methods and options:
            continue
        say(name)
        row["inr"][name] = in_child(job_inr, size, args.seed, args.device, planes, preset, options)
    row["stack_bytes"] = len(planes) * row["hr"] ** 2 * 4 * 2
    return row


def _fmt_quality(res: dict) -> str:
    if "psnr" not in res:
        return "– | – | –"
    psnr = ", ".join(f"{p:.1f}" for p in res["psnr"])
    refocus = f"corr {res['corr']:.2f}" if "corr" in res else f"depth {res['depth_err']:.2f} µm"
    return f"{psnr} | {res['aif']:.1f} | {refocus}"


def format_table(rows: list[dict], render: dict | None, machine: str, n_planes: int) -> str:
    lines = [
        f"Machine: {machine}. {n_planes} planes over ±{Z_RANGE_UM:g} µm, paper-like optics "
        "(λ 0.522 µm, NA 0.25, 10×, 3.45 µm, 69 LEDs, 2× upsampling).",
        "",
        "| sample | raw | method | time (s) | vs plane-by-plane | vs batched | peak mem (MB) "
        "| PSNR per layer (dB) | all-in-focus (dB) | refocusing | storage |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        pp, bt = r["per_plane"], r["batched"]
        note = f" (extrapolated from {pp['extrapolated_from']} planes)" if pp.get("extrapolated_from") else ""
        methods = [("FPM plane by plane" + note, pp), ("FPM batched", bt)] + list(r["inr"].items())
        for name, res in methods:
            quality = _fmt_quality(bt if res is pp else res)
            if "model_bytes" in res:
                storage = f"{res['model_bytes'] / 1e6:.3f} MB ({r['stack_bytes'] / res['model_bytes']:.0f}×)"
                if res.get("guard_stop"):
                    name += f" [guard stop {res['guard_stop']}]"
            else:
                storage = f"{r['stack_bytes'] / 1e6:.1f} MB"
            lines.append(
                f"| {r['preset']} | {r['size']}² | {name} | {res['time_s']:.1f} "
                f"| {pp['time_s'] / res['time_s']:.1f}× | {bt['time_s'] / res['time_s']:.2f}× "
                f"| {res['peak_mb']:.0f} | {quality} | {storage} |")
    if render:
        lines += ["", "Decode of one 1024² hr slice (median of 6): " + "; ".join(
            f"{k}: amplitude {v['amplitude_ms']:.0f} ms, amplitude + phase {v['both_ms']:.0f} ms"
            for k, v in render.items()) + "."]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--planes", type=int, default=161)
    parser.add_argument("--per-plane-sample", type=int, default=8,
                        help="planes timed in plane-by-plane mode (0: all; time is extrapolated)")
    parser.add_argument("--presets", nargs="+", default=["layers", "tilted"], choices=["layers", "tilted"])
    parser.add_argument("--max-size-all-methods", type=int, default=128,
                        help="above this raw size only the default INR row runs (the others take minutes)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)

    machine = machine_description(args.device)
    rows = [bench_case(preset, size, args) for size in args.sizes for preset in args.presets]
    render = in_child(job_render_1024, args.device)
    table = format_table(rows, render, machine, args.planes)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
