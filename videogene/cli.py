"""The ``videogene`` command line: one subcommand per step of the pipeline.

    videogene synth     write the built-in synthetic atlas (the embedded default)
    videogene prepare   AnnData slices -> gene videos (a streamable Parquet dataset)
    videogene generate  sample whole time trajectories for genes from a trained model
    videogene evaluate  held-out frames: model vs baselines vs truth
    videogene embed     export and analyse the learned gene embeddings
    videogene train     train a model (one process; ``accelerate launch train.py`` for several)
    videogene demo      the main job: synth -> prepare -> train -> generate -> evaluate -> embed

Training on several GPUs is ``accelerate launch train.py --config configs/<name>.yaml``
(``train.py`` and ``videogene train`` both run ``videogene.training.loop``).
Every subcommand is a thin layer over a library function; ``tools/*.py`` call the same ones.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from .errors import InputError
from .utils import parse_timepoints, setup_logging


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


# ----------------------------------------------------------------------------- synth
def add_synth_args(p: argparse.ArgumentParser) -> None:
    from .data.synthetic import SynthConfig

    d = SynthConfig()
    p.add_argument("--out", required=True, help="output folder (atlas.h5ad, atlas_preview.png)")
    p.add_argument("--genes", type=int, default=d.n_genes, help=f"number of genes ({d.n_genes})")
    p.add_argument("--timepoints", default=",".join(str(t) for t in d.timepoints),
                   help="developmental days, START:STOP:STEP or a comma list (default 9.5..16.5)")
    p.add_argument("--slices", type=int, default=d.slices_per_timepoint,
                   help=f"slices per time point ({d.slices_per_timepoint})")
    p.add_argument("--bins", type=int, default=d.bins_per_slice,
                   help=f"approximate bins per slice ({d.bins_per_slice})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"random seed ({d.seed})")
    p.add_argument("--no-preview", action="store_true", help="skip atlas_preview.png")


def run_synth(a: argparse.Namespace) -> None:
    from .data.synthetic import SynthConfig, write_atlas

    cfg = SynthConfig(n_genes=a.genes, timepoints=tuple(parse_timepoints(a.timepoints)),
                      slices_per_timepoint=a.slices, bins_per_slice=a.bins, seed=a.seed)
    _print_json(write_atlas(cfg, a.out, preview=not a.no_preview, progress=True))


# ----------------------------------------------------------------------------- prepare
def add_prepare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="one or more .h5ad files")
    p.add_argument("--out", required=True, help="dataset folder to write")
    p.add_argument("--time-key", default="timepoint", help="obs column with the time (timepoint)")
    p.add_argument("--slice-key", default="slice", help="obs column with the slice id (slice)")
    p.add_argument("--spatial-key", default="spatial", help="obsm key of coordinates (spatial)")
    p.add_argument("--spatial-axes", default=None, metavar="I,J",
                   help="the two columns of the coordinates that span the section plane "
                   "(default 0,1; e.g. 0,2 for x,z of 3-D coordinates)")
    p.add_argument("--resolution", type=int, default=64, help="canvas side in pixels (64)")
    p.add_argument("--genes", default=None,
                   help="file with one gene name per line (default: all genes)")
    p.add_argument("--min-cells", type=int, default=0,
                   help="keep genes expressed in at least N cells (0: keep all)")
    p.add_argument("--gene-set", choices=["same", "union", "intersection"], default="same",
                   help="how to combine files with different gene sets (default: require same)")
    p.add_argument("--timepoint", type=float, default=None,
                   help="time to give to files that lack the time column")
    p.add_argument("--layer", default=None, help="read this layer instead of X")
    p.add_argument("--holdout-timepoints", default=None,
                   help="time points to record as held out from training (comma list)")
    p.add_argument("--scale", choices=["timepoint", "dataset", "slice"], default="timepoint",
                   help="canvas scale shared per time point (default: every frame fills the "
                   "canvas), per dataset (growth stays visible) or fitted per slice")
    p.add_argument("--orientation", choices=["expression", "moments", "none"],
                   default="expression",
                   help="which way up each slice lands: the canvas symmetry that best matches "
                   "already oriented slices by expression (default), the outline's third moment, "
                   "or none (keep the input axes)")
    p.add_argument("--reference-slice", default=None, metavar="NAME",
                   help="slice that keeps its orientation and anchors the others "
                   "(default: the first slice of the best-sampled time point)")
    p.add_argument("--shard-genes", type=int, default=1000, help="genes per Parquet shard")


def _parse_axes(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        axes = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--spatial-axes {text!r}: expected two column numbers such as 0,1") from None
    if len(axes) != 2:
        raise InputError(f"--spatial-axes {text!r}: expected two column numbers such as 0,1")
    return axes


def run_prepare(a: argparse.Namespace) -> None:
    from .data.prepare import prepare_dataset

    holdout = parse_timepoints(a.holdout_timepoints) if a.holdout_timepoints else []
    meta = prepare_dataset(
        a.inputs, a.out, time_key=a.time_key, slice_key=a.slice_key, spatial_key=a.spatial_key,
        resolution=a.resolution, genes=a.genes, min_cells=a.min_cells, gene_set=a.gene_set,
        timepoint=a.timepoint, layer=a.layer, holdout_timepoints=holdout,
        shard_genes=a.shard_genes, scale=a.scale, orientation=a.orientation,
        reference_slice=a.reference_slice, spatial_axes=_parse_axes(a.spatial_axes), progress=True,
    )
    _print_json({"out": a.out, "genes": len(meta["genes"]), "timepoints": meta["timepoints"],
                 "slices": len(meta["slices"]), "normalization": meta["normalization"],
                 "counts": meta.get("counts", {})})


# ----------------------------------------------------------------------------- generate
def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help="export folder, training output_dir (newest export) or Hub id")
    p.add_argument("--no-ema", action="store_true", help="use raw weights instead of EMA")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: best)")
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")


def add_sampler_args(p: argparse.ArgumentParser, *, samples: int, steps: int,
                     guidance_by_context: bool = False, of: str = "") -> None:
    """``guidance_by_context``: ``--guidance`` and ``--scheduler`` default to None, resolved
    from ``--context``. ``of``: what the fixed defaults apply to, for their help."""
    from .pipelines.samplers import (
        DEFAULT_GUIDANCE,
        DEFAULT_INFILL_GUIDANCE,
        DEFAULT_INFILL_SAMPLER,
        DEFAULT_SAMPLER,
        SAMPLERS,
    )

    p.add_argument("--num-samples", type=int, default=samples, help=f"samples per gene ({samples})")
    p.add_argument("--steps", type=int, default=steps, help=f"sampling steps ({steps})")
    if guidance_by_context:
        p.add_argument("--guidance", type=float, default=None,
                       help=f"classifier-free guidance (default {DEFAULT_GUIDANCE:g}; "
                       f"{DEFAULT_INFILL_GUIDANCE:g} with --context observed)")
    else:
        p.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE,
                       help=f"classifier-free guidance{of} ({DEFAULT_GUIDANCE:g})")
    # the option keeps its historical name; it picks the sampler, not the noise schedule
    if guidance_by_context:
        p.add_argument("--scheduler", choices=list(SAMPLERS), default=None,
                       help=f"sampler (default {DEFAULT_SAMPLER}; {DEFAULT_INFILL_SAMPLER} with "
                       "--context observed)")
    else:
        p.add_argument("--scheduler", choices=list(SAMPLERS), default=DEFAULT_SAMPLER,
                       help=f"sampler{of} ({DEFAULT_SAMPLER})")
    p.add_argument("--batch-size", type=int, default=8, help="trajectories per forward pass (8)")


def add_generate_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--gene", action="append", required=True, dest="genes",
                   help="gene name; repeat for several")
    p.add_argument("--timepoints", default=None,
                   help="START:STOP:STEP or comma list (default: the training time points)")
    add_sampler_args(p, samples=4, steps=25, guidance_by_context=True)
    p.add_argument("--context", choices=["none", "observed"], default="none",
                   help="none: generate from the gene alone (default); observed: fill the "
                   "requested days from the gene's observed frames (in-filling)")
    p.add_argument("--dataset", default=None,
                   help="prepared dataset for --context observed (default: the training "
                   "config's data.path)")
    p.add_argument("--out", required=True, help="output folder")


def run_generate(a: argparse.Namespace) -> None:
    from .jobs.generate import generate_trajectories

    _print_json(generate_trajectories(
        a.model, a.genes, parse_timepoints(a.timepoints) if a.timepoints else None, a.out,
        num_samples=a.num_samples, num_inference_steps=a.steps, guidance_scale=a.guidance,
        sampler=a.scheduler, batch_size=a.batch_size, seed=a.seed, use_ema=not a.no_ema,
        device=a.device, context=a.context, dataset=a.dataset,
    ))


# ----------------------------------------------------------------------------- evaluate
def add_evaluate_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--dataset", required=True, help="prepared dataset folder")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--max-genes", type=int, default=None, help="evaluate at most N genes")
    p.add_argument("--no-train-frames", action="store_true",
                   help="do not score the observed (training) time points of the generated videos")
    p.add_argument("--no-infill", action="store_true",
                   help="do not score model_infill (held-out frames in-filled from the observed "
                   "ones; models trained with context only)")
    p.add_argument("--no-expected", action="store_true",
                   help="do not score the expected expression (model_expected, "
                   "model_infill_expected: one sampler step, the posterior mean)")
    add_sampler_args(p, samples=4, steps=25, of=" of the gene-only pass (model)")
    from .pipelines.samplers import DEFAULT_INFILL_GUIDANCE, DEFAULT_INFILL_SAMPLER, SAMPLERS

    p.add_argument("--infill-guidance", type=float, default=DEFAULT_INFILL_GUIDANCE,
                   help="classifier-free guidance of the in-filled pass (model_infill) "
                   f"({DEFAULT_INFILL_GUIDANCE:g})")
    p.add_argument("--infill-scheduler", choices=list(SAMPLERS), default=DEFAULT_INFILL_SAMPLER,
                   help=f"sampler of the in-filled pass (model_infill) ({DEFAULT_INFILL_SAMPLER})")


def run_evaluate(a: argparse.Namespace) -> None:
    from .jobs.evaluate import evaluate_model

    _print_json(evaluate_model(
        a.model, a.dataset, a.out, num_samples=a.num_samples, num_inference_steps=a.steps,
        guidance_scale=a.guidance, infill_guidance_scale=a.infill_guidance,
        scheduler=a.scheduler, infill_scheduler=a.infill_scheduler, batch_size=a.batch_size,
        max_genes=a.max_genes, seed=a.seed,
        use_ema=not a.no_ema, device=a.device,
        train_frames=not a.no_train_frames, infill=not a.no_infill, expected=not a.no_expected,
    ))


# ----------------------------------------------------------------------------- embed
def add_embed_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help="export folder, training output_dir (newest export) or Hub id")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--query", action="append", default=[], dest="queries",
                   help="gene whose neighbours to list; repeat for several")
    p.add_argument("--dataset", default=None,
                   help="prepared dataset (default: the one recorded in the model, if present)")
    p.add_argument("--k", type=int, default=10, help="neighbours per gene (10)")
    p.add_argument("--no-ema", action="store_true", help="use raw weights instead of EMA")
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")


def run_embed(a: argparse.Namespace) -> None:
    from .jobs.embed import analyze_embeddings

    _print_json(analyze_embeddings(a.model, a.out, queries=a.queries, dataset=a.dataset, k=a.k,
                                   use_ema=not a.no_ema, seed=a.seed))


# ----------------------------------------------------------------------------- demo
def add_demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="*", metavar="INPUT_OR_KEY=VALUE",
                   help="your own .h5ad files (default: the built-in synthetic atlas) and "
                   "training config overrides such as max_steps=200")
    p.add_argument("--out", default="runs/demo", help="output folder (runs/demo)")
    p.add_argument("--config", default=None, help="training config (default: configs/tiny.yaml)")
    p.add_argument("--timepoint", type=float, default=None,
                   help="time for input files that lack the time column")
    p.add_argument("--time-key", default="timepoint", help="obs column with the time (timepoint)")
    p.add_argument("--slice-key", default="slice", help="obs column with the slice id (slice)")
    p.add_argument("--spatial-key", default="spatial", help="obsm key of coordinates (spatial)")
    p.add_argument("--gene", action="append", default=None, dest="show_genes",
                   help="gene to generate; repeat for several (default: a few markers)")
    p.add_argument("--force", action="store_true",
                   help="redo every step (default: skip steps already done with the same settings)")


def run_demo(a: argparse.Namespace) -> None:
    from .jobs.demo import run_main_job

    inputs = [i for i in a.inputs if "=" not in i]
    overrides = [i for i in a.inputs if "=" in i]
    _print_json(run_main_job(a.out, inputs=inputs or None, config=a.config, overrides=overrides,
                             timepoint=a.timepoint, genes=a.show_genes, force=a.force,
                             time_key=a.time_key, slice_key=a.slice_key,
                             spatial_key=a.spatial_key))


COMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "synth": ("write the built-in synthetic atlas", add_synth_args, run_synth),
    "prepare": ("AnnData slices -> streamable gene-video dataset", add_prepare_args, run_prepare),
    "generate": ("generate time trajectories for genes", add_generate_args, run_generate),
    "evaluate": ("score held-out frames against baselines", add_evaluate_args, run_evaluate),
    "embed": ("analyse the learned gene embeddings", add_embed_args, run_embed),
    "demo": ("run the main job end to end", add_demo_args, run_demo),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="videogene",
        description="Video diffusion models of spatiotemporal gene expression. "
        "Train with `videogene train --config configs/<name>.yaml` (one process) or "
        "`accelerate launch train.py --config ...` (several).",
    )
    _add_verbosity(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, add_args, run) in COMMANDS.items():
        if name == "generate":  # listed in pipeline order; parsed by training.loop (see main)
            sub.add_parser("train", help="train a model (videogene train --help)", add_help=False)
        sp = sub.add_parser(name, help=help_text, description=help_text)
        add_args(sp)
        sp.set_defaults(_run=run)
    return parser


def _add_verbosity(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only")


def _execute(args: argparse.Namespace, name: str) -> int:
    """Run a parsed command; bad input ends with one line on stderr and exit status 2."""
    setup_logging(-1 if args.quiet else args.verbose)
    try:
        args._run(args)
    except (InputError, FileNotFoundError) as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:  # its own parser: KEY=VALUE overrides, --resume, --push_to_hub
        from .training.loop import cli

        return cli(argv[1:], prog="videogene train")
    args = build_parser().parse_args(argv)
    return _execute(args, f"videogene {args.command}")


def run_tool(command: str, argv: Sequence[str] | None = None, *, description: str | None = None,
             prog: str | None = None) -> int:
    """Entry point of the ``tools/*.py`` scripts: one subcommand as a standalone script."""
    help_text, add_args, run = COMMANDS[command]
    parser = argparse.ArgumentParser(
        prog=prog, description=description or help_text,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_verbosity(parser)
    add_args(parser)
    parser.set_defaults(_run=run)
    args = parser.parse_args(argv)
    return _execute(args, parser.prog)


if __name__ == "__main__":
    sys.exit(main())
