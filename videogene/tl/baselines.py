"""Baselines for held-out frames, computed from the observed (training) frames of one gene.

A gene's data are its aligned canvases ``(n_slices, H, W)`` in the slice order of
``meta["slices"]`` (as :func:`videogene.data.read_gene_canvases` yields them) together with the
tissue masks ``(n_slices, H, W)``. A time point is *observed* for a gene when it has slices and
neither the time point nor the ``(gene, time)`` frame is held out.

The image of a time point (:func:`timepoint_image`) is the per-pixel mean over that time's
slices whose tissue covers the pixel (0 where none does); averaging the slices makes the
baselines less noisy than any single slice, i.e. stronger. The baselines:

- ``nearest``: the image of the nearest observed time point (ties: the earlier one); pixels
  that time's tissue does not cover are taken from the next nearest time that covers them.
- ``linear``: linear interpolation in time between the images of the observed time points
  just before and after the target; a pixel covered by only one of the two takes that one's
  value. Outside the observed range (extrapolation) it falls back to ``nearest``.
- ``mean_image``: the mean of the gene's observed time-point images (per pixel, over the
  time points whose tissue covers the pixel).
- ``replicate`` (noise floor): the *second* real slice of the target time point, i.e. an
  independent measurement of the same frame; only where the time point has two slices.
- ``truth`` (ceiling, synthetic atlas only): the noise-free expected expression of the
  reference slice put on that slice's canvas (:func:`synthetic_truth`).
- ``redraw`` (synthetic atlas only): new count draws of the reference slice on the same canvas
  (:func:`synthetic_redraws`), scored like a model's samples: what a model that had learned the
  data distribution exactly would score, per sample and as the mean of as many samples.

On training (observed) frames :func:`observed_frame_baselines` gives ``mean_image`` over the
*other* observed time points and ``replicate``. Every baseline works in expression units on
the canvases as prepared (oriented, and per gene exactly what the model is trained on before
its input mapping); none of them uses the model's input units (``value_max``, gene scales).

Callers multiply every baseline by the reference slice's mask before scoring
(:func:`videogene.tl.metrics.score_frames` does it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..data.holdout import covered_mean, gene_masks, slices_by_timepoint, timepoint_image, tkey
from ..errors import InputError

#: Baselines that use only observed frames (what a model has to beat).
OBSERVED_BASELINES = ("nearest", "linear", "mean_image")


def _neighbours(t: float, observed: Sequence[float]) -> tuple[float | None, float | None]:
    before = [o for o in observed if o < t - 1e-9]
    after = [o for o in observed if o > t + 1e-9]
    return (before[-1] if before else None), (after[0] if after else None)


def nearest_observed(t: float, observed: Sequence[float]) -> float:
    """The observed time closest to ``t`` (the earlier one on a tie)."""
    if not observed:
        raise InputError("baselines: the gene has no observed time point")
    return min(observed, key=lambda o: (abs(o - t), o))


def _baseline_inputs(canvases, masks, meta: Mapping, timepoint: float, observed: Sequence[float],
                     stored: np.ndarray | None = None):
    """Checked arrays, the slices per time point, the time key and the sorted observed times;
    with ``stored`` (the gene's bool per slice) the masks of slices without the gene are empty
    and the slices per time point are those that store it."""
    canvases = np.asarray(canvases)
    masks = np.asarray(masks, dtype=bool)
    if canvases.shape != masks.shape:
        raise InputError(f"baselines: canvases {canvases.shape} and masks {masks.shape} differ")
    t = tkey(timepoint)
    observed = sorted(tkey(o) for o in observed)
    if not observed:
        raise InputError(f"baselines: no observed time point left for the frame at t={t}")
    by_t = slices_by_timepoint(meta)
    if stored is not None:
        masks = gene_masks(masks, stored)
        by_t = {d: [i for i in idx if stored[i]] for d, idx in by_t.items()}
    return canvases, masks, by_t, t, observed


def compute_baselines(canvases: np.ndarray, masks: np.ndarray, meta: Mapping, timepoint: float,
                      observed: Sequence[float], *, reference_slice: int | None = None,
                      stored: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The baseline images of one gene at ``timepoint`` from its ``observed`` time points.

    Returns ``{"nearest", "linear", "mean_image"}`` float64 ``(H, W)`` canvases, plus
    ``"replicate"`` (the second slice of ``timepoint`` that is not ``reference_slice``) when
    ``timepoint`` has at least two slices. ``stored``: the gene's bool ``(n_slices,)``
    (:func:`videogene.data.stream.stored_slices`); slices without the gene are left out of
    every image instead of counting as zero expression.
    """
    canvases, masks, by_t, t, observed = _baseline_inputs(canvases, masks, meta, timepoint,
                                                          observed, stored)
    images = {o: timepoint_image(canvases, masks, by_t[o]) for o in observed}

    out: dict[str, np.ndarray] = {}
    near = np.zeros_like(images[observed[0]][0])
    filled = np.zeros(near.shape, dtype=bool)
    for o in sorted(observed, key=lambda o: (abs(o - t), o)):  # nearest first
        img, cover = images[o]
        new = cover & ~filled
        near[new] = img[new]
        filled |= cover
    out["nearest"] = near
    lo, hi = _neighbours(t, observed)
    if lo is None or hi is None:
        out["linear"] = out["nearest"]
    else:
        w = (t - lo) / (hi - lo)
        out["linear"] = covered_mean(
            np.stack([images[lo][0] * (1.0 - w), images[hi][0] * w]),
            np.stack([images[lo][1], images[hi][1]]), weights=np.array([1.0 - w, w]))
    out["mean_image"] = covered_mean(np.stack([images[o][0] for o in observed]),
                                      np.stack([images[o][1] for o in observed]))
    others = [i for i in by_t.get(t, []) if i != reference_slice]
    if reference_slice is not None and others:
        out["replicate"] = np.asarray(canvases[others[0]], dtype=np.float64)
    return out


def observed_frame_baselines(canvases: np.ndarray, masks: np.ndarray, meta: Mapping,
                             timepoint: float, observed: Sequence[float], *,
                             reference_slice: int, stored: np.ndarray | None = None
                             ) -> dict[str, np.ndarray]:
    """Baselines of one gene at an *observed* (training) time point ``timepoint``.

    What a model that reproduces its training frames must beat: ``"mean_image"``, the mean of
    the gene's images over the *other* observed time points (over all of them when
    ``timepoint`` is the only one; a frame is never compared with itself unless there is
    nothing else), and ``"replicate"``, the second slice of ``timepoint`` (when it has one).
    ``nearest`` and ``linear`` would copy the frame itself and are not defined here.
    Float64 ``(H, W)`` canvases; ``stored`` as in :func:`compute_baselines`.
    """
    canvases, masks, by_t, t, observed = _baseline_inputs(canvases, masks, meta, timepoint,
                                                          observed, stored)
    others = [o for o in observed if o != t] or observed
    images = [timepoint_image(canvases, masks, by_t[o]) for o in others]
    out = {"mean_image": covered_mean(np.stack([im for im, _ in images]),
                                       np.stack([cover for _, cover in images]))}
    second = [i for i in by_t.get(t, []) if i != reference_slice]
    if second:
        out["replicate"] = np.asarray(canvases[second[0]], dtype=np.float64)
    return out


def linear_is_interpolating(t: float, observed: Sequence[float]) -> bool:
    """True when ``t`` lies strictly between two observed time points."""
    lo, hi = _neighbours(tkey(t), sorted(tkey(o) for o in observed))
    return lo is not None and hi is not None


def synthetic_truth(meta: Mapping, timepoint: float, slice_index: int, genes: Sequence[str],
                    *, within_timepoint: int = 0) -> dict[str, np.ndarray]:
    """Noise-free expected expression of ``genes`` on the canvas of slice ``slice_index``.

    Uses ``meta["synthetic"]`` (the generator's config) with
    :func:`videogene.data.synthetic.expected_expression` for the ``within_timepoint``-th slice
    of ``timepoint`` and re-applies the slice's recorded alignment
    (``meta["slices"][slice_index]["transform"]``) with :func:`videogene.pp.rasterize`, so
    the truth lies on exactly the canvas of the real frame. Returns ``{gene: (H, W)}``.
    """
    from ..data.synthetic import expected_expression

    _require_synthetic(meta, "synthetic truth")
    adata = expected_expression(dict(meta["synthetic"]), float(timepoint),
                                slice_index=within_timepoint, genes=list(genes))
    return _on_canvas(adata, meta, slice_index, list(genes))


def synthetic_redraws(meta: Mapping, timepoint: float, slice_index: int, genes: Sequence[str],
                      *, n_draws: int, within_timepoint: int = 0, seed: int = 0
                      ) -> dict[str, np.ndarray]:
    """``n_draws`` independent count draws of the slice of :func:`synthetic_truth`, on its canvas.

    :func:`videogene.data.synthetic.redraw_expression` (same bins and library sizes, new count
    noise), rasterized like the truth. Returns ``{gene: (n_draws, H, W)}`` float32: the samples a
    generative model that had learned the data distribution exactly would produce (``redraw``).
    """
    from ..data.synthetic import redraw_expression

    _require_synthetic(meta, "count redraw")
    draws = redraw_expression(dict(meta["synthetic"]), float(timepoint),
                              slice_index=within_timepoint, genes=list(genes),
                              n_draws=n_draws, seed=seed)
    canv = [_on_canvas(a, meta, slice_index, list(genes)) for a in draws]
    return {g: np.stack([c[g] for c in canv]).astype(np.float32) for g in genes}


def _require_synthetic(meta: Mapping, what: str) -> None:
    if "synthetic" not in meta:
        raise InputError(f"{what}: the dataset metadata has no 'synthetic' config "
                         "(only the built-in synthetic atlas has a known truth)")


def _on_canvas(adata, meta: Mapping, slice_index: int, genes: list[str]) -> dict[str, np.ndarray]:
    """``adata`` put on the canvas of slice ``slice_index`` with its recorded transform."""
    from ..pp import rasterize

    res = int(meta["resolution"])
    raster = rasterize(adata, resolution=res, transform=meta["slices"][slice_index]["transform"],
                       copy=True)
    return _canvases_from_raster(raster, genes, res)


def _canvases_from_raster(raster: Mapping, genes: list[str], res: int) -> dict[str, np.ndarray]:
    """Dense ``{gene: (H, W)}`` canvases from ``pp.rasterize(..., copy=True)``'s dict."""
    from ..pp._rasterize import densify

    dense = densify(raster["stack"], res)  # (G, H, W), columns in the order of ``genes``
    mask = np.asarray(raster["mask"], dtype=bool)
    return {g: np.where(mask, dense[k], 0.0).astype(np.float64) for k, g in enumerate(genes)}
