"""Plots of the held-out evaluation (:mod:`videogene.jobs.evaluate`).

- :func:`plot_gene_scatter`: per frame (gene), the model's score against the best baseline's,
  one panel per metric (Pearson and RMSE by default), with the diagonal; against the real
  frame or against the truth, a gene set (the spatially variable genes) highlighted.
- :func:`plot_example_frames`: for a few genes, the real held-out frame next to the generated
  ones and the baselines, on a colour scale shared along each row (grey: outside tissue).

Matplotlib is used through ``Figure`` objects only (headless, no pyplot state).
"""

from __future__ import annotations

import textwrap
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np

from ..data.meta import DEFAULT_VALUE_MAX
from ._style import EXPRESSION_CMAP, EXPRESSION_LABEL, colormap, day_label
from .trajectories import _masked

_LABELS = {"pearson": "Pearson r", "spearman": "Spearman rho", "ssim": "SSIM", "rmse": "RMSE",
           "wasserstein": "Wasserstein", "abs_zero_fraction_error": "|zero-fraction error|"}


def plot_gene_scatter(records: Sequence[Mapping], path, *, baseline: str = "linear",
                      model: str = "model", metrics: Sequence[str] = ("pearson", "rmse"),
                      key: str = "metrics", highlight: Collection[str] | None = None,
                      highlight_label: str = "spatial", dpi: int = 120) -> Path:
    """Scatter of ``model`` vs ``baseline`` per frame for each metric; points above the
    diagonal are frames where the model scores higher. ``key`` picks the scores (``"metrics"``:
    against the real frame, ``"vs_truth"``: against the truth). Frames of the genes in
    ``highlight`` (e.g. the spatially variable ones) in colour and the rest in grey; without
    ``highlight``, expressed frames in colour and silent ones in grey. Returns the PNG path."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(metrics), 4.0), dpi=dpi)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    against = "truth" if key == "vs_truth" else "real"
    for ax, metric in zip(axes, metrics):
        pts = [(r[key][baseline][metric], r[key][model][metric],
                r["gene"] in highlight if highlight is not None else r["expressed"])
               for r in records if baseline in r.get(key, {}) and model in r.get(key, {})]
        arr = np.array([(x, y) for x, y, _ in pts], dtype=np.float64).reshape(-1, 2)
        expressed = np.array([e for _, _, e in pts], dtype=bool)
        ok = np.isfinite(arr).all(axis=1)
        groups = ((highlight_label, "other") if highlight is not None else ("expressed", "silent"))
        for sel, colour, label in ((ok & expressed, "tab:blue", groups[0]),
                                   (ok & ~expressed, "0.6", groups[1])):
            if sel.any():
                ax.scatter(arr[sel, 0], arr[sel, 1], s=14, alpha=0.75, c=colour, label=label,
                           edgecolors="none")
        if ok.any():
            lo = float(min(arr[ok].min(), 0.0 if metric != "pearson" else arr[ok].min()))
            hi = float(arr[ok].max())
            pad = 0.05 * (hi - lo or 1.0)
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="k", lw=0.8, ls="--")
            ax.set_xlim(lo - pad, hi + pad)
            ax.set_ylim(lo - pad, hi + pad)
            above = float(np.mean(arr[ok, 1] > arr[ok, 0]))
            better = above if metric in ("pearson", "spearman", "ssim") else 1.0 - above
            ax.set_title(f"{_LABELS.get(metric, metric)} vs {against}: model better on "
                         f"{100 * better:.0f}%", fontsize=10)
        ax.set_xlabel(f"{baseline.replace('_', ' ')} (best baseline)")
        ax.set_ylabel(model.replace("_", " "))
        ax.set_aspect("equal", adjustable="box")
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_example_frames(examples: Sequence[Mapping], path, *, value_max: float = DEFAULT_VALUE_MAX,
                        cmap: str = EXPRESSION_CMAP, scale_exclude: str = "generated",
                        dpi: int = 120, title: str | None = None) -> Path:
    """Grid of frames: one row per example, one column per panel.

    Each example is ``{"gene", "timepoint", "mask": (H, W) bool, "panels": {label: (H, W)}}``
    (the first panel is the real frame). Within a row all panels share one colour scale,
    0 .. the largest tissue value of the panels whose label does not start with
    ``scale_exclude`` (the real frame and the baselines; at most ``value_max``), so that
    an untrained model's saturated samples do not wash out the real frame: brighter
    generated pixels saturate. A colour bar per row shows the scale.
    """
    from matplotlib.figure import Figure

    labels: list[str] = []
    for ex in examples:
        labels.extend(k for k in ex["panels"] if k not in labels)
    n_rows, n_cols = len(examples), len(labels)
    fig = Figure(figsize=(1.7 * n_cols + 0.6, 1.8 * n_rows + 0.6), dpi=dpi)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    cm = colormap(cmap)
    for i, ex in enumerate(examples):
        mask = np.asarray(ex["mask"], dtype=bool)
        imgs = [np.asarray(ex["panels"][k], dtype=np.float64) if k in ex["panels"] else None
                for k in labels]
        present = [(k, im) for k, im in zip(labels, imgs) if im is not None]
        scaled = [im for k, im in present if not k.startswith(scale_exclude)]
        scaled = scaled or [im for _, im in present]
        top = max((float(im[mask].max()) for im in scaled if mask.any()), default=0.0)
        vmax = min(value_max, top) if top > 0 else 1.0
        im_obj = None
        for j, (label, img) in enumerate(zip(labels, imgs)):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if img is None:
                ax.axis("off")
                continue
            im_obj = ax.imshow(_masked(img, mask), cmap=cm, vmin=0.0, vmax=vmax,
                               interpolation="nearest")
            if i == 0:  # wrapped: long labels of neighbouring columns would overlap
                ax.set_title(textwrap.fill(label, 18, break_on_hyphens=False), fontsize=8)
            if j == 0:
                ax.set_ylabel(f"{ex['gene']}\n{day_label(ex['timepoint'])}", fontsize=8)
        if im_obj is not None:
            cb = fig.colorbar(im_obj, ax=list(axes[i]), fraction=0.02, pad=0.01)
            cb.ax.tick_params(labelsize=7)
            cb.set_label(EXPRESSION_LABEL, fontsize=7)
    fig.suptitle(title or "held-out frames: real slice, generated and baselines "
                 "(one colour scale per row; grey: outside the tissue)", fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
