"""One slice of cells -> a sparse (pixels x genes) raster on an aligned square canvas."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy import ndimage

from ..errors import InputError
from ._align import apply_alignment, canvas_pixels, fit_alignment
from ._normalize import check_values

UNS_KEY = "videogene_raster"
_NEIGHBOURS = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)]


def _as_csr(x) -> sp.csr_matrix:
    if sp.issparse(x):
        return sp.csr_matrix(x, dtype=np.float32)
    return sp.csr_matrix(np.asarray(x, dtype=np.float32))


def rasterize_matrix(x, coords: np.ndarray, *, resolution: int = 64, transform: dict | None = None,
                     closing: int = 1, name: str = "adata", sort_indices: bool = True) -> dict:
    """Array-level rasterization behind :func:`rasterize` (cells x genes ``x``, (n, 2) coords).

    Each pixel holds the mean over the cells that fall in it: a sparse (pixels x cells)
    averaging matrix times the sparse (cells x genes) matrix. With ``closing > 0`` the
    tissue mask is morphologically closed (3x3, ``closing`` iterations) so that subsampled
    data is not speckled; pixels added by the closing hold no cell and get the mean of
    their occupied 8-neighbours (``n_filled_pixels`` counts them).
    """
    if resolution < 2:
        raise InputError(f"resolution: must be >= 2, got {resolution}")
    coords = np.asarray(coords)
    n = coords.shape[0]
    if x.shape[0] != n:
        raise InputError(f"{name}: {x.shape[0]} expression rows but {n} coordinates")
    if transform is None:
        transform = fit_alignment(coords, name=name)
    u = apply_alignment(coords, transform)
    pix, inside = canvas_pixels(u, resolution)
    n_pix = resolution * resolution
    cells = np.flatnonzero(inside)
    counts = np.bincount(pix[cells], minlength=n_pix)
    weights = 1.0 / counts[pix[cells]]
    assign = sp.csr_matrix((weights.astype(np.float32), (pix[cells], cells)), shape=(n_pix, n))
    xs = _as_csr(x)
    check_values(xs, name=name)

    occupied = (counts > 0).reshape(resolution, resolution)
    mask = occupied.copy()
    n_filled = 0
    if closing > 0 and occupied.any():
        # pad so that the closing does not erode tissue touching the canvas border
        pad = closing + 1
        closed = ndimage.binary_closing(np.pad(occupied, pad), structure=np.ones((3, 3), bool),
                                        iterations=closing)[pad:-pad, pad:-pad]
        mask = closed | occupied
        filled = np.flatnonzero((mask & ~occupied).ravel())
        n_filled = int(filled.size)
        if n_filled:
            rows, cols = [], []
            r0, c0 = np.divmod(filled, resolution)
            for dr, dc in _NEIGHBOURS:
                r, c = r0 + dr, c0 + dc
                ok = (r >= 0) & (r < resolution) & (c >= 0) & (c < resolution)
                q = r[ok] * resolution + c[ok]
                occ = occupied.ravel()[q]
                rows.append(filled[ok][occ])
                cols.append(q[occ])
            rows_a, cols_a = np.concatenate(rows), np.concatenate(cols)
            k = np.bincount(rows_a, minlength=n_pix)
            nb = sp.csr_matrix(((1.0 / k[rows_a]).astype(np.float32), (rows_a, cols_a)),
                               shape=(n_pix, n_pix))
            # linear, so fold the neighbour mean into the (pixels x cells) matrix: one
            # product with the big cells x genes matrix instead of two and a sum
            assign = (assign + nb @ assign).tocsr()
            assign.sort_indices()  # a fixed summation order: folded dihedral ops stay exact
    stack = (assign @ xs).tocsr()  # (H*W, G), mean per pixel
    stack.eliminate_zeros()
    if sort_indices:
        stack.sort_indices()
    return {
        "stack": stack,
        "mask": mask,
        "counts": counts.reshape(resolution, resolution).astype(np.int32),
        "transform": {k: v for k, v in transform.items() if k != "extent"},
        "resolution": int(resolution),
        "n_cells": int(n),
        "n_cells_outside": int(n - cells.size),
        "n_tissue_pixels": int(mask.sum()),
        "n_filled_pixels": n_filled,
    }


def rasterize(adata, *, spatial_key: str = "spatial", resolution: int = 64,
              transform: dict | None = None, layer: str | None = None, closing: int = 1,
              copy: bool = False) -> dict | None:
    """Rasterize one slice onto an aligned ``resolution x resolution`` canvas.

    Parameters
    ----------
    adata
        One slice: cells x genes (``X`` or ``layers[layer]``, dense or sparse; values are
        averaged as they are, normalize first), coordinates in ``obsm[spatial_key]``.
    transform
        ``None`` fits the alignment (centre, principal axes, flip, scale to this slice's
        extent); a dict as stored in ``meta["slices"][i]["transform"]`` re-applies it.
    closing
        Iterations of a 3x3 morphological closing of the tissue mask (0: mask = pixels
        holding cells). Closed-in pixels get the mean of their occupied neighbours.
    copy
        ``False``: write ``adata.uns["videogene_raster"]`` and return ``None``;
        ``True``: leave ``adata`` untouched and return the dict.

    Keys written (``adata.uns["videogene_raster"]``)
    ------------------------------------------------
    ``stack``: CSR float32 ``(H*W, n_genes)``, mean expression per pixel (row-major pixels);
    ``mask``: bool ``(H, W)`` tissue mask; ``counts``: int32 ``(H, W)`` cells per pixel;
    ``transform``: the alignment used (``center``, ``rotation``, ``scale``, ``flip``);
    ``resolution``, ``n_cells``, ``n_cells_outside`` (cells off the canvas, dropped),
    ``n_tissue_pixels``, ``n_filled_pixels`` (added by the closing).
    """
    if spatial_key not in adata.obsm:
        raise InputError(f"adata: obsm[{spatial_key!r}] not found (have {list(adata.obsm.keys())})")
    if layer is not None and layer not in adata.layers:
        raise InputError(f"adata: layer {layer!r} not found (have {list(adata.layers.keys())})")
    x = adata.X if layer is None else adata.layers[layer]
    out = rasterize_matrix(x, np.asarray(adata.obsm[spatial_key]), resolution=resolution,
                           transform=transform, closing=closing, name="adata")
    if copy:
        return out
    adata.uns[UNS_KEY] = out
    return None


def densify(stack: sp.spmatrix, resolution: int) -> np.ndarray:
    """``(H*W, G)`` raster -> dense ``(G, H, W)`` float32 (for small gene subsets)."""
    dense = np.asarray(stack.toarray(), dtype=np.float32).T
    return dense.reshape(-1, resolution, resolution)
