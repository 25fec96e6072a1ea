"""In-filling context: a gene's observed frames given to the model as clean frames.

``VideoGenePipeline(genes, timepoints, context=...)`` fills the requested time points of a
gene's video from frames it was given (masked conditional video diffusion, MCVD):

- ``context="observed"``: the gene's frames at the time points the model was trained on,
  read from a prepared dataset (the reference slice of each time point, the same canvas the
  evaluation scores on; for a model trained with ``context_source="timepoint_mean"`` the
  per-pixel mean over all slices of the day on that canvas, the image the baselines use),
  leaving out everything held out from training
  (:func:`videogene.data.holdout.holdout_spec`). In a ``--gene-set union`` dataset only the
  slices that store the gene count: a day none of whose slices stores it is not given, and
  where the reference slice lacks the gene the frame is the mean over the day's slices that
  store it (drawn on the reference slice's tissue). The video spans the requested and the
  observed time points; only the requested ones are returned.
- an array ``(genes, T, H, W)`` in expression units aligned with ``timepoints``, with NaN
  frames where nothing is given.

:class:`ContextVideo` is what the pipeline samples: every frame's time and mask, the given
frames in expression units, and which frames are given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..data.holdout import (
    gene_masks,
    holdout_spec,
    observed_timepoints,
    reference_slice,
    slices_by_timepoint,
    timepoint_image,
    tkey,
)
from ..errors import InputError

CONTEXT_MODES = ("none", "observed")


@dataclass
class ContextVideo:
    """The video to sample: ``times`` (T,), ``masks`` bool (T, H, W), ``frames`` float32
    (genes, T, H, W) in expression units (0 where not given), ``given`` bool (genes, T), and
    ``requested`` the index of each requested time point in ``times``."""

    times: list[float]
    masks: np.ndarray
    frames: np.ndarray
    given: np.ndarray
    requested: list[int]


def check_context_model(unet, source) -> None:
    """One-line error when a model cannot take context frames (trained without in-filling)."""
    if not getattr(unet.config, "context_channels", False):
        raise InputError(f"model {source}: trained without in-filling context (no "
                         "context_channels in its config); use context='none'")


def observed_context(pipe, genes: Sequence[str], timepoints: Sequence[float], dataset, *,
                     masks: np.ndarray | None = None) -> ContextVideo:
    """The genes' observed frames from ``dataset`` around the requested ``timepoints``.

    ``masks``: optional bool ``(len(timepoints), H, W)`` for the requested frames; observed
    frames always use their reference slice's mask. The dataset must be the one the model was
    trained on (same canvas, the genes in its vocabulary).
    """
    from ..data import load_masks, load_metadata, read_gene_canvases, stored_slices
    from .loading import read_training_config

    if dataset is None:
        dataset = _training_dataset(pipe)
    meta = load_metadata(dataset)
    ds_masks = load_masks(dataset)
    size = int(pipe.unet.config.sample_size)
    if int(meta["resolution"]) != size:
        raise InputError(f"dataset {dataset}: canvas {meta['resolution']}x{meta['resolution']}, "
                         f"but the model's is {size}x{size}")
    missing = [g for g in genes if g not in set(meta["genes"])]
    if missing:
        raise InputError(f"dataset {dataset}: genes not in the dataset: {', '.join(missing[:5])}")
    spec = holdout_spec(meta, read_training_config(getattr(pipe, "source_dir", None)), pipe.meta)
    stored = stored_slices(dataset, genes=list(dict.fromkeys(genes)))
    observed = {g: observed_timepoints(meta, g, spec["timepoints"], spec["frames"],
                                       stored=stored[g]) for g in genes}
    req = [tkey(t) for t in timepoints]
    times = sorted(set(req) | {t for ts in observed.values() for t in ts})
    index = {t: i for i, t in enumerate(times)}
    req_masks = pipe.masks_for(req, masks)
    video_masks = np.zeros((len(times), size, size), dtype=bool)
    for t, m in zip(req, req_masks, strict=True):
        video_masks[index[t]] = m
    for t in {t for ts in observed.values() for t in ts} - set(req):
        video_masks[index[t]] = ds_masks[reference_slice(meta, t)]
    frames = np.zeros((len(genes), len(times), size, size), dtype=np.float32)
    given = np.zeros((len(genes), len(times)), dtype=bool)
    canvases = dict(read_gene_canvases(dataset, genes=list(dict.fromkeys(genes))))
    day_mean = getattr(pipe.unet.config, "context_source", "slice") == "timepoint_mean"
    by_t = slices_by_timepoint(meta)
    for gi, g in enumerate(genes):
        g_masks = gene_masks(ds_masks, stored[g])
        for t in observed[g]:
            ref = reference_slice(meta, t)
            k = index[t]
            video_masks[k] = ds_masks[ref]  # an observed frame is drawn on its own slice
            img = (timepoint_image(canvases[g], g_masks, by_t[t])[0]
                   if day_mean or not stored[g][ref] else canvases[g][ref])
            frames[gi, k] = np.where(ds_masks[ref], img, 0.0)
            given[gi, k] = True
    return ContextVideo(times=times, masks=video_masks, frames=frames, given=given,
                        requested=[index[t] for t in req])


def array_context(context, genes: Sequence[str], timepoints: Sequence[float],
                  masks: np.ndarray) -> ContextVideo:
    """Context frames passed as an array ``(genes, T, H, W)`` (expression units, NaN = not
    given) aligned with ``timepoints``; ``masks`` are the frames' bool ``(T, H, W)`` masks."""
    arr = np.asarray(context, dtype=np.float32)
    want = (len(genes), len(timepoints), *masks.shape[1:])
    if arr.shape != want:
        raise InputError(f"context: expected an array of shape {want} (genes, time points, H, W), "
                         f"got {arr.shape}")
    given = ~np.isnan(arr).any(axis=(2, 3))
    if (np.nan_to_num(arr, nan=0.0) < 0).any():
        raise InputError("context: expression values must be >= 0")
    frames = np.where(given[:, :, None, None], np.nan_to_num(arr, nan=0.0), 0.0) * masks[None]
    return ContextVideo(times=[float(t) for t in timepoints], masks=masks.astype(bool),
                        frames=frames.astype(np.float32), given=given,
                        requested=list(range(len(timepoints))))


def _training_dataset(pipe):
    """The dataset recorded in the model's training config (``data.path``), if it exists."""
    from pathlib import Path

    from .loading import read_training_config

    cfg = read_training_config(getattr(pipe, "source_dir", None)) or {}
    path = (cfg.get("data") or {}).get("path")
    if path and Path(path).is_dir():
        return path
    raise InputError("context='observed': pass dataset=DATASET_DIR (the prepared dataset the "
                     "model was trained on" + (f"; its recorded {path} is not a folder here)"
                                               if path else ")"))
