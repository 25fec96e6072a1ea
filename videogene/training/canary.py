"""The memorisation canary: can the model learn *which gene* asks for *which layout*?

Eight genes at the same expression level, each a blob at its own place in an egg-shaped tissue
(a 3 x 3 grid of places without the centre), growing and brightening over five days; one
slice per day, the middle day held out. Trained through the real path (``prepare_dataset`` ->
``videogene.training.loop.main`` -> ``load_pipeline``), then scored:

- ``top1``: genes whose generated mean video (over samples, training frames) correlates best
  with their own training video among all eight (chance 1 of 8);
- ``own_pearson``: per gene, Pearson of the generated mean video with its own training frames
  (tissue pixels of all training frames together);
- ``smooth_gain``: at the held-out middle day, Pearson of the generated frame with the mean of
  the generated neighbour frames minus the neighbours' Pearson with each other (> 0: the held-out
  day lands between its neighbours); ``level_between``: share of genes whose mean level at the
  held-out day lies between the neighbours' (the canary brightens steadily);
- ``infill_pearson`` (models with context channels): the held-out day generated from the
  observed days as context, against the true held-out frame; ``linear_pearson``: the mean of
  the two neighbours against the same truth.

``tests/test_canary.py`` asserts on these (600 steps of ``configs/tiny.yaml``, EMA off: about
1.5 minutes on one CPU thread); ``benchmarks/bench_canary.py`` prints them for any config
override. The history of the figures is in docs/training.md ("Results log: the model learns
genes").
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..utils import resource_path

CANARY_TIMEPOINTS = (10.0, 11.0, 12.0, 13.0, 14.0)
CANARY_HOLDOUT = 12.0
CANARY_RESOLUTION = 16


def canary_atlas(*, n_genes: int = 8, timepoints=CANARY_TIMEPOINTS, level: float = 4.0,
                 grid: int = 40, seed: int = 0):
    """AnnData with one slice per time point: ``obsm["spatial"]`` on a regular grid inside an
    egg-shaped outline (asymmetric, so alignment cannot mirror it), ``obs["timepoint"]``,
    ``obs["slice"]``; gene ``k`` is a Gaussian blob at place ``k`` of a 3 x 3 grid without the
    centre, peak ``level`` (all genes alike), widening by 20 % and brightening from 60 % to
    100 % of ``level`` over the days. No noise: the canary measures memorisation only."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    places = [(x, y) for y in (-0.5, 0.0, 0.5) for x in (-0.5, 0.0, 0.5) if (x, y) != (0.0, 0.0)]
    places = [places[i] for i in rng.permutation(len(places))][:n_genes]
    if len(places) < n_genes:
        raise ValueError(f"canary_atlas: at most {len(places)} genes")
    u = np.linspace(-1.15, 1.15, grid)
    gx, gy = np.meshgrid(u, u)
    # egg: an ellipse 1.4 wide whose right end is broader than its left
    ry = 0.75 * (1.0 + 0.25 * gx)
    inside = (gx / 1.1) ** 2 + (gy / ry) ** 2 <= 1.0
    x, y = gx[inside], gy[inside]
    t0, t1 = float(min(timepoints)), float(max(timepoints))
    blocks, obs = [], []
    for t in timepoints:
        frac = (float(t) - t0) / max(t1 - t0, 1e-9)
        width, peak = 0.22 * (1.0 + 0.2 * frac), level * (0.6 + 0.4 * frac)
        cols = [peak * np.exp(-((x - 0.9 * px) ** 2 + (y - 0.6 * py) ** 2) / (2 * width**2))
                for px, py in places]
        vals = np.stack(cols, axis=1)
        vals[vals < 0.05 * level] = 0.0  # sparse, like expression
        blocks.append(sp.csr_matrix(vals.astype(np.float32)))
        obs.append(pd.DataFrame({"timepoint": float(t), "slice": f"E{t:g}_s0",
                                 "x": x * 500.0, "y": y * 500.0}))
    obs_df = pd.concat(obs, ignore_index=True)
    adata = ad.AnnData(X=sp.vstack(blocks, format="csr"),
                       obs=obs_df[["timepoint", "slice"]].reset_index(drop=True),
                       var=pd.DataFrame(index=[f"gene{k}" for k in range(n_genes)]))
    adata.obs.index = [f"bin{i}" for i in range(adata.n_obs)]
    adata.obsm["spatial"] = obs_df[["x", "y"]].to_numpy(np.float32)
    return adata


