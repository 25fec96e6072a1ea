"""``evaluate_model``: the held-out evaluation of a model, written to a report folder.

What ``videogene evaluate`` and ``tools/evaluate.py`` run: the hold-out protocol of
:mod:`videogene.tl.heldout` (frames, baselines, generated videos), the scores and summaries of
:mod:`videogene.tl.evaluate`, then ``metrics.json`` (layout in :mod:`videogene.tl.evaluate` and
docs/design.md §6), ``train_frames.json``, ``report.md`` and the PNG plots
(:func:`write_report`).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..data.holdout import holdout_spec, tkey
from ..data.meta import DEFAULT_VALUE_MAX
from ..errors import InputError
from ..pipelines.samplers import (
    DEFAULT_GUIDANCE,
    DEFAULT_INFILL_GUIDANCE,
    DEFAULT_INFILL_SAMPLER,
    DEFAULT_SAMPLER,
    SAMPLERS,
    check_sampler,
    check_sampling_args,
)
from ..tl.calibration import sample_calibration
from ..tl.evaluate import (
    HEADLINE_METRICS,
    METHOD_LABELS,
    _finite,
    _method_order,
    best_baseline,
    headline,
    score_methods,
    summarize_gene_sets,
    summarize_methods,
)
from ..tl.heldout import (
    collect_reference_frames,
    collect_train_frames,
    frames_from_videos,
    gene_sets,
    generate_videos,
    heldout_expression,
    heldout_frames,
    redraw_frames,
    select_genes,
    set_definitions,
    ssim_data_ranges,
)
from ..tl.metrics import METRICS, ZERO_THRESHOLD
from ..utils import check_output_dir, get_logger

__all__ = ["evaluate_model", "write_report", "headline_lines", "calibration_lines"]

logger = get_logger(__name__)

_SAMPLERS = SAMPLERS  # the sampler registry, videogene.pipelines.samplers (no diffusers import)

_METRIC_LABELS = {
    "pearson": "Pearson", "spearman": "Spearman", "ssim": "SSIM", "rmse": "RMSE",
    "zero_fraction_error": "zero-frac err", "abs_zero_fraction_error": "|zero-frac err|",
    "wasserstein": "Wasserstein",
}


def _num(x, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def headline_lines(h: Mapping) -> list[str]:
    """Markdown of :func:`~videogene.tl.evaluate.headline`: a table of medians and the wins
    and losses."""
    train = (h.get("train_frames") or {}).get("methods", {})
    lines = [f"Gene set `{h['gene_set']}` ({h['n_genes']} genes, {h['n_frames']} held-out "
             f"frames), scored against the {h['against']}; medians over frames"
             + (f"; last column: the same set on the training frames, against the "
                f"{h['train_frames']['against']}" if train else "") + ".", "",
             "| method | " + " | ".join(_METRIC_LABELS[k] for k in HEADLINE_METRICS)
             + (" | train-frame Pearson |" if train else " |"),
             "|---|" + "---|" * (len(HEADLINE_METRICS) + bool(train))]
    for m, s in h["methods"].items():
        cells = [_num(s[k]) for k in HEADLINE_METRICS]
        if train:
            cells.append(_num((train.get(m) or {}).get("pearson")))
        lines.append(f"| {METHOD_LABELS.get(m, m)} | " + " | ".join(cells) + " |")
    lines.append("")
    for m, comps in h["comparisons"].items():
        for b, c in comps.items():
            parts = []
            for metric in HEADLINE_METRICS[:2]:
                x = c[metric]
                wr = "n/a" if x["win_rate"] is None else f"{100 * x['win_rate']:.0f}%"
                parts.append(f"{_METRIC_LABELS[metric]} {_num(x['model'])} vs "
                             f"{_num(x['baseline'])}: **{x['outcome'] or 'n/a'}** "
                             f"(better on {wr} of frames)")
            lines.append(f"- {METHOD_LABELS.get(m, m)} vs {METHOD_LABELS.get(b, b)}: "
                         + "; ".join(parts))
    if train and "model" in train:
        ref = train.get("mean_image") or {}
        lines.append(f"- training frames: model Pearson {_num(train['model']['pearson'])} vs "
                     f"{_num(ref.get('pearson'))} for the mean over the other observed times; "
                     f"RMSE {_num(train['model']['rmse'])} vs {_num(ref.get('rmse'))}")
    return lines


# ----------------------------------------------------------------------------- report.md
_CALIBRATION_ROWS = (
    ("sample_agreement", "Pearson between two samples (mean over pairs)"),
    ("observation_agreement", "Pearson between a sample and the real slice"),
    ("posterior_mean_pearson", "one-step posterior mean vs the truth"),
    ("draw_pearson", "one count redraw vs the truth (the data's noise)"),
    ("pearson", "samples vs the truth (mean of samples)"),
    ("calibrated_pearson", "a calibrated sampler of this posterior (mean of samples)"),
    ("pearson_per_sample", "samples vs the truth (per sample)"),
    ("calibrated_pearson_per_sample", "a calibrated sampler of this posterior (per sample)"),
    ("prediction_correlation", "frame by frame: calibrated vs actual (correlation)"),
)


def calibration_lines(cal: Mapping) -> list[str]:
    """The report's calibration section from ``summary["calibration"]``."""
    passes = cal["passes"]
    names = list(passes)
    lines = [f"## Are the samples calibrated? (`{cal['gene_set']}` genes)", "",
             "A sampler of the right distribution agrees with the real slice as well as with "
             "another of its samples. Where the truth is known, the samples' score is set beside "
             "what a calibrated sampler of the model's own posterior (its one-step posterior "
             "mean) would score given the data's count noise (`videogene.tl.calibration`). "
             "Medians over frames.", "",
             "| | " + " | ".join(f"`{n}`" for n in names) + " |", "|---|" + "---|" * len(names)]
    for key, label in _CALIBRATION_ROWS:
        if any(passes[n].get(key) is not None for n in names):
            lines.append(f"| {label} | " + " | ".join(_num(passes[n].get(key)) for n in names)
                         + " |")
    return lines


