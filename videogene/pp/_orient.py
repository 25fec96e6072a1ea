"""Orientation of slices from expression: which symmetry of the canvas matches the others.

The principal-axes fit (:func:`~videogene.pp._align.fit_alignment`) fixes a slice's axes but
not its handedness or which end is up: its skewness rule follows the outline, which changes
between cuts and stages. Here each slice is rasterized once more at low resolution and the
canvas symmetry (identity, flip_x, flip_y, rot180; all eight of :data:`DIHEDRAL_OPS` where
the principal axes are near-degenerate) that best correlates its spatially structured genes
with already oriented slices is chosen:

- the anchor time point is the best-sampled one (most slices; ties: most cells, then the
  earliest) or the time point of a user-given reference slice; its reference slice (the
  given one, else its first) keeps the moments orientation;
- every other slice of a time point is scored against the oriented slices of its time point;
- the first slice of each further time point, chained outward from the anchor in both
  directions, is scored against the oriented slices of the neighbouring time point nearer
  the anchor.

The score of an op against one oriented slice is the mean Pearson correlation over the
shared genes on shared tissue pixels, weighted by each gene's spatial structure (Moran's I,
rook neighbours, :mod:`videogene.pp._spatial`) in both slices; against several oriented
slices the scores are averaged.
Memory: one slice's matrix at a time plus, per slice, a dense ``(max_genes, r, r)`` stack.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..utils import get_logger
from ._align import AXIS_OPS, DIHEDRAL_OPS, axis_ratio, op_image
from ._rasterize import rasterize_matrix
from ._spatial import morans_i_sparse

logger = get_logger("videogene.pp.orient")

#: canvas side of the orientation rasters (or the dataset's, if smaller)
ORIENT_RESOLUTION = 32
#: minor / major principal variance above which all eight symmetries are candidates
DEGENERATE_RATIO = 0.8
#: genes kept per slice (most spatially structured first)
MAX_GENES = 256
#: a gene is a candidate in a slice when non-zero in at least this share of tissue pixels
MIN_NNZ = 0.1
#: Gaussian smoothing (pixels of the orientation raster) before correlating
SMOOTH_SIGMA = 1.0


def _smooth(images: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing normalized within the tissue (no bleeding of the zero background)."""
    if sigma <= 0:
        return images * mask
    m = mask.astype(np.float32)
    num = ndimage.gaussian_filter(images * m, sigma=(0, sigma, sigma), mode="constant")
    den = ndimage.gaussian_filter(m, sigma=sigma, mode="constant")
    return np.where(mask, num / np.maximum(den, 1e-6), 0.0).astype(np.float32)


class _Profile:
    """What one slice contributes to the orientation: its most structured genes, smoothed."""

    __slots__ = ("genes", "images", "mask", "weight")

    def __init__(self, genes: np.ndarray, images: np.ndarray, mask: np.ndarray,
                 weight: np.ndarray):
        self.genes = genes  # (k,) vocabulary ids, sorted
        self.images = images  # (k, r, r) float32
        self.mask = mask  # (r, r) bool
        self.weight = weight  # (k,) Moran's I > 0