def prepare_canary(out_dir: str | Path, **atlas_kwargs) -> Path:
    """Write the canary atlas and prepare it at 16 px with the middle day held out."""
    from ..data.prepare import prepare_dataset

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atlas = out / "canary.h5ad"
    canary_atlas(**atlas_kwargs).write_h5ad(atlas)
    data = out / "data"
    prepare_dataset([atlas], data, resolution=CANARY_RESOLUTION,
                    holdout_timepoints=[CANARY_HOLDOUT], progress=False)
    return data


CANARY_TRAIN = ["report_to=none", "train_batch_size=8", "logging_steps=50",
                "lr_warmup_steps=20", "use_ema=false", "dataloader_num_workers=0",
                "data.shuffle_buffer=8", "validation.num_inference_steps=2",
                "validation.num_genes=1", "validation.loss_batches=1", "checkpoints_total_limit=1"]


def train_canary(data_dir: str | Path, out_dir: str | Path, *, steps: int = 400,
                 overrides=(), config: str | Path | None = None) -> dict:
    """``training.loop.main`` on the canary dataset (tiny preset unless ``config``/``overrides`` say
    otherwise); returns the training summary plus ``seconds``."""

    from accelerate.state import AcceleratorState

    from .config import load_config

    cfg_path = config or resource_path("configs", "tiny.yaml")
    ov = [*CANARY_TRAIN, f"data.path={data_dir}", f"output_dir={out_dir}", f"max_steps={steps}",
          f"checkpointing_steps={steps}", f"validation_steps={steps}", *overrides]
    from .loop import main
    start = time.perf_counter()
    try:
        summary = main(load_config(cfg_path, ov))
    finally:
        AcceleratorState._reset_state(True)
    return {**summary, "seconds": time.perf_counter() - start}


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else 0.0


