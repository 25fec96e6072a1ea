"""Held-out evaluation tools: score generated and baseline frames, summarize, compare.

Pure functions on the frames of the hold-out protocol (:mod:`videogene.tl.heldout`: which
frames, their real and baseline images, the generated videos); the job that runs them on a
model and writes the report folder is :func:`videogene.jobs.evaluate.evaluate_model`
(``videogene evaluate``).

Each frame is scored (:func:`score_methods`, metrics of :mod:`videogene.tl.metrics`) per
method: generated sample stacks as the mean of the samples (``model``) and per sample
(``model_per_sample``, averaged), baselines, the truth and the replicate as single images; on the
synthetic atlas ``redraw`` (new count draws of the real slice, as many as samples) is scored like
samples: the score of a model that had learned the data distribution exactly.
Summaries are the median and mean over frames. Three views of the same generated videos:

- against the real slice of the held-out frames (``summary.by_gene_set``);
- against the noise-free truth of the held-out frames, synthetic atlas only
  (``summary.vs_truth``; the truth itself is not scored there);
- on the training frames, the observed time points of the same videos (``summary.train_frames``):
  ``model``, ``model_per_sample``, ``mean_image`` (over the *other* observed time points),
  ``truth`` and ``replicate`` against the reference slice, and against the truth on the
  synthetic atlas. A model that cannot reproduce its training frames cannot interpolate.

Every view is summarized per gene set (:func:`videogene.tl.heldout.gene_sets`,
:func:`summarize_gene_sets`). The headline (:func:`headline`) is ``spatial`` against the truth
on the synthetic atlas and ``spatial`` against the real slice on real data.

``metrics.json`` layout (``summary``)::

    methods.<method>.<metric>.{median, mean, n}          all genes, against the real slice
    vs_linear.<method>.<metric>.{median_difference, relative_difference, ratio, win_rate}
    by_gene_set.<set>.{n_genes, n_frames, methods.<method>.<metric>.{median, mean, n}, vs_linear}
    vs_truth.by_gene_set.<set>...                         (synthetic atlas only)
    train_frames.{timepoints, n_frames, by_gene_set.<set>..., vs_truth.by_gene_set.<set>...}
    headline.{gene_set, against, n_genes, methods, comparisons, train_frames}
    calibration.{gene_set, passes.<pass>...}     (the job; videogene.tl.calibration)

Adding a method is one line in :data:`METHOD_LABELS` plus the code producing its images:
generated sample stacks passed to :func:`score_methods` under a name are scored as the mean of
the samples under that name (and one by one under ``<name>_per_sample`` when that name has a
label); every summary, table and headline comparison iterates over what the records hold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from .baselines import OBSERVED_BASELINES
from .heldout import FrameSet
from .metrics import METRICS, ZERO_THRESHOLD, score_frames, score_samples, summarize

__all__ = [
    "score_methods",
    "summarize_methods",
    "summarize_gene_sets",
    "compare_methods",
    "best_baseline",
    "headline",
    "METHOD_LABELS",
    "TRAIN_FRAME_METHODS",
    "HEADLINE_METRICS",
]

#: Methods in report order, with the label the report and the plots use. A method of the
#: model (anything that is not a baseline, the truth or the replicate) is compared with every
#: observed baseline in the headline.
METHOD_LABELS: dict[str, str] = {
    "model": "model (mean of samples)",
    "model_per_sample": "model (per sample)",
    "model_infill": "model in-filled from observed frames (mean of samples)",
    "model_infill_per_sample": "model in-filled (per sample)",
    "model_expected": "model expected expression (one-step posterior mean, mean of samples)",
    "model_expected_per_sample": "model expected expression (per sample)",
    "model_infill_expected": "model in-filled expected expression (one-step, mean of samples)",
    "model_infill_expected_per_sample": "model in-filled expected expression (per sample)",
    "nearest": "nearest observed time",
    "linear": "linear interpolation",
    "mean_image": "mean over observed times",
    "truth": "truth (ceiling)",
    "redraw": "count redraw of the real slice (a perfect sampler, mean of draws)",
    "redraw_per_sample": "count redraw (a perfect sampler, per draw)",
    "replicate": "second slice (noise floor)",
}

#: Methods scored on training frames (observed time points).
TRAIN_FRAME_METHODS = ("model", "model_per_sample", "model_expected", "model_expected_per_sample",
                       "mean_image", "truth", "redraw", "redraw_per_sample", "replicate")

#: Not model methods: what the model is compared with.
_REFERENCE_METHODS = (*OBSERVED_BASELINES, "truth", "redraw", "replicate")

#: Metrics of the headline; the first two are the main ones (wins and losses stated).
HEADLINE_METRICS = ("pearson", "rmse", "ssim")


def _is_model_method(name: str) -> bool:
    return name not in _REFERENCE_METHODS and not name.endswith("_per_sample")


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


def __getattr__(name: str):
    # ``videogene.tl.evaluate.evaluate_model`` is documented (docs/design.md §6) from before the
    # jobs layer; the job lives in videogene.jobs.evaluate (imported lazily: no cycle, no torch).
    if name == "evaluate_model":
        from ..jobs.evaluate import evaluate_model

        return evaluate_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
