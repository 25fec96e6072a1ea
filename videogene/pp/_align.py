"""Slice alignment: centre, principal axes, a deterministic flip and a scale to the canvas.

A transform is a JSON-able dict ``{"center": [x, y], "rotation": [[a, b], [c, d]],
"scale": s, "flip": [fx, fy]}`` mapping coordinates to the canvas square [-1, 1]^2::

    u = ((xy - center) @ rotation.T) * flip * scale

``rotation`` is a proper rotation (det +1) that puts the major principal axis on u_x;
``flip`` (entries +-1) makes the third moment (skewness, about the mean) of each canvas axis
non-negative, so mirror images and 180-degree turns of the same tissue land the same way up.
``center`` is the middle of the aligned bounding box; ``scale`` maps the farthest cell to
``1 / MARGIN``. The fit is equivariant: a rotated, mirrored, shifted copy of a slice lands on
the same canvas.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

#: the farthest cell lands at 1 / MARGIN of the half-canvas, leaving a small border
MARGIN = 1.05


def fit_alignment(coords: np.ndarray, *, scale: float | None = None, name: str = "coords") -> dict:
    """Fit centre, principal-axis rotation, flip and (unless given) scale for one slice.

    ``scale=None`` fits the slice's own extent; pass a common scale to keep relative sizes
    between slices (embryos grow between time points, so a per-slice scale would erase it).
    """
    xy = np.asarray(coords, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] < 2 or len(xy) == 0:
        raise InputError(f"{name}: expected (n_cells, 2) coordinates, got shape {xy.shape}")
    xy = xy[:, :2]
    if not np.isfinite(xy).all():
        raise InputError(f"{name}: coordinates contain NaN or infinite values")
    center = xy.mean(axis=0)
    d = xy - center
    cov = d.T @ d / max(len(d), 1)
    evals, evecs = np.linalg.eigh(cov)  # ascending
    major, minor = evecs[:, 1], evecs[:, 0]
    rot = np.stack([major, minor])  # rows: canvas axes in input coordinates
    if np.linalg.det(rot) < 0:
        rot[1] = -rot[1]
    u = d @ rot.T
    flip = []
    for k in range(2):
        m3 = float(np.mean(u[:, k] ** 3))
        flip.append(-1.0 if m3 < 0 else 1.0)
    u = u * np.asarray(flip)
    # centre on the middle of the aligned bounding box: cell density varies across a
    # section (and with subsampling), the outline moves less than the mean
    mid = (u.max(axis=0) + u.min(axis=0)) / 2
    center = center + (mid * np.asarray(flip)) @ rot
    extent = float(np.abs(u - mid).max())
    if scale is None:
        scale = 1.0 / (max(extent, 1e-12) * MARGIN)
    return {"center": [float(c) for c in center], "rotation": rot.tolist(),
            "scale": float(scale), "flip": flip, "extent": extent}


def apply_alignment(coords: np.ndarray, transform: dict) -> np.ndarray:
    """Map coordinates with a recorded transform to canvas units (inside tissue: [-1, 1])."""
    try:
        center = np.asarray(transform["center"], dtype=np.float64)
        rot = np.asarray(transform["rotation"], dtype=np.float64)
        scale = float(transform["scale"])
        flip = np.asarray(transform.get("flip", [1.0, 1.0]), dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"transform: expected keys center, rotation, scale, flip ({exc})") from None
    xy = np.asarray(coords, dtype=np.float64)[:, :2]
    return ((xy - center) @ rot.T) * flip * scale


def canvas_pixels(u: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Canvas units -> flat row-major pixel index and an inside-canvas mask.

    Column grows with u_x; row 0 is the top (largest u_y), as in a plot.
    """
    col = np.floor((u[:, 0] + 1.0) * 0.5 * resolution).astype(np.int64)
    row = np.floor((1.0 - u[:, 1]) * 0.5 * resolution).astype(np.int64)
    inside = (col >= 0) & (col < resolution) & (row >= 0) & (row < resolution)
    return row * resolution + col, inside
