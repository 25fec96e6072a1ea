"""Held-out evaluation: generate the frames training never saw and score them against baselines.

Protocol
--------
Training excludes the frames declared in the dataset's ``meta["holdout"]``
(``{"timepoints": [...], "frames": [[gene, t], ...]}``), plus any time points the training config
names (``training_config.yaml`` key ``data.holdout_timepoints``). :func:`holdout_spec` collects
the union and :func:`heldout_frames` lists the ``(gene, time)`` frames; a whole held-out time
point contributes every gene (or ``max_genes`` of them, :func:`select_genes`). Nothing held out
is an :class:`~videogene.errors.InputError`: scores on training frames would measure memorisation.

For each frame the *real* frame is the first slice of its time point (``meta["slices"]`` order,
the reference slice, whose tissue mask every method is scored on) and the second slice, an
independent measurement of the same frame, is the noise floor (``replicate``). The model
generates the gene's whole trajectory over the dataset's time points (the held-out frame drawn on
the reference slice's mask) ``num_samples`` times; it is scored as the mean of the samples
(``model``) and per sample (``model_per_sample``, averaged). Baselines
(:mod:`videogene.tl.baselines`) are computed from the gene's observed frames by the same code on
the same frames; on the synthetic atlas the noise-free expected expression (``truth``) is the
ceiling. Metrics: :mod:`videogene.tl.metrics`; summaries are the median and mean over frames.

Parts for reuse: :func:`holdout_spec`, :func:`heldout_frames`, :func:`select_genes`,
:func:`collect_reference_frames` (real frames + baselines + truth), :func:`generate_frames`,
:func:`score_methods`, :func:`summarize_methods`, :func:`write_report`; :func:`score_frames`
is re-exported from :mod:`videogene.tl.metrics`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..errors import InputError
from ..utils import get_logger
from .baselines import (
    OBSERVED_BASELINES,
    compute_baselines,
    linear_is_interpolating,
    observed_timepoints,
    slices_by_timepoint,
    synthetic_truth,
)
from .metrics import METRICS, ZERO_THRESHOLD, score_frames, score_samples, summarize

__all__ = [
    "evaluate_model",
    "holdout_spec",
    "heldout_frames",
    "select_genes",
    "collect_reference_frames",
    "generate_frames",
    "score_methods",
    "summarize_methods",
    "write_report",
    "score_frames",
    "METHOD_LABELS",
]

logger = get_logger(__name__)

#: Methods in report order, with the label the report and the plots use.
METHOD_LABELS: dict[str, str] = {
    "model": "model (mean of samples)",
    "model_per_sample": "model (per sample)",
    "nearest": "nearest observed time",
    "linear": "linear interpolation",
    "mean_image": "mean over observed times",
    "truth": "truth (ceiling)",
    "replicate": "second slice (noise floor)",
}

_METRIC_LABELS = {
    "pearson": "Pearson", "spearman": "Spearman", "ssim": "SSIM", "rmse": "RMSE",
    "zero_fraction_error": "zero-frac err", "abs_zero_fraction_error": "|zero-frac err|",
    "wasserstein": "Wasserstein",
}


_SAMPLERS = ("dpmsolver++", "ddim", "ddpm")  # VideoGenePipeline's samplers (no diffusers import)


def _tkey(t: float) -> float:
    return round(float(t), 6)


# ----------------------------------------------------------------------------- protocol
def holdout_spec(meta: Mapping, train_cfg: Mapping | None = None,
                 export_meta: Mapping | None = None) -> dict:
    """The union of what was held out from training.

    Sources: ``meta["holdout"]`` of the dataset, the same key of the model's copy of the
    metadata (``export_meta``) and ``train_cfg["data"]["holdout_timepoints"]``. Returns
    ``{"timepoints": sorted floats, "frames": [[gene, t], ...] (not already covered by a whole
    time point), "sources": [...]}``.
    """
    times: set[float] = set()
    frames: set[tuple[str, float]] = set()
    sources: list[str] = []
    for name, m in (("dataset meta", meta), ("model meta", export_meta)):
        h = (m or {}).get("holdout") or {}
        ts = [_tkey(t) for t in h.get("timepoints") or []]
        fs = [(str(g), _tkey(t)) for g, t in h.get("frames") or []]
        if ts or fs:
            sources.append(name)
        times.update(ts)
        frames.update(fs)
    data_cfg = (train_cfg or {}).get("data") or {}
    extra = data_cfg.get("holdout_timepoints") if isinstance(data_cfg, Mapping) else None
    if extra:
        times.update(_tkey(t) for t in extra)
        sources.append("training_config.yaml data.holdout_timepoints")
    frames = {(g, t) for g, t in frames if t not in times}
    return {"timepoints": sorted(times), "frames": sorted([g, t] for g, t in frames),
            "sources": sources}


def heldout_frames(meta: Mapping, train_cfg: Mapping | None = None, *,
                   export_meta: Mapping | None = None, spec: Mapping | None = None,
                   name: str = "dataset") -> list[tuple[str, float]]:
    """Every held-out ``(gene, time)`` frame that has real data, time-major in vocabulary order.

    Raises InputError when nothing is held out (naming ``name``), when a held-out time point
    has no slice in the dataset, or when a held-out frame names an unknown gene.
    """
    spec = spec or holdout_spec(meta, train_cfg, export_meta)
    if not spec["timepoints"] and not spec["frames"]:
        raise InputError(f"{name}: nothing is held out from training (meta['holdout'] and "
                         "data.holdout_timepoints are empty), so there is no unseen frame to "
                         "evaluate; prepare with --holdout-timepoints or train with "
                         "data.holdout_timepoints=[...]")
    by_t = slices_by_timepoint(meta)
    genes = [str(g) for g in meta["genes"]]
    gene_set = set(genes)
    out: list[tuple[str, float]] = []
    for t in spec["timepoints"]:
        if t not in by_t:
            raise InputError(f"{name}: held-out time point {t:g} has no slice in the dataset "
                             f"(time points with data: {', '.join(f'{x:g}' for x in by_t)})")
        out.extend((g, t) for g in genes)
    order = {g: i for i, g in enumerate(genes)}
    for g, t in sorted(spec["frames"], key=lambda f: (f[1], order.get(f[0], -1))):
        if g not in gene_set:
            raise InputError(f"{name}: held-out frame names gene {g!r}, not in the dataset")
        if t not in by_t:
            raise InputError(f"{name}: held-out frame ({g}, {t:g}) has no slice in the dataset")
        out.append((g, t))
    return sorted(out, key=lambda f: (f[1], order[f[0]]))


def select_genes(genes: Sequence[str], expression: Sequence[float], max_genes: int | None, *,
                 expressed_share: float = 0.75, threshold: float = ZERO_THRESHOLD) -> list[str]:
    """Choose at most ``max_genes`` genes, deterministically and stratified by expression.

    ``expression`` is each gene's mean real value over its held-out tissue pixels. Genes above
    ``threshold`` count as expressed; they get their proportional share of the picks but at
    least ``expressed_share`` of them (as many as exist), the rest go to silent genes. Within
    each group genes are sorted by expression and picked at evenly spaced ranks (so low,
    middle and high expression are all represented). Returned in the input order.
    """
    genes = list(genes)
    if max_genes is None or max_genes >= len(genes):
        return genes
    if max_genes < 1:
        raise InputError(f"max_genes: must be >= 1, got {max_genes}")
    expr = np.asarray(expression, dtype=np.float64)
    on = [i for i in range(len(genes)) if expr[i] > threshold]
    off = [i for i in range(len(genes)) if expr[i] <= threshold]
    n_on = max(round(max_genes * len(on) / len(genes)), math.ceil(expressed_share * max_genes))
    n_on = min(len(on), n_on)
    n_off = min(len(off), max_genes - n_on)
    n_on = min(len(on), max_genes - n_off)

    def spaced(idx: list[int], k: int) -> list[int]:
        if k <= 0:
            return []
        idx = sorted(idx, key=lambda i: (expr[i], i))
        picks = np.unique(np.round(np.linspace(0, len(idx) - 1, k)).astype(int))
        return [idx[p] for p in picks]

    chosen = set(spaced(on, n_on)) | set(spaced(off, n_off))
    return [genes[i] for i in sorted(chosen)]


# ----------------------------------------------------------------------------- reference frames
@dataclass
class FrameSet:
    """Real frames, baseline frames and masks of the evaluated ``(gene, time)`` frames."""

    frames: list[tuple[str, float]]
    real: list[np.ndarray]
    masks: list[np.ndarray]
    reference_slices: list[int]
    methods: dict[str, list[np.ndarray | None]] = field(default_factory=dict)
    interpolated: list[bool] = field(default_factory=list)


def _reference_slice(meta: Mapping, t: float) -> int:
    return slices_by_timepoint(meta)[_tkey(t)][0]


def _heldout_expression(dataset_dir, meta: Mapping, masks: np.ndarray,
                        frames: Sequence[tuple[str, float]], *, progress: bool) -> dict[str, float]:
    """Mean real value over the held-out tissue pixels per gene (one pass over the canvases)."""
    from ..data import read_gene_canvases

    by_gene: dict[str, list[float]] = {}
    for g, t in frames:
        by_gene.setdefault(g, []).append(t)
    out: dict[str, float] = {}
    it = read_gene_canvases(dataset_dir, genes=list(by_gene))
    for g, canv in tqdm(it, total=len(by_gene), desc="held-out expression", disable=not progress):
        vals = [canv[i][masks[i]].mean() if masks[i].any() else 0.0
                for i in (_reference_slice(meta, t) for t in by_gene[g])]
        out[g] = float(np.mean(vals))
    return out


def collect_reference_frames(dataset_dir, meta: Mapping, masks: np.ndarray,
                             frames: Sequence[tuple[str, float]], spec: Mapping, *,
                             truth: bool = True, progress: bool = True) -> FrameSet:
    """Real frames, observed-data baselines, the replicate and (synthetic atlas) the truth.

    One pass over the genes' canvases (:func:`videogene.data.read_gene_canvases`); every image is
    float32 ``(H, W)`` on the reference slice's canvas, 0 outside its tissue.
    """
    from ..data import read_gene_canvases

    by_gene: dict[str, list[tuple[int, float]]] = {}
    for k, (g, t) in enumerate(frames):
        by_gene.setdefault(g, []).append((k, t))
    n = len(frames)
    real: list = [None] * n
    fmasks: list = [None] * n
    refs: list = [None] * n
    interp: list = [False] * n
    names = list(OBSERVED_BASELINES) + ["replicate"]
    methods: dict[str, list] = {m: [None] * n for m in names}
    it = read_gene_canvases(dataset_dir, genes=list(by_gene))
    for g, canv in tqdm(it, total=len(by_gene), desc="baselines", disable=not progress):
        canv = np.asarray(canv)
        if canv.shape != masks.shape:
            raise InputError(f"{dataset_dir}: gene {g} canvases have shape {canv.shape}, masks "
                             f"{masks.shape}")
        obs = observed_timepoints(meta, g, spec["timepoints"], spec["frames"])
        for k, t in by_gene[g]:
            ref = _reference_slice(meta, t)
            m = masks[ref]
            real[k] = np.where(m, canv[ref], 0.0).astype(np.float32)
            fmasks[k], refs[k] = m, ref
            interp[k] = linear_is_interpolating(t, obs)
            base = compute_baselines(canv, masks, meta, t, obs, reference_slice=ref)
            for name in names:
                if name in base:
                    methods[name][k] = np.where(m, base[name], 0.0).astype(np.float32)
    missing = [frames[k] for k in range(n) if real[k] is None]
    if missing:
        raise InputError(f"{dataset_dir}: no canvases read for {len(missing)} held-out frame(s), "
                         f"e.g. {missing[0]}")
    if not any(x is not None for x in methods["replicate"]):
        methods.pop("replicate")
    if truth and "synthetic" in meta:
        methods["truth"] = [None] * n
        by_t: dict[float, list[int]] = {}
        for k, (_, t) in enumerate(frames):
            by_t.setdefault(t, []).append(k)
        for t, ks in tqdm(by_t.items(), desc="synthetic truth", disable=not progress):
            genes_t = [frames[k][0] for k in ks]
            canv_t = synthetic_truth(meta, t, _reference_slice(meta, t), genes_t, within_timepoint=0)
            for k in ks:
                methods["truth"][k] = np.where(fmasks[k], canv_t[frames[k][0]], 0.0).astype(np.float32)
    return FrameSet(frames=list(frames), real=real, masks=fmasks, reference_slices=refs,
                    methods=methods, interpolated=interp)


# ----------------------------------------------------------------------------- generation
def _is_pipeline(obj) -> bool:
    return hasattr(obj, "unet") and hasattr(obj, "gene_names") and callable(obj)


def generate_frames(pipe, frames: Sequence[tuple[str, float]], timepoints: Sequence[float],
                    masks: np.ndarray, meta: Mapping, *, num_samples: int = 4,
                    num_inference_steps: int = 25, guidance_scale: float = 2.0,
                    scheduler: str = "dpmsolver++", batch_size: int = 8, seed: int = 0,
                    progress: bool = True) -> list[np.ndarray]:
    """Generate each gene's trajectory over ``timepoints`` and return the held-out frames.

    Every frame of the video is drawn on the first slice's mask of its time point (the
    reference canvas). Genes go ``max(1, batch_size // num_samples)`` per call with a CPU
    generator seeded ``seed + chunk`` (deterministic for a given ``batch_size``). Returns, in
    ``frames`` order, float32 ``(num_samples, H, W)`` arrays in expression units.
    """
    import torch

    times = [float(t) for t in timepoints]
    index = {_tkey(t): i for i, t in enumerate(times)}
    video_masks = np.stack([masks[_reference_slice(meta, t)] for t in times])
    genes = list(dict.fromkeys(g for g, _ in frames))
    per_call = max(1, batch_size // max(1, num_samples))
    chunks = [genes[i:i + per_call] for i in range(0, len(genes), per_call)]
    generated: dict[str, np.ndarray] = {}
    bar = tqdm(total=len(genes), desc="generating", unit="gene", disable=not progress)
    for c, chunk in enumerate(chunks):
        gen = torch.Generator("cpu").manual_seed(int(seed) + c)
        out = pipe(chunk, times, num_samples=num_samples, num_inference_steps=num_inference_steps,
                   guidance_scale=guidance_scale, generator=gen, output_type="np",
                   masks=video_masks, batch_size=batch_size, progress=False, sampler=scheduler)
        traj = out.trajectories if hasattr(out, "trajectories") else out[0]
        traj = np.asarray(traj, dtype=np.float32)  # (genes, samples, T, H, W)
        for j, g in enumerate(chunk):
            generated[g] = traj[j]
        bar.update(len(chunk))
    bar.close()
    return [generated[g][:, index[_tkey(t)]] for g, t in frames]


# ----------------------------------------------------------------------------- scoring
def score_methods(fs: FrameSet, generated: Sequence[np.ndarray] | None, *, data_range: float,
                  zero_threshold: float = ZERO_THRESHOLD, progress: bool = True) -> list[dict]:
    """Per-frame records: ``{"gene", "timepoint", "reference_slice", "interpolated",
    "real_mean", "expressed", "metrics": {method: {metric: value}}}``."""
    records = []
    kw = dict(data_range=data_range, zero_threshold=zero_threshold)
    for k, (g, t) in enumerate(tqdm(fs.frames, desc="scoring", disable=not progress)):
        real, m = fs.real[k], fs.masks[k]
        scores: dict[str, dict[str, float]] = {}
        if generated is not None:
            scores["model"], scores["model_per_sample"] = score_samples(generated[k], real, m, **kw)
        for name, imgs in fs.methods.items():
            if imgs[k] is not None:
                scores[name] = score_frames(imgs[k], real, m, **kw)
        tissue = real[m]
        records.append({
            "gene": g, "timepoint": t, "reference_slice": int(fs.reference_slices[k]),
            "interpolated": bool(fs.interpolated[k]),
            "real_mean": float(tissue.mean()) if tissue.size else 0.0,
            "expressed": bool(tissue.size and (tissue >= zero_threshold).any()),
            "metrics": {name: scores[name] for name in METHOD_LABELS if name in scores},
        })
    return records


def summarize_methods(records: Sequence[Mapping], reference: str = "linear") -> dict:
    """Summaries per method plus comparisons with ``reference`` (linear interpolation).

    Returns ``{"methods": {method: {metric: {"median", "mean", "n"}}}, "vs_<reference>":
    {method: {metric: {"median_difference", "relative_difference", "ratio",
    "win_rate"}}}}``. ``relative_difference`` is ``(m - ref) / |ref|`` of the medians;
    ``ratio`` is ``m / ref`` of the medians (for RMSE: below 1 is better); ``win_rate`` is the
    share of frames where the method is strictly better than ``reference`` (ties count half).
    """
    methods = [m for m in METHOD_LABELS if any(m in r["metrics"] for r in records)]
    summ = {m: summarize([r["metrics"][m] for r in records if m in r["metrics"]]) for m in methods}
    out: dict = {"methods": summ}
    if reference in summ:
        comp: dict = {}
        for m in methods:
            comp[m] = {}
            for metric, higher in METRICS.items():
                a, b = summ[m][metric]["median"], summ[reference][metric]["median"]
                wins = []
                for r in records:
                    if m in r["metrics"] and reference in r["metrics"]:
                        x, y = r["metrics"][m][metric], r["metrics"][reference][metric]
                        if metric == "zero_fraction_error":
                            x, y = -abs(x), -abs(y)
                        elif not higher:
                            x, y = -x, -y
                        if np.isfinite(x) and np.isfinite(y):
                            wins.append(1.0 if x > y else 0.5 if x == y else 0.0)
                comp[m][metric] = {
                    "median_difference": _finite(a - b),
                    "relative_difference": _finite((a - b) / abs(b)) if b else None,
                    "ratio": _finite(a / b) if b else None,
                    "win_rate": float(np.mean(wins)) if wins else None,
                }
        out[f"vs_{reference}"] = comp
    return out


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def best_baseline(summary: Mapping, metric: str = "pearson") -> str:
    """The observed-data baseline with the best median ``metric``."""
    meths = summary["methods"]
    cands = [b for b in OBSERVED_BASELINES if b in meths and np.isfinite(meths[b][metric]["median"])]
    if not cands:
        return "linear"
    sign = 1.0 if METRICS[metric] else -1.0
    return max(cands, key=lambda b: sign * meths[b][metric]["median"])


# ----------------------------------------------------------------------------- report
def _cell(s: Mapping) -> str:
    med, mean = s["median"], s["mean"]
    if not np.isfinite(med):
        return "n/a"
    return f"{med:.3f} ({mean:.3f})"


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f}%"


def write_report(result: Mapping, out_dir, *, examples: Sequence[Mapping] = (),
                 value_max: float = 9.0) -> dict[str, str]:
    """Write ``metrics.json``, ``report.md`` and the plots; returns ``{name: path}``."""
    from ..pl.evaluation import plot_example_frames, plot_gene_scatter

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"metrics": str(out / "metrics.json"), "report": str(out / "report.md")}
    summary = result["summary"]
    methods = summary["methods"]
    has_model = "model" in methods
    best = best_baseline(summary)
    plots: dict[str, str] = {}
    if has_model:
        plots["scatter"] = str(plot_gene_scatter(
            result["records"], out / "scatter_model_vs_baseline.png", baseline=best))
    if examples:
        plots["examples"] = str(plot_example_frames(examples, out / "example_frames.png",
                                                    value_max=value_max))
    files.update(plots)

    metric_names = list(METRICS)
    rel_names = [m for m in metric_names if m != "zero_fraction_error"]  # signed: ratio meaningless
    lines = ["# Held-out evaluation", ""]
    p = result["protocol"]
    lines += [
        f"- held-out time points: {', '.join(f'{t:g}' for t in p['heldout_timepoints']) or 'none'}; "
        f"held-out single frames: {p['n_heldout_single_frames']}",
        f"- frames evaluated: {p['n_frames']} ({p['n_genes']} genes"
        + (f", chosen from {p['n_genes_heldout']} by --max-genes" if p["n_genes"] < p["n_genes_heldout"]
           else "") + f"); expressed (real frame): {p['n_expressed']}",
        f"- real frame: the first slice of the held-out time point; noise floor: its second slice; "
        f"zero = below {p['zero_threshold']:g} expression units; SSIM data range {p['value_max']:g}",
        f"- model: {result['settings'].get('model', '')}, {result['settings']['num_samples']} samples, "
        f"{result['settings']['num_inference_steps']} {result['settings']['scheduler']} steps, "
        f"guidance {result['settings']['guidance_scale']:g}, seed {result['settings']['seed']}",
        "", "Median (mean) over frames; higher is better for Pearson, Spearman and SSIM, lower for "
        "the rest (zero-fraction error: closer to 0).", "",
        "| method | " + " | ".join(_METRIC_LABELS[m] for m in metric_names) + " |",
        "|---|" + "---|" * len(metric_names),
    ]
    for m, label in METHOD_LABELS.items():
        if m in methods:
            lines.append(f"| {label} | " + " | ".join(_cell(methods[m][k]) for k in metric_names) + " |")
    comp = summary.get("vs_linear")
    if comp:
        lines += ["", "Relative difference of the median to linear interpolation "
                  "((method - linear) / |linear|), and the share of frames where the method beats "
                  "linear interpolation (win rate):", "",
                  "| method | " + " | ".join(_METRIC_LABELS[m] for m in rel_names) + " |",
                  "|---|" + "---|" * len(rel_names)]
        for m, label in METHOD_LABELS.items():
            if m in comp and m != "linear":
                cells = []
                for k in rel_names:
                    c = comp[m][k]
                    wr = "n/a" if c["win_rate"] is None else f"{100 * c['win_rate']:.0f}%"
                    cells.append(f"{_pct(c['relative_difference'])} (win {wr})")
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if has_model and "linear" in methods:
        mp, lp = methods["model"]["pearson"]["median"], methods["linear"]["pearson"]["median"]
        mr, lr = methods["model"]["rmse"]["median"], methods["linear"]["rmse"]["median"]
        mz = methods["model"]["zero_fraction_error"]["median"]
        lz = methods["linear"]["zero_fraction_error"]["median"]
        ratio = f"{mr / lr:.3f}" if lr else "n/a"
        lines += ["", f"**Model vs linear interpolation**: median Pearson {mp:.3f} vs {lp:.3f} "
                  f"(difference {mp - lp:+.3f}); median RMSE ratio {ratio}; median zero-fraction "
                  f"error {mz:+.3f} vs {lz:+.3f}."]
    if plots:
        lines += ["", "## Plots", ""]
        if "scatter" in plots:
            lines.append(f"Per frame, model vs the best baseline ({METHOD_LABELS[best]}): "
                         f"![scatter]({Path(plots['scatter']).name})")
        if "examples" in plots:
            lines += ["", "Example frames (shared colour scale per gene; grey: outside tissue): "
                      f"![examples]({Path(plots['examples']).name})"]
    Path(files["report"]).write_text("\n".join(lines) + "\n")
    payload = dict(result)
    payload["files"] = files
    Path(files["metrics"]).write_text(json.dumps(_jsonable(payload), indent=1))
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


def _pick_examples(records: Sequence[Mapping], n: int = 4) -> list[int]:
    """Up to ``n`` expressed frames at evenly spaced expression ranks (deterministic)."""
    idx = [k for k, r in enumerate(records) if r["expressed"]] or list(range(len(records)))
    idx = sorted(idx, key=lambda k: (records[k]["real_mean"], k))
    if len(idx) <= n:
        return idx
    return [idx[p] for p in np.unique(np.round(np.linspace(0, len(idx) - 1, n)).astype(int))][::-1]


# ----------------------------------------------------------------------------- entry point
def evaluate_model(model, dataset, out_dir, *, num_samples: int = 4, num_inference_steps: int = 25,
                   guidance_scale: float = 2.0, scheduler: str = "dpmsolver++", batch_size: int = 8,
                   max_genes: int | None = None, seed: int = 0, use_ema: bool = True,
                   device=None, progress: bool = True) -> dict:
    """Score a trained model on the held-out frames of ``dataset`` against the baselines.

    ``model``: an export folder, a training ``output_dir`` (newest export), a Hub id, or a
    loaded :class:`~videogene.pipelines.VideoGenePipeline`. ``dataset``: the prepared dataset
    folder. Writes ``metrics.json`` (per frame, per method; summaries; protocol; settings),
    ``report.md`` and the PNG plots to ``out_dir`` and returns a JSON-able summary:
    ``{"out", "files", "n_frames", "n_genes", "heldout_timepoints", "summary": {method:
    {metric: {"median", "mean"}}}, "model_vs_linear": {...}, "seconds"}``.
    """
    from ..data import load_masks, load_metadata

    t0 = time.time()
    for name, value in (("num_samples", num_samples), ("num_inference_steps", num_inference_steps),
                        ("batch_size", batch_size)):
        if int(value) < 1:
            raise InputError(f"{name}: must be >= 1, got {value}")
    if max_genes is not None and max_genes < 1:
        raise InputError(f"max_genes: must be >= 1, got {max_genes}")
    if scheduler not in _SAMPLERS:
        raise InputError(f"scheduler {scheduler!r}: expected one of {', '.join(_SAMPLERS)}")
    dataset = Path(dataset)
    if not dataset.is_dir():
        raise InputError(f"dataset {dataset}: no such folder")
    meta = load_metadata(dataset)
    masks = np.asarray(load_masks(dataset), dtype=bool)
    if masks.shape[0] != len(meta["slices"]):
        raise InputError(f"dataset {dataset}: {masks.shape[0]} masks but {len(meta['slices'])} slices")

    if _is_pipeline(model):
        pipe, model_name = model, str(getattr(model, "source_dir", None) or type(model).__name__)
    else:
        if model is None or not str(model).strip():
            raise InputError("model: no path given")
        from ..pipelines import load_pipeline

        pipe, model_name = load_pipeline(model, use_ema=use_ema, device=device), str(model)
    from ..pipelines.loading import read_training_config

    train_cfg = read_training_config(getattr(pipe, "source_dir", None))
    spec = holdout_spec(meta, train_cfg, getattr(pipe, "meta", None))
    frames = heldout_frames(meta, spec=spec, name=f"dataset {dataset}")

    size = int(getattr(pipe.unet.config, "sample_size", meta["resolution"]))
    if size != int(meta["resolution"]):
        raise InputError(f"model {model_name}: canvas {size}x{size} but dataset {dataset} is "
                         f"{meta['resolution']}x{meta['resolution']}")
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
        expr = _heldout_expression(dataset, meta, masks, frames, progress=progress)
        keep = set(select_genes(all_genes, [expr[g] for g in all_genes], max_genes))
        frames = [f for f in frames if f[0] in keep]
    genes = list(dict.fromkeys(g for g, _ in frames))

    value_max = float(meta.get("value_max", 9.0))
    fs = collect_reference_frames(dataset, meta, masks, frames, spec, progress=progress)
    timepoints = sorted({_tkey(t) for t in meta["timepoints"]} | {t for _, t in frames})
    generated = generate_frames(pipe, frames, timepoints, masks, meta, num_samples=num_samples,
                                num_inference_steps=num_inference_steps,
                                guidance_scale=guidance_scale, scheduler=scheduler,
                                batch_size=batch_size, seed=seed, progress=progress)
    records = score_methods(fs, generated, data_range=value_max, progress=progress)
    summary = summarize_methods(records)

    protocol = {
        "heldout_timepoints": spec["timepoints"],
        "n_heldout_single_frames": len(spec["frames"]),
        "heldout_sources": spec["sources"],
        "n_frames": len(frames), "n_genes": len(genes), "n_genes_heldout": len(all_genes),
        "n_genes_not_in_model": len(dropped),
        "n_expressed": int(sum(r["expressed"] for r in records)),
        "n_interpolated": int(sum(r["interpolated"] for r in records)),
        "gene_selection": None if max_genes is None else
        "stratified by held-out expression: >= 75% expressed genes, evenly spaced ranks",
        "reference": "first slice of the held-out time point (meta['slices'] order)",
        "noise_floor": "second slice of the held-out time point" if "replicate" in fs.methods else None,
        "truth": ("synthetic expected expression on the reference slice" if "truth" in fs.methods
                  else None),
        "timepoint_image": "per-pixel mean over the time point's slices covering the pixel",
        "zero_threshold": ZERO_THRESHOLD, "value_max": value_max,
        "generated_timepoints": timepoints,
        "methods": {m: METHOD_LABELS[m] for m in summary["methods"]},
    }
    settings = {"model": model_name, "dataset": str(dataset), "num_samples": num_samples,
                "num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale,
                "scheduler": scheduler, "batch_size": batch_size, "max_genes": max_genes,
                "seed": seed, "use_ema": use_ema, "device": str(getattr(pipe, "device", device))}
    result = {"protocol": protocol, "settings": settings, "summary": summary, "records": records}

    examples = []
    for k in _pick_examples(records):
        panels = {"real": fs.real[k], "generated (mean)": generated[k].mean(0),
                  "generated (sample 1)": generated[k][0]}
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
        "heldout_timepoints": spec["timepoints"], "summary": short,
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
