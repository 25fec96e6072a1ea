"""Plots of gene embeddings: the 2-D gene map and the cluster x time heat map."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._style import EXPRESSION_CMAP, EXPRESSION_LABEL, RELATIVE_CMAP, day_label

__all__ = ["plot_gene_map", "plot_cluster_time_heatmap"]


def _save(fig, path, dpi: int, *, bottom: float = 0.0) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout(rect=(0.0, bottom, 1.0, 1.0))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return out


def _categorical_colors(values: np.ndarray):
    import matplotlib.pyplot as plt

    cats = sorted(set(values), key=lambda s: (len(str(s)), str(s)))
    cmap = plt.get_cmap("tab20" if len(cats) > 10 else "tab10")
    lut = {c: cmap(i % cmap.N) for i, c in enumerate(cats)}
    return cats, lut


def _scatter(ax, xy: np.ndarray, values: np.ndarray, title: str, *, legend_title: str,
             max_legend: int = 20) -> None:
    cats, lut = _categorical_colors(values)
    for c in cats:
        sel = values == c
        ax.scatter(xy[sel, 0], xy[sel, 1], s=14, color=lut[c], label=str(c), linewidths=0,
                   alpha=0.85)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    if len(cats) <= max_legend:
        ax.legend(title=legend_title, fontsize=7, title_fontsize=8, markerscale=1.2,
                  loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)


def plot_gene_map(emb, path, *, basis: str = "X_umap", highlight: Sequence[str] = (),
                  title: str | None = None, note: str | None = None, dpi: int = 120) -> Path:
    """Scatter of ``obsm[basis]`` coloured by ``obs["cluster"]``; a second panel coloured by
    ``obs["program_kind"]`` (or ``obs["program"]``) when the true programs are known (the
    same colour per category in every map). Genes in ``highlight`` are circled and labelled;
    ``note`` is one line under the maps (e.g. the embedding's score). Returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xy = np.asarray(emb.obsm[basis], dtype=np.float64)[:, :2]
    method = str(emb.uns.get("map", {}).get("method", basis)) if basis == "X_umap" else basis
    axis_name = "UMAP" if method == "umap" else "PC" if method == "pca" else basis
    panels = [("cluster", "cluster")] if "cluster" in emb.obs else []
    if "program_kind" in emb.obs:
        panels.append(("program_kind", "true program kind"))
    elif "program" in emb.obs:
        panels.append(("program", "true program"))
    if not panels:
        panels = [(None, "genes")]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.6), squeeze=False)
    names = [str(g) for g in emb.obs_names]
    pos = {g: i for i, g in enumerate(names)}
    for ax, (key, label) in zip(axes[0], panels, strict=True):
        values = (emb.obs[key].astype(str).to_numpy() if key is not None
                  else np.array(["gene"] * emb.n_obs))
        _scatter(ax, xy, values, label, legend_title=label)
        ax.set_xlabel(f"{axis_name}1", fontsize=8)
        ax.set_ylabel(f"{axis_name}2", fontsize=8)
        for g in highlight:
            if g in pos:
                i = pos[g]
                ax.scatter(xy[i, 0], xy[i, 1], s=60, facecolors="none", edgecolors="black",
                           linewidths=1.0)
                ax.annotate(g, xy[i], xytext=(4, 4), textcoords="offset points", fontsize=8,
                            fontweight="bold")
    fig.suptitle(title or f"gene embedding ({emb.n_obs} genes, map: {method})", fontsize=11)
    if note:
        fig.text(0.5, 0.01, note, ha="center", va="bottom", fontsize=9)
    return _save(fig, path, dpi, bottom=0.06 if note else 0.0)


def cluster_time_matrix(emb, *, relative: bool = False) -> tuple[np.ndarray, list[str], list[int]]:
    """(clusters x time points) mean of ``obsm["time_profile"]`` over each cluster's genes.

    ``relative``: each gene's profile is first divided by its maximum over time (the shape of
    its time course, whatever its level); genes never expressed are left out. Also returns
    the cluster names and their gene counts.
    """
    prof = np.asarray(emb.obsm["time_profile"], dtype=np.float64)
    clusters = emb.obs["cluster"].astype(str).to_numpy()
    if relative:
        peak = np.nanmax(np.where(np.isnan(prof), -np.inf, prof), axis=1, keepdims=True)
        ok = np.isfinite(peak[:, 0]) & (peak[:, 0] > 0)
        prof = np.where(ok[:, None], prof / np.where(ok[:, None], peak, 1.0), np.nan)
    cats = sorted(set(clusters), key=lambda s: (len(s), s))
    mat = np.full((len(cats), prof.shape[1]), np.nan)
    sizes = []
    for i, c in enumerate(cats):
        rows = prof[clusters == c]
        sizes.append(int(rows.shape[0]))
        good = ~np.isnan(rows).all(axis=1)
        if good.any():
            mat[i] = np.nanmean(rows[good], axis=0)
    return mat, cats, sizes


def plot_cluster_time_heatmap(emb, path, *, dpi: int = 120) -> Path:
    """Heat maps of cluster-mean expression over time: mean log-expression over tissue, and the
    mean relative time course (each gene scaled to its own maximum). Returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [float(t) for t in np.asarray(emb.uns["timepoints"]).ravel()]
    absolute, cats, sizes = cluster_time_matrix(emb)
    relative, _, _ = cluster_time_matrix(emb, relative=True)
    height = max(2.6, 0.32 * len(cats) + 1.4)
    width = max(3.2, 0.45 * len(times) + 2.2)
    panels = [(absolute, f"mean {EXPRESSION_LABEL}", EXPRESSION_CMAP)]
    if len(times) > 1:  # with one time point every gene's relative course is 1
        panels.append((relative, "relative to gene's peak", RELATIVE_CMAP))
    fig, axes = plt.subplots(1, len(panels), figsize=(len(panels) * width, height), squeeze=False)
    rows = [f"{c} (n={n})" for c, n in zip(cats, sizes, strict=True)]
    for ax, (mat, label, cmap) in zip(axes[0], panels, strict=True):
        im = ax.imshow(np.ma.masked_invalid(mat), aspect="auto", cmap=cmap, interpolation="nearest")
        ax.set_xticks(range(len(times)))
        ax.set_xticklabels([day_label(t) for t in times], rotation=90 if len(times) > 8 else 0,
                           fontsize=7)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(rows, fontsize=7)
        ax.set_xlabel("time point", fontsize=8)
        ax.set_title(label, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02)
    axes[0, 0].set_ylabel("cluster", fontsize=8)
    fig.suptitle("cluster-mean expression over time", fontsize=10)
    return _save(fig, path, dpi)
