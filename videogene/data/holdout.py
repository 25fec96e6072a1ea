"""What was held out from training, and which frames of a gene were observed.

One rule, used by evaluation, in-filling context and embeddings: a frame ``(gene, t)`` was
available for training unless ``t`` is a held-out time point or ``[gene, t]`` a held-out frame
of the dataset's ``meta["holdout"]``, of the model's copy of it, or of the training config's
``data.holdout_timepoints``. Times are compared rounded to 6 decimals (:func:`tkey`).
The image of an observed day (:func:`timepoint_image`, the baselines' and a day-mean in-filling
context's) is the per-pixel mean over the day's slices whose tissue covers the pixel. In a
``--gene-set union`` dataset a slice that does not store a gene is no observation of it: pass
the gene's ``stored`` slices (:func:`videogene.data.stream.stored_slices`) to
:func:`observed_timepoints` and :func:`gene_masks`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np


def tkey(t: float) -> float:
    """A time point as a dictionary key: rounded to 6 decimals."""
    return round(float(t), 6)


def slices_by_timepoint(meta: Mapping) -> dict[float, list[int]]:
    """``{time: [slice indices in meta order]}`` for every time point that has slices."""
    out: dict[float, list[int]] = {}
    for i, s in enumerate(meta["slices"]):
        out.setdefault(tkey(s["timepoint"]), []).append(i)
    return dict(sorted(out.items()))


def covered_mean(stack: np.ndarray, cover: np.ndarray, weights: np.ndarray | None = None
                  ) -> np.ndarray:
    """Per-pixel mean of ``stack`` over the entries whose ``cover`` is True (0 if none).

    With ``weights`` the entries of ``stack`` are already weighted and the sum is divided by
    the total weight of the covering entries (a weighted mean over the covering entries).
    """
    cover = cover.astype(np.float64)
    total = (stack * cover).sum(axis=0)
    if weights is not None:
        cover = cover * np.asarray(weights, dtype=np.float64)[:, None, None]
    n = cover.sum(axis=0)
    return np.divide(total, n, out=np.zeros_like(total), where=n > 0)


def timepoint_image(canvases: np.ndarray, masks: np.ndarray, slice_indices: Sequence[int]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Mask-aware mean image of the given slices and the union of their masks."""
    idx = list(slice_indices)
    stack = np.asarray(canvases[idx], dtype=np.float64)
    cover = np.asarray(masks[idx], dtype=bool)
    return covered_mean(stack, cover), cover.any(axis=0)


def reference_slice(meta: Mapping, t: float) -> int:
    """The reference slice of a time point: its first slice in ``meta["slices"]`` order."""
    return slices_by_timepoint(meta)[tkey(t)][0]


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
        ts = [tkey(t) for t in h.get("timepoints") or []]
        fs = [(str(g), tkey(t)) for g, t in h.get("frames") or []]
        if ts or fs:
            sources.append(name)
        times.update(ts)
        frames.update(fs)
    data_cfg = (train_cfg or {}).get("data") or {}
    extra = data_cfg.get("holdout_timepoints") if isinstance(data_cfg, Mapping) else None
    if extra:
        times.update(tkey(t) for t in extra)
        sources.append("training_config.yaml data.holdout_timepoints")
    frames = {(g, t) for g, t in frames if t not in times}
    return {"timepoints": sorted(times), "frames": sorted([g, t] for g, t in frames),
            "sources": sources}


def observed_timepoints(meta: Mapping, gene: str, heldout_timepoints: Iterable[float] = (),
                        heldout_frames: Iterable[Sequence] = (), *,
                        stored: np.ndarray | None = None) -> list[float]:
    """Sorted time points at which ``gene`` was available for training.

    ``stored``: the gene's bool ``(n_slices,)`` from
    :func:`videogene.data.stream.stored_slices`; a time point none of whose slices stores the
    gene (a ``--gene-set union`` dataset) was not observed. ``None``: every slice stores it.
    """
    excluded = {tkey(t) for t in heldout_timepoints}
    excluded |= {tkey(t) for g, t in heldout_frames if g == gene}
    return [t for t, idx in slices_by_timepoint(meta).items()
            if t not in excluded and (stored is None or bool(np.asarray(stored)[idx].any()))]


def gene_masks(masks: np.ndarray, stored: np.ndarray | None) -> np.ndarray:
    """The tissue masks ``(n_slices, H, W)`` of the slices that store a gene, empty for the
    others: mask-aware means (:func:`timepoint_image`) then skip slices without the gene
    instead of counting them as zero expression."""
    masks = np.asarray(masks, dtype=bool)
    return masks if stored is None else masks & np.asarray(stored, dtype=bool)[:, None, None]
