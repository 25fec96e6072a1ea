"""Sparsity experiment: which training choice gives the lower held-out denoising loss?

Trains the tiny model on a small synthetic atlas with the same seed and the same number of
steps under several choices (uniform gene sampling; ``data.gene_sampling=nnz`` with the
stream's loss re-weighting; tissue emphasis in the loss), then scores every run's EMA model
on the same fixed set (every gene once, fixed slices, several fixed noise draws, plain
unweighted masked MSE over present frames), overall and by gene sparsity (tercile of
``nnz_fraction``). Prints a table and appends it to docs/benchmarks.md.

    python benchmarks/bench_sparsity.py [--steps 150] [--genes 96] [--seeds 4] [--no-append]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import report  # noqa: E402

CHOICES = {  # uniform pinned: the configs' default is now `spatial`
    "uniform": ["data.gene_sampling=uniform"],
    "nnz sampling + re-weighting": ["data.gene_sampling=nnz"],
    "uniform + tissue emphasis x3": ["data.gene_sampling=uniform", "diffusion.tissue_loss_weight=3.0"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--genes", type=int, default=96)
    p.add_argument("--seeds", type=int, default=4, help="noise draws for the evaluation")
    p.add_argument("--train-seeds", type=int, default=2, help="training seeds per choice")
    p.add_argument("--no-append", action="store_true", help="print only (no docs/benchmarks.md)")
    a = p.parse_args()

    from accelerate.state import AcceleratorState

    import train
    from videogene.data.prepare import prepare_dataset
    from videogene.data.synthetic import SynthConfig, write_atlas
    from videogene.models import VideoGeneUNet
    from videogene.training.config import load_config
    from videogene.training.diffusion import make_noise_scheduler
    from videogene.training.stream import build_dataset, build_loader, fixed_batches
    from videogene.training.validation import denoising_loss

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="vg-sparsity-"))
    synth = SynthConfig(n_genes=a.genes, timepoints=(9.5, 10.5, 11.5, 12.5), slices_per_timepoint=2,
                        bins_per_slice=600, seed=0)
    write_atlas(synth, work / "atlas", preview=False, progress=False)
    data = work / "data"
    prepare_dataset([work / "atlas" / "atlas.h5ad"], data, resolution=16, progress=False)

    base = load_config(ROOT / "configs" / "tiny.yaml", [f"data.path={data}"])
    eval_data = build_dataset(base, data, seed=999, gene_sampling="uniform")
    eval_set = fixed_batches(build_loader(eval_data, 16), (a.genes + 15) // 16)
    nnz = {int(g): float(f) for b in eval_set
           for g, f in zip(b["gene_id"].tolist(), b["nnz_fraction"].tolist())}
    cuts = np.quantile(list(nnz.values()), [1 / 3, 2 / 3])
    sched = make_noise_scheduler(base.diffusion)

    rows = []
    for name, overrides in CHOICES.items():
        per_seed = []
        t0 = time.perf_counter()
        for train_seed in range(a.train_seeds):
            out = work / f"choice{len(rows)}" / f"seed{train_seed}"
            train.main(load_config(ROOT / "configs" / "tiny.yaml", [
                f"data.path={data}", f"output_dir={out}", f"max_steps={a.steps}", f"seed={train_seed}",
                "report_to=none", f"checkpointing_steps={a.steps}", f"validation_steps={a.steps}",
                "validation.num_genes=2", "validation.num_inference_steps=2", "logging_steps=25",
                *overrides]))
            AcceleratorState._reset_state(True)
            model = VideoGeneUNet.from_pretrained(out / f"export-{a.steps}" / "unet")
            per_gene: dict[int, list[float]] = {}
            for s in range(a.seeds):
                _, genes = denoising_loss(model, sched, eval_set, seed=s, per_gene=True)
                for g, v in genes.items():
                    per_gene.setdefault(g, []).append(v)
            pg = {g: float(np.mean(v)) for g, v in per_gene.items()}
            per_seed.append([
                float(np.mean(list(pg.values()))),
                float(np.mean([v for g, v in pg.items() if nnz[g] <= cuts[0]])),
                float(np.mean([v for g, v in pg.items() if cuts[0] < nnz[g] <= cuts[1]])),
                float(np.mean([v for g, v in pg.items() if nnz[g] > cuts[1]])),
            ])
        m, sd = np.mean(per_seed, axis=0), np.std(per_seed, axis=0)
        rows.append({"choice": name, "steps": a.steps, "train seeds": a.train_seeds,
                     "val loss (all genes)": float(m[0]), "± (train seeds)": float(sd[0]),
                     "sparsest third": float(m[1]), "middle third": float(m[2]),
                     "densest third": float(m[3]),
                     "train min / seed": (time.perf_counter() - t0) / 60 / a.train_seeds})
        print(rows[-1], flush=True)
    best = min(rows, key=lambda r: r["val loss (all genes)"])
    report("Sparsity: gene sampling and tissue emphasis (tiny model, synthetic atlas)", rows,
           notes=(f"{a.genes} synthetic genes, 4 time points x 2 slices, 16x16, batch 8, "
                  "EMA weights, mean over training seeds; "
                  f"nnz terciles at {cuts[0]:.3f} / {cuts[1]:.3f}. Validation = plain masked MSE of the "
                  f"noise prediction on every gene once, {a.seeds} fixed noise draws, evenly spaced "
                  f"timesteps. Lowest overall: {best['choice']}."),
           append=not a.no_append)


if __name__ == "__main__":
    main()
