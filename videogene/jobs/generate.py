"""``generate_trajectories``: sample trajectories for genes, save them and draw them.

What ``videogene generate`` and ``tools/generate_trajectory.py`` run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from ..errors import InputError
from ..pipelines.samplers import (
    check_sampler,
    check_sampling_args,
    default_guidance,
    default_sampler,
    resolve_sampler,
    warn_outside_trained_range,
)
from ..utils import check_output_dir, get_logger

logger = get_logger(__name__)


def generate_trajectories(
    model,
    genes: Sequence[str | int] | str,
    timepoints: Sequence[float] | None,
    out_dir,
    *,
    num_samples: int = 4,
    num_inference_steps: int = 25,
    guidance_scale: float | None = None,
    sampler: str | None = None,
    batch_size: int = 8,
    seed: int = 0,
    use_ema: bool = True,
    device=None,
    progress: bool = True,
    context: str = "none",
    dataset=None,
    scheduler: str | None = None,
) -> dict:
    """Generate ``num_samples`` trajectories per gene and write them to ``out_dir``.

    ``model``: an export folder, a training output_dir (newest export), a Hub id, or a loaded
    :class:`~videogene.pipelines.VideoGenePipeline`
    (:func:`~videogene.pipelines.resolve_pipeline`; ``device`` also moves a pipeline passed
    in). ``timepoints``: any days (None = the training time points).
    ``sampler``: one of :data:`videogene.pipelines.samplers.SAMPLERS`; None: ``"dpmsolver++"``
    from the gene alone, ``"sde-dpmsolver++"`` when in-filling
    (:func:`~videogene.pipelines.samplers.default_sampler`); ``scheduler`` is its deprecated
    former name.
    Deterministic for a given ``seed`` (noise is drawn on the CPU, so also across devices
    up to floating-point differences). ``context="observed"`` fills the requested days from
    the gene's observed frames in ``dataset`` (in-filling; see
    :mod:`videogene.pipelines.context`), ``"none"`` generates from the gene alone.
    ``guidance_scale`` None: 2 from the gene alone, 1 when in-filling
    (:func:`~videogene.pipelines.samplers.default_guidance`).

    Writes ``trajectories.npz`` (``trajectories`` (G, S, T, H, W) float32 in expression units,
    ``mean`` (G, T, H, W), ``genes``, ``timepoints``, ``masks`` (T, H, W), ``value_max``),
    ``trajectories.h5ad`` (one row per tissue pixel, frame and sample; see
    :func:`videogene.pipelines.trajectories_to_anndata`), ``trajectories.png`` (grid; one
    gene: mean + sample rows) and
    ``trajectory_<gene>.gif`` per gene. Returns a JSON-able summary.
    """
    import torch

    from ..pipelines.loading import resolve_pipeline
    from ..pipelines.pipeline_videogene import trajectories_to_anndata
    from ..pl.trajectories import plot_trajectory_grid, safe_filename, save_trajectory_gif

    sampler = resolve_sampler(sampler, scheduler, where="generate_trajectories")
    if isinstance(genes, (str, int)):
        genes = [genes]
    if context not in ("none", "observed"):
        raise InputError(f"--context {context!r}: expected none or observed")
    sampler = check_sampler(sampler or default_sampler(context))
    out_dir = check_output_dir(out_dir)
    if guidance_scale is None:
        guidance_scale = default_guidance(context)
    check_sampling_args(num_samples=num_samples, num_inference_steps=num_inference_steps,
                        guidance_scale=guidance_scale, batch_size=batch_size)
    pipe, source = resolve_pipeline(model, use_ema=use_ema, device=device)
    if device is not None:
        pipe.to(device)  # also a pipeline passed in runs where asked
    if timepoints is None:
        timepoints = pipe.timepoints
        if not timepoints:
            raise InputError(f"model {source}: no training time points recorded; pass timepoints")
    timepoints = [float(t) for t in timepoints]
    pipe.gene_ids(genes)  # unknown genes fail here, before any output is written
    warn_outside_trained_range(timepoints, pipe.timepoints, source=source)

    generator = torch.Generator("cpu").manual_seed(int(seed))
    start = time.perf_counter()
    out = pipe(genes, timepoints, num_samples=num_samples, num_inference_steps=num_inference_steps,
               guidance_scale=guidance_scale, generator=generator, output_type="np",
               batch_size=batch_size, progress=progress, context=context, dataset=dataset,
               sampler=sampler)
    seconds = time.perf_counter() - start
    traj, names, masks = out.trajectories, out.genes, out.masks  # (G, S, T, H, W)
    out_dir.mkdir(parents=True, exist_ok=True)
    mean = traj.mean(axis=1)

    files = {}
    files["npz"] = out_dir / "trajectories.npz"
    np.savez_compressed(files["npz"], trajectories=traj, mean=mean, genes=np.array(names),
                        timepoints=np.array(timepoints, dtype=np.float64), masks=masks,
                        value_max=np.float32(pipe.value_max))
    run_info = {"model": source, "sampler": sampler, "num_inference_steps": num_inference_steps,
                "guidance_scale": float(guidance_scale), "seed": int(seed), "use_ema": bool(use_ema),
                "context": context,
                "value_max": pipe.value_max, "genes": names, "timepoints": timepoints}
    files["h5ad"] = out_dir / "trajectories.h5ad"
    trajectories_to_anndata(traj, names, timepoints, masks, uns=run_info).write_h5ad(files["h5ad"])
    files["png"] = out_dir / "trajectories.png"
    title = (f"{len(names)} gene{'s' if len(names) > 1 else ''}, {num_samples} samples, "
             f"{sampler} {num_inference_steps} steps, guidance {guidance_scale:g}")
    plot_trajectory_grid(traj, names, timepoints, files["png"], masks=masks, title=title)
    gifs = []
    for gi, name in enumerate(names):
        gifs.append(save_trajectory_gif(traj[gi], out_dir / f"trajectory_{safe_filename(name)}.gif",
                                        timepoints, masks=masks, gene=name))

    tissue = masks.sum(axis=(1, 2)).clip(min=1)  # (T,)
    per_time = (mean.sum(axis=(2, 3)) / tissue).round(4)  # (G, T) mean over tissue pixels
    summary = {
        **run_info,
        "out": str(out_dir),
        "shape": list(traj.shape),
        "num_samples": num_samples,
        "seconds": round(seconds, 3),
        "trajectories_per_second": round(traj.shape[0] * traj.shape[1] / max(seconds, 1e-9), 3),
        "mean_expression": {n: per_time[i].tolist() for i, n in enumerate(names)},
        "files": {**{k: str(v) for k, v in files.items()}, "gif": [str(p) for p in gifs]},
    }
    logger.info("generated %s trajectories in %.1f s -> %s", summary["shape"], seconds, out_dir)
    return summary
