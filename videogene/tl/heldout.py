"""The hold-out protocol: which frames are evaluated, on which canvases, against what.

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
reference slice's mask of its time point; :func:`generate_videos`) ``num_samples`` times.
Baselines (:mod:`videogene.tl.baselines`) are computed from the gene's observed frames by the
same code on the same frames, in expression units (:func:`collect_reference_frames`,
:func:`collect_train_frames` for the observed time points); on the synthetic atlas the
noise-free expected expression of the reference slice, rasterized exactly like the data
(``truth``), is the ceiling, and new count draws of that slice (``redraw``,
:func:`redraw_frames`), scored like samples, are what a perfect generative model would score.
SSIM uses each gene's ``meta["gene_scale"]`` as its data range
when the dataset has one, else ``value_max`` (:func:`ssim_data_ranges`).

Gene sets (:func:`gene_sets`): ``all``, ``spatial`` (the dataset's
``meta["spatially_variable"]`` genes; for a dataset prepared without that field the same
statistic is computed from the canvases, :func:`spatial_signal`, with a warning) and, on the
synthetic atlas, one set per program kind (``domain``, ``temporal``, ``gradient``,
``scattered``, ``housekeeping``, ``silent``; only the kinds among the evaluated genes).

Scoring and summaries: :mod:`videogene.tl.evaluate`; the report folder:
:mod:`videogene.jobs.evaluate`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from ..data.holdout import (
    holdout_spec,
    observed_timepoints,
    reference_slice,
    slices_by_timepoint,
    tkey,
)
from ..data.meta import DatasetMeta
from ..errors import InputError
from ..pipelines.samplers import is_infill
from ..pp._spatial import SPATIAL_AMPLITUDE_THRESHOLD
from ..utils import get_logger
from .baselines import (
    OBSERVED_BASELINES,
    compute_baselines,
    linear_is_interpolating,
    observed_frame_baselines,
    synthetic_redraws,
    synthetic_truth,
)
from .metrics import ZERO_THRESHOLD

__all__ = [
    "holdout_spec",
    "heldout_frames",
    "select_genes",
    "gene_sets",
    "set_definitions",
    "program_kinds",
    "spatial_signal",
    "ssim_data_ranges",
    "FrameSet",
    "heldout_expression",
    "collect_reference_frames",
    "collect_train_frames",
    "redraw_frames",
    "generate_videos",
    "frames_from_videos",
    "generate_frames",
]

logger = get_logger(__name__)

#: What each gene set holds (the protocol's ``gene_sets``; program kinds are described apart).
_SET_DEFINITIONS = {
    "all": "every evaluated gene",
    "spatial": "meta['spatially_variable'] (mean Moran's I over the training slices >= "
               f"meta['spatial_threshold'] and mean spatial amplitude >= "
               f"{SPATIAL_AMPLITUDE_THRESHOLD:g})",
}


# ----------------------------------------------------------------------------- protocol
def heldout_frames(meta: Mapping, train_cfg: Mapping | None = None, *,
                   export_meta: Mapping | None = None, spec: Mapping | None = None,
                   name: str = "dataset", stored: Mapping[str, np.ndarray] | None = None
                   ) -> list[tuple[str, float]]:
    """Every held-out ``(gene, time)`` frame that has real data, time-major in vocabulary order.

    ``stored``: ``{gene: bool (n_slices,)}`` (:func:`videogene.data.stream.stored_slices`); a
    frame whose reference slice does not store the gene (a ``--gene-set union`` dataset) has
    no real data there and is left out. ``None``: every slice stores every gene.

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
    if stored is not None:
        out = [(g, t) for g, t in out if stored[g][reference_slice(meta, t)]]
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
    flags = DatasetMeta.of(meta, source=name).spatially_variable
    if flags is not None:
        return {str(g): bool(f) for g, f in zip(meta["genes"], flags)}
    if dataset_dir is None:
        raise InputError(f"{name}: videogene_meta.json has no 'spatially_variable' (prepared by an "
                         "older videogene); run `videogene prepare` again to get the spatial "
                         "gene set")
    from ..data import load_masks, read_gene_canvases, stored_slices
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
    stored = stored_slices(dataset_dir, genes=list(genes))
    it = read_gene_canvases(dataset_dir, genes=list(genes))
    for g, canv in tqdm(it, total=len(genes), desc="spatial signal", disable=not progress):
        train = [i for t in observed_timepoints(meta, g, spec["timepoints"], spec["frames"])
                 for i in by_t[t] if stored[g][i]]
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


def set_definitions(sets: Mapping[str, Sequence[str]], meta: Mapping) -> dict[str, dict]:
    """``{set: {"n_genes", "definition"}}`` of :func:`gene_sets`' sets, for the protocol."""
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
                f"value_max ({DatasetMeta.of(meta).value_max:g}) for every gene")
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


