"""Held-out evaluation: generate the frames training never saw and score them against baselines.

Protocol
--------
Training excludes the frames declared in the dataset's ``meta["holdout"]``
(``{"timepoints": [...], "frames": [[gene, t], ...]}``), plus any time points the training config
names (``training_config.yaml`` key ``data.holdout_timepoints``). :func:`holdout_spec` collects
the union and :func:`heldout_frames` lists the ``(gene, time)`` frames; a whole held-out time
point contributes every gene (or ``max_genes`` of them, :func:`select_genes`). Nothing held out
is an :class:`~videogene.errors.InputError`: scores on training frames alone would measure
memorisation.

For each frame the *real* frame is the first slice of its time point (``meta["slices"]`` order,
the reference slice, whose tissue mask every method is scored on) and the second slice, an
independent measurement of the same frame, is the noise floor (``replicate``). The model
generates the gene's whole trajectory over the dataset's time points (every frame drawn on the
reference slice's mask of its time point) ``num_samples`` times; it is scored as the mean of the
samples (``model``) and per sample (``model_per_sample``, averaged). Baselines
(:mod:`videogene.tl.baselines`) are computed from the gene's observed frames by the same code on
the same frames, in expression units; on the synthetic atlas the noise-free expected expression
of the reference slice, rasterized exactly like the data (``truth``), is the ceiling.
Metrics: :mod:`videogene.tl.metrics`; SSIM uses each gene's ``meta["gene_scale"]`` as its data
range when the dataset has one (else ``value_max``). Summaries are the median and mean over
frames.

Three views of the same generated videos (no extra sampling):

- against the real slice of the held-out frames (``summary.by_gene_set``);
- against the noise-free truth of the held-out frames, synthetic atlas only
  (``summary.vs_truth``; the truth itself is not scored there);
- on the training frames, the observed time points of the same videos (``summary.train_frames``):
  ``model``, ``model_per_sample``, ``mean_image`` (over the *other* observed time points),
  ``truth`` and ``replicate`` against the reference slice, and against the truth on the
  synthetic atlas. A model that cannot reproduce its training frames cannot interpolate.

Every view is summarized per gene set (:func:`gene_sets`): ``all``, ``spatial`` (the dataset's
``meta["spatially_variable"]`` genes; for a dataset prepared without that field the same
statistic is computed from the canvases, :func:`spatial_signal`, with a warning) and, on the
synthetic atlas, one set per program kind
(``domain``, ``temporal``, ``gradient``, ``scattered``, ``housekeeping``, ``silent``; only the
kinds among the evaluated genes). The headline (:func:`headline`) is ``spatial`` against the
truth on the synthetic atlas and ``spatial`` against the real slice on real data.

``metrics.json`` layout (``summary``)::

    methods.<method>.<metric>.{median, mean, n}          all genes, against the real slice
    vs_linear.<method>.<metric>.{median_difference, relative_difference, ratio, win_rate}
    by_gene_set.<set>.{n_genes, n_frames, methods.<method>.<metric>.{median, mean, n}, vs_linear}
    vs_truth.by_gene_set.<set>...                         (synthetic atlas only)
    train_frames.{timepoints, n_frames, by_gene_set.<set>..., vs_truth.by_gene_set.<set>...}
    headline.{gene_set, against, n_genes, methods, comparisons, train_frames}

Adding a method is one line in :data:`METHOD_LABELS` plus the code producing its images:
generated sample stacks passed to :func:`score_methods` under a name are scored as the mean of
the samples under that name (and one by one under ``<name>_per_sample`` when that name has a
label); every summary, table and headline comparison iterates over what the records hold.

Parts for reuse: :func:`holdout_spec`, :func:`heldout_frames`, :func:`select_genes`,
:func:`gene_sets`, :func:`collect_reference_frames` (real frames + baselines + truth),
:func:`collect_train_frames`, :func:`generate_videos`, :func:`generate_frames`,
:func:`score_methods`, :func:`summarize_methods`, :func:`summarize_gene_sets`,
:func:`headline`, :func:`write_report`; :func:`score_frames` is re-exported from
:mod:`videogene.tl.metrics`.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..data.holdout import (
    holdout_spec,
    observed_timepoints,
    reference_slice,
    slices_by_timepoint,
    tkey,
)
from ..errors import InputError
from ..pipelines.samplers import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, SAMPLERS
from ..pp._spatial import SPATIAL_AMPLITUDE_THRESHOLD
from ..utils import check_output_dir, get_logger
from .baselines import (
    OBSERVED_BASELINES,
    compute_baselines,
    linear_is_interpolating,
    observed_frame_baselines,
    synthetic_truth,
)
from .metrics import METRICS, ZERO_THRESHOLD, score_frames, score_samples, summarize

__all__ = [
    "evaluate_model",
    "holdout_spec",
    "heldout_frames",
    "select_genes",
    "gene_sets",
    "program_kinds",
    "spatial_signal",
    "collect_reference_frames",
    "collect_train_frames",
    "generate_videos",
    "generate_frames",
    "score_methods",
    "summarize_methods",
    "summarize_gene_sets",
    "compare_methods",
    "headline",
    "write_report",
    "score_frames",
    "METHOD_LABELS",
    "TRAIN_FRAME_METHODS",
]

logger = get_logger(__name__)

#: Methods in report order, with the label the report and the plots use. A method of the
#: model (anything that is not a baseline, the truth or the replicate) is compared with every
#: observed baseline in the headline.
METHOD_LABELS: dict[str, str] = {
    "model": "model (mean of samples)",
    "model_per_sample": "model (per sample)",
    "model_infill": "model in-filled from observed frames (mean of samples)",
    "model_infill_per_sample": "model in-filled (per sample)",
    "nearest": "nearest observed time",
    "linear": "linear interpolation",
    "mean_image": "mean over observed times",
    "truth": "truth (ceiling)",
    "replicate": "second slice (noise floor)",
}

#: Methods scored on training frames (observed time points).
TRAIN_FRAME_METHODS = ("model", "model_per_sample", "mean_image", "truth", "replicate")

#: Not model methods: what the model is compared with.
_REFERENCE_METHODS = (*OBSERVED_BASELINES, "truth", "replicate")

#: Metrics of the headline; the first two are the main ones (wins and losses stated).
HEADLINE_METRICS = ("pearson", "rmse", "ssim")

_METRIC_LABELS = {
    "pearson": "Pearson", "spearman": "Spearman", "ssim": "SSIM", "rmse": "RMSE",
    "zero_fraction_error": "zero-frac err", "abs_zero_fraction_error": "|zero-frac err|",
    "wasserstein": "Wasserstein",
}

_SET_DEFINITIONS = {
    "all": "every evaluated gene",
    "spatial": "meta['spatially_variable'] (mean Moran's I over the training slices >= "
               f"meta['spatial_threshold'] and mean spatial amplitude >= "
               f"{SPATIAL_AMPLITUDE_THRESHOLD:g})",
}

_SAMPLERS = SAMPLERS  # the sampler registry, videogene.pipelines.samplers (no diffusers import)


def _is_model_method(name: str) -> bool:
    return name not in _REFERENCE_METHODS and not name.endswith("_per_sample")


# ----------------------------------------------------------------------------- protocol
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


# ----------------------------------------------------------------------------- gene sets
def program_kinds(meta: Mapping, genes: Sequence[str]) -> dict[str, str]:
    """Each gene's synthetic program kind, regenerated from ``meta["synthetic"]`` (cheap: the
    gene table only, no expression). Genes the generator does not know are left out."""
    if "synthetic" not in meta:
        raise InputError("program kinds: the dataset metadata has no 'synthetic' config "
                         "(only the built-in synthetic atlas has program kinds)")
    from ..data.synthetic import SynthConfig, gene_table

    table = gene_table(SynthConfig.from_dict(dict(meta["synthetic"])))
    kinds = table["program_kind"].astype(str)
    return {g: str(kinds[g]) for g in genes if g in kinds.index}


def _spatial_flags(meta: Mapping, genes: Sequence[str], *, name: str, dataset_dir=None,
                   masks: np.ndarray | None = None, spec: Mapping | None = None,
                   progress: bool = False) -> dict[str, bool]:
    """``meta["spatially_variable"]`` per gene; for a dataset prepared without it, the same
    statistic computed here from the genes' canvases (:func:`spatial_signal`) when
    ``dataset_dir`` is given, else InputError naming ``name``."""
    flags = meta.get("spatially_variable")
    if flags is not None:
        if len(flags) != len(meta["genes"]):
            raise InputError(f"{name}: 'spatially_variable' has {len(flags)} entries for "
                             f"{len(meta['genes'])} genes")
        return {str(g): bool(f) for g, f in zip(meta["genes"], flags)}
    if dataset_dir is None:
        raise InputError(f"{name}: videogene_meta.json has no 'spatially_variable' (prepared by an "
                         "older videogene); run `videogene prepare` again to get the spatial "
                         "gene set")
    from ..data import load_masks, read_gene_canvases
    from ..pp._spatial import null_variance, spatial_threshold, spatially_variable

    logger.warning("%s: no meta['spatially_variable'] (prepared by an older videogene); computing "
                   "it for the %d evaluated genes from their training canvases (approximately: "
                   "over the tissue masks, where prepare uses the pixels that hold cells)", name,
                   len(genes))
    masks = np.asarray(load_masks(dataset_dir) if masks is None else masks, dtype=bool)
    spec = spec or holdout_spec(meta)
    by_t = slices_by_timepoint(meta)
    held = set(spec["timepoints"])
    threshold = spatial_threshold([null_variance(masks[i]) for t, idx in by_t.items()
                                   if t not in held for i in idx])
    out = {}
    it = read_gene_canvases(dataset_dir, genes=list(genes))
    for g, canv in tqdm(it, total=len(genes), desc="spatial signal", disable=not progress):
        train = [i for t in observed_timepoints(meta, g, spec["timepoints"], spec["frames"])
                 for i in by_t[t]]
        sig, amp = spatial_signal(canv, masks, train)
        out[g] = bool(spatially_variable(sig, amp, threshold=threshold))
    return out


def spatial_signal(canvases: np.ndarray, masks: np.ndarray, slices: Sequence[int]
                   ) -> tuple[float, float]:
    """A gene's spatial signal and amplitude as ``videogene prepare`` records them
    (``meta["spatial_signal"]``, ``meta["spatial_amplitude"]``): Moran's I and the spatial
    amplitude (:func:`videogene.pp.morans_i`, rook kernel over the tissue pixels) of each of
    ``slices``, averaged over the slices where they are defined; 0 where defined on none."""
    from ..pp import morans_i
    from ..pp._spatial import mean_defined

    idx = list(slices)
    if not idx:
        return 0.0, 0.0
    moran, amp = morans_i(np.asarray(canvases)[idx], np.asarray(masks, dtype=bool)[idx],
                          amplitude=True)  # (slices,) each
    return float(mean_defined(moran)), float(mean_defined(amp))


def gene_sets(meta: Mapping, genes: Sequence[str], *, name: str = "dataset", dataset_dir=None,
              masks: np.ndarray | None = None, spec: Mapping | None = None,
              progress: bool = False) -> dict[str, list[str]]:
    """The gene sets every summary is reported for, each in the order of ``genes``.

    ``all`` (``genes``), ``spatial`` (``meta["spatially_variable"]``; always present, possibly
    empty) and, on the synthetic atlas, one set per program kind present among ``genes``
    (``domain``, ``temporal``, ``gradient``, ``scattered``, ``housekeeping``, ``silent``).
    A dataset prepared without ``spatially_variable``: with ``dataset_dir`` the flag is computed
    from the canvases by the same statistic and threshold (``masks`` and the hold-out ``spec``
    default to the dataset's), without it InputError naming ``name``.
    """
    genes = [str(g) for g in genes]
    flags = _spatial_flags(meta, genes, name=name, dataset_dir=dataset_dir, masks=masks,
                           spec=spec, progress=progress)
    sets = {"all": genes, "spatial": [g for g in genes if flags.get(g, False)]}
    if "synthetic" in meta:
        from ..data._synth_programs import KINDS

        kinds = program_kinds(meta, genes)
        for kind in KINDS:
            members = [g for g in genes if kinds.get(g) == kind]
            if members:
                sets[kind] = members
    return sets


def _set_definitions(sets: Mapping[str, Sequence[str]], meta: Mapping) -> dict[str, dict]:
    defs = dict(_SET_DEFINITIONS)
    if "spatially_variable" not in meta:
        defs["spatial"] = ("computed at evaluation (the dataset has no 'spatially_variable'): "
                           "mean Moran's I over the gene's training slices >= the threshold of "
                           "videogene prepare")
    return {s: {"n_genes": len(members),
                "definition": defs.get(s, f"synthetic program kind '{s}'")}
            for s, members in sets.items()}


def ssim_data_ranges(meta: Mapping, genes: Sequence[str]) -> tuple[dict[str, float], str]:
    """SSIM data range per gene: its scale (:func:`videogene.data.units.gene_scales`, i.e.
    ``meta["gene_scale"]``), so that SSIM sees a low-level gene's layout; datasets without
    per-gene scales use ``value_max`` for every gene. Returns the ranges and a one-line
    description for the protocol."""
    from ..data.units import gene_scales, is_legacy

    scales = gene_scales(meta, list(genes))
    if is_legacy(meta):
        return ({g: float(s) for g, s in zip(genes, scales)},
                f"value_max ({float(meta.get('value_max', 9.0)):g}) for every gene")
    return {g: float(s) for g, s in zip(genes, scales)}, "per gene: meta['gene_scale']"


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
                for i in (reference_slice(meta, t) for t in by_gene[g])]
        out[g] = float(np.mean(vals))
    return out


def _add_truth(fs: FrameSet, meta: Mapping, *, progress: bool) -> None:
    """``fs.methods["truth"]``: the synthetic expected expression on each frame's reference
    slice (one :func:`synthetic_truth` call per time point)."""
    fs.methods["truth"] = [None] * len(fs.frames)
    by_t: dict[float, list[int]] = {}
    for k, (_, t) in enumerate(fs.frames):
        by_t.setdefault(t, []).append(k)
    for t, ks in tqdm(by_t.items(), desc="synthetic truth", disable=not progress):
        genes_t = [fs.frames[k][0] for k in ks]
        canv_t = synthetic_truth(meta, t, reference_slice(meta, t), genes_t, within_timepoint=0)
        for k in ks:
            fs.methods["truth"][k] = np.where(fs.masks[k], canv_t[fs.frames[k][0]],
                                              0.0).astype(np.float32)


def _check_canvases(dataset_dir, g: str, canv: np.ndarray, masks: np.ndarray) -> np.ndarray:
    canv = np.asarray(canv)
    if canv.shape != masks.shape:
        raise InputError(f"{dataset_dir}: gene {g} canvases have shape {canv.shape}, masks "
                         f"{masks.shape}")
    return canv


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
        canv = _check_canvases(dataset_dir, g, canv, masks)
        obs = observed_timepoints(meta, g, spec["timepoints"], spec["frames"])
        for k, t in by_gene[g]:
            ref = reference_slice(meta, t)
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
    fs = FrameSet(frames=list(frames), real=real, masks=fmasks, reference_slices=refs,
                  methods=methods, interpolated=interp)
    if truth and "synthetic" in meta:
        _add_truth(fs, meta, progress=progress)
    return fs


def collect_train_frames(dataset_dir, meta: Mapping, masks: np.ndarray, genes: Sequence[str],
                         spec: Mapping, *, truth: bool = True, progress: bool = True) -> FrameSet:
    """The training frames of ``genes``: every observed ``(gene, time)``, time-major.

    Real frame: the reference slice of the time point; methods: ``mean_image`` over the gene's
    *other* observed time points and ``replicate`` (:func:`observed_frame_baselines`) and, on
    the synthetic atlas, ``truth``. Images as in :func:`collect_reference_frames`.
    """
    from ..data import read_gene_canvases

    observed = {g: observed_timepoints(meta, g, spec["timepoints"], spec["frames"]) for g in genes}
    order = {g: i for i, g in enumerate(genes)}
    frames = sorted(((g, t) for g in genes for t in observed[g]), key=lambda f: (f[1], order[f[0]]))
    index = {f: k for k, f in enumerate(frames)}
    n = len(frames)
    real: list = [None] * n
    fmasks: list = [None] * n
    refs: list = [None] * n
    methods: dict[str, list] = {"mean_image": [None] * n, "replicate": [None] * n}
    it = read_gene_canvases(dataset_dir, genes=list(genes))
    for g, canv in tqdm(it, total=len(genes), desc="training frames", disable=not progress):
        canv = _check_canvases(dataset_dir, g, canv, masks)
        for t in observed[g]:
            k = index[(g, t)]
            ref = reference_slice(meta, t)
            m = masks[ref]
            real[k] = np.where(m, canv[ref], 0.0).astype(np.float32)
            fmasks[k], refs[k] = m, ref
            base = observed_frame_baselines(canv, masks, meta, t, observed[g], reference_slice=ref)
            for name, img in base.items():
                methods[name][k] = np.where(m, img, 0.0).astype(np.float32)
    if not any(x is not None for x in methods["replicate"]):
        methods.pop("replicate")
    fs = FrameSet(frames=frames, real=real, masks=fmasks, reference_slices=refs, methods=methods,
                  interpolated=[False] * n)
    if truth and "synthetic" in meta:
        _add_truth(fs, meta, progress=progress)
    return fs


# ----------------------------------------------------------------------------- generation
def _is_pipeline(obj) -> bool:
    return hasattr(obj, "unet") and hasattr(obj, "gene_names") and callable(obj)


def generate_videos(pipe, genes: Sequence[str], timepoints: Sequence[float], masks: np.ndarray,
                    meta: Mapping, *, num_samples: int = 4, num_inference_steps: int = 25,
                    guidance_scale: float = DEFAULT_GUIDANCE, scheduler: str = DEFAULT_SAMPLER,
                    batch_size: int = 8, seed: int = 0, progress: bool = True,
                    context: str = "none", dataset=None) -> dict[str, np.ndarray]:
    """Generate each gene's trajectory over ``timepoints``: ``{gene: (num_samples, T, H, W)}``.

    Every frame of the video is drawn on the first slice's mask of its time point (the
    reference canvas). Genes go ``max(1, batch_size // num_samples)`` per call with a CPU
    generator seeded ``seed + chunk`` (deterministic for a given ``batch_size``). Float32, in
    expression units. ``context="observed"``: in-filled from the gene's observed frames of
    ``dataset`` (:mod:`videogene.pipelines.context`; held-out frames are never context).
    """
    import torch

    times = [float(t) for t in timepoints]
    video_masks = np.stack([masks[reference_slice(meta, t)] for t in times])  # (T, H, W)
    genes = list(dict.fromkeys(genes))
    per_call = max(1, batch_size // max(1, num_samples))
    chunks = [genes[i:i + per_call] for i in range(0, len(genes), per_call)]
    generated: dict[str, np.ndarray] = {}
    extra = {} if context == "none" else {"context": context, "dataset": dataset}
    bar = tqdm(total=len(genes), desc="generating" + ("" if context == "none" else " (in-filled)"),
               unit="gene", disable=not progress)
    for c, chunk in enumerate(chunks):
        gen = torch.Generator("cpu").manual_seed(int(seed) + c)
        out = pipe(chunk, times, num_samples=num_samples, num_inference_steps=num_inference_steps,
                   guidance_scale=guidance_scale, generator=gen, output_type="np",
                   masks=video_masks, batch_size=batch_size, progress=False, sampler=scheduler,
                   **extra)
        traj = out.trajectories if hasattr(out, "trajectories") else out[0]
        traj = np.asarray(traj, dtype=np.float32)  # (genes, samples, T, H, W)
        for j, g in enumerate(chunk):
            generated[g] = traj[j]
        bar.update(len(chunk))
    bar.close()
    return generated


def frames_from_videos(videos: Mapping[str, np.ndarray], frames: Sequence[tuple[str, float]],
                       timepoints: Sequence[float]) -> list[np.ndarray]:
    """The ``(num_samples, H, W)`` stacks of ``frames`` out of :func:`generate_videos`' output."""
    index = {tkey(t): i for i, t in enumerate(timepoints)}
    return [videos[g][:, index[tkey(t)]] for g, t in frames]


def generate_frames(pipe, frames: Sequence[tuple[str, float]], timepoints: Sequence[float],
                    masks: np.ndarray, meta: Mapping, **kwargs) -> list[np.ndarray]:
    """:func:`generate_videos` for the genes of ``frames``, returning the frames' sample stacks
    ``(num_samples, H, W)`` in ``frames`` order (keyword options as there)."""
    videos = generate_videos(pipe, [g for g, _ in frames], timepoints, masks, meta, **kwargs)
    return frames_from_videos(videos, frames, timepoints)


# ----------------------------------------------------------------------------- scoring
def _ordered(scores: Mapping[str, Mapping]) -> dict:
    known = [m for m in METHOD_LABELS if m in scores]
    return {m: scores[m] for m in known + [m for m in scores if m not in METHOD_LABELS]}


def score_methods(fs: FrameSet, generated: Mapping[str, Sequence[np.ndarray]] | Sequence | None,
                  *, data_range: float | Mapping[str, float],
                  zero_threshold: float = ZERO_THRESHOLD, progress: bool = True,
                  desc: str = "scoring") -> list[dict]:
    """Per-frame records: ``{"gene", "timepoint", "reference_slice", "interpolated",
    "real_mean", "expressed", "metrics": {method: {metric: value}}}`` plus, where ``fs`` has a
    ``truth``, ``"vs_truth"``: every other method scored against the truth instead of the real
    frame.

    ``generated``: ``{method: [(num_samples, H, W) per frame]}`` (a plain list means
    ``{"model": list}``); each is scored as the mean of its samples under its name and, when
    :data:`METHOD_LABELS` has ``<method>_per_sample``, sample by sample (averaged) under that
    name. ``data_range``: SSIM data range, one value or one per gene.
    """
    if generated is None:
        generated = {}
    elif not isinstance(generated, Mapping):
        generated = {"model": generated}
    truth = fs.methods.get("truth")
    records = []
    for k, (g, t) in enumerate(tqdm(fs.frames, desc=desc, disable=not progress)):
        real, m = fs.real[k], fs.masks[k]
        dr = float(data_range[g]) if isinstance(data_range, Mapping) else float(data_range)
        kw = dict(data_range=dr, zero_threshold=zero_threshold)
        targets = {"metrics": real}
        if truth is not None and truth[k] is not None:
            targets["vs_truth"] = truth[k]
        tissue = real[m]
        rec = {
            "gene": g, "timepoint": t, "reference_slice": int(fs.reference_slices[k]),
            "interpolated": bool(fs.interpolated[k]),
            "real_mean": float(tissue.mean()) if tissue.size else 0.0,
            "expressed": bool(tissue.size and (tissue >= zero_threshold).any()),
        }
        for key, target in targets.items():
            scores: dict[str, dict[str, float]] = {}
            for name, stacks in generated.items():
                of_mean, per_sample = score_samples(stacks[k], target, m, **kw)
                scores[name] = of_mean
                if f"{name}_per_sample" in METHOD_LABELS:
                    scores[f"{name}_per_sample"] = per_sample
            for name, imgs in fs.methods.items():
                if imgs[k] is not None and not (key == "vs_truth" and name == "truth"):
                    scores[name] = score_frames(imgs[k], target, m, **kw)
            rec[key] = _ordered(scores)
        records.append(rec)
    return records


# ----------------------------------------------------------------------------- summaries
def _method_order(records: Sequence[Mapping], key: str = "metrics") -> list[str]:
    seen: dict[str, None] = {}
    for r in records:
        seen.update(dict.fromkeys(r.get(key, {})))
    return [m for m in METHOD_LABELS if m in seen] + [m for m in seen if m not in METHOD_LABELS]


def _better(x: float, y: float, metric: str) -> tuple[float, float]:
    """Both values oriented so that larger is better."""
    if metric == "zero_fraction_error":
        return -abs(x), -abs(y)
    if not METRICS[metric]:
        return -x, -y
    return x, y


def compare_methods(records: Sequence[Mapping], method: str, reference: str, *,
                    key: str = "metrics", metrics: Sequence[str] = tuple(METRICS)) -> dict:
    """``method`` against ``reference`` over ``records`` (``key``: ``"metrics"`` or
    ``"vs_truth"``): ``{metric: {"median_difference", "relative_difference", "ratio",
    "win_rate"}}``. Differences and ratio are of the medians (``(m - ref) / |ref|``,
    ``m / ref``); ``win_rate`` is the share of frames where ``method`` is strictly better
    (ties count half; zero-fraction error: closer to 0)."""
    a_s = summarize([r[key][method] for r in records if method in r.get(key, {})], metrics)
    b_s = summarize([r[key][reference] for r in records if reference in r.get(key, {})], metrics)
    out = {}
    for metric in metrics:
        a, b = a_s[metric]["median"], b_s[metric]["median"]
        wins = []
        for r in records:
            s = r.get(key, {})
            if method in s and reference in s:
                x, y = _better(s[method][metric], s[reference][metric], metric)
                if np.isfinite(x) and np.isfinite(y):
                    wins.append(1.0 if x > y else 0.5 if x == y else 0.0)
        out[metric] = {
            "median_difference": _finite(a - b),
            "relative_difference": _finite((a - b) / abs(b)) if b else None,
            "ratio": _finite(a / b) if b else None,
            "win_rate": float(np.mean(wins)) if wins else None,
        }
    return out


def summarize_methods(records: Sequence[Mapping], reference: str = "linear", *,
                      key: str = "metrics", methods: Sequence[str] | None = None) -> dict:
    """Summaries per method plus comparisons with ``reference`` (linear interpolation).

    Returns ``{"methods": {method: {metric: {"median", "mean", "n"}}}, "vs_<reference>":
    {method: {metric: {"median_difference", "relative_difference", "ratio",
    "win_rate"}}}}`` (:func:`compare_methods`; for RMSE a ratio below 1 is better).
    ``key`` picks the records' scores (``"metrics"``: against the real frame, ``"vs_truth"``:
    against the truth); ``methods`` fixes the methods listed (default: those in ``records``).
    """
    methods = list(methods) if methods is not None else _method_order(records, key)
    summ = {m: summarize([r[key][m] for r in records if m in r.get(key, {})]) for m in methods}
    out: dict = {"methods": summ}
    if reference in summ:
        out[f"vs_{reference}"] = {m: compare_methods(records, m, reference, key=key)
                                  for m in methods}
    return out


def summarize_gene_sets(records: Sequence[Mapping], sets: Mapping[str, Sequence[str]], *,
                        reference: str = "linear", key: str = "metrics") -> dict:
    """:func:`summarize_methods` per gene set: ``{set: {"n_genes", "n_frames", "methods",
    "vs_<reference>"}}``. Every set lists the same methods (an empty set: medians NaN, n 0)."""
    methods = _method_order(records, key)
    out = {}
    for name, members in sets.items():
        mem = set(members)
        recs = [r for r in records if r["gene"] in mem]
        entry: dict = {"n_genes": len({r["gene"] for r in recs}), "n_frames": len(recs)}
        entry.update(summarize_methods(recs, reference, key=key, methods=methods))
        out[name] = entry
    return out


def _finite(x: float) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def best_baseline(summary: Mapping, metric: str = "pearson") -> str:
    """The observed-data baseline with the best median ``metric``."""
    meths = summary["methods"]
    cands = [b for b in OBSERVED_BASELINES if b in meths and np.isfinite(meths[b][metric]["median"])]
    if not cands:
        return "linear"
    sign = 1.0 if METRICS[metric] else -1.0
    return max(cands, key=lambda b: sign * meths[b][metric]["median"])


def _medians(methods: Mapping, metrics: Sequence[str] = HEADLINE_METRICS) -> dict:
    return {m: {k: _finite(s[k]["median"]) for k in metrics} for m, s in methods.items()}


def headline(summary: Mapping, records: Sequence[Mapping], sets: Mapping[str, Sequence[str]], *,
             gene_set: str = "spatial") -> dict:
    """The report's headline: ``gene_set`` against the truth (when the summary has
    ``vs_truth``) or against the real slice, falling back to ``all`` when the set is empty.

    Returns ``{"gene_set", "against" ("truth" | "real slice"), "n_genes", "n_frames",
    "methods": {method: {metric: median}}, "comparisons": {model method: {baseline: {metric:
    {"model", "baseline", "outcome" ("win" | "loss" | "tie" | None), "win_rate"}}}},
    "train_frames": {"against", "n_frames", "methods"} (when scored)}`` for
    :data:`HEADLINE_METRICS`.
    """
    truth = "vs_truth" in summary
    key = "vs_truth" if truth else "metrics"
    by_set = (summary["vs_truth"] if truth else summary)["by_gene_set"]
    name = gene_set if (by_set.get(gene_set) or {}).get("n_frames") else "all"
    entry = by_set[name]
    members = set(sets.get(name, ()))
    recs = [r for r in records if r["gene"] in members]
    meths = _medians(entry["methods"])
    comparisons: dict = {}
    for m in entry["methods"]:
        if not _is_model_method(m):
            continue
        comparisons[m] = {}
        for b in OBSERVED_BASELINES:
            if b not in entry["methods"]:
                continue
            comp = compare_methods(recs, m, b, key=key, metrics=HEADLINE_METRICS)
            comparisons[m][b] = {}
            for metric in HEADLINE_METRICS:
                x, y = meths[m][metric], meths[b][metric]
                outcome = None
                if x is not None and y is not None:
                    xo, yo = _better(x, y, metric)
                    outcome = "win" if xo > yo else "loss" if xo < yo else "tie"
                comparisons[m][b][metric] = {"model": x, "baseline": y, "outcome": outcome,
                                             "win_rate": comp[metric]["win_rate"]}
    out = {"gene_set": name, "against": "truth" if truth else "real slice",
           "n_genes": entry["n_genes"], "n_frames": entry["n_frames"], "methods": meths,
           "comparisons": comparisons}
    train = summary.get("train_frames")
    if train:
        t_truth = truth and "vs_truth" in train
        t_entry = (train["vs_truth"] if t_truth else train)["by_gene_set"].get(name)
        if t_entry is not None:
            out["train_frames"] = {"against": "truth" if t_truth else "real slice",
                                   "n_frames": t_entry["n_frames"],
                                   "methods": _medians(t_entry["methods"])}
    return out


def _num(x, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def headline_lines(h: Mapping) -> list[str]:
    """Markdown of :func:`headline`: a table of medians and the wins and losses."""
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


# ----------------------------------------------------------------------------- report
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
                 value_max: float = 9.0) -> dict[str, str]:
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
        f"held-out single frames: {p['n_heldout_single_frames']}",
        f"- frames evaluated: {p['n_frames']} ({p['n_genes']} genes"
        + (f", chosen from {p['n_genes_heldout']} by --max-genes" if p["n_genes"] < p["n_genes_heldout"]
           else "") + f"); expressed (real frame): {p['n_expressed']}",
        *([f"- gene sets (genes): {sets_txt}"] if sets_txt else []),
        f"- real frame: the first slice of the held-out time point; noise floor: its second slice; "
        f"zero = below {p['zero_threshold']:g} expression units; SSIM data range: "
        f"{p.get('ssim_data_range', p['value_max'])}",
        f"- model: {result['settings'].get('model', '')}, {result['settings']['num_samples']} samples, "
        f"{result['settings']['num_inference_steps']} {result['settings']['scheduler']} steps, "
        f"guidance {result['settings']['guidance_scale']:g}, seed {result['settings']['seed']}",
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
                   guidance_scale: float = DEFAULT_GUIDANCE, scheduler: str = DEFAULT_SAMPLER,
                   batch_size: int = 8,
                   max_genes: int | None = None, seed: int = 0, use_ema: bool = True,
                   train_frames: bool = True, infill: bool = True, device=None,
                   progress: bool = True) -> dict:
    """Score a trained model on the held-out frames of ``dataset`` against the baselines.

    ``model``: an export folder, a training ``output_dir`` (newest export), a Hub id, or a
    loaded :class:`~videogene.pipelines.VideoGenePipeline`. ``dataset``: the prepared dataset
    folder (its ``meta["spatially_variable"]`` gives the ``spatial`` gene set; a dataset
    prepared without it gets the flag computed from its canvases, with a warning).
    ``train_frames``: also score the observed time points of the generated videos.
    ``infill``: models with in-filling context are also scored as ``model_infill``: the
    held-out frames generated from the gene's observed frames (one more sampling pass).
    Writes ``metrics.json`` (per frame, per method; summaries in the layout of the module
    docstring; protocol; settings), ``train_frames.json``, ``report.md`` and the PNG plots to
    ``out_dir`` and returns a JSON-able summary: ``{"out", "files", "n_frames", "n_genes",
    "heldout_timepoints", "gene_sets": {set: n_genes}, "summary": {method: {metric:
    {"median", "mean"}}} (all genes, real slice), "headline": {...} (:func:`headline`),
    "model_vs_linear": {...}, "seconds"}``.
    """
    from ..data import load_masks, load_metadata
    from ..pipelines.generate import check_sampling_args

    t0 = time.time()
    check_output_dir(out_dir)
    check_sampling_args(num_samples=num_samples, num_inference_steps=num_inference_steps,
                        guidance_scale=guidance_scale, batch_size=batch_size)
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
    sets = gene_sets(meta, genes, name=f"dataset {dataset}", dataset_dir=dataset, masks=masks,
                     spec=spec, progress=progress)
    ranges, range_rule = ssim_data_ranges(meta, genes)

    value_max = float(meta.get("value_max", 9.0))
    fs = collect_reference_frames(dataset, meta, masks, frames, spec, progress=progress)
    train_fs = (collect_train_frames(dataset, meta, masks, genes, spec, progress=progress)
                if train_frames else None)
    timepoints = sorted({tkey(t) for t in meta["timepoints"]} | {t for _, t in frames})
    passes = ["gene only"] + (["in-filled"] if infill and getattr(
        pipe.unet.config, "context_channels", False) else [])
    if progress:
        per_pass = len(genes) * num_samples
        print(f"[videogene evaluate] {len(genes)} genes ({len(all_genes)} held out"
              f"{'' if max_genes is None else f', max_genes={max_genes}'}) x {num_samples} "
              f"samples x {num_inference_steps} steps x {len(passes)} pass(es) "
              f"({' + '.join(passes)}): {per_pass * len(passes)} videos of {len(timepoints)} "
              f"frames, {per_pass * len(passes) * num_inference_steps} network calls"
              f"{' (x2 with guidance)' if guidance_scale > 1 else ''}", file=sys.stderr,
              flush=True)
    videos = generate_videos(pipe, genes, timepoints, masks, meta, num_samples=num_samples,
                             num_inference_steps=num_inference_steps,
                             guidance_scale=guidance_scale, scheduler=scheduler,
                             batch_size=batch_size, seed=seed, progress=progress)
    generated = frames_from_videos(videos, frames, timepoints)
    scored = {"model": generated}
    if infill and getattr(pipe.unet.config, "context_channels", False):
        infilled = generate_videos(pipe, genes, timepoints, masks, meta, num_samples=num_samples,
                                   num_inference_steps=num_inference_steps,
                                   guidance_scale=guidance_scale, scheduler=scheduler,
                                   batch_size=batch_size, seed=seed, progress=progress,
                                   context="observed", dataset=dataset)
        scored["model_infill"] = frames_from_videos(infilled, frames, timepoints)
        del infilled
    records = score_methods(fs, scored, data_range=ranges, progress=progress)
    summary = summarize_methods(records)
    summary["by_gene_set"] = summarize_gene_sets(records, sets)
    if "truth" in fs.methods:
        summary["vs_truth"] = {"by_gene_set": summarize_gene_sets(records, sets, key="vs_truth")}
    train_records = None
    if train_fs is not None and train_fs.frames:
        train_gen = frames_from_videos(videos, train_fs.frames, timepoints)
        train_records = score_methods(train_fs, {"model": train_gen}, data_range=ranges,
                                      progress=progress, desc="scoring training frames")
        tf = {"timepoints": sorted({t for _, t in train_fs.frames}),
              "n_frames": len(train_records),
              "by_gene_set": summarize_gene_sets(train_records, sets, reference="mean_image")}
        if "truth" in train_fs.methods:
            tf["vs_truth"] = {"by_gene_set": summarize_gene_sets(
                train_records, sets, reference="mean_image", key="vs_truth")}
        summary["train_frames"] = tf
    del videos
    summary["headline"] = headline(summary, records, sets)

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
        "gene_sets": _set_definitions(sets, meta),
        "reference": "first slice of the held-out time point (meta['slices'] order)",
        "noise_floor": "second slice of the held-out time point" if "replicate" in fs.methods else None,
        "truth": ("synthetic expected expression on the reference slice, rasterized with its "
                  "recorded transform" if "truth" in fs.methods else None),
        "timepoint_image": "per-pixel mean over the time point's slices covering the pixel",
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
                "scheduler": scheduler, "batch_size": batch_size, "max_genes": max_genes,
                "seed": seed, "use_ema": use_ema, "train_frames": train_frames,
                "infill": "model_infill" in scored,
                "device": str(getattr(pipe, "device", device))}
    result = {"protocol": protocol, "settings": settings, "summary": summary, "records": records,
              "train_records": train_records, "gene_sets": sets}

    examples = []
    for k in _pick_examples(records, prefer=set(sets["spatial"])):
        panels = {"real": fs.real[k], "generated (mean)": generated[k].mean(0),
                  "generated (sample 1)": generated[k][0]}
        if "model_infill" in scored:
            panels["generated, in-filled (mean)"] = scored["model_infill"][k].mean(0)
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
