"""Preview figure of a spatiotemporal atlas: a few genes x all time points."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ._style import EXPRESSION_CMAP, colormap, day_label

# One gene per program kind, in this order; marker genes are preferred.
PREVIEW_MARKERS = {
    "domain": ("Sox2", "Myh6", "Afp"),
    "temporal": ("Hba-x", "Col3a1"),
    "gradient": ("Hoxc10", "Krt14"),
    "scattered": ("Hbb-bs", "Cdh5", "Ptprc"),
    "housekeeping": ("Actb",),
}


def choose_preview_genes(var: pd.DataFrame, *, per_kind: int = 2) -> list[int]:
    """Column positions of up to ``per_kind`` genes of each program kind (markers first,
    then the genes with the largest ``scale``). Without ``program_kind``: the first genes."""
    if "program_kind" not in var:
        return list(range(min(6, len(var))))
    kinds = var["program_kind"].astype(str).to_numpy()
    names = var.index.astype(str)
    pos = {g: i for i, g in enumerate(names)}
    scale = var["scale"].to_numpy() if "scale" in var else np.zeros(len(var))
    out: list[int] = []
    for kind, markers in PREVIEW_MARKERS.items():
        chosen = [pos[m] for m in markers if m in pos and kinds[pos[m]] == kind][:per_kind]
        if len(chosen) < per_kind:
            rest = [i for i in np.argsort(-scale, kind="stable") if kinds[i] == kind
                    and i not in chosen]
            chosen += rest[: per_kind - len(chosen)]
        out += [int(i) for i in chosen]
    return out


def _aligned(xy: np.ndarray) -> np.ndarray:
    """Centre and rotate onto principal axes (long axis horizontal) for display."""
    c = xy - xy.mean(axis=0)
    _, vecs = np.linalg.eigh(np.cov(c.T))
    a = c @ vecs[:, ::-1]
    # fix the sign by skewness so repeated slices face the same way more often
    for j in (0, 1):
        if np.mean(a[:, j] ** 3) < 0:
            a[:, j] = -a[:, j]
    return a


def _marker_size(xy: np.ndarray, ax, fig) -> float:
    """Marker area (pt^2) that tiles bins of this slice in an axes of this size."""
    from scipy.spatial import cKDTree

    if len(xy) < 2:
        return 4.0
    d, _ = cKDTree(xy).query(xy[:: max(1, len(xy) // 500)], k=2)
    spacing = float(np.median(d[:, 1]))
    span = max(np.ptp(xy[:, 0]), np.ptp(xy[:, 1]), 1e-9) * 1.08
    box = ax.get_position()
    w_pt = min(box.width * fig.get_figwidth(), box.height * fig.get_figheight()) * 72
    return max(0.3, (1.45 * spacing * w_pt / span) ** 2)  # discs covering the grid


def plot_atlas_preview(adata, out: str | Path | None = None, *, genes: list[str] | None = None,
                       slice_key: str = "slice", time_key: str = "timepoint",
                       spatial_key: str = "spatial", align: bool = True, dpi: int = 110):
    """Grid of genes (rows) x time points (columns), the first slice of each time point.

    Colour scale is shared along a row (per gene, 0 .. its 99.5th percentile). Writes a PNG
    to ``out`` when given and returns the matplotlib Figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if genes is None:
        cols = choose_preview_genes(adata.var)
    else:
        missing = [g for g in genes if g not in adata.var_names]
        if missing:
            raise InputError(f"atlas preview: unknown gene(s) {missing}")
        cols = [int(adata.var_names.get_loc(g)) for g in genes]
    if not cols:
        raise InputError("atlas preview: no genes to show")
    obs = adata.obs
    times = sorted(pd.unique(obs[time_key].astype(float)))
    first = {}
    for t in times:
        names = pd.unique(obs.loc[obs[time_key].astype(float) == t, slice_key].astype(str))
        first[t] = sorted(names)[0]
    x = adata.X[:, cols]
    x = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
    xy_all = np.asarray(adata.obsm[spatial_key], dtype=float)
    n_r, n_c = len(cols), len(times)
    fig, axes = plt.subplots(n_r, n_c, figsize=(1.5 * n_c + 1.2, 1.5 * n_r + 0.7),
                             squeeze=False)
    fig.subplots_adjust(left=0.08, right=0.93, top=1 - 0.55 / fig.get_figheight(), bottom=0.01,
                        wspace=0.04, hspace=0.06)
    slice_arr = obs[slice_key].astype(str).to_numpy()
    masks = {t: slice_arr == first[t] for t in times}
    xys = {t: (_aligned(xy_all[m]) if align else xy_all[m]) for t, m in masks.items()}
    sizes = {t: _marker_size(xy, axes[0, 0], fig) for t, xy in xys.items()}
    kinds = adata.var["program_kind"].astype(str).to_numpy() if "program_kind" in adata.var \
        else None
    for r, col in enumerate(cols):
        vmax = float(np.quantile(x[:, r], 0.995)) or float(x[:, r].max()) or 1.0
        for c, t in enumerate(times):
            ax = axes[r, c]
            xy, v = xys[t], x[masks[t], r]
            o = np.argsort(v, kind="stable")  # expressed bins on top
            size = sizes[t]
            sc = ax.scatter(xy[o, 0], xy[o, 1], c=v[o], s=size, cmap=colormap(EXPRESSION_CMAP),
                            vmin=0, vmax=vmax,
                            marker="o", linewidths=0, rasterized=True)
            ctr = (xy.max(axis=0) + xy.min(axis=0)) / 2
            half = max(np.ptp(xy[:, 0]), np.ptp(xy[:, 1]), 1e-9) * 1.08 / 2
            ax.set_xlim(ctr[0] - half, ctr[0] + half)
            ax.set_ylim(ctr[1] - half, ctr[1] + half)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            for sp in ax.spines.values():
                sp.set_visible(False)
            ax.set_facecolor("#d9d9d9")
            if r == 0:
                ax.set_title(f"{day_label(t)}\n{first[t]}", fontsize=8)
            if c == 0:
                label = str(adata.var_names[col])
                if kinds is not None:
                    label += f"\n({kinds[col]})"
                ax.set_ylabel(label, fontsize=8)
        cb = fig.colorbar(sc, cax=axes[r, -1].inset_axes([1.04, 0.1, 0.05, 0.8]))
        cb.ax.tick_params(labelsize=6)
    fig.suptitle("synthetic atlas preview: log1p(normalized) expression, one slice per day",
                 fontsize=9, y=1 - 0.12 / fig.get_figheight(), va="top")
    if out is not None:
        fig.savefig(out, dpi=dpi, facecolor="white")
        plt.close(fig)
    return fig
