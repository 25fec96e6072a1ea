#!/usr/bin/env python
"""Sampling speed and quality: DPM-Solver++ (25 steps) and DDIM (50) against DDPM (1000 steps).

For each sampler, trajectories per second (genes x samples, classifier-free guidance on) and
how close its per-gene sample means (over samples and seeds) come to the 1000-step DDPM means:
mean absolute difference (expression units, tissue pixels) and Pearson correlation. The noise
floor of that comparison comes from DDPM itself: the means of its even- and odd-numbered
samples compared with each other (the MAE scaled by 1/sqrt(2) to the full sample count).
With ``--model`` (a trained export) and ``--dataset``, the means are also scored against the
real frames (first slice of each time point, the canvas the pipeline draws on).

    python benchmarks/bench_sampling.py                       # random tiny model, CPU
    python benchmarks/bench_sampling.py --model runs/demo --dataset runs/demo/dataset --device cuda

Without ``--model`` the UNet is randomly initialised (x0-prediction, zero-initialised
projections randomised): speed is representative, quality figures only measure how well the
fast solvers track the 1000-step chain on that random function.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import report  # noqa: E402

SAMPLERS = [("dpmsolver++", 25), ("ddim", 50), ("ddpm", 1000)]


def random_pipeline(preset: str, num_genes: int, size: int, frames: int):
    from diffusers import DDPMScheduler

    from videogene.models import model_from_preset
    from videogene.pipelines import VideoGenePipeline

    torch.manual_seed(0)
    genes = [f"gene{i}" for i in range(num_genes)]
    unet = model_from_preset(preset, num_genes=num_genes, sample_size=size, gene_names=genes)
    for p in unet.parameters():
        if p.ndim > 1 and not p.detach().any():
            torch.nn.init.normal_(p, std=0.05)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                          prediction_type="sample")
    pipe = VideoGenePipeline(unet=unet.eval(), scheduler=sched)
    yy, xx = np.mgrid[:size, :size]
    r2 = (yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2
    masks = np.stack([r2 < (size * (0.3 + 0.03 * i)) ** 2 for i in range(frames)])  # growing discs
    times = [9.5 + i for i in range(frames)]
    slices = [{"name": f"s{i}", "timepoint": t} for i, t in enumerate(times)]
    pipe.set_metadata({"timepoints": times, "value_max": 9.0, "genes": genes, "slices": slices}, masks)
    return pipe


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


def sample_all(pipe, genes, times, sampler, steps, seeds, args):
    """All trajectories ``(G, seeds * samples, T, H, W)``, seconds, masks."""
    parts, seconds = [], 0.0
    for seed in seeds:
        gen = torch.Generator("cpu").manual_seed(seed)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = pipe(genes, times, num_samples=args.num_samples, num_inference_steps=steps,
                   guidance_scale=args.guidance, generator=gen, sampler=sampler,
                   batch_size=args.batch_size, progress=False)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds += time.perf_counter() - start
        parts.append(out.trajectories)
    return np.concatenate(parts, axis=1), seconds, out.masks


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="trained export / output_dir (default: random model)")
    ap.add_argument("--dataset", default=None, help="prepared dataset, to score against real frames")
    ap.add_argument("--preset", default="tiny", help="random model preset (tiny)")
    ap.add_argument("--size", type=int, default=16, help="random model canvas side (16)")
    ap.add_argument("--frames", type=int, default=4, help="random model time points (4)")
    ap.add_argument("--genes", type=int, default=2, help="genes to sample (2)")
    ap.add_argument("--num-samples", type=int, default=4, help="samples per gene and seed (4)")
    ap.add_argument("--seeds", type=int, default=2, help="seeds per sampler (2)")
    ap.add_argument("--guidance", type=float, default=2.0, help="guidance scale (2.0)")
    ap.add_argument("--batch-size", type=int, default=16, help="trajectories per forward pass (16)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (cpu)")
    ap.add_argument("--ddpm-steps", type=int, default=1000, help="reference DDPM steps (1000)")
    ap.add_argument("--no-append", action="store_true", help="do not append to docs/benchmarks.md")
    args = ap.parse_args(argv)

    if args.model:
        from videogene.pipelines import load_pipeline

        pipe = load_pipeline(args.model, device=args.device)
        model_desc = f"trained export {pipe.source_dir}"
    else:
        pipe = random_pipeline(args.preset, max(args.genes, 4), args.size, args.frames).to(args.device)
        model_desc = f"randomly initialised {args.preset} model (no --model)"
    pipe.set_progress_bar_config(disable=True)
    genes = pipe.gene_names[: args.genes]
    times = pipe.timepoints
    n_params = sum(p.numel() for p in pipe.unet.parameters())
    samplers = [(n, args.ddpm_steps if n == "ddpm" else s) for n, s in SAMPLERS]

    pipe(genes[:1], times, num_inference_steps=2, progress=False)  # warm-up (allocations, kernels)
    seeds = list(range(args.seeds))
    results = {}
    for name, steps in samplers:
        print(f"sampling {name} x {steps} steps ...", flush=True)
        results[name] = sample_all(pipe, genes, times, name, steps, seeds, args)

    real = None
    if args.model and args.dataset:
        from videogene.data import load_metadata, read_gene_canvases

        meta = load_metadata(args.dataset)
        first = {}
        for i, s in enumerate(meta["slices"]):
            first.setdefault(float(s["timepoint"]), i)
        real = np.stack([c[[first[float(t)] for t in times]]
                         for _, c in read_gene_canvases(args.dataset, genes)])  # (G, T, H, W)

    ref_all, _, masks = results["ddpm"]
    ref = ref_all.mean(axis=1)  # (G, T, H, W)
    inside = np.broadcast_to(masks, ref.shape)
    rows = []
    for name, steps in samplers:
        traj, seconds, _ = results[name]
        mean, count = traj.mean(axis=1), traj.shape[0] * traj.shape[1]
        row = {"sampler": name, "steps": steps, "trajectories": count, "seconds": seconds,
               "traj/s": count / seconds, "ms/step/traj": 1000 * seconds / (steps * count),
               "MAE vs DDPM": float(np.abs(mean - ref)[inside].mean()),
               "r vs DDPM": pearson(mean[inside], ref[inside])}
        if real is not None:
            row["MAE vs real"] = float(np.abs(mean - real)[inside].mean())
            row["r vs real"] = pearson(mean[inside], real[inside])
        rows.append(row)
    even, odd = ref_all[:, ::2].mean(axis=1), ref_all[:, 1::2].mean(axis=1)
    rows.append({"sampler": "ddpm even vs odd samples (noise floor)", "steps": args.ddpm_steps,
                 "MAE vs DDPM": float(np.abs(even - odd)[inside].mean()) / np.sqrt(2),
                 "r vs DDPM": pearson(even[inside], odd[inside])})
    rows[0]["speed-up vs DDPM"] = rows[0]["traj/s"] / rows[2]["traj/s"]
    rows[1]["speed-up vs DDPM"] = rows[1]["traj/s"] / rows[2]["traj/s"]
    h, w = masks.shape[1:]
    notes = (f"Model: {model_desc}, {n_params / 1e6:.3f} M parameters; {len(genes)} genes x "
             f"{args.num_samples} samples x {len(seeds)} seeds, {len(times)} frames of {h}x{w}, "
             f"guidance {args.guidance:g} (two UNet passes per step), batch {args.batch_size}, "
             f"device {args.device}. MAE / r: per-gene means over samples and seeds against the "
             f"DDPM-{args.ddpm_steps} means (tissue pixels, expression units 0..{pipe.value_max:g}); "
             "the noise-floor row compares DDPM's even- and odd-numbered samples (MAE / sqrt 2).")
    report("Sampling: DPM-Solver++ vs DDIM vs DDPM", rows, notes=notes, append=not args.no_append)


if __name__ == "__main__":
    main()