def score_canary(pipe, data_dir: str | Path, *, num_samples: int = 4,
                 num_inference_steps: int = 20, guidance_scale: float = 1.0,
                 seed: int = 0) -> dict:
    """Generate every canary gene at the dataset's time points and compute the figures of the
    module docstring. Returns a dict of floats / lists (JSON-able)."""
    import torch

    from ..data import load_metadata, read_gene_canvases

    meta = load_metadata(data_dir)
    times = [float(t) for t in meta["timepoints"]]
    hold = [i for i, t in enumerate(times) if abs(t - CANARY_HOLDOUT) < 1e-6]
    train_f = [i for i in range(len(times)) if i not in hold]
    genes = list(meta["genes"])
    truth = np.stack([c for _, c in read_gene_canvases(data_dir, genes)])  # (G, n_slices, H, W)
    slice_frame = [times.index(float(s["timepoint"])) for s in meta["slices"]]
    truth = truth[:, np.argsort(slice_frame)]  # one slice per day: (G, T, H, W)
    mask = pipe.masks_for(times)  # (T, H, W)
    gen = torch.Generator().manual_seed(seed)
    out = pipe(genes, times, num_samples=num_samples, num_inference_steps=num_inference_steps,
               guidance_scale=guidance_scale, generator=gen, progress=False, sampler="ddim")
    mean_video = out.trajectories.mean(axis=1)  # (G, T, H, W)
    sel = np.zeros_like(mask)
    sel[train_f] = mask[train_f]
    corr = np.array([[_pearson(mean_video[i][sel], truth[j][sel]) for j in range(len(genes))]
                     for i in range(len(genes))])  # (generated gene, training gene)
    own = np.diag(corr)
    res = {"top1": int((corr.argmax(axis=1) == np.arange(len(genes))).sum()),
           "n_genes": len(genes), "own_pearson": [round(float(v), 4) for v in own],
           "own_pearson_mean": float(own.mean()), "own_pearson_min": float(own.min())}
    if hold and 0 < hold[0] < len(times) - 1:
        h = hold[0]
        m = mask[h] & mask[h - 1] & mask[h + 1]
        gains, infill_truth, lin, between = [], [], [], []
        for i in range(len(genes)):
            prev, nxt, mid = mean_video[i, h - 1][m], mean_video[i, h + 1][m], mean_video[i, h][m]
            gains.append(_pearson(mid, (prev + nxt) / 2) - _pearson(prev, nxt))
            lo, hi = sorted((prev.mean(), nxt.mean()))
            between.append(lo <= mid.mean() <= hi)
            infill_truth.append(_pearson(mid, truth[i, h][m]))
            lin.append(_pearson((truth[i, h - 1][m] + truth[i, h + 1][m]) / 2, truth[i, h][m]))
        res.update(smooth_gain=float(np.mean(gains)), level_between=float(np.mean(between)),
                   heldout_gene_only_pearson=float(np.mean(infill_truth)),
                   linear_pearson=float(np.mean(lin)))
        if getattr(pipe.unet.config, "context_channels", False):
            res["infill_pearson"] = _score_infill(pipe, truth, mask, times, h, train_f, seed,
                                                  num_samples, num_inference_steps)
    return res


def _score_infill(pipe, truth, mask, times, h, train_f, seed, num_samples, steps) -> float:
    """Held-out day generated with the observed (training) days as clean context."""
    import torch

    from ..data.units import gene_scales, to_model_units

    scales = gene_scales(pipe.meta, list(range(len(truth))))
    ctx = to_model_units(truth, scales[:, None, None, None], pipe.model_units)  # (G, T, H, W)
    cmask = np.zeros((len(truth), len(times)), dtype=bool)
    cmask[:, train_f] = True
    gen = torch.Generator().manual_seed(seed + 1)
    out = pipe(list(range(len(truth))), times, num_samples=num_samples,
               num_inference_steps=steps, guidance_scale=1.0, generator=gen, progress=False,
               sampler="ddim", context_frames=torch.from_numpy(ctx[:, None]).float(),
               context_mask=torch.from_numpy(cmask))
    mid = out.trajectories.mean(axis=1)[:, h]
    m = mask[h]
    return float(np.mean([_pearson(mid[i][m], truth[i, h][m]) for i in range(len(truth))]))


def run_canary(work_dir: str | Path, *, steps: int = 400, overrides=(), num_samples: int = 4,
               num_inference_steps: int = 20, seed: int = 0) -> dict:
    """Prepare, train and score the canary in ``work_dir``; returns the figures plus timings."""
    from ..pipelines import load_pipeline

    work = Path(work_dir)
    t0 = time.perf_counter()
    data = prepare_canary(work)
    t1 = time.perf_counter()
    summary = train_canary(data, work / "run", steps=steps, overrides=[f"seed={seed}", *overrides])
    t2 = time.perf_counter()
    pipe = load_pipeline(work / "run")
    res = score_canary(pipe, data, num_samples=num_samples,
                       num_inference_steps=num_inference_steps, seed=seed)
    t3 = time.perf_counter()
    units = dict(pipe.model_units)
    return {**res, "model_units": units.get("mapping", "") + (" (old: no gene_scale)" if
                                                                units.get("legacy") else ""),
            "train_loss": summary.get("train/loss"), "steps": steps,
            "seconds_prepare": round(t1 - t0, 1), "seconds_train": round(t2 - t1, 1),
            "seconds_score": round(t3 - t2, 1)}
