"""Validation during training: a fixed-noise denoising loss and a sampled image grid.

- :func:`denoising_loss`: plain masked MSE of the model on fixed batches with fixed noise and
  evenly spaced timesteps (no min-SNR, no re-weighting), so that runs with different loss
  weightings or gene sampling are compared on the same footing. Noisy input and target come
  from :func:`~videogene.training.diffusion.noise_and_target`, as in the training loss.
- :func:`sample_grid`: a few genes sampled with :class:`videogene.pipelines.VideoGenePipeline`
  (short DDIM loop), shown under the real videos; returned as an array and saved as PNG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ..pipelines.samplers import exact_outside
from .diffusion import batch_to_model_inputs, masked_loss, noise_and_target


@torch.no_grad()
def denoising_loss(model, scheduler, batches: Sequence[dict[str, torch.Tensor]], *, seed: int = 0,
                   device: torch.device | str = "cpu", per_gene: bool = False,
                   outside: dict | None = None) -> float | tuple[float, dict[int, float]]:
    """Mean masked MSE over ``batches`` (stream batches), with deterministic noise.

    Timesteps are spread evenly over the schedule (example ``i`` of all examples gets
    ``(i + 0.5) / n * T``), so the number is stable and comparable between checkpoints. The
    target follows ``scheduler.config.prediction_type`` (:func:`noise_and_target`). With
    ``outside`` (a model with ``exact_outside``: :func:`exact_outside_args`) the outputs
    outside the tissue are the exact ones, as in training.
    With ``per_gene=True`` also returns ``{gene_id: loss}``.
    """
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    n_total = sum(int(b["gene_id"].shape[0]) for b in batches)
    num_t = scheduler.config.num_train_timesteps
    total, count, offset = 0.0, 0, 0
    genes: dict[int, list[float]] = {}
    for batch in batches:
        inp = batch_to_model_inputs({k: v.to(device) if torch.is_tensor(v) else v
                                     for k, v in batch.items()})
        x0 = inp["x0"]
        b = x0.shape[0]
        noise = torch.randn(x0.shape, generator=gen).to(device)
        idx = torch.arange(offset, offset + b, dtype=torch.float64)
        t = ((idx + 0.5) / n_total * num_t).long().clamp_(0, num_t - 1).to(device)
        offset += b
        noisy, target = noise_and_target(scheduler, x0, noise, t)
        pred = model(noisy, t, gene_ids=inp["gene_id"], frame_times=inp["frame_times"],
                     frame_mask=inp["frame_present"], tissue_mask=inp["tissue_mask"]).sample
        if outside is not None:
            pred = exact_outside(scheduler, noisy, pred, t, inp["tissue_mask"], **outside)
        per_ex = masked_loss(pred, target, frame_present=inp["frame_present"])
        has_frames = inp["frame_present"].any(dim=1)
        total += float(per_ex[has_frames].sum())
        count += int(has_frames.sum())
        for g, v, ok in zip(inp["gene_id"].tolist(), per_ex.tolist(), has_frames.tolist()):
            if ok:
                genes.setdefault(int(g), []).append(v)
    model.train(was_training)
    mean = total / max(count, 1)
    if per_gene:
        return mean, {g: float(np.mean(v)) for g, v in genes.items()}
    return mean


@torch.no_grad()
def sample_grid(unet, scheduler, meta: dict, masks: np.ndarray, genes: Sequence[str], *,
                real: np.ndarray | None = None, num_inference_steps: int = 10,
                guidance_scale: float = 1.0, seed: int = 0, device: torch.device | str = "cpu"
                ) -> tuple[np.ndarray, np.ndarray]:
    """Sample one trajectory per gene; returns ``(samples (g, T, H, W), grid (rows, cols) in [0, 1])``.

    Grid rows: for each gene the real video (when ``real`` ``(g, T, H, W)`` is given) then the
    sample; columns: time points. Values are expression divided by each gene's scale
    (``videogene.data.units.gene_scales``: ``meta["gene_scale"]``, or ``value_max`` for every
    gene of metadata without per-gene scales), so every gene's layout uses the colour range.
    """
    from ..data.units import gene_scales
    from ..pipelines import VideoGenePipeline

    pipe = VideoGenePipeline(unet=unet, scheduler=scheduler)
    pipe.set_metadata(meta, masks)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    was_training = unet.training
    unet.eval()
    try:
        out = pipe(list(genes), num_samples=1, num_inference_steps=num_inference_steps,
                   guidance_scale=guidance_scale, generator=gen, output_type="np", progress=False,
                   sampler="ddim")
    finally:
        unet.train(was_training)
    samples = np.asarray(out.trajectories)[:, 0]  # (g, T, H, W)
    scales = gene_scales(meta, list(genes))  # (g,) expression units
    rows = []
    for i in range(samples.shape[0]):
        if real is not None:
            rows.append(real[i] / scales[i])
        rows.append(samples[i] / scales[i])
    return samples, tile(np.stack(rows))


def tile(videos: np.ndarray, pad: int = 1) -> np.ndarray:
    """``(rows, T, H, W)`` -> one ``(rows * (H + pad) - pad, T * (W + pad) - pad)`` image."""
    r, t, h, w = videos.shape
    grid = np.ones((r * (h + pad) - pad, t * (w + pad) - pad), dtype=np.float32)
    for i in range(r):
        for j in range(t):
            grid[i * (h + pad): i * (h + pad) + h, j * (w + pad): j * (w + pad) + w] = videos[i, j]
    return np.clip(grid, 0.0, 1.0)


def save_grid_png(grid: np.ndarray, path: str | Path, *, genes: Sequence[str] | None = None,
                  timepoints: Sequence[float] | None = None, has_real: bool = True,
                  step: int | None = None, dpi: int = 110) -> Path:
    """Write a ``[0, 1]`` grid (:func:`sample_grid`) as a labelled PNG.

    Rows are named by gene and ``real`` / ``generated`` (``has_real``), columns by day
    (``E9.5``), with a colour bar of expression divided by the gene's scale and a title with
    the step. Without ``genes`` and ``timepoints`` the bare grid is written, upscaled.
    """
    import matplotlib

    from ..pl._style import EXPRESSION_CMAP

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if genes is None or timepoints is None:
        import imageio.v3 as iio

        rgb = matplotlib.colormaps[EXPRESSION_CMAP](grid)[..., :3]
        rgb = np.repeat(np.repeat(rgb, 4, axis=0), 4, axis=1)
        iio.imwrite(path, (rgb * 255).round().astype(np.uint8))
        return path
    grid_figure(grid, genes, timepoints, has_real=has_real, step=step, dpi=dpi).savefig(path)
    return path


def grid_figure(grid: np.ndarray, genes: Sequence[str], timepoints: Sequence[float], *,
                has_real: bool = True, step: int | None = None, dpi: int = 110):
    """The labelled matplotlib ``Figure`` of :func:`save_grid_png`."""
    from matplotlib.figure import Figure

    from ..pl._style import EXPRESSION_CMAP, day_label

    kinds = ("real", "generated") if has_real else ("generated",)
    labels = [f"{g} {k}" for g in genes for k in kinds]
    n_rows, n_cols = len(labels), len(timepoints)
    cell_h, cell_w = (grid.shape[0] + 1) / n_rows, (grid.shape[1] + 1) / n_cols
    fig = Figure(figsize=(1.0 + 0.8 * n_cols, 0.9 + 0.8 * n_rows), dpi=dpi)
    ax = fig.add_axes((0.22, 0.08, 0.62, 0.8))
    im = ax.imshow(grid, cmap=EXPRESSION_CMAP, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([(j + 0.5) * cell_w - 1 for j in range(n_cols)])
    ax.set_xticklabels([day_label(t) for t in timepoints], fontsize=7)
    ax.set_yticks([(i + 0.5) * cell_h - 1 for i in range(n_rows)])
    ax.set_yticklabels(labels, fontsize=7)
    ax.tick_params(length=0)
    bar = fig.colorbar(im, cax=fig.add_axes((0.87, 0.08, 0.025, 0.8)))
    bar.set_label("expression / gene scale", fontsize=7)
    bar.ax.tick_params(labelsize=6)
    fig.suptitle(f"validation{'' if step is None else f', step {step}'}: "
                 + ("real over generated per gene" if has_real else "generated per gene"),
                 fontsize=8)
    return fig


def validation_genes(cfg, meta: Mapping, val_batches: list[dict]) -> tuple[list[str], np.ndarray]:
    """Genes to sample at validation and their real videos ``(genes, f, h, w)`` in expression
    units (zero where a frame is absent); ``cfg.validation.genes`` or the first batches' genes."""
    from ..data.meta import DatasetMeta
    from ..errors import InputError

    meta = DatasetMeta.of(meta, source=cfg.data.path)
    real_by_id = {}
    for b in val_batches:
        vids = (meta.to_expression(b["video"][:, :, 0], b["gene_id"].numpy())
                * b["tissue_mask"][:, :, 0]).numpy()  # (b, f, h, w) expression units
        present = b["frame_present"].numpy()
        for gid, v, p in zip(b["gene_id"].tolist(), vids, present):
            real_by_id.setdefault(int(gid), v * p[:, None, None])
    names = meta.genes
    if cfg.validation.genes:
        unknown = [g for g in cfg.validation.genes if g not in names]
        if unknown:
            raise InputError(f"config validation.genes: not in the dataset vocabulary: {unknown[:5]}")
        genes = list(cfg.validation.genes)
    else:
        genes = [names[i] for i in list(real_by_id)[: cfg.validation.num_genes]] or names[:1]
    shape = (len(meta.timepoints), meta.resolution, meta.resolution)
    real = np.stack([real_by_id.get(names.index(g), np.zeros(shape, np.float32)) for g in genes])
    return genes, real