def slice_profile(x, coords: np.ndarray, gene_ids: np.ndarray, transform: dict, *,
                  resolution: int = ORIENT_RESOLUTION, max_genes: int = MAX_GENES,
                  min_nnz: float = MIN_NNZ, sigma: float = SMOOTH_SIGMA,
                  name: str = "slice") -> _Profile:
    """Rasterize one slice (cells x genes ``x``, columns = vocabulary ids ``gene_ids``) on
    its canvas at low resolution and keep its ``max_genes`` most structured genes."""
    r = rasterize_matrix(x, coords, resolution=resolution, transform=transform, closing=1,
                         name=name, sort_indices=False)
    mask = r["mask"]
    n_tissue = max(int(mask.sum()), 1)
    stack = r["stack"].tocsc()  # (r*r, genes)
    nnz = np.diff(stack.indptr)
    cand = np.flatnonzero(nnz >= min_nnz * n_tissue)
    gene_ids = np.asarray(gene_ids)
    moran = np.nan_to_num(morans_i_sparse(stack[:, cand], mask), nan=0.0)
    order = np.argsort(-moran, kind="stable")
    order = order[moran[order] > 0][:max_genes]
    keep = cand[order[np.argsort(gene_ids[cand[order]], kind="stable")]]  # by gene id
    dense = np.asarray(stack[:, keep].toarray(), dtype=np.float32).T
    dense = dense.reshape(-1, resolution, resolution)  # (genes, r, r)
    weight = moran[np.searchsorted(cand, keep)]
    return _Profile(gene_ids[keep].astype(np.int64), _smooth(dense, mask, sigma), mask, weight)


def match_score(ref: _Profile, moving: _Profile, op: str, *, min_pixels: int = 10) -> float | None:
    """Weighted mean Pearson of ``moving`` turned by ``op`` against ``ref`` (None: no overlap)."""
    shared, ia, ib = np.intersect1d(ref.genes, moving.genes, assume_unique=True,
                                    return_indices=True)
    if shared.size == 0:
        return None
    pix = ref.mask & op_image(moving.mask, op)
    if int(pix.sum()) < min_pixels:
        return None
    a = ref.images[ia][:, pix].astype(np.float64)  # (genes, pixels)
    b = op_image(moving.images[ib], op)[:, pix].astype(np.float64)
    a -= a.mean(axis=1, keepdims=True)
    b -= b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    ok = den > 0
    if not ok.any():
        return None
    r = (a * b).sum(axis=1)[ok] / den[ok]
    w = np.sqrt(ref.weight[ia] * moving.weight[ib])[ok]
    return float((w * r).sum() / w.sum())


def check_reference(names: Sequence[str], reference: str) -> int:
    """Index of the slice called ``reference``; InputError naming a few valid ones if absent."""
    names = [str(n) for n in names]
    if reference not in names:
        some = ", ".join(names[:5]) + (f" ... ({len(names)} slices)" if len(names) > 5 else "")
        raise InputError(f"--reference-slice {reference!r}: no such slice (have {some})")
    return names.index(reference)


def _order(timepoints: Sequence[float], n_cells: Sequence[int], reference: int | None
           ) -> tuple[float, list[tuple[int, list[int]]]]:
    """Anchor time point and the visiting order: (slice, slices to score it against)."""
    tps = sorted(set(timepoints))
    by_t = {t: [i for i, s in enumerate(timepoints) if s == t] for t in tps}
    if reference is not None:
        anchor = timepoints[reference]
    else:
        anchor = max(tps, key=lambda t: (len(by_t[t]), sum(n_cells[i] for i in by_t[t]), -t))
    a = tps.index(anchor)
    steps: list[tuple[int, list[int]]] = []

    def within(t: float, first: int) -> None:
        done = [first]
        for i in by_t[t]:
            if i != first:
                steps.append((i, list(done)))
                done.append(i)

    first = reference if reference is not None else by_t[anchor][0]
    steps.append((first, []))
    within(anchor, first)
    for direction in (1, -1):
        k = a + direction
        while 0 <= k < len(tps):
            t, prev = tps[k], tps[k - direction]
            steps.append((by_t[t][0], list(by_t[prev])))
            within(t, by_t[t][0])
            k += direction
    return anchor, steps