def _cell(s: Mapping) -> str:
    med, mean = s["median"], s["mean"]
    if med is None or not np.isfinite(med):
        return "n/a"
    return f"{med:.3f} ({mean:.3f})"


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f}%"


def _method_table(methods: Mapping, metric_names: Sequence[str]) -> list[str]:
    lines = ["| method | " + " | ".join(_METRIC_LABELS[m] for m in metric_names) + " |",
             "|---|" + "---|" * len(metric_names)]
    for m, s in methods.items():
        lines.append(f"| {METHOD_LABELS.get(m, m)} | "
                     + " | ".join(_cell(s[k]) for k in metric_names) + " |")
    return lines


def _set_tables(by_set: Mapping, metric_names: Sequence[str], level: str = "###") -> list[str]:
    lines: list[str] = []
    for name, entry in by_set.items():
        lines += ["", f"{level} `{name}` ({entry['n_genes']} genes, {entry['n_frames']} frames)", ""]
        lines += _method_table(entry["methods"], metric_names) if entry["n_frames"] else ["(empty)"]
    return lines


def write_report(result: Mapping, out_dir, *, examples: Sequence[Mapping] = (),
                 value_max: float = DEFAULT_VALUE_MAX) -> dict[str, str]:
    """Write ``metrics.json`` (everything but the training-frame records), ``report.md``,
    ``train_frames.json`` (per-frame records of the training frames, when scored) and the
    plots; returns ``{name: path}``."""
    from ..pl.evaluation import plot_example_frames, plot_gene_scatter

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"metrics": str(out / "metrics.json"), "report": str(out / "report.md")}
    if result.get("train_records") is not None:
        files["train_frames"] = str(out / "train_frames.json")
    summary = result["summary"]
    methods = summary["methods"]
    has_model = "model" in methods
    best = best_baseline(summary)
    spatial = set((result.get("gene_sets") or {}).get("spatial", ()))
    plots: dict[str, str] = {}
    if has_model:
        plots["scatter"] = str(plot_gene_scatter(
            result["records"], out / "scatter_model_vs_baseline.png", baseline=best,
            highlight=spatial or None))
        if "vs_truth" in summary:
            plots["scatter_vs_truth"] = str(plot_gene_scatter(
                result["records"], out / "scatter_model_vs_baseline_truth.png", baseline=best,
                key="vs_truth", highlight=spatial or None))
    if examples:
        plots["examples"] = str(plot_example_frames(examples, out / "example_frames.png",
                                                    value_max=value_max))
    files.update(plots)

    metric_names = list(METRICS)
    rel_names = [m for m in metric_names if m != "zero_fraction_error"]  # signed: ratio meaningless
    lines = ["# Held-out evaluation", ""]
    p = result["protocol"]
    sets_txt = ", ".join(f"`{s}` {d['n_genes']}" for s, d in p.get("gene_sets", {}).items())
    lines += [
        f"- held-out time points: {', '.join(f'{t:g}' for t in p['heldout_timepoints']) or 'none'}; "
        f"held-out single frames: {p['n_heldout_single_frames']}"
        + (f"; not scored, the gene not stored in the reference slice: {p['n_frames_not_stored']}"
           if p.get("n_frames_not_stored") else ""),
        f"- frames evaluated: {p['n_frames']} ({p['n_genes']} genes"
        + (f", chosen from {p['n_genes_heldout']} by --max-genes" if p["n_genes"] < p["n_genes_heldout"]
           else "") + f"); expressed (real frame): {p['n_expressed']}",
        *([f"- gene sets (genes): {sets_txt}"] if sets_txt else []),
        f"- real frame: the first slice of the held-out time point; noise floor: its second slice; "
        f"zero = below {p['zero_threshold']:g} expression units; SSIM data range: "
        f"{p.get('ssim_data_range', p['value_max'])}",
        f"- model: {result['settings'].get('model', '')}, {result['settings']['num_samples']} samples, "
        f"{result['settings']['num_inference_steps']} {result['settings']['scheduler']} steps, "
        f"guidance {result['settings']['guidance_scale']:g}"
        + (f" (in-filled: {result['settings']['infill_guidance_scale']:g}, "
           f"{result['settings'].get('infill_scheduler', result['settings']['scheduler'])})"
           if result["settings"].get("infill") else "")
        + f", seed {result['settings']['seed']}",
    ]
    lines.append("")
    if summary.get("headline"):
        h = summary["headline"]
        lines += [f"## Headline: `{h['gene_set']}` genes against the {h['against']}", ""]
        lines += headline_lines(h)
        lines.append("")
    lines += ["## Against the real slice", "",
              "Median (mean) over frames; higher is better for Pearson, Spearman and SSIM, lower "
              "for the rest (zero-fraction error: closer to 0). All genes:", ""]
    lines += _method_table(methods, metric_names)
    comp = summary.get("vs_linear")
    if comp:
        lines += ["", "Relative difference of the median to linear interpolation "
                  "((method - linear) / |linear|), and the share of frames where the method beats "
                  "linear interpolation (win rate):", "",
                  "| method | " + " | ".join(_METRIC_LABELS[m] for m in rel_names) + " |",
                  "|---|" + "---|" * len(rel_names)]
        for m in comp:
            if m != "linear":
                cells = []
                for k in rel_names:
                    c = comp[m][k]
                    wr = "n/a" if c["win_rate"] is None else f"{100 * c['win_rate']:.0f}%"
                    cells.append(f"{_pct(c['relative_difference'])} (win {wr})")
                lines.append(f"| {METHOD_LABELS.get(m, m)} | " + " | ".join(cells) + " |")
    if has_model and "linear" in methods:
        mp, lp = methods["model"]["pearson"]["median"], methods["linear"]["pearson"]["median"]
        mr, lr = methods["model"]["rmse"]["median"], methods["linear"]["rmse"]["median"]
        mz = methods["model"]["zero_fraction_error"]["median"]
        lz = methods["linear"]["zero_fraction_error"]["median"]
        ratio = f"{mr / lr:.3f}" if lr else "n/a"
        lines += ["", f"**Model vs linear interpolation** (all genes, real slice): median Pearson "
                  f"{mp:.3f} vs {lp:.3f} (difference {mp - lp:+.3f}); median RMSE ratio {ratio}; "
                  f"median zero-fraction error {mz:+.3f} vs {lz:+.3f}."]
    if "by_gene_set" in summary:
        lines += ["", "Per gene set:"] + _set_tables(summary["by_gene_set"], metric_names)
    if "vs_truth" in summary:
        lines += ["", "## Against the noise-free truth (synthetic atlas)", "",
                  "The expected expression of the reference slice, rasterized like the data; "
                  "the second slice here shows how far one noisy measurement is from it."]
        lines += _set_tables(summary["vs_truth"]["by_gene_set"], metric_names)
    if summary.get("calibration"):
        lines += [""] + calibration_lines(summary["calibration"])
    train = summary.get("train_frames")
    if train:
        lines += ["", "## Training frames (observed time points: "
                  f"{', '.join(f'{t:g}' for t in train['timepoints'])})", "",
                  "The same generated videos at the time points the model was trained on; the mean "
                  "image is over the gene's other observed time points.", "",
                  "### Training frames against the real slice"]
        lines += _set_tables(train["by_gene_set"], metric_names, level="####")
        if "vs_truth" in train:
            lines += ["", "### Training frames against the noise-free truth"]
            lines += _set_tables(train["vs_truth"]["by_gene_set"], metric_names, level="####")
    if plots:
        lines += ["", "## Plots", ""]
        if "scatter" in plots:
            lines.append(f"Per frame, model vs the best baseline ({METHOD_LABELS[best]}), against "
                         f"the real slice: ![scatter]({Path(plots['scatter']).name})")
        if "scatter_vs_truth" in plots:
            lines += ["", "The same against the truth: "
                      f"![scatter vs truth]({Path(plots['scatter_vs_truth']).name})"]
        if "examples" in plots:
            lines += ["", "Example frames (shared colour scale per gene; grey: outside tissue): "
                      f"![examples]({Path(plots['examples']).name})"]
    Path(files["report"]).write_text("\n".join(lines) + "\n")
    payload = {k: v for k, v in result.items() if k not in ("train_records", "gene_sets")}
    payload["files"] = files
    Path(files["metrics"]).write_text(json.dumps(_jsonable(payload), indent=1))
    if "train_frames" in files:
        Path(files["train_frames"]).write_text(json.dumps(_jsonable(
            {"timepoints": (train or {}).get("timepoints"), "records": result["train_records"]})))
    return files


