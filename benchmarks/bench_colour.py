"""Benchmark: colour z-stacks (issue 20) — registration, quality, storage, decoding, real UConn RGB.

Parts (``--parts``, all by default):

* ``sim``: the simulated stained slide (H&E-like stains, red focus +3 µm / blue −3 µm from green,
  red shifted 0.4 raw px along x; paper optics per λ, ``--sim-size`` raw px). The colour job with
  ``fpm`` (one plane at the common focus) and ``inr`` (the default seeded low-rank model over
  ±4 µm); per channel: focus offset and lateral shift against the truth, amplitude PSNR against
  the band-limited truth next to the same channel reconstructed alone by the same method at its
  own true focus (fpm: that one plane; inr: a model over that focus ±4 µm, rendered there); the
  median and 95th percentile CIEDE2000 of the colour image against the band-limited truth.
  ``sim`` also runs the inr job without compaction and compacts it at each ``--compact-sweep``
  tolerance: ranks, file size, worst change of any decoded plane, PSNR and CIEDE2000.
* ``storage``: saved colour models of simulated slides of ``--sim-size`` and ``--storage-trained`` raw px
  trained over ±4 µm and of ``--sim-size`` over ±``--storage-wide-um``, against the float32 RGB stack
  (161 planes × 3 transmittances): compacted as the job does (weakest terms in the 16-bit log-polar
  code) and with every term float16, each channel's per-term codes, the measured change and the PSNR
  and CIEDE2000 at the common focus; random-coefficient rank-8 models as an upper bound.
* ``decode``: an RGB 1024² slice (three rank-8 low-rank channels, 512 raw px, 2× upsampling)
  against one channel's amplitude + phase slice of the same grid; median of ``--repeats``, ratio.
* ``real``: the UConn blood smear red 630 / green 532 / blue 475 nm files from ../shared/data:
  focus scan per channel around its stated depth, lateral registration, then each channel
  reconstructed (conventional, the common best focus) on the whole field and the residual shift
  between the registered channels there; also a colour model of a central crop over the common
  focus ±5 µm (for the user guide's screenshot, written to ``--cache``).
* ``mosaic`` (not in the default parts): a simulated ``--mosaic-size``² RGB slide as a colour
  mosaic (three tiled INR jobs of ``--mosaic-tile`` raw px + the colour header), then browsed
  through the napari layer data: the coarsest pyramid level of one plane, then one
  full-resolution chunk; chunks decoded and times.

Run:  .venv/bin/python benchmarks/bench_colour.py [--parts sim storage decode real] [--out r.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _psnr_vs_alone(slide, transmittance, method="fpm", iterations=25):
    from napari_fpminr.colour.register import fourier_shift
    from napari_fpminr.recon.conventional import reconstruct_stack
    from napari_fpminr.recon.metrics import psnr_scaled

    up = slide.raws[0].optics.upsample
    rows = []
    for c in range(3):
        if method == "fpm":
            alone = reconstruct_stack(slide.raws[c], [slide.focus_um[c]], iterations=iterations,
                                      device="cpu").amplitude[0]
        else:  # the same INR, trained on this channel alone over its own focus +-4 um
            from napari_fpminr.recon.train import TrainConfig, train

            f = slide.focus_um[c]
            alone = train(slide.raws[c], f - 4.0, f + 4.0, TrainConfig(device="cpu")).render([f])[0][0]
        moved = fourier_shift(torch.as_tensor(slide.truth[c]), *(v * up for v in slide.shift_raw_px[c])).numpy()
        rows.append({"colour_db": psnr_scaled(np.sqrt(transmittance[c]), np.abs(slide.truth[c])),
                     "alone_at_true_focus_db": psnr_scaled(alone, np.abs(moved))})
    return rows


def _registration_rows(slide, regs):
    up = slide.raws[0].optics.upsample
    out = []
    for c, r in enumerate(regs):
        out.append({"channel": "RGB"[c], "offset_um": r.z_offset_um,
                    "true_offset_um": slide.focus_um[c] - slide.focus_um[1],
                    "shift_raw_px": [v / up for v in r.shift_px],
                    "true_shift_raw_px": list(np.subtract(slide.shift_raw_px[c], slide.shift_raw_px[1])),
                    "white": r.white})
    return out


def part_sim(args, cache: Path) -> dict:
    from napari_fpminr.colour.colourmath import ciede2000, lab
    from napari_fpminr.colour.file import save_colour_model
    from napari_fpminr.colour.job import ColourJob, iter_colour, order_channels
    from napari_fpminr.colour.stained import simulate_stained
    from napari_fpminr.recon.train import TrainConfig

    slide = simulate_stained(args.sim_size, seed=0)
    raws, _ = order_channels(list(slide.raws))
    truth_lab = lab(np.moveaxis(slide.transmittance, 0, -1))
    res = {"size_raw_px": args.sim_size}
    for method in ("fpm", "inr"):
        job = ColourJob(method=method, z_min_um=-4.0, z_max_um=4.0, planes_um=np.array([0.0]), device="cpu",
                        train_config=TrainConfig(device="cpu"))
        t0 = time.perf_counter()
        for ev in iter_colour(raws, job):
            pass
        elapsed = time.perf_counter() - t0
        result = ev.result
        t = result.slices.transmittance[0] if method == "fpm" else result.render([0.0]).transmittance[0]
        de = ciede2000(lab(np.moveaxis(t, 0, -1)), truth_lab)
        res[method] = {"time_s": elapsed, "registration": _registration_rows(slide, result.registration),
                       "psnr": _psnr_vs_alone(slide, t, method), "ciede2000_median": float(np.median(de)),
                       "ciede2000_p95": float(np.percentile(de, 95)),
                       "residual_shift_raw_px": result.meta["residual_shift_raw_px"]}
        if method == "inr":
            path = save_colour_model(result, cache / "sim_colour.fpminr")
            res[method]["model_bytes"] = path.stat().st_size
            res[method]["hr_shape"] = list(result.hr_shape)
            res[method]["compaction"] = result.meta.get("compaction")
        print(method, json.dumps(res[method], default=float), flush=True)
    res["compaction_sweep"] = _compaction_sweep(raws, slide, truth_lab, cache, args.compact_sweep)
    return res


def _compaction_sweep(raws, slide, truth_lab, cache: Path, tolerances) -> dict:
    """The same inr colour job without compaction, then compacted at each tolerance: ranks, file size,
    worst change of any decoded plane (161 depths per channel), PSNR and CIEDE2000 at the common focus."""
    from napari_fpminr.colour.colourmath import ciede2000, lab
    from napari_fpminr.colour.file import save_colour_model
    from napari_fpminr.colour.job import ColourJob, iter_colour
    from napari_fpminr.io.model_file import STACK_PLANES
    from napari_fpminr.recon.metrics import psnr_scaled
    from napari_fpminr.recon.train import TrainConfig

    job = ColourJob(method="inr", z_min_um=-4.0, z_max_um=4.0, device="cpu", train_config=TrainConfig(device="cpu"),
                    compact_db=None)
    for ev in iter_colour(raws, job):
        pass
    full = ev.result
    H, W = full.hr_shape
    rgb_stack = STACK_PLANES * 3 * H * W * 4
    rows = []
    for tol in [None, *tolerances]:
        m = full if tol is None else full.compacted(tol)
        name = f"sim_colour_tol{'none' if tol is None else int(-tol)}.fpminr"
        size = save_colour_model(m, cache / name).stat().st_size
        worst = []
        for a, b in zip(full.channels, m.channels, strict=True):
            z = torch.linspace(a.z_min_um, a.z_max_um, STACK_PLANES)
            sa, sb = a.net.spectra(z).to(torch.complex128), b.net.spectra(z).to(torch.complex128)
            rel = ((sa - sb).abs().square().sum(1) / sa.abs().square().sum(1)).max().item()
            worst.append(10 * np.log10(rel) if rel > 0 else None)
        t = m.render([0.0]).transmittance[0]
        de = ciede2000(lab(np.moveaxis(t, 0, -1)), truth_lab)
        rows.append({"tolerance_db": tol, "ranks": [c.arch.rank for c in m.channels], "model_bytes": size,
                     "ratio_rgb": rgb_stack / size, "worst_change_db": worst,
                     "bound_db": None if tol is None else [r["bound_db"] for r in m.meta["compaction"]],
                     "psnr_db": [psnr_scaled(np.sqrt(t[c]), np.abs(slide.truth[c])) for c in range(3)],
                     "ciede2000_median": float(np.median(de))})
        print("compaction", json.dumps(rows[-1], default=float), flush=True)
    return {"rows": rows, "singular_values_db": [r["singular_values_db"] for r in
                                                  full.compacted(-300.0).meta["compaction"]]}


def _synthetic_colour_model(raw_px: int, rank: int = 8, seed: int = 0):
    """Three low-rank channels with random in-aperture coefficients (decode cost and storage do not depend on them)."""
    from napari_fpminr.colour.model import ChannelRegistration, ColourModel
    from napari_fpminr.colour.stained import WAVELENGTHS_UM
    from napari_fpminr.recon.lowrank import LowRankArchitecture, LowRankField
    from napari_fpminr.recon.model import Model
    from napari_fpminr.simulate import paper_optics

    g = torch.Generator().manual_seed(seed)
    channels, regs = [], []
    for c, lam in enumerate(WAVELENGTHS_UM):
        opt = paper_optics().replace(wavelength_um=lam, upsample=2)
        arch = LowRankArchitecture.for_optics(opt, (raw_px, raw_px), -20.0, 20.0, 33, rank)
        net = LowRankField(arch)
        with torch.no_grad():
            net.coefficients.copy_(torch.randn(net.coefficients.shape, generator=g) * 1e-3)
            net.z_line.fill_(1.0)
        channels.append(Model(net, opt, (raw_px, raw_px)))
        regs.append(ChannelRegistration(lam, 0.0, [2.0, 0.0, -2.0][c], (0.3, -0.2) if c != 1 else (0.0, 0.0), 1.0))
    return ColourModel(tuple(channels), tuple(regs))


def _compacted_float16(model, tolerance_db: float):
    """``model`` compacted as before the per-term codes: the same exact re-factorisation and rank, every
    term float16 (the reference for what the 16-bit log-polar terms save and cost)."""
    import dataclasses

    from napari_fpminr.colour.model import ColourModel
    from napari_fpminr.recon.lowrank import LowRankField
    from napari_fpminr.recon.model import Model

    channels = []
    for m in model.channels:
        plan = m.net.compaction(tolerance_db)
        r = min(plan.rank, m.arch.rank)
        line, coef = plan.terms(r)
        net = LowRankField(dataclasses.replace(m.arch, rank=r, coarse_terms=0))
        with torch.no_grad():
            net.coefficients.copy_(torch.view_as_real(coef.to(torch.complex64)).permute(2, 0, 1))
            net.z_line.copy_(torch.view_as_real(line.to(torch.complex64)).permute(2, 0, 1))
        channels.append(Model(net.round_to_storage_(), m.optics, m.lr_shape, dict(m.meta)))
    return ColourModel(tuple(channels), model.registration, dict(model.meta))


def _worst_plane_change_db(full, m) -> list:
    """Per channel, the largest change of any of 161 decoded planes relative to that plane's energy (dB)."""
    from napari_fpminr.io.model_file import STACK_PLANES

    worst = []
    for a, b in zip(full.channels, m.channels, strict=True):
        z = torch.linspace(a.z_min_um, a.z_max_um, STACK_PLANES)
        sa, sb = a.net.spectra(z).to(torch.complex128), b.net.spectra(z).to(torch.complex128)
        rel = ((sa - sb).abs().square().sum(1) / sa.abs().square().sum(1)).max().item()
        worst.append(round(10 * np.log10(rel), 2) if rel > 0 else None)
    return worst