def orient_slices(
    load: Callable[[int], tuple[object, np.ndarray, np.ndarray]],
    transforms: Sequence[dict],
    *,
    names: Sequence[str],
    timepoints: Sequence[float],
    n_cells: Sequence[int],
    reference: str | None = None,
    resolution: int = ORIENT_RESOLUTION,
    max_genes: int = MAX_GENES,
    progress: bool = True,
) -> list[dict]:
    """Choose a canvas symmetry per slice from expression; return one record per slice.

    ``load(i)`` returns slice ``i``'s ``(x, coords, gene_ids)``: cells x genes (normalized
    as it will be stored), coordinates and the vocabulary id of each column. ``transforms``
    are the slices' moments fits (any scale: ops commute with scaling). The records,
    ``{"method": "expression", "op", "score", "reference", "axis_ratio", "scores"}``, give
    the op to fold into each transform (:func:`~videogene.pp._align.fold_op`), the weighted
    mean Pearson it reached, the slice it was scored against (several: the first of them;
    the anchor's reference: None) and every candidate's score.
    """
    from tqdm.auto import tqdm

    n = len(transforms)
    if not (len(names) == len(timepoints) == len(n_cells) == n):
        raise InputError("orient_slices: names, timepoints, n_cells and transforms differ in length")
    ref_idx = None if reference is None else check_reference(names, reference)
    if n == 1:
        return [{"method": "expression", "op": "identity", "score": None, "reference": None,
                 "note": "single slice: nothing to orient"}]
    profiles: list[_Profile] = []
    ratios: list[float] = []
    for i in tqdm(range(n), desc="orientation rasters", unit="slice", disable=not progress):
        x, coords, gene_ids = load(i)
        ratios.append(axis_ratio(coords, name=names[i]))
        profiles.append(slice_profile(x, coords, gene_ids, transforms[i], resolution=resolution,
                                      max_genes=max_genes, name=names[i]))
        del x
    anchor, steps = _order(list(timepoints), list(n_cells), ref_idx)
    records: list[dict | None] = [None] * n
    ops: list[str] = ["identity"] * n
    turned: dict[int, _Profile] = {}
    for i, against in steps:
        ratio = round(ratios[i], 4)
        if not against:
            records[i] = {"method": "expression", "op": "identity", "score": None,
                          "reference": None, "axis_ratio": ratio,
                          "note": f"reference slice of the anchor time point {anchor:g}"}
            turned[i] = profiles[i]
            continue
        candidates = list(DIHEDRAL_OPS) if ratios[i] > DEGENERATE_RATIO else list(AXIS_OPS)
        scores: dict[str, float | None] = {}
        for op in candidates:
            vals = [match_score(turned[j], profiles[i], op) for j in against]
            vals = [v for v in vals if v is not None]
            scores[op] = round(float(np.mean(vals)), 4) if vals else None
        valid = {op: s for op, s in scores.items() if s is not None}
        if valid:
            op = max(valid, key=lambda o: (valid[o], o == "identity"))
            score: float | None = valid[op]
        else:
            op, score = "identity", None
            logger.warning("orientation: %s shares no spatially structured gene or tissue with "
                           "%s; kept the moments orientation", names[i], names[against[0]])
        ops[i] = op
        records[i] = {"method": "expression", "op": op, "score": score,
                      "reference": names[against[0]], "axis_ratio": ratio, "scores": scores}
        p = profiles[i]
        turned[i] = _Profile(p.genes, op_image(p.images, op), op_image(p.mask, op), p.weight)
        logger.debug("orientation: %s -> %s (score %s against %s; identity %s)", names[i], op,
                     score, ", ".join(names[j] for j in against), scores.get("identity"))
    moved = [f"{names[i]}:{ops[i]}" for i in range(n) if ops[i] != "identity"]
    scored = [(r["score"], names[i]) for i, r in enumerate(records) if r["score"] is not None]
    low = min(scored) if scored else None
    logger.info("orientation by expression: anchor time point %g (reference %s), %d of %d slices "
                "turned%s%s", anchor, names[steps[0][0]], len(moved), n,
                f" ({', '.join(moved[:12])}{' ...' if len(moved) > 12 else ''})" if moved else "",
                f"; lowest score {low[0]:.3f} ({low[1]})" if low else "")
    return records  # type: ignore[return-value]
