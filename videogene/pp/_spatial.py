"""Spatial signal of a gene on a slice: Moran's I over the tissue pixels (rook kernel).

``I = (N / S0) * z'Wz / z'z`` with ``z = x - mean(x)`` over the ``N`` tissue pixels, ``W`` the
binary 4-neighbour (rook) adjacency restricted to tissue pixels and ``S0 = sum(W)``. About 0
for spatially random values (``-1 / (N - 1)`` expected), near 1 for smooth layouts (domains,
gradients), negative for alternating ones (a checkerboard gives -1). Undefined (NaN) where the
gene is constant over the tissue (also all zero) or the tissue has no neighbouring pixels.

Two routes give the same numbers: :func:`morans_i` on dense canvases (evaluation, plots) and
:func:`morans_i_sparse` on the sparse ``(H*W, genes)`` raster of one slice (ingest, which
passes the pixels holding cells as the mask: pixels filled in by the mask closing are means of
their neighbours and would add autocorrelation to every gene). Both also give the spatial
amplitude (``amplitude=True``). :func:`spatially_variable` is the flag ``videogene prepare``
writes (``meta["spatially_variable"]``), with the dataset's threshold from
:func:`spatial_threshold`; docs/training.md ("Spatially variable genes") has the measurement
behind the numbers.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..errors import InputError

# meta["spatially_variable"]: mean Moran's I >= max(SPATIAL_THRESHOLD, SPATIAL_NULL_Z x its
# standard error for spatially random values on the dataset's slices) and spatial amplitude
# >= SPATIAL_AMPLITUDE_THRESHOLD (measured on the synthetic atlas: docs/training.md,
# "Spatially variable genes")
SPATIAL_THRESHOLD = 0.02
SPATIAL_NULL_Z = 3.0
SPATIAL_AMPLITUDE_THRESHOLD = 0.1

# relative size of z'z (to sum x^2) below which a gene counts as constant on the slice
_CONSTANT_RTOL = 1e-9


def _finish(n, s0, zwz, zz, sumsq, total) -> tuple[np.ndarray, np.ndarray]:
    """Moran's I and the spatial amplitude from the sums (NaN where undefined)."""
    zwz, zz, sumsq, total = (np.asarray(a, dtype=np.float64) for a in (zwz, zz, sumsq, total))
    n, s0 = np.asarray(n, np.float64), np.asarray(s0, np.float64)
    ok = (zz > _CONSTANT_RTOL * np.maximum(sumsq, 1e-300)) & (n >= 2) & (s0 > 0)
    shape = np.broadcast(zwz, zz, n).shape
    i_out, a_out = np.full(shape, np.nan), np.full(shape, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        moran = n / s0 * zwz / zz
        # neighbour covariance z'Wz / S0 estimates the variance of the smooth part (noise
        # that is independent between pixels cancels); its root over the mean level
        amp = np.sqrt(np.maximum(zwz / s0, 0.0)) / (total / n)
    i_out[ok] = np.broadcast_to(moran, shape)[ok]
    ok_a = ok & (np.broadcast_to(total, shape) > 0)
    a_out[ok_a] = np.broadcast_to(amp, shape)[ok_a]
    return i_out, a_out


def morans_i(canvases, mask=None, *, amplitude: bool = False):
    """Moran's I of dense canvases over their tissue pixels, 4-neighbour (rook) kernel.

    ``canvases``: ``(..., H, W)`` array (a frame, a video, genes x frames ...). ``mask``: bool
    ``(H, W)`` or broadcastable to ``canvases`` (tissue pixels); None: every pixel. Returns a
    float64 array of shape ``canvases.shape[:-2]`` with NaN where undefined (constant over the
    tissue, fewer than 2 tissue pixels, no neighbouring tissue pixels). ``amplitude=True``
    returns ``(moran, amplitude)``: the spatial amplitude ``sqrt(max(z'Wz / S0, 0)) / mean``
    (the standard deviation of the spatially smooth part relative to the mean level, i.e.
    ``sqrt(max(I, 0)) * CV``; NaN also where the mean is 0).
    """
    x = np.asarray(canvases, dtype=np.float64)
    if x.ndim < 2:
        raise InputError(f"morans_i: expected canvases (..., H, W), got shape {x.shape}")
    m = np.ones(x.shape[-2:], dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    try:
        m = np.broadcast_to(m, x.shape)
    except ValueError:
        raise InputError(f"morans_i: mask of shape {np.shape(mask)} does not fit canvases of "
                         f"shape {x.shape}") from None
    w = m.astype(np.float64)
    n = w.sum(axis=(-2, -1))
    xm = x * w
    mean = np.divide(xm.sum(axis=(-2, -1)), n, out=np.zeros_like(n), where=n > 0)
    z = (x - mean[..., None, None]) * w  # (..., H, W), 0 off tissue
    pr = w[..., :, :-1] * w[..., :, 1:]  # horizontal neighbour pairs inside tissue
    pd = w[..., :-1, :] * w[..., 1:, :]  # vertical
    zwz = 2.0 * ((z[..., :, :-1] * z[..., :, 1:] * pr).sum(axis=(-2, -1))
                 + (z[..., :-1, :] * z[..., 1:, :] * pd).sum(axis=(-2, -1)))
    s0 = 2.0 * (pr.sum(axis=(-2, -1)) + pd.sum(axis=(-2, -1)))
    zz = (z * z).sum(axis=(-2, -1))
    out = _finish(n, s0, zwz, zz, (xm * x).sum(axis=(-2, -1)), xm.sum(axis=(-2, -1)))
    return out if amplitude else out[0]


def rook_half_adjacency(mask: np.ndarray) -> sp.csr_matrix:
    """``(H*W, H*W)`` sparse S with ``S[i, j] = 1`` for the right and lower tissue neighbour j of
    tissue pixel i (flat row-major indices); the rook weights are ``W = S + S.T``."""
    m = np.asarray(mask, dtype=bool)
    h, w = m.shape
    idx = np.arange(h * w).reshape(h, w)
    right = m[:, :-1] & m[:, 1:]
    down = m[:-1, :] & m[1:, :]
    rows = np.concatenate([idx[:, :-1][right], idx[:-1, :][down]])
    cols = np.concatenate([idx[:, 1:][right], idx[1:, :][down]])
    return sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(h * w, h * w))


def morans_i_sparse(stack, mask: np.ndarray, *, amplitude: bool = False):
    """Moran's I per column of a sparse ``(H*W, genes)`` raster (flat row-major pixels).

    Same definition and numbers as :func:`morans_i` (values off ``mask`` are ignored), computed
    without densifying: ``z'Wz = x'Wx - 2 m d'x + m^2 S0`` with ``d`` the tissue degree of each
    pixel. Work and memory are a few times the raster's non-zeros. Returns ``(genes,)``
    float64 with NaN where undefined; ``amplitude=True``: ``(moran, amplitude)`` as in
    :func:`morans_i`.
    """
    m = np.asarray(mask, dtype=bool)
    x = sp.csc_matrix(stack, dtype=np.float64)
    if x.shape[0] != m.size:
        raise InputError(f"morans_i_sparse: raster has {x.shape[0]} pixels, mask {m.size}")
    flat = m.ravel()
    if x.nnz and not flat[x.indices].all():
        x = sp.diags(flat.astype(np.float64)) @ x
        x.eliminate_zeros()
    n = float(flat.sum())
    half = rook_half_adjacency(m)
    deg = np.asarray(half.sum(axis=0)).ravel() + np.asarray(half.sum(axis=1)).ravel()
    s0 = float(deg.sum())
    colsum = np.asarray(x.sum(axis=0)).ravel()
    sumsq = np.asarray(x.multiply(x).sum(axis=0)).ravel()
    mean = colsum / n if n > 0 else np.zeros_like(colsum)
    xwx = 2.0 * np.asarray(x.multiply(half @ x).sum(axis=0)).ravel()
    dx = np.asarray(x.T @ deg).ravel()
    zwz = xwx - 2.0 * mean * dx + mean**2 * s0
    zz = sumsq - n * mean**2
    out = _finish(n, s0, zwz, zz, sumsq, colsum)
    return out if amplitude else out[0]


def null_variance(mask: np.ndarray) -> float:
    """Variance of Moran's I (rook kernel on ``mask``) for spatially random normal values:
    ``(N^2 S1 - N S2 + 3 S0^2) / ((N^2 - 1) S0^2) - E[I]^2`` (Cliff & Ord); NaN when undefined."""
    m = np.asarray(mask, dtype=bool)
    half = rook_half_adjacency(m)
    deg = (np.asarray(half.sum(axis=0)).ravel() + np.asarray(half.sum(axis=1)).ravel())[m.ravel()]
    n, s0 = float(m.sum()), float(deg.sum())
    if n < 4 or s0 <= 0:
        return float("nan")
    s1, s2 = 2.0 * s0, float((4.0 * deg.astype(np.float64) ** 2).sum())
    return float((n * n * s1 - n * s2 + 3 * s0 * s0) / ((n * n - 1) * s0 * s0) - 1.0 / (n - 1) ** 2)


def spatial_threshold(null_variances) -> float:
    """The dataset's Moran's I threshold: ``max(SPATIAL_THRESHOLD, SPATIAL_NULL_Z * se)`` with
    ``se`` the standard error of the mean over the slices (``null_variances``, one per
    training slice) of spatially random values. Few or small slices get a higher bar."""
    v = np.asarray([x for x in null_variances if np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return float(SPATIAL_THRESHOLD)
    se = float(np.sqrt(v.sum()) / v.size)
    return float(max(SPATIAL_THRESHOLD, round(SPATIAL_NULL_Z * se, 6)))


def mean_defined(values, *, axis: int = 0) -> np.ndarray:
    """Mean over ``axis`` ignoring NaN (undefined frames); 0 where no value is defined."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    cnt = ok.sum(axis=axis)
    tot = np.where(ok, v, 0.0).sum(axis=axis)
    return np.divide(tot, cnt, out=np.zeros(np.shape(tot)), where=cnt > 0)


def spatially_variable(spatial_signal, spatial_amplitude, *, threshold: float = SPATIAL_THRESHOLD,
                       amplitude_threshold: float = SPATIAL_AMPLITUDE_THRESHOLD) -> np.ndarray:
    """The flag ``meta["spatially_variable"]``: a layout that is coherent (mean Moran's I
    ``>= threshold``, the dataset's :func:`spatial_threshold`) and material (mean spatial
    amplitude ``>= amplitude_threshold``: the smooth part varies by at least that fraction of
    the mean level, which leaves out housekeeping genes whose level drifts by a few percent)."""
    sig = np.asarray(spatial_signal, dtype=np.float64)
    amp = np.asarray(spatial_amplitude, dtype=np.float64)
    return (sig >= threshold) & (amp >= amplitude_threshold)
