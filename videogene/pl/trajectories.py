"""Pictures of generated trajectories: a PNG grid (genes or samples x time points) and GIFs.

Both use a shared colour scale from 0 to ``vmax`` (expression units) and show pixels outside
the tissue in light grey. Matplotlib is used through ``Figure`` objects only (no pyplot state),
so these work headless and in threads.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from ._style import EXPRESSION_CMAP, EXPRESSION_LABEL, colormap, day_label


def _shared_vmax(values: np.ndarray, vmax: float | None) -> float:
    if vmax is not None:
        return float(vmax)
    top = float(np.nanmax(values)) if values.size else 0.0
    return top if top > 0 else 1.0


def _masked(frame: np.ndarray, mask: np.ndarray | None) -> np.ma.MaskedArray:
    return np.ma.masked_array(frame, mask=None if mask is None else ~mask.astype(bool))


def safe_filename(name: str) -> str:
    """A gene name made safe for a file name (``Hox/a1`` -> ``Hox_a1``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._") or "gene"


def plot_trajectory_grid(trajectories: np.ndarray, genes: Sequence[str], timepoints: Sequence[float],
                         path=None, *, masks: np.ndarray | None = None, vmax: float | None = None,
                         cmap: str = EXPRESSION_CMAP, title: str | None = None,
                         max_sample_rows: int = 8):
    """Grid of generated frames, columns = time points, one shared colour scale and colour bar.

    ``trajectories``: ``(G, S, T, H, W)``. Several genes: one row per gene, the mean of its
    samples. One gene: a "mean" row and then one row per sample (at most ``max_sample_rows``).
    ``masks``: bool ``(T, H, W)``, outside pixels drawn grey. Saves to ``path`` (PNG) when given;
    returns the matplotlib ``Figure``.
    """
    from matplotlib.figure import Figure

    traj = np.asarray(trajectories, dtype=np.float32)
    if traj.ndim != 5:
        raise InputError(f"trajectories: expected (genes, samples, T, H, W), got shape {traj.shape}")
    g, s, t, h, w = traj.shape
    if len(genes) != g or len(timepoints) != t:
        raise InputError(f"trajectories: {g} genes x {t} time points, but {len(genes)} names and "
                         f"{len(timepoints)} time points given")
    mean = traj.mean(axis=1)  # (G, T, H, W)
    if g == 1:
        rows = [mean[0]] + [traj[0, i] for i in range(min(s, max_sample_rows))]
        labels = [f"{genes[0]}\nmean of {s}"] + [f"sample {i}" for i in range(min(s, max_sample_rows))]
        if s == 1:
            rows, labels = rows[:1], [str(genes[0])]
    else:
        rows = list(mean)
        labels = [f"{name}\n(mean of {s})" if s > 1 else str(name) for name in genes]
    top = _shared_vmax(np.stack(rows), vmax)
    cm = colormap(cmap)

    cell = 1.3
    width = max(cell * t + 1.6, 0.085 * len(title or "") + 0.5)  # one time point: room for the title
    fig = Figure(figsize=(width, cell * len(rows) + (0.8 if title else 0.5)), dpi=110)
    axes = fig.subplots(len(rows), t, squeeze=False)
    image = None
    for r, (frames, label) in enumerate(zip(rows, labels)):
        for c in range(t):
            ax = axes[r, c]
            frame_mask = None if masks is None else masks[c]
            image = ax.imshow(_masked(frames[c], frame_mask), cmap=cm, vmin=0.0, vmax=top,
                              interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(day_label(timepoints[c]), fontsize=9)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.subplots_adjust(left=0.1, right=0.86, top=0.9 if title else 0.93, bottom=0.03,
                        wspace=0.05, hspace=0.08)
    cax = fig.add_axes([0.88, 0.1, 0.02, 0.75])
    bar = fig.colorbar(image, cax=cax)
    bar.set_label(EXPRESSION_LABEL, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, bbox_inches="tight")  # nothing clipped, however few the columns
    return fig


def _figure_rgb(fig) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_trajectory_gif(trajectory: np.ndarray, path, timepoints: Sequence[float], *,
                        masks: np.ndarray | None = None, vmax: float | None = None,
                        cmap: str = EXPRESSION_CMAP, gene: str = "", fps: float = 2.0,
                        max_samples: int = 3) -> Path:
    """Animated GIF of one gene over time: the mean of its samples and up to ``max_samples`` samples.

    ``trajectory``: ``(T, H, W)`` or ``(S, T, H, W)``; ``masks`` bool ``(T, H, W)``. One GIF
    frame per time point, titled with the gene and the day, looping forever.
    """
    import imageio.v3 as iio
    from matplotlib.figure import Figure

    traj = np.asarray(trajectory, dtype=np.float32)
    if traj.ndim == 3:
        traj = traj[None]
    if traj.ndim != 4 or traj.shape[1] != len(timepoints):
        raise InputError(f"trajectory: expected (S, T, H, W), T = {len(timepoints)}; got {traj.shape}")
    s = traj.shape[0]
    panels = [("mean" if s > 1 else "", traj.mean(axis=0))]
    if s > 1:
        panels += [(f"sample {i}", traj[i]) for i in range(min(s, max_samples))]
    top = _shared_vmax(np.stack([p for _, p in panels]), vmax)
    cm = colormap(cmap)
    frames = []
    for c, t in enumerate(timepoints):
        fig = Figure(figsize=(1.9 * len(panels) + 0.6, 2.3), dpi=80)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        image = None
        for ax, (label, video) in zip(axes, panels):
            image = ax.imshow(_masked(video[c], None if masks is None else masks[c]), cmap=cm,
                              vmin=0.0, vmax=top, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(label, fontsize=8)
        fig.suptitle(f"{gene}  {day_label(t)}".strip(), fontsize=10)
        fig.subplots_adjust(left=0.02, right=0.86, top=0.85, bottom=0.1, wspace=0.05)
        fig.colorbar(image, cax=fig.add_axes([0.88, 0.12, 0.025, 0.7])).set_label(
            EXPRESSION_LABEL, fontsize=7)
        frames.append(_figure_rgb(fig))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.stack(frames), extension=".gif", duration=int(1000 / fps), loop=0)
    return path