def _trained_storage_row(px: int, half: float, cache: Path) -> dict:
    """The inr colour job on a simulated slide of ``px`` raw px over ±``half`` µm, uncompacted (affine baked,
    white measured), then compacted at the default tolerance (what the job saves: per-term codes) and, for
    reference, with every term float16: per-channel ranks and codes, bound, measured change, file sizes
    and ratios against the 161-plane float32 RGB stack, PSNR against the truth and CIEDE2000 at the common
    focus."""
    from napari_fpminr.colour.colourmath import ciede2000, lab
    from napari_fpminr.colour.file import save_colour_model
    from napari_fpminr.colour.job import ColourJob, iter_colour, order_channels
    from napari_fpminr.colour.stained import simulate_stained
    from napari_fpminr.io.model_file import STACK_PLANES
    from napari_fpminr.recon.lowrank import COMPACTION_TOLERANCE_DB
    from napari_fpminr.recon.metrics import psnr_scaled
    from napari_fpminr.recon.train import TrainConfig

    slide = simulate_stained(px, seed=0)
    raws, _ = order_channels(list(slide.raws))
    truth_lab = lab(np.moveaxis(slide.transmittance, 0, -1))
    job = ColourJob(method="inr", z_min_um=-half, z_max_um=half, device="cpu", train_config=TrainConfig(device="cpu"),
                    compact_db=None)
    t0 = time.perf_counter()
    for ev in iter_colour(raws, job):
        pass
    full, elapsed = ev.result, time.perf_counter() - t0
    H, W = full.hr_shape
    rgb = STACK_PLANES * 3 * H * W * 4
    row = {"raw_px": px, "half_um": half, "train_s": round(elapsed, 1), "hr": [H, W], "rgb_stack_bytes": rgb,
           "n_z": [m.arch.n_z for m in full.channels]}
    for name, m in (("uncompacted", full), ("float16", _compacted_float16(full, COMPACTION_TOLERANCE_DB)),
                    ("codes", full.compacted(COMPACTION_TOLERANCE_DB))):
        size = save_colour_model(m, cache / f"storage_trained_{px}_{half:g}_{name}.fpminr").stat().st_size
        t = m.render([0.0]).transmittance[0]
        de = ciede2000(lab(np.moveaxis(t, 0, -1)), truth_lab)
        row[name] = {"model_bytes": size, "ratio_rgb": rgb / size, "ranks": [c.arch.rank for c in m.channels],
                     "psnr_db": [psnr_scaled(np.sqrt(t[c]), np.abs(slide.truth[c])) for c in range(3)],
                     "ciede2000_median": float(np.median(de)), "ciede2000_p95": float(np.percentile(de, 95))}
        if name != "uncompacted":
            row[name]["worst_plane_change_db"] = _worst_plane_change_db(full, m)
        if name == "codes":
            rep = m.meta["compaction"]
            row[name].update(encodings=[r["encodings"] for r in rep], singular_values_db=[r["singular_values_db"] for r in rep],
                             stored_change_db=[r["stored_change_db"] for r in rep],
                             code_change_db=[r["code_change_db"] for r in rep],
                             term_change_db=[r["term_change_db"] for r in rep])
    row["psnr_change_codes_vs_float16_db"] = [a - b for a, b in zip(row["codes"]["psnr_db"], row["float16"]["psnr_db"])]
    return row


