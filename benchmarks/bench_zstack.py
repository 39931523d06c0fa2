"""Benchmark: a 161-plane z-stack by FPM-INR vs conventional per-plane FPM, measured in one run.

For each raw patch size (paper-like optics: λ 0.522 µm, NA 0.25, 10×, 3.45 µm pixel, 69 LEDs,
2× upsampling) a layered sample (thin layers at −12, 0, +12 µm) is simulated and reconstructed

* conventionally, plane by plane (the paper's protocol) — timed on ``--per-plane-sample`` planes
  spread over the range and extrapolated to all planes (exact when the sample is 0 = all planes);
* conventionally, all planes batched on the device (this package's fast default);
* with FPM-INR (default training settings) over the same z range.

Each method runs in its own child process so that its peak memory (RSS on CPU, allocated on
CUDA) is its own. Quality is the per-layer amplitude PSNR at each layer's depth against the
band-limited truth (scale fitted, on that layer's structure pixels), averaged over layers.
Storage compares the float32 amplitude+phase stack with the saved ``.fpminr`` file.

Run:  .venv/bin/python benchmarks/bench_zstack.py --sizes 64 128 256 [--device cuda] [--markdown out.md]
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


def _layer_psnr(render_at, truth) -> list[float]:
    from napari_fpminr.recon.metrics import psnr_scaled

    return [psnr_scaled(render_at(float(z)), truth.amplitude[i], mask=truth.mask(i))
            for i, z in enumerate(truth.z_um)]


def _simulate(size: int, seed: int):
    from napari_fpminr.optics.simulate import simulate

    return simulate(preset="layers", size=size, seed=seed)


def job_conventional(size: int, seed: int, planes: np.ndarray, mode: str, device: str) -> dict:
    """Time the conventional stack (``mode`` batched or per_plane) on ``planes``; PSNR per layer."""
    import torch

    from napari_fpminr.device import resolve_device
    from napari_fpminr.recon.conventional import reconstruct_stack

    dev = resolve_device(device)
    sim = _simulate(size, seed)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    stack = reconstruct_stack(sim.raw, planes, mode=mode, device=dev)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    result = {"time_s": elapsed, "peak_mb": _peak_memory_mb(dev), "planes": len(planes)}
    if all(np.min(np.abs(planes - z)) < 1e-6 for z in sim.truth.z_um):
        result["psnr"] = _layer_psnr(lambda z: stack.amplitude[int(np.argmin(np.abs(stack.z_um - z)))], sim.truth)
    return result


def job_fft_share(size: int, seed: int, planes: np.ndarray, device: str) -> dict:
    """Profile one batched iteration: share of operator time spent in FFTs."""
    from torch.profiler import ProfilerActivity, profile

    from napari_fpminr.device import resolve_device
    from napari_fpminr.recon.conventional import reconstruct_stack

    dev = resolve_device(device)
    sim = _simulate(size, seed)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=activities) as prof:
        reconstruct_stack(sim.raw, planes, iterations=1, mode="batched", device=dev)
    events = prof.key_averages()
    attr = "self_device_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    total = sum(getattr(e, attr) for e in events)
    fft = sum(getattr(e, attr) for e in events if "fft" in e.key.lower())
    return {"fft_share": fft / total if total else float("nan")}


def job_inr(size: int, seed: int, device: str, epochs: int | None) -> dict:
    import torch

    from napari_fpminr.device import resolve_device
    from napari_fpminr.io.model_file import save_model
    from napari_fpminr.recon.train import TrainConfig, iter_train

    dev = resolve_device(device)
    sim = _simulate(size, seed)
    config = TrainConfig(device=str(dev), seed=seed, **({"epochs": epochs} if epochs else {}))
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
    psnr = _layer_psnr(lambda z: model.render([z])[0][0], sim.truth)
    return {"time_s": elapsed, "peak_mb": _peak_memory_mb(dev), "psnr": psnr, "model_bytes": model_bytes}


def job_render_1024(device: str) -> dict:
    """Median time to decode one 1024² hr amplitude slice from a model (weights do not matter)."""
    import torch

    from napari_fpminr.device import resolve_device
    from napari_fpminr.optics.simulate import paper_optics
    from napari_fpminr.recon.inr import FPMINR, INRArchitecture
    from napari_fpminr.recon.model import Model

    dev = resolve_device(device)
    optics = paper_optics()
    arch = INRArchitecture((1024, 1024), -Z_RANGE_UM, Z_RANGE_UM)
    model = Model(FPMINR(arch, seed=0).to(dev), optics, (1024 // optics.upsample, 1024 // optics.upsample))
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

    return {"render_ms": median_ms(lambda z: model.render_parts([z], ("amplitude",))),
            "render_both_ms": median_ms(lambda z: model.render([z]))}


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


def bench_size(size: int, args) -> dict:
    from napari_fpminr.cli import z_planes

    planes = z_planes(-Z_RANGE_UM, Z_RANGE_UM, 2 * Z_RANGE_UM / (args.planes - 1))
    row = {"size": size, "hr": 2 * size}
    print(f"[{size}²] conventional batched, {len(planes)} planes ...", file=sys.stderr, flush=True)
    row["batched"] = in_child(job_conventional, size, args.seed, planes, "batched", args.device)
    sub = sample_planes(planes, args.per_plane_sample)
    print(f"[{size}²] conventional plane by plane, {len(sub)} planes ...", file=sys.stderr, flush=True)
    pp = in_child(job_conventional, size, args.seed, sub, "per_plane", args.device)
    pp["time_s"] *= len(planes) / len(sub)
    pp["extrapolated_from"] = len(sub) if len(sub) < len(planes) else None
    row["per_plane"] = pp
    row["fft"] = in_child(job_fft_share, size, args.seed, sample_planes(planes, 16), args.device)
    print(f"[{size}²] FPM-INR ...", file=sys.stderr, flush=True)
    row["inr"] = in_child(job_inr, size, args.seed, args.device, args.epochs)
    H = W = 2 * size
    row["stack_bytes"] = len(planes) * H * W * 4 * 2
    return row


def format_table(rows: list[dict], render: dict | None, machine: str, n_planes: int) -> str:
    lines = [
        f"Machine: {machine}. {n_planes} planes over ±{Z_RANGE_UM:g} µm, layered sample (−12, 0, +12 µm),",
        "paper-like optics (λ 0.522 µm, NA 0.25, 10×, 3.45 µm, 69 LEDs, 2× upsampling).",
        "",
        "| raw patch | method | time (s) | time/plane (ms) | vs plane-by-plane | vs batched | peak mem (MB) "
        "| PSNR per layer (dB) | mean PSNR | storage |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        pp, bt, inr = r["per_plane"], r["batched"], r["inr"]
        psnr_ref = bt.get("psnr")
        note = f" (extrapolated from {pp['extrapolated_from']} planes)" if pp.get("extrapolated_from") else ""
        methods = (("FPM plane by plane" + note, pp),
                   (f"FPM batched (FFT share {100 * r['fft']['fft_share']:.0f}%)", bt),
                   ("FPM-INR", inr))
        for name, res in methods:
            psnr = res.get("psnr") or (psnr_ref if res is pp else None)
            psnr_text = ", ".join(f"{p:.1f}" for p in psnr) if psnr else "–"
            mean_text = f"{np.mean(psnr):.1f}" if psnr else "–"
            if res is inr:
                storage = f"{inr['model_bytes'] / 1e6:.3f} MB ({r['stack_bytes'] / inr['model_bytes']:.0f}× smaller)"
            else:
                storage = f"{r['stack_bytes'] / 1e6:.1f} MB"
            lines.append(
                f"| {r['size']}² | {name} | {res['time_s']:.1f} | {1000 * res['time_s'] / n_planes:.1f} "
                f"| {pp['time_s'] / res['time_s']:.1f}× | {bt['time_s'] / res['time_s']:.2f}× "
                f"| {res['peak_mb']:.0f} | {psnr_text} | {mean_text} | {storage} |")
    if render:
        lines += ["", f"Decode of one 1024² hr slice from a model (median of 6): amplitude {render['render_ms']:.0f} ms, "
                      f"amplitude + phase {render['render_both_ms']:.0f} ms."]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--planes", type=int, default=161)
    parser.add_argument("--per-plane-sample", type=int, default=8,
                        help="planes timed in plane-by-plane mode (0: all; time is extrapolated)")
    parser.add_argument("--epochs", type=int, default=None, help="INR epochs (default: TrainConfig's)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)

    machine = machine_description(args.device)
    rows = [bench_size(size, args) for size in args.sizes]
    render = in_child(job_render_1024, args.device)
    table = format_table(rows, render, machine, args.planes)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
