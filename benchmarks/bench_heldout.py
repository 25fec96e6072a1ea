#!/usr/bin/env python
"""Held-out time point experiment: does the model beat the baselines on unseen frames?

Synthesizes the default atlas (or ``--genes N``), prepares it with an interior time point held
out (``--holdout 12.5``), trains a preset with ``train.py`` (``accelerate launch`` or plain
``python``), evaluates the held-out frames (:func:`videogene.jobs.evaluate.evaluate_model`) and
reports the headline table: the spatially variable genes (``spatial``) scored against the
noise-free truth, one row per method (median Pearson, RMSE, SSIM) with the model's and the
baselines' median Pearson on the training frames; then model vs linear interpolation on all
genes against the real slice (the earlier yardstick), next to the other baselines, the truth
(ceiling), the count redraw of the real slice (a perfect sampler) and the second slice (noise
floor).

    # the protocol of the issue "The model learns genes" (25 min of training on 2 CPU cores)
    python benchmarks/bench_heldout.py --preset tiny --genes 200 --resolution 32 \
        --max-steps 4800 --batch-size 8 --launcher python
    python benchmarks/bench_heldout.py --quick                                   # smoke run

``--quick`` (debugging: 60 genes, 16 px, 30 steps, 2 samples x 5 steps, plain ``python``, its
own work folder, nothing appended) sets defaults that explicit options override.
Intermediate folders go to ``--work`` (reused when present: the atlas and the dataset are only
rebuilt when missing, training always runs unless ``--skip-train``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN_BUDGET_S = 1800  # the "trained within 30 minutes on the 2-core CPU machine"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import markdown_table, peak_rss_gib, report  # noqa: E402

from videogene.pipelines.samplers import (  # noqa: E402
    DEFAULT_GUIDANCE,
    DEFAULT_INFILL_GUIDANCE,
    DEFAULT_INFILL_SAMPLER,
    DEFAULT_SAMPLER,
    SAMPLERS,
)


def headline_rows(h: dict, labels: dict) -> list[dict]:
    """One row per method of the evaluation's headline: median Pearson, RMSE and SSIM on the
    held-out frames, and median Pearson on the training frames (None where not scored)."""
    train = (h.get("train_frames") or {}).get("methods", {})
    rows = []
    for m, s in h["methods"].items():
        rows.append({"method": labels.get(m, m), "Pearson": _na(s["pearson"]),
                     "RMSE": _na(s["rmse"]), "SSIM": _na(s["ssim"]),
                     "train-frame Pearson": _na((train.get(m) or {}).get("pearson"))})
    return rows


def _na(x):
    return "n/a" if x is None else float(x)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny", help="configs/<preset>.yaml (tiny)")
    p.add_argument("--genes", type=int, default=None, help="atlas genes (default: the default atlas)")
    p.add_argument("--slices", type=int, default=None, help="slices per time point (default atlas)")
    p.add_argument("--bins", type=int, default=None, help="bins per slice (default atlas)")
    p.add_argument("--holdout", type=float, default=12.5, help="held-out interior time point (12.5)")
    p.add_argument("--resolution", type=int, default=None,
                   help="canvas side (default: 32 for tiny, else 64)")
    p.add_argument("--max-steps", type=int, default=None, help="training steps (config default)")
    p.add_argument("--batch-size", type=int, default=None, help="train_batch_size override")
    p.add_argument("--launcher", choices=["accelerate", "python"], default=None,
                   help="accelerate launch train.py (default) or python train.py")
    p.add_argument("--train-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra train.py override; repeat for several")
    p.add_argument("--num-samples", type=int, default=None, help="samples per gene (4)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (25)")
    p.add_argument("--scheduler", choices=list(SAMPLERS), default=DEFAULT_SAMPLER,
                   help=f"sampler of the gene-only pass ({DEFAULT_SAMPLER})")
    p.add_argument("--infill-scheduler", choices=list(SAMPLERS), default=DEFAULT_INFILL_SAMPLER,
                   help=f"sampler of the in-filled pass ({DEFAULT_INFILL_SAMPLER})")
    p.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE,
                   help=f"guidance scale ({DEFAULT_GUIDANCE:g})")
    p.add_argument("--infill-guidance", type=float, default=DEFAULT_INFILL_GUIDANCE,
                   help=f"guidance scale of the in-filled pass ({DEFAULT_INFILL_GUIDANCE:g})")
    p.add_argument("--max-genes", type=int, default=None, help="evaluate at most N genes")
    p.add_argument("--eval-batch-size", type=int, default=8,
                   help="genes per pipeline call in the evaluation (8; larger on a GPU)")
    p.add_argument("--device", default=None, help="evaluation device (default: best)")
    p.add_argument("--seed", type=int, default=0, help="seed for atlas, training and sampling (0)")
    p.add_argument("--work", default=None, help="work folder (runs/bench_heldout_<preset>)")
    p.add_argument("--fresh", action="store_true", help="delete the work folder first")
    p.add_argument("--skip-train", action="store_true", help="evaluate the existing training output")
    p.add_argument("--eval-dir", default="evaluate",
                   help="evaluation folder inside --work (evaluate); another name keeps an earlier "
                        "evaluation of the same weights, e.g. with --skip-train --infill-scheduler ...")
    p.add_argument("--prepare-only", action="store_true",
                   help="build the atlas and the prepared dataset in --work, print the dataset "
                        "path and stop (benchmarks/gpu_heldout.py trains a probe on it first)")
    p.add_argument("--no-append", action="store_true", help="print only; leave docs/benchmarks.md")
    p.add_argument("--no-embed", action="store_true",
                   help="skip `videogene embed` (learned gene table vs the PCA baseline)")
    p.add_argument("--no-train-frames", action="store_true",
                   help="skip scoring the observed time points of the generated videos")
    p.add_argument("--quick", action="store_true",
                   help="debugging run: 60 genes, 16 px, 30 steps, 2 samples x 5 sampling steps, "
                        "python launcher, work runs/bench_heldout_quick, --no-append (explicit "
                        "options win)")
    a = p.parse_args(argv)
    quick = dict(genes=60, resolution=16, max_steps=30, num_samples=2, steps=5, launcher="python",
                 batch_size=8)
    full = dict(launcher="accelerate", num_samples=4, steps=25)
    for k, v in (quick if a.quick else full).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.quick:
        a.no_append = True
        a.work = a.work or str(ROOT / "runs" / "bench_heldout_quick")
    return a


def train_command(a: argparse.Namespace, dataset: Path, out: Path) -> list[str]:
    config = ROOT / "configs" / f"{a.preset}.yaml"
    if not config.is_file():
        raise SystemExit(f"bench_heldout: error: {config} not found (--preset)")
    overrides = [f"data.path={dataset}", f"output_dir={out}", f"seed={a.seed}"]
    if a.max_steps is not None:
        # checkpoint/validate at most a few times in short runs
        every = max(1, a.max_steps // 2)
        overrides += [f"max_steps={a.max_steps}", f"checkpointing_steps={every}",
                      f"validation_steps={every}", f"lr_warmup_steps={min(20, a.max_steps // 5)}"]
    if a.batch_size is not None:
        overrides.append(f"train_batch_size={a.batch_size}")
    overrides += a.train_arg
    script = str(ROOT / "train.py")
    if a.launcher == "accelerate":
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1",
                  "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        return [*launch, script, "--config", str(config), *overrides]
    return [sys.executable, script, "--config", str(config), *overrides]


def main(argv=None) -> int:
    a = parse_args(argv)
    from videogene.data.prepare import prepare_dataset
    from videogene.data.synthetic import SynthConfig, write_atlas
    from videogene.errors import InputError
    from videogene.jobs.evaluate import evaluate_model
    from videogene.tl.evaluate import METHOD_LABELS

    work = Path(a.work or ROOT / "runs" / f"bench_heldout_{a.preset}")
    if a.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    resolution = a.resolution or (32 if a.preset == "tiny" else 64)
    d = SynthConfig()
    cfg = SynthConfig(n_genes=a.genes or d.n_genes,
                      slices_per_timepoint=a.slices or d.slices_per_timepoint,
                      bins_per_slice=a.bins or d.bins_per_slice, seed=a.seed)
    if a.holdout not in cfg.timepoints[1:-1]:
        print(f"bench_heldout: error: --holdout {a.holdout:g} is not an interior time point of "
              f"{list(cfg.timepoints)}", file=sys.stderr)
        return 2
    timings: dict[str, float] = {}

    atlas = work / "atlas" / "atlas.h5ad"
    t0 = time.time()
    if not atlas.is_file():
        write_atlas(cfg, atlas.parent, preview=False, progress=True)
    timings["synth_s"] = time.time() - t0

    dataset = work / f"dataset_{resolution}_holdout{a.holdout:g}"
    t0 = time.time()
    if not (dataset / "videogene_meta.json").is_file():
        prepare_dataset([atlas], dataset, resolution=resolution, holdout_timepoints=[a.holdout],
                        progress=True)
    timings["prepare_s"] = time.time() - t0
    if a.prepare_only:
        print(dataset)
        return 0

    train_out = work / "train"
    t0 = time.time()
    if not a.skip_train:
        cmd = train_command(a, dataset, train_out)
        print("+", " ".join(cmd), flush=True)
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        rc = subprocess.run(cmd, cwd=ROOT, env=env, check=False).returncode
        if rc != 0:
            print(f"bench_heldout: error: training failed (exit {rc})", file=sys.stderr)
            return rc
    timings["train_s"] = time.time() - t0

    t0 = time.time()
    try:
        res = evaluate_model(train_out, dataset, work / a.eval_dir, num_samples=a.num_samples,
                             num_inference_steps=a.steps, guidance_scale=a.guidance,
                             scheduler=a.scheduler, infill_scheduler=a.infill_scheduler,
                             infill_guidance_scale=a.infill_guidance,
                             batch_size=a.eval_batch_size, max_genes=a.max_genes, seed=a.seed,
                             device=a.device,
                             train_frames=not a.no_train_frames)
    except InputError as exc:
        print(f"bench_heldout: error: {exc}", file=sys.stderr)
        return 2
    timings["evaluate_s"] = time.time() - t0

    emb = None
    if not a.no_embed:
        from videogene.jobs.embed import analyze_embeddings

        t0 = time.time()
        emb = analyze_embeddings(train_out, work / "embed", dataset=str(dataset), seed=a.seed,
                                 progress=True)
        timings["embed_s"] = time.time() - t0

    rows = headline_rows(res["headline"], METHOD_LABELS)
    old_rows = []
    summ = res["summary"]
    for m, label in METHOD_LABELS.items():
        if m not in summ:
            continue
        s = summ[m]
        old_rows.append({
            "method": label,
            "Pearson median": s["pearson"]["median"], "Pearson mean": s["pearson"]["mean"],
            "Spearman median": s["spearman"]["median"], "SSIM median": s["ssim"]["median"],
            "RMSE median": s["rmse"]["median"],
            "zero-frac err median": s["zero_fraction_error"]["median"],
            "|zero-frac err| median": s["abs_zero_fraction_error"]["median"],
            "Wasserstein median": s["wasserstein"]["median"],
        })
    vs = res["model_vs_linear"]
    h = res["headline"]

    def f(x, spec=".3f"):
        return "n/a" if x is None else format(x, spec)

    wins = []
    for m, comps in h.get("comparisons", {}).items():
        for b, c in comps.items():
            wins.append(f"{m} vs {METHOD_LABELS[b]}: Pearson {c['pearson']['outcome']} "
                        f"({f(c['pearson']['win_rate'], '.0%')} of frames better), RMSE "
                        f"{c['rmse']['outcome']} ({f(c['rmse']['win_rate'], '.0%')})")
    meds = h.get("methods", {})
    lin = meds.get("linear") or {}
    targets = []
    if "model_infill" in meds and lin:
        mi = meds["model_infill"]
        targets.append(f"model_infill Pearson {f(mi['pearson'])} vs linear + 0.05 = "
                       f"{f(lin['pearson'] + 0.05)}; RMSE ratio {f(mi['rmse'] / lin['rmse'], '.2f')}"
                       f" (target <= 0.9)")
    if "redraw" in meds and lin:
        rd = meds["redraw"]
        targets.append(f"a perfect sampler (count redraw, mean of {a.num_samples}) Pearson "
                       f"{f(rd['pearson'])}; RMSE ratio {f(rd['rmse'] / lin['rmse'], '.2f')}")
    cal = ((res.get("calibration") or {}).get("passes") or {}).get("model_infill") or {}
    if cal.get("calibrated_pearson") is not None:
        targets.append(f"a calibrated sampler of the in-filled pass's own posterior (posterior "
                       f"mean Pearson {f(cal['posterior_mean_pearson'])}) would score "
                       f"{f(cal['calibrated_pearson'])} (the samples: {f(cal['pearson'])}; "
                       f"sample-sample / sample-real agreement "
                       f"{f(cal['sample_agreement'])} / {f(cal['observation_agreement'])})")
    if "model_infill_expected" in meds and lin:
        me = meds["model_infill_expected"]
        targets.append(f"model_infill_expected Pearson {f(me['pearson'])}; RMSE ratio "
                       f"{f(me['rmse'] / lin['rmse'], '.2f')}")
    train_methods = (h.get("train_frames") or {}).get("methods") or {}
    for name in ("model", "model_expected"):
        if train_methods.get(name):
            targets.append(f"{name} on training frames Pearson "
                           f"{f(train_methods[name]['pearson'])} (target >= 0.5)")
    if not a.skip_train:
        targets.append(f"training {timings['train_s']:.0f} s (target <= {TRAIN_BUDGET_S} s on the "
                       f"2-core CPU machine)")
    if emb and emb.get("learned"):
        targets.append(f"gene table kNN precision@10 {f(emb['learned']['knn_precision'])} vs PCA "
                       f"baseline {f((emb.get('baseline') or {}).get('knn_precision'))} (chance "
                       f"{f(emb['learned'].get('knn_precision_chance'))}, labels {emb.get('labels')})")
    sets = ", ".join(f"{k} {v}" for k, v in res["gene_sets"].items())
    notes = (
        f"Table: gene set `{h['gene_set']}` ({h['n_genes']} genes) against the {h['against']}, "
        f"medians over the held-out frames; train-frame Pearson: the same set on the observed "
        f"time points of the same generated videos"
        + (f", against the {h['train_frames']['against']}" if h.get("train_frames") else "")
        + f". {'; '.join(wins) or 'n/a'}. Gene sets (genes): {sets}.\n\n"
        + (f"Targets (issue 'The model learns genes'): {'; '.join(targets)}.\n\n" if targets
           else "")
        + f"Preset {a.preset}, atlas {cfg.n_genes} genes x {len(cfg.timepoints)} time points x "
        f"{cfg.slices_per_timepoint} slices ({cfg.bins_per_slice} bins), canvas {resolution}px, "
        f"held out E{a.holdout:g}; {res['n_frames']} frames ({res['n_genes']} genes) evaluated; "
        f"training {a.max_steps if a.max_steps is not None else 'config'} steps via {a.launcher}; "
        f"{a.num_samples} samples x {a.steps} steps ({a.scheduler}), guidance {a.guidance:g} "
        f"(in-filled: {a.infill_guidance:g}, {a.infill_scheduler}).\n\n"
        f"All genes against the real slice (the earlier yardstick):\n\n{markdown_table(old_rows)}\n\n"
        f"**Model vs linear interpolation** (all genes, real slice): median Pearson difference "
        f"{f(vs['median_pearson_difference'], '+.3f')}, median RMSE ratio "
        f"{f(vs['median_rmse_ratio'])}, Pearson win rate {f(vs['pearson_win_rate'], '.0%')}, "
        f"median zero-fraction error {f(vs['model_median_zero_fraction_error'], '+.3f')} (model) vs "
        f"{f(vs['linear_median_zero_fraction_error'], '+.3f')} (linear).\n\n"
        f"Timings: " + ", ".join(f"{k[:-2]} {v:.0f} s" for k, v in timings.items())
        + f"; peak RSS {peak_rss_gib(include_children=True):.2f} GiB. "
        f"Report: {res['files']['report']}"
    )
    title = (f"Held-out time point E{a.holdout:g}: `{h['gene_set']}` genes vs the {h['against']} "
             f"({a.preset})")
    report(title, rows, notes=notes, append=not a.no_append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