def part_storage(args, cache: Path, sim: dict | None) -> dict:
    """Saved colour models against the float32 RGB stack of their grid at 161 planes. Trained models
    (the inr colour job, compacted as the job does: per-term codes; and every term float16 for reference)
    are the figures; the random-coefficient rows are rank 8 uncompacted, an upper bound on the file of a
    model of rank 8 with every term float16."""
    from napari_fpminr.colour.file import save_colour_model
    from napari_fpminr.io.model_file import STACK_PLANES

    out = {}
    trained = [(px, 4.0) for px in dict.fromkeys([args.sim_size, *args.storage_trained])]
    trained += [(args.sim_size, h) for h in args.storage_wide_um]
    for px, half in trained:
        name = f"sim {px} raw px +-{half:g} um (trained)"
        out[name] = row = _trained_storage_row(px, half, cache)
        print("storage", name, json.dumps(row, default=float), flush=True)
        print(f"  ratio vs RGB stack: codes {row['codes']['ratio_rgb']:.0f}x ({row['codes']['model_bytes'] / 1e3:.0f} kB), "
              f"float16 {row['float16']['ratio_rgb']:.0f}x, uncompacted {row['uncompacted']['ratio_rgb']:.0f}x; "
              f"ranks {row['codes']['ranks']}", flush=True)
        for c, ch in enumerate("RGB"):
            enc = row["codes"]["encodings"][c]
            print(f"  {ch}: codes {''.join('F' if e == 'float16' else 'L' for e in enc)} (F float16, L log-polar 16 bit), "
                  f"singular values {row['codes']['singular_values_db'][c]} dB, term rounding {row['codes']['term_change_db'][c]} dB, "
                  f"stored change {row['codes']['stored_change_db'][c]} dB, codes alone {row['codes']['code_change_db'][c]} dB (weakest plane), worst plane "
                  f"{row['codes']['worst_plane_change_db'][c]} dB (own energy); PSNR {row['codes']['psnr_db'][c]:.3f} "
                  f"(float16 {row['float16']['psnr_db'][c]:.3f}) dB", flush=True)
    for px in (64, 128):
        m = _synthetic_colour_model(px)
        size = save_colour_model(m, cache / f"storage_{px}.fpminr").stat().st_size
        H, W = m.hr_shape
        rgb = STACK_PLANES * 3 * H * W * 4
        name = f"{px} raw px, random coefficients, rank 8 uncompacted (upper bound)"
        out[name] = {"model_bytes": size, "rgb_stack_bytes": rgb, "ratio_rgb": rgb / size,
                     "ratio_amp_phase": 2 * rgb / size, "hr": [H, W], "ranks": [8, 8, 8]}
        print("storage", name, json.dumps(out[name]), flush=True)
    return out