def _jsonable(obj):
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _pick_examples(records: Sequence[Mapping], n: int = 4, prefer: set | frozenset = frozenset()
                   ) -> list[int]:
    """Up to ``n`` expressed frames at evenly spaced expression ranks (deterministic), from
    the genes in ``prefer`` (the spatial set) when at least two of them are expressed."""
    idx = [k for k, r in enumerate(records) if r["expressed"]] or list(range(len(records)))
    preferred = [k for k in idx if records[k]["gene"] in prefer]
    if len(preferred) >= 2:
        idx = preferred
    idx = sorted(idx, key=lambda k: (records[k]["real_mean"], k))
    if len(idx) <= n:
        return idx
    return [idx[p] for p in np.unique(np.round(np.linspace(0, len(idx) - 1, n)).astype(int))][::-1]


# ----------------------------------------------------------------------------- entry point
def evaluate_model(model, dataset, out_dir, *, num_samples: int = 4, num_inference_steps: int = 25,
                   guidance_scale: float = DEFAULT_GUIDANCE,
                   infill_guidance_scale: float = DEFAULT_INFILL_GUIDANCE,
                   scheduler: str = DEFAULT_SAMPLER,
                   infill_scheduler: str = DEFAULT_INFILL_SAMPLER, batch_size: int = 8,
                   max_genes: int | None = None, seed: int = 0, use_ema: bool = True,
                   train_frames: bool = True, infill: bool = True, expected: bool = True,
                   device=None,
                   progress: bool = True) -> dict:
    """Score a trained model on the held-out frames of ``dataset`` against the baselines.

    ``model``: an export folder, a training ``output_dir`` (newest export), a Hub id, or a
    loaded :class:`~videogene.pipelines.VideoGenePipeline`
    (:func:`~videogene.pipelines.resolve_pipeline`). ``dataset``: the prepared dataset
    folder (its ``meta["spatially_variable"]`` gives the ``spatial`` gene set; a dataset
    prepared without it gets the flag computed from its canvases, with a warning).
    ``train_frames``: also score the observed time points of the generated videos.
    ``infill``: models with in-filling context are also scored as ``model_infill``: the
    held-out frames generated from the gene's observed frames (one more sampling pass, at
    ``infill_guidance_scale`` with the sampler ``infill_scheduler``; ``guidance_scale`` and
    ``scheduler`` are the gene-only pass's).
    ``expected``: also score the expected expression, ``model_expected`` (and
    ``model_infill_expected``): the same passes with one sampler step, whose output is the
    network's clean estimate from pure noise (the posterior mean; no sampling noise).
    Writes ``metrics.json`` (per frame, per method; summaries in the layout of
    :mod:`videogene.tl.evaluate`; protocol; settings), ``train_frames.json``, ``report.md``
    and the PNG plots to ``out_dir`` and returns a JSON-able summary: ``{"out", "files",
    "n_frames", "n_genes", "heldout_timepoints", "gene_sets": {set: n_genes}, "summary":
    {method: {metric: {"median", "mean"}}} (all genes, real slice), "headline": {...}
    (:func:`~videogene.tl.evaluate.headline`), "model_vs_linear": {...}, "seconds"}``.
    """
    from ..data import load_masks, load_metadata, stored_slices
    from ..pipelines.loading import read_training_config, resolve_pipeline

    t0 = time.time()
    check_output_dir(out_dir)
    check_sampling_args(num_samples=num_samples, num_inference_steps=num_inference_steps,
                        guidance_scale=guidance_scale, batch_size=batch_size,
                        infill_guidance_scale=infill_guidance_scale)
    if max_genes is not None and max_genes < 1:
        raise InputError(f"max_genes: must be >= 1, got {max_genes}")
    check_sampler(scheduler, what="scheduler")
    check_sampler(infill_scheduler, what="infill_scheduler")
    dataset = Path(dataset)
    if not dataset.is_dir():
        raise InputError(f"dataset {dataset}: no such folder")
    meta = load_metadata(dataset)
    masks = np.asarray(load_masks(dataset), dtype=bool)
    if masks.shape[0] != len(meta.slices):
        raise InputError(f"dataset {dataset}: {masks.shape[0]} masks but {len(meta.slices)} slices")
    pipe, model_name = resolve_pipeline(model, use_ema=use_ema, device=device)
    train_cfg = read_training_config(getattr(pipe, "source_dir", None))
    spec = holdout_spec(meta, train_cfg, getattr(pipe, "meta", None))
    frames = heldout_frames(meta, spec=spec, name=f"dataset {dataset}")
    stored = stored_slices(dataset, genes=list(dict.fromkeys(g for g, _ in frames)))
    measured = heldout_frames(meta, spec=spec, name=f"dataset {dataset}", stored=stored)
    n_unmeasured = len(frames) - len(measured)
    if n_unmeasured:
        logger.warning("%d held-out frame(s) are not scored: their gene is not stored in the "
                       "time point's reference slice (a --gene-set union dataset), so there is "
                       "no real frame", n_unmeasured)
        frames = measured

    size = int(getattr(pipe.unet.config, "sample_size", meta.resolution))
    if size != meta.resolution:
        raise InputError(f"model {model_name}: canvas {size}x{size} but dataset {dataset} is "
                         f"{meta.resolution}x{meta.resolution}")
    vocab = set(pipe.gene_names)
    dropped = sorted({g for g, _ in frames if g not in vocab})
    if dropped:
        logger.warning("%d held-out gene(s) are not in the model's vocabulary and are skipped "
                       "(e.g. %s)", len(dropped), dropped[0])
        frames = [f for f in frames if f[0] in vocab]
    if not frames:
        raise InputError(f"model {model_name}: none of the held-out genes of {dataset} is in its "
                         "vocabulary")
    all_genes = list(dict.fromkeys(g for g, _ in frames))
    if max_genes is not None and max_genes < len(all_genes):
        expr = heldout_expression(dataset, meta, masks, frames, progress=progress)
        keep = set(select_genes(all_genes, [expr[g] for g in all_genes], max_genes))
        frames = [f for f in frames if f[0] in keep]
    genes = list(dict.fromkeys(g for g, _ in frames))
    sets = gene_sets(meta, genes, name=f"dataset {dataset}", dataset_dir=dataset, masks=masks,
                     spec=spec, progress=progress)
    ranges, range_rule = ssim_data_ranges(meta, genes)

    value_max = meta.value_max
    fs = collect_reference_frames(dataset, meta, masks, frames, spec, progress=progress)
    train_fs = (collect_train_frames(dataset, meta, masks, genes, spec, progress=progress)
                if train_frames else None)
    timepoints = sorted({tkey(t) for t in meta.timepoints} | {t for _, t in frames})
    passes = ["gene only"] + (["in-filled"] if infill and getattr(
        pipe.unet.config, "context_channels", False) else [])
    if progress:
        per_pass = len(genes) * num_samples
        scales = [guidance_scale, infill_guidance_scale][:len(passes)]
        calls = sum(per_pass * num_inference_steps * (2 if s > 1 else 1) for s in scales)
        print(f"[videogene evaluate] {len(genes)} genes ({len(all_genes)} held out"
              f"{'' if max_genes is None else f', max_genes={max_genes}'}) x {num_samples} "
              f"samples x {num_inference_steps} steps x {len(passes)} pass(es) "
              f"({' + '.join(passes)}, guidance {' / '.join(f'{s:g}' for s in scales)}, "
              f"sampler {' / '.join([scheduler, infill_scheduler][:len(passes)])}): "
              f"{per_pass * len(passes)} videos of {len(timepoints)} frames, {calls} network "
              "calls (a guided step is 2)"
              + (f", + {len(passes)} one-step expected-expression pass(es)" if expected else ""),
              file=sys.stderr, flush=True)
    videos = generate_videos(pipe, genes, timepoints, masks, meta, num_samples=num_samples,
                             num_inference_steps=num_inference_steps,
                             guidance_scale=guidance_scale, scheduler=scheduler,
                             batch_size=batch_size, seed=seed, progress=progress)
    generated = frames_from_videos(videos, frames, timepoints)
    scored = {"model": generated}
    if infill and getattr(pipe.unet.config, "context_channels", False):
        infilled = generate_videos(pipe, genes, timepoints, masks, meta, num_samples=num_samples,
                                   num_inference_steps=num_inference_steps,
                                   guidance_scale=infill_guidance_scale,
                                   scheduler=infill_scheduler,
                                   batch_size=batch_size, seed=seed, progress=progress,
                                   context="observed", dataset=dataset)
        scored["model_infill"] = frames_from_videos(infilled, frames, timepoints)
        del infilled
    expected_videos = None
    if expected:  # one step from pure noise: the network's clean estimate (posterior mean)
        kw = dict(num_samples=num_samples, num_inference_steps=1, batch_size=batch_size,
                  seed=seed, progress=progress)
        expected_videos = generate_videos(pipe, genes, timepoints, masks, meta,
                                          guidance_scale=guidance_scale, scheduler=scheduler, **kw)
        scored["model_expected"] = frames_from_videos(expected_videos, frames, timepoints)
        if "model_infill" in scored:
            scored["model_infill_expected"] = frames_from_videos(generate_videos(
                pipe, genes, timepoints, masks, meta, guidance_scale=infill_guidance_scale,
                scheduler=infill_scheduler, context="observed", dataset=dataset, **kw),
                frames, timepoints)
    if "truth" in fs.methods:  # what a model that had learned the data exactly would score
        scored["redraw"] = redraw_frames(fs, meta, n_draws=num_samples, seed=seed,
                                         progress=progress)
    records = score_methods(fs, scored, data_range=ranges, progress=progress)
    summary = summarize_methods(records)
    summary["by_gene_set"] = summarize_gene_sets(records, sets)
    if "truth" in fs.methods:
        summary["vs_truth"] = {"by_gene_set": summarize_gene_sets(records, sets, key="vs_truth")}
    train_records = None
    if train_fs is not None and train_fs.frames:
        train_gen = frames_from_videos(videos, train_fs.frames, timepoints)
        train_scored = {"model": train_gen}
        if expected_videos is not None:
            train_scored["model_expected"] = frames_from_videos(expected_videos, train_fs.frames,
                                                                timepoints)
        if "truth" in train_fs.methods:
            train_scored["redraw"] = redraw_frames(train_fs, meta, n_draws=num_samples,
                                                   seed=seed, progress=progress)
        train_records = score_methods(train_fs, train_scored, data_range=ranges,
                                      progress=progress, desc="scoring training frames")
        tf = {"timepoints": sorted({t for _, t in train_fs.frames}),
              "n_frames": len(train_records),
              "by_gene_set": summarize_gene_sets(train_records, sets, reference="mean_image")}
        if "truth" in train_fs.methods:
            tf["vs_truth"] = {"by_gene_set": summarize_gene_sets(
                train_records, sets, reference="mean_image", key="vs_truth")}
        summary["train_frames"] = tf
    del videos, expected_videos
    summary["headline"] = headline(summary, records, sets)
    if num_samples > 1:  # do the samples agree with each other as with the data? (tl.calibration)
        members = sets.get(summary["headline"]["gene_set"], genes)
        summary["calibration"] = {"gene_set": summary["headline"]["gene_set"], "passes": {
            m: sample_calibration(fs, scored[m], records, members, method=m,
                                  expected=f"{m}_expected")
            for m in ("model", "model_infill") if m in scored}}

    protocol = {
        "heldout_timepoints": spec["timepoints"],
        "n_heldout_single_frames": len(spec["frames"]),
        "heldout_sources": spec["sources"],
        "n_frames": len(frames), "n_genes": len(genes), "n_genes_heldout": len(all_genes),
        "n_genes_not_in_model": len(dropped),
        "n_frames_not_stored": n_unmeasured,
        "n_expressed": int(sum(r["expressed"] for r in records)),
        "n_interpolated": int(sum(r["interpolated"] for r in records)),
        "gene_selection": None if max_genes is None else
        "stratified by held-out expression: >= 75% expressed genes, evenly spaced ranks",
        "gene_sets": set_definitions(sets, meta),
        "reference": "first slice of the held-out time point (meta['slices'] order)",
        "noise_floor": "second slice of the held-out time point" if "replicate" in fs.methods else None,
        "truth": ("synthetic expected expression on the reference slice, rasterized with its "
                  "recorded transform" if "truth" in fs.methods else None),
        "redraw": (f"{num_samples} new count draws of the reference slice (same bins and "
                   "library sizes), scored like samples" if "truth" in fs.methods else None),
        "timepoint_image": "per-pixel mean over the time point's slices that store the gene "
                           "and cover the pixel",
        "train_frames": None if train_records is None else {
            "timepoints": summary["train_frames"]["timepoints"],
            "methods": {m: METHOD_LABELS[m] for m in _method_order(train_records)},
            "mean_image": "mean over the gene's other observed time points",
            "generated": "the observed time points of the same generated videos"},
        "zero_threshold": ZERO_THRESHOLD, "value_max": value_max, "ssim_data_range": range_rule,
        "generated_timepoints": timepoints,
        "methods": {m: METHOD_LABELS.get(m, m) for m in summary["methods"]},
    }
    settings = {"model": model_name, "dataset": str(dataset), "num_samples": num_samples,
                "num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale,
                "infill_guidance_scale": infill_guidance_scale, "scheduler": scheduler,
                "infill_scheduler": infill_scheduler,
                "batch_size": batch_size, "max_genes": max_genes,
                "seed": seed, "use_ema": use_ema, "train_frames": train_frames,
                "infill": "model_infill" in scored, "expected": "model_expected" in scored,
                "device": str(getattr(pipe, "device", device))}
    result = {"protocol": protocol, "settings": settings, "summary": summary, "records": records,
              "train_records": train_records, "gene_sets": sets}

    examples = []
    for k in _pick_examples(records, prefer=set(sets["spatial"])):
        panels = {"real": fs.real[k], "generated (mean)": generated[k].mean(0),
                  "generated (sample 1)": generated[k][0]}
        if "redraw" in scored:  # one sample of a perfect sampler, beside the model's sample 1
            panels["count redraw (one draw)"] = scored["redraw"][k][0]
        for name, label in (("model_infill", "generated, in-filled (mean)"),
                            ("model_expected", "expected"),
                            ("model_infill_expected", "expected, in-filled")):
            if name in scored:
                panels[label] = scored[name][k].mean(0)
        for m in ("nearest", "linear", "mean_image", "truth", "replicate"):
            if m in fs.methods and fs.methods[m][k] is not None:
                panels[m.replace("_", " ")] = fs.methods[m][k]
        examples.append({"gene": frames[k][0], "timepoint": frames[k][1], "mask": fs.masks[k],
                         "panels": panels})
    files = write_report(result, out_dir, examples=examples, value_max=value_max)

    methods = summary["methods"]
    short = {m: {k: {"median": _finite(v["median"]), "mean": _finite(v["mean"])}
                 for k, v in s.items()} for m, s in methods.items()}
    vs = summary.get("vs_linear", {}).get("model", {})
    return {
        "out": str(out_dir), "files": files, "n_frames": len(frames), "n_genes": len(genes),
        "heldout_timepoints": spec["timepoints"],
        "gene_sets": {s: len(members) for s, members in sets.items()},
        "headline": _jsonable(summary["headline"]),
        "calibration": _jsonable(summary.get("calibration")),
        "summary": short,
        "model_vs_linear": {
            "median_pearson_difference": (vs.get("pearson") or {}).get("median_difference"),
            "median_rmse_ratio": (vs.get("rmse") or {}).get("ratio"),
            "pearson_win_rate": (vs.get("pearson") or {}).get("win_rate"),
            "model_median_zero_fraction_error": short.get("model", {}).get(
                "zero_fraction_error", {}).get("median"),
            "linear_median_zero_fraction_error": short.get("linear", {}).get(
                "zero_fraction_error", {}).get("median"),
        },
        "seconds": round(time.time() - t0, 2),
    }