def heldout_expression(dataset_dir, meta: Mapping, masks: np.ndarray,
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


def _per_reference_slice(fs: FrameSet, meta: Mapping, make, *, desc: str,
                         progress: bool) -> list[np.ndarray]:
    """Each frame's image (or stack) from ``make(t, reference_slice, genes) -> {gene:
    (..., H, W)}``, called once per time point of ``fs``; float32, 0 outside the frame's
    tissue."""
    out: list = [None] * len(fs.frames)
    by_t: dict[float, list[int]] = {}
    for k, (_, t) in enumerate(fs.frames):
        by_t.setdefault(t, []).append(k)
    for t, ks in tqdm(by_t.items(), desc=desc, disable=not progress):
        canv_t = make(t, reference_slice(meta, t), list(dict.fromkeys(fs.frames[k][0] for k in ks)))
        for k in ks:
            out[k] = np.where(fs.masks[k], canv_t[fs.frames[k][0]], 0.0).astype(np.float32)
    return out


def _add_truth(fs: FrameSet, meta: Mapping, *, progress: bool) -> None:
    """``fs.methods["truth"]``: the synthetic expected expression on each frame's reference
    slice (one :func:`synthetic_truth` call per time point)."""
    fs.methods["truth"] = _per_reference_slice(
        fs, meta, lambda t, ref, genes: synthetic_truth(meta, t, ref, genes, within_timepoint=0),
        desc="synthetic truth", progress=progress)


def redraw_frames(fs: FrameSet, meta: Mapping, *, n_draws: int, seed: int = 0,
                  progress: bool = True) -> list[np.ndarray]:
    """``(n_draws, H, W)`` float32 per frame of ``fs``: new count draws of each frame's reference
    slice (:func:`~videogene.tl.baselines.synthetic_redraws`, synthetic atlas only), 0 outside
    its tissue. Scored like a model's samples, they are what a model that had learned the data
    distribution exactly would score (the evaluation's ``redraw``)."""
    return _per_reference_slice(
        fs, meta, lambda t, ref, genes: synthetic_redraws(meta, t, ref, genes, n_draws=n_draws,
                                                          within_timepoint=0, seed=seed),
        desc="count redraws", progress=progress)


def _check_canvases(dataset_dir, g: str, canv: np.ndarray, masks: np.ndarray) -> np.ndarray:
    canv = np.asarray(canv)
    if canv.shape != masks.shape:
        raise InputError(f"{dataset_dir}: gene {g} canvases have shape {canv.shape}, masks "
                         f"{masks.shape}")
    return canv


def _check_stored(dataset_dir, g: str, t: float, ref: int, stored: np.ndarray) -> None:
    if not stored[ref]:
        raise InputError(f"{dataset_dir}: gene {g} is not stored in slice {ref}, the reference "
                         f"slice of time point {t:g} (a --gene-set union dataset): the frame "
                         "has no real data; leave it out (heldout_frames(..., stored=...))")


def collect_reference_frames(dataset_dir, meta: Mapping, masks: np.ndarray,
                             frames: Sequence[tuple[str, float]], spec: Mapping, *,
                             truth: bool = True, progress: bool = True) -> FrameSet:
    """Real frames, observed-data baselines, the replicate and (synthetic atlas) the truth.

    One pass over the genes' canvases (:func:`videogene.data.read_gene_canvases`); every image is
    float32 ``(H, W)`` on the reference slice's canvas, 0 outside its tissue. Slices that do
    not store a gene (:func:`videogene.data.stream.stored_slices`) are no observation of it;
    a frame whose reference slice does not store its gene raises InputError (leave it out
    with :func:`heldout_frames`' ``stored``).
    """
    from ..data import read_gene_canvases, stored_slices

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
    stored = stored_slices(dataset_dir, genes=list(by_gene))
    it = read_gene_canvases(dataset_dir, genes=list(by_gene))
    for g, canv in tqdm(it, total=len(by_gene), desc="baselines", disable=not progress):
        canv = _check_canvases(dataset_dir, g, canv, masks)
        obs = observed_timepoints(meta, g, spec["timepoints"], spec["frames"], stored=stored[g])
        for k, t in by_gene[g]:
            ref = reference_slice(meta, t)
            _check_stored(dataset_dir, g, t, ref, stored[g])
            m = masks[ref]
            real[k] = np.where(m, canv[ref], 0.0).astype(np.float32)
            fmasks[k], refs[k] = m, ref
            interp[k] = linear_is_interpolating(t, obs)
            base = compute_baselines(canv, masks, meta, t, obs, reference_slice=ref,
                                     stored=stored[g])
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
    the synthetic atlas, ``truth``. Images as in :func:`collect_reference_frames`; a time point
    whose reference slice does not store the gene has no real frame and is not listed.
    """
    from ..data import read_gene_canvases, stored_slices

    stored = stored_slices(dataset_dir, genes=list(genes))
    observed = {g: observed_timepoints(meta, g, spec["timepoints"], spec["frames"],
                                       stored=stored[g]) for g in genes}
    scored = {g: [t for t in observed[g] if stored[g][reference_slice(meta, t)]] for g in genes}
    order = {g: i for i, g in enumerate(genes)}
    frames = sorted(((g, t) for g in genes for t in scored[g]), key=lambda f: (f[1], order[f[0]]))
    index = {f: k for k, f in enumerate(frames)}
    n = len(frames)
    real: list = [None] * n
    fmasks: list = [None] * n
    refs: list = [None] * n
    methods: dict[str, list] = {"mean_image": [None] * n, "replicate": [None] * n}
    it = read_gene_canvases(dataset_dir, genes=list(genes))
    for g, canv in tqdm(it, total=len(genes), desc="training frames", disable=not progress):
        canv = _check_canvases(dataset_dir, g, canv, masks)
        for t in scored[g]:
            k = index[(g, t)]
            ref = reference_slice(meta, t)
            m = masks[ref]
            real[k] = np.where(m, canv[ref], 0.0).astype(np.float32)
            fmasks[k], refs[k] = m, ref
            base = observed_frame_baselines(canv, masks, meta, t, observed[g], reference_slice=ref,
                                            stored=stored[g])
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
def generate_videos(pipe, genes: Sequence[str], timepoints: Sequence[float], masks: np.ndarray,
                    meta: Mapping, *, num_samples: int = 4, num_inference_steps: int = 25,
                    guidance_scale: float | None = None, scheduler: str | None = None,
                    batch_size: int = 8, seed: int = 0, progress: bool = True,
                    context: str = "none", dataset=None) -> dict[str, np.ndarray]:
    """Generate each gene's trajectory over ``timepoints``: ``{gene: (num_samples, T, H, W)}``.

    Every frame of the video is drawn on the first slice's mask of its time point (the
    reference canvas). Genes go ``max(1, batch_size // num_samples)`` per call with a CPU
    generator seeded ``seed + chunk`` (deterministic for a given ``batch_size``). Float32, in
    expression units. ``context="observed"``: in-filled from the gene's observed frames of
    ``dataset`` (:mod:`videogene.pipelines.context`; held-out frames are never context).
    ``guidance_scale`` None: the pipeline's default for the context (2 gene only, 1 in-filled);
    ``scheduler`` (the sampler) None: the same (``dpmsolver++`` gene only, ``sde-dpmsolver++``
    in-filled; :func:`~videogene.pipelines.samplers.default_sampler`).
    """
    import torch

    times = [float(t) for t in timepoints]
    video_masks = np.stack([masks[reference_slice(meta, t)] for t in times])  # (T, H, W)
    genes = list(dict.fromkeys(genes))
    per_call = max(1, batch_size // max(1, num_samples))
    generated: dict[str, np.ndarray] = {}
    cv = given = None
    if is_infill(context):
        from ..pipelines.context import observed_context

        if context != "observed":
            raise InputError(f"context {context!r}: expected 'none' or 'observed'")
        # every gene's observed frames read once, then passed per call as (genes, T, H, W) arrays
        # (NaN = not given) on the frames a per-chunk context="observed" call would lay out
        cv = observed_context(pipe, genes, times, dataset, masks=video_masks)
        given = np.where(cv.given[:, :, None, None], cv.frames, np.nan).astype(np.float32)
    bar = tqdm(total=len(genes), desc="generating" + ("" if given is None else " (in-filled)"),
               unit="gene", disable=not progress)
    for c, start in enumerate(range(0, len(genes), per_call)):
        chunk = genes[start:start + per_call]
        gen = torch.Generator("cpu").manual_seed(int(seed) + c)
        call_times, call_masks, keep, extra = times, video_masks, slice(None), {}
        if cv is not None:  # the requested days and the days this chunk's genes observed
            cols = sorted(set(cv.requested)
                          | set(np.flatnonzero(cv.given[start:start + len(chunk)].any(0)).tolist()))
            pos = {i: n for n, i in enumerate(cols)}
            call_times, call_masks = [cv.times[i] for i in cols], cv.masks[cols]
            keep = [pos[i] for i in cv.requested]
            extra = {"context": given[start:start + len(chunk)][:, cols]}
        out = pipe(chunk, call_times, num_samples=num_samples,
                   num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                   generator=gen, output_type="np", masks=call_masks, batch_size=batch_size,
                   progress=False, sampler=scheduler, **extra)
        traj = out.trajectories if hasattr(out, "trajectories") else out[0]
        traj = np.asarray(traj, dtype=np.float32)[:, :, keep]  # (genes, samples, T, H, W)
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