def part_decode(args) -> dict:
    model = _synthetic_colour_model(512)
    single = model.channels[1]
    z = [0.5]
    for _ in range(2):  # warm-up
        model.rgb(z)
        single.render(z)
    t_rgb, t_one = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        rgb = model.rgb(z)
        t_rgb.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        single.render(z)
        t_one.append(time.perf_counter() - t0)
    out = {"hr": list(model.hr_shape), "rgb_slice_s": float(np.median(t_rgb)),
           "one_channel_amp_phase_s": float(np.median(t_one)), "shape": list(rgb.shape)}
    out["ratio"] = out["rgb_slice_s"] / out["one_channel_amp_phase_s"]
    print("decode", json.dumps(out), flush=True)
    return out


def part_real(args, cache: Path) -> dict:
    from napari_fpminr.calib.prepare import PrepareOptions, prepare
    from napari_fpminr.colour.file import save_colour_model
    from napari_fpminr.colour.focus import ScanOptions
    from napari_fpminr.colour.job import ColourJob, common_grid, iter_colour, order_channels
    from napari_fpminr.io import read_raw
    from napari_fpminr.recon.train import TrainConfig

    files = [DATA / f"bloodsmear_{c}.mat" for c in ("red", "green", "blue")]
    if not all(f.is_file() for f in files):
        return {"skipped": "shared/data not present"}
    raws, _ = order_channels([read_raw(f) for f in files])
    t0 = time.perf_counter()
    preps = [prepare(r, PrepareOptions(calibrate=args.real_calibrate), device="cpu") for r in raws]
    out = {"prepare_s": time.perf_counter() - t0, "decisions": [p.decisions for p in preps]}
    data = [p.raw for p in preps]
    scan = ScanOptions(half_range_um=args.real_search_um, step_um=2.0, crop_px=64)
    job = ColourJob(method="fpm", planes_um=np.array([0.0]), iterations=25, device="cpu", scan=scan,
                    recover_pupil=tuple(p.recover_pupil for p in preps))
    # the common plane: the green best focus, known after the scan; run the scan + one plane per channel
    t0 = time.perf_counter()
    ev = None
    for ev in iter_colour(data, job):
        pass
    out["fpm_time_s"] = time.perf_counter() - t0
    focus = ev.focus
    green = focus.focus_um[1]
    job2 = ColourJob(method="fpm", planes_um=np.array([green]), iterations=25, device="cpu", scan=scan,
                     recover_pupil=tuple(p.recover_pupil for p in preps))
    for ev in iter_colour(data, job2):
        pass
    st = ev.result
    up = common_grid(data)[0].optics.upsample  # the colour hr grid (the largest upsample: blue 5x here)
    shift_only = st.meta.get("residual_quadrant_shift_only_raw_px", st.meta["residual_quadrant_raw_px"])
    out["channels"] = [{"channel": n, "stated_um": r.z_um, "best_focus_um": g.focus_um, "offset_um": g.z_offset_um,
                        "shift_raw_px": [v / up for v in g.shift_px], "white": g.white, "linear": list(g.linear),
                        "residual_raw_px": res, "worst_quadrant_raw_px": quad, "worst_quadrant_shift_only_raw_px": q0,
                        "affine": aff}
                       for n, r, g, res, quad, q0, aff in zip(("red", "green", "blue"), raws, st.registration,
                                                              st.meta["residual_shift_raw_px"],
                                                              st.meta["residual_quadrant_raw_px"], shift_only,
                                                              st.meta.get("affine", [None] * 3), strict=True)]
    out["scan"] = {"z_um": [z.tolist() for z in focus.scan_z_um], "score": [s.tolist() for s in focus.scan_score]}
    np.savez_compressed(cache / "uconn_colour_focus.npz", transmittance=st.slices.transmittance,
                        rgb=st.slices.rgb, z_um=st.z_um)
    print("real fpm", json.dumps(out["channels"]), flush=True)
    out["held_out"] = _held_out_quadrants(data, preps, st.registration)
    # a colour model of a central crop over the common focus +-5 um (the screenshot's)
    crop = args.real_model_crop
    h = data[0].lr_shape[0]
    cropped = [r.crop((h - crop) // 2, (h - crop) // 2, crop, crop) for r in data]
    cropped = [c if r.z_um is None else c for c, r in zip(cropped, data, strict=True)]
    job3 = ColourJob(method="inr", z_min_um=green - 5.0, z_max_um=green + 5.0, device="cpu", scan=scan,
                     train_config=TrainConfig(device="cpu", polish_steps=args.real_polish),
                     recover_pupil=tuple(p.recover_pupil for p in preps))
    t0 = time.perf_counter()
    for ev in iter_colour(cropped, job3):
        pass
    out["model_time_s"] = time.perf_counter() - t0
    model = ev.result
    path = save_colour_model(model, cache / "uconn_colour.fpminr")
    out["model"] = {"path": str(path), "bytes": path.stat().st_size, "summary": model.summary(),
                    "residual_shift_raw_px": model.meta["residual_shift_raw_px"],
                    "residual_quadrant_raw_px": model.meta["residual_quadrant_raw_px"],
                    "residual_quadrant_shift_only_raw_px": model.meta.get("residual_quadrant_shift_only_raw_px"),
                    "affine": model.meta.get("affine"), "compaction": model.meta.get("compaction"),
                    "shift_raw_px": [[v / model.upsample for v in r.shift_px] for r in model.registration],
                    # the crop's centre is the field's: its shift should be the whole field's t there
                    "shift_minus_whole_field_raw_px": [
                        float(np.hypot(*np.subtract(r.shift_px, w.shift_px))) / model.upsample
                        for r, w in zip(model.registration, st.registration, strict=True)],
                    "ratio_rgb": 161 * 3 * model.hr_shape[0] * model.hr_shape[1] * 4 / path.stat().st_size}
    print("real model", json.dumps(out["model"]), flush=True)
    return out


def _held_out_quadrants(data, preps, regs) -> dict:
    """A check of the affine registration on quadrants it was not fitted on: each channel reconstructed again at
    its best focus (conventional, 25 iterations, whole field), registered by its shift alone, its local shifts
    measured on the 4 × 4 patch grid; for each quadrant, the affine fitted to the patches outside it is applied
    and the quadrant's residual shift measured (raw px). Done with the registration's observable
    (``phase_gradient``) and, for comparison, with the first version's (``phase``), each measuring itself."""
    from napari_fpminr.colour.job import REFERENCE, _band, _registered, common_grid
    from napari_fpminr.colour.model import ChannelRegistration
    from napari_fpminr.colour.affine import affine_resample, fit_affine, local_shifts
    from napari_fpminr.colour.register import fourier_shift, register_fields
    from napari_fpminr.recon.conventional import reconstruct_stack

    stacks = [reconstruct_stack(r, [g.focus_um], iterations=25, device="cpu", pupil_update=p.recover_pupil)
              for r, p, g in zip(common_grid(data), preps, regs, strict=True)]
    up = stacks[0].optics.upsample
    band = _band([s.optics for s in stacks], stacks[0].dx_hr_um)
    out = {}
    for obs in ("phase_gradient", "phase"):
        own = [ChannelRegistration(g.wavelength_um, g.focus_um, g.z_offset_um) for g in regs]
        unregistered = _registered(stacks, own)[0]
        for c in (0, 2):
            own[c].shift_px = register_fields(unregistered[REFERENCE], unregistered[c], band, observable=obs)
        base = _registered(stacks, own)[0]
        H, W = base.shape[-2:]
        res = {}
        for c in (0, 2):
            patches = local_shifts(base[REFERENCE], base[c], band, observable=obs)
            raw_field = torch.polar(torch.as_tensor(stacks[c].amplitude[0]), torch.as_tensor(stacks[c].phase[0]))
            all_fit = fit_affine(patches, (H, W), 0.1 * up)
            rows = []
            for r0 in (0, H // 2):
                for c0 in (0, W // 2):
                    inside = (patches[:, 0] >= r0) & (patches[:, 0] < r0 + H // 2) & (patches[:, 1] >= c0) \
                        & (patches[:, 1] < c0 + W // 2)
                    q = (slice(r0, r0 + H // 2), slice(c0, c0 + W // 2))
                    row = {"quadrant": [r0, c0],
                           "shift_only_raw_px": float(np.hypot(*register_fields(base[REFERENCE][q], base[c][q], band,
                                                                                 observable=obs))) / up}
                    for key, fit in (("held_out_affine_raw_px", fit_affine(patches[~inside], (H, W), 0.1 * up)),
                                     ("affine_raw_px", all_fit)):
                        t = np.asarray(own[c].shift_px) + fit.shift
                        f = fourier_shift(raw_field, -t[0], -t[1])
                        f = affine_resample(f, np.eye(2) + fit.linear, -fit.linear @ fit.centre).numpy()
                        after = register_fields(base[REFERENCE][q], f[q], band, observable=obs)
                        row[key] = float(np.hypot(*after)) / up
                    rows.append(row)
            res["RGB"[c]] = {"shift_raw_px": [v / up for v in own[c].shift_px], "quadrants": rows,
                             "affine": {"linear": all_fit.linear.reshape(-1).tolist(),
                                        "corner_raw_px": all_fit.corner_displacement((H, W)) / up,
                                        "patch_rms_before_raw_px": all_fit.rms_before / up,
                                        "patch_rms_after_raw_px": all_fit.rms_after / up,
                                        "explained": all_fit.explained, "patches_used": int(all_fit.used.sum())}}
        out[obs] = res
    print("real held-out", json.dumps(out), flush=True)
    return out


def part_mosaic(args, cache: Path) -> dict:
    """A simulated ``--mosaic-size``² RGB slide as a colour mosaic (three tiled INR jobs + header), then
    browsed through the napari layer data: chunks decoded per view at two pyramid levels."""
    from napari_fpminr._napari._colour import colour_mosaic_layer_data
    from napari_fpminr.colour.focus import ScanOptions
    from napari_fpminr.colour.mosaic import iter_colour_mosaic, load_colour_mosaic
    from napari_fpminr.colour.stained import simulate_stained

    t0 = time.perf_counter()
    slide = simulate_stained(args.mosaic_size, seed=7)
    out = {"size_raw_px": args.mosaic_size, "simulate_s": time.perf_counter() - t0}
    path = cache / "slide_colour.fpminr"
    t0 = time.perf_counter()
    ev = None
    for ev in iter_colour_mosaic(list(slide.raws), path, args.mosaic_tile, 16, (-4.0, 4.0),
                                 train={"polish_steps": args.mosaic_polish}, scan=ScanOptions(), device="cpu"):
        pass
    out["reconstruct_s"] = time.perf_counter() - t0
    out["registration"] = [r.to_dict() for r in ev.result.registration]
    mosaic = load_colour_mosaic(path)
    (levels, meta, _), = colour_mosaic_layer_data(mosaic)
    lv = meta["metadata"]["fpminr_levels"]
    out["levels"] = [list(a.shape) for a in levels]
    t0 = time.perf_counter()
    view = np.asarray(levels[-1][levels[-1].shape[0] // 2])  # zoomed out: the coarsest level, one plane
    out["coarse_view_s"], out["coarse_chunks"] = time.perf_counter() - t0, lv.decoded_chunks
    t0 = time.perf_counter()
    np.asarray(levels[0][levels[0].shape[0] // 2, :512, :512])  # zoomed in: one full-resolution chunk
    out["zoomed_view_s"], out["chunks_after_zoom"] = time.perf_counter() - t0, lv.decoded_chunks
    out["total_chunks_level0"] = int(np.prod(levels[0].numblocks))
    out["coarse_background_srgb"] = np.percentile(view.reshape(-1, 3), 90, axis=0).tolist()
    print("mosaic", json.dumps(out), flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", nargs="+", default=["sim", "storage", "decode", "real"])
    ap.add_argument("--sim-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--compact-sweep", type=float, nargs="*", default=[-60.0, -55.0, -50.0, -45.0, -40.0],
                    help="compaction tolerances (dB) measured on the simulated slide's inr colour model")
    ap.add_argument("--storage-trained", type=int, nargs="*", default=[128],
                    help="raw sizes of simulated slides trained (inr colour job over +-4 um) for the storage part")
    ap.add_argument("--storage-wide-um", type=float, nargs="*", default=[20.0],
                    help="half z spans of further --sim-size slides trained for the storage part (the paper's +-20 um)")
    ap.add_argument("--real-search-um", type=float, default=30.0)
    ap.add_argument("--real-calibrate", action="store_true", help="fit the illumination calibration (slow)")
    ap.add_argument("--real-model-crop", type=int, default=64)
    ap.add_argument("--real-polish", type=int, default=120)
    ap.add_argument("--mosaic-size", type=int, default=512)
    ap.add_argument("--mosaic-tile", type=int, default=128)
    ap.add_argument("--mosaic-polish", type=int, default=40)
    ap.add_argument("--cache", default="bench_colour_cache")
    ap.add_argument("--out")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (0: torch's default); 1 on a shared, loaded CPU (oversubscribed threads "
                         "were measured 20x slower there)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    res = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
           "threads": torch.get_num_threads()}
    if "sim" in args.parts:
        res["sim"] = part_sim(args, cache)
    if "storage" in args.parts:
        res["storage"] = part_storage(args, cache, res.get("sim"))
    if "decode" in args.parts:
        res["decode"] = part_decode(args)
    if "real" in args.parts:
        res["real"] = part_real(args, cache)
    if "mosaic" in args.parts:
        res["mosaic"] = part_mosaic(args, cache)
    text = json.dumps(res, indent=1, default=float)
    if args.out:
        Path(args.out).write_text(text)
    print(text if not args.out else f"written {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
