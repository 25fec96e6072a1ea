"""Slice alignment: centre, principal axes, a flip and a scale to the canvas.

A transform is a JSON-able dict ``{"center": [x, y], "rotation": [[a, b], [c, d]],
"scale": s, "flip": [fx, fy]}`` (plus, from ``videogene prepare``, an ``orientation``
record) mapping coordinates to the canvas square [-1, 1]^2::

    u = ((xy - center) @ rotation.T) * flip * scale

``rotation`` is a proper rotation (det +1); ``flip`` entries are +-1. :func:`fit_alignment`
puts the major principal axis on u_x and chooses ``flip`` so that the third moment
(skewness, about the mean) of each canvas axis is non-negative (the "moments" orientation;
``videogene prepare`` then re-orients by expression, see ``videogene.pp._orient``).
``center`` is the middle of the aligned bounding box; ``scale`` maps the farthest cell to
``1 / MARGIN``. The fit is equivariant: a rotated, mirrored, shifted copy of a slice lands on
the same canvas.

The eight symmetries of the square canvas (:data:`DIHEDRAL_OPS`, acting on canvas units
u = (x right, y up, as plotted)) fold into a transform with :func:`fold_op`; binning is
symmetric about the canvas centre, so the folded transform rasterizes to exactly the
permuted canvas (:func:`op_image`), except for cells lying exactly on a pixel edge.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

#: the farthest cell lands at 1 / MARGIN of the half-canvas, leaving a small border
MARGIN = 1.05

#: the dihedral group of the square as 2x2 matrices on canvas units: u' = M @ u
DIHEDRAL_OPS: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "identity": ((1, 0), (0, 1)),
    "flip_x": ((-1, 0), (0, 1)),  # mirror left-right
    "flip_y": ((1, 0), (0, -1)),  # mirror top-bottom
    "rot180": ((-1, 0), (0, -1)),
    "transpose": ((0, 1), (1, 0)),  # mirror about the diagonal u_x = u_y
    "rot90": ((0, -1), (1, 0)),  # a quarter turn counter-clockwise
    "rot270": ((0, 1), (-1, 0)),  # a quarter turn clockwise
    "antitranspose": ((0, -1), (-1, 0)),  # mirror about the diagonal u_x = -u_y
}
#: the ops that keep the principal axes on the canvas axes
AXIS_OPS = ("identity", "flip_x", "flip_y", "rot180")


def _xy(coords, name: str) -> np.ndarray:
    xy = np.asarray(coords, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] < 2 or len(xy) == 0:
        raise InputError(f"{name}: expected (n_cells, 2) coordinates, got shape {xy.shape}")
    xy = xy[:, :2]
    if not np.isfinite(xy).all():
        raise InputError(f"{name}: coordinates contain NaN or infinite values")
    return xy


def axis_ratio(coords: np.ndarray, *, name: str = "coords") -> float:
    """Minor / major principal variance of a slice (1: round or square, 0: a line)."""
    xy = _xy(coords, name)
    d = xy - xy.mean(axis=0)
    evals = np.linalg.eigvalsh(d.T @ d / len(d))
    return float(evals[0] / evals[1]) if evals[1] > 0 else 1.0


def fit_alignment(coords: np.ndarray, *, scale: float | None = None, name: str = "coords",
                  axes: str = "principal") -> dict:
    """Fit centre, principal-axis rotation, flip and (unless given) scale for one slice.

    ``scale=None`` fits the slice's own extent; pass a common scale to keep relative sizes
    between slices (embryos grow between time points, so a per-slice scale would erase it).
    ``axes="input"`` keeps the input axes (rotation identity, no flip): only centre and
    scale are fitted, for slices already registered to one another.
    """
    if axes not in ("principal", "input"):
        raise InputError(f"axes: expected 'principal' or 'input', got {axes!r}")
    xy = _xy(coords, name)
    center = xy.mean(axis=0)
    d = xy - center
    if axes == "input":
        rot = np.eye(2)
        flip = [1.0, 1.0]
    else:
        cov = d.T @ d / max(len(d), 1)
        evals, evecs = np.linalg.eigh(cov)  # ascending
        major, minor = evecs[:, 1], evecs[:, 0]
        rot = np.stack([major, minor])  # rows: canvas axes in input coordinates
        if np.linalg.det(rot) < 0:
            rot[1] = -rot[1]
        flip = [-1.0 if float(np.mean((d @ r) ** 3)) < 0 else 1.0 for r in rot]
    u = (d @ rot.T) * np.asarray(flip)
    # centre on the middle of the aligned bounding box: cell density varies across a
    # section (and with subsampling), the outline moves less than the mean
    mid = (u.max(axis=0) + u.min(axis=0)) / 2
    center = center + (mid * np.asarray(flip)) @ rot
    extent = float(np.abs(u - mid).max())
    if scale is None:
        scale = 1.0 / (max(extent, 1e-12) * MARGIN)
    return {"center": [float(c) for c in center], "rotation": rot.tolist(),
            "scale": float(scale), "flip": flip, "extent": extent}


def fold_op(transform: dict, op: str) -> dict:
    """A copy of ``transform`` followed by the canvas symmetry ``op`` (a :data:`DIHEDRAL_OPS` name).

    The op goes into ``rotation`` (kept proper) and ``flip`` (``[1, -1]`` when the result
    is mirrored, else ``[1, 1]``; the identity leaves both as they are); ``center`` and
    ``scale`` stay. Entries are only permuted
    and negated, so ``apply_alignment`` with the result gives exactly ``M @ u``.
    """
    if op not in DIHEDRAL_OPS:
        raise InputError(f"orientation op: expected one of {', '.join(DIHEDRAL_OPS)}, got {op!r}")
    if op == "identity":
        return dict(transform)
    m = np.asarray(DIHEDRAL_OPS[op], dtype=np.float64)
    p = m @ np.diag(np.asarray(transform.get("flip", [1.0, 1.0]), dtype=np.float64))
    det = float(round(np.linalg.det(p)))
    d2 = np.diag([1.0, det])
    rot = d2 @ p @ np.asarray(transform["rotation"], dtype=np.float64)
    return {**transform, "rotation": rot.tolist(), "flip": [1.0, det]}


def apply_alignment(coords: np.ndarray, transform: dict) -> np.ndarray:
    """Map coordinates with a recorded transform to canvas units (inside tissue: [-1, 1])."""
    try:
        center = np.asarray(transform["center"], dtype=np.float64)
        rot = np.asarray(transform["rotation"], dtype=np.float64)
        scale = float(transform["scale"])
        flip = np.asarray(transform.get("flip", [1.0, 1.0]), dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"transform: expected keys center, rotation, scale, flip ({exc})") from None
    d = np.asarray(coords, dtype=np.float64)[:, :2] - center
    # element-wise rather than a BLAS product: the same rounding for every row order and
    # sign, so a folded symmetry maps cells exactly
    u = np.stack([d[:, 0] * rot[k, 0] + d[:, 1] * rot[k, 1] for k in range(2)], axis=1)
    return u * flip * scale


def _bin(a: np.ndarray, resolution: int) -> np.ndarray:
    """Pixel offsets from the centre -> bin index, symmetric under a -> -a (but on edges)."""
    f = np.floor(a)
    if resolution % 2 == 0:
        return f.astype(np.int64) + resolution // 2
    return (f + (a - f >= 0.5)).astype(np.int64) + (resolution - 1) // 2


def canvas_pixels(u: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Canvas units -> flat row-major pixel index and an inside-canvas mask.

    Column grows with u_x; row 0 is the top (largest u_y), as in a plot.
    """
    a = np.asarray(u, dtype=np.float64) * (0.5 * resolution)  # pixels from the centre
    col = _bin(a[:, 0], resolution)
    row = _bin(-a[:, 1], resolution)
    inside = (col >= 0) & (col < resolution) & (row >= 0) & (row < resolution)
    return row * resolution + col, inside


def op_image(img: np.ndarray, op: str) -> np.ndarray:
    """Apply a canvas symmetry to images ``(..., H, W)`` (square, row 0 at the top)."""
    if op not in DIHEDRAL_OPS:
        raise InputError(f"orientation op: expected one of {', '.join(DIHEDRAL_OPS)}, got {op!r}")
    r = img.shape[-1]
    if img.shape[-2] != r:
        raise InputError(f"op_image: expected square images, got {img.shape[-2:]}")
    m = np.asarray(DIHEDRAL_OPS[op])
    c = np.arange(r) - (r - 1) / 2
    x_new, y_new = np.meshgrid(c, -c)  # canvas coordinates of the output pixels
    x_old, y_old = m.T @ np.stack([x_new.ravel(), y_new.ravel()])  # M^-1 = M^T
    cols = np.rint(x_old + (r - 1) / 2).astype(np.int64)
    rows = np.rint((r - 1) / 2 - y_old).astype(np.int64)
    return img[..., rows, cols].reshape(img.shape)
