"""``VideoGenePipeline``: sample whole time trajectories of gene expression from a VideoGeneUNet.

A trajectory is a one-channel video whose frames are developmental time points; the UNet is
conditioned on a gene id and on each frame's time, so any float time points can be asked for
(9.5 ... 16.5 every 0.5 day works for a model trained on whole days).

The pipeline holds the UNet and the *training* noise schedule (``self.scheduler``, what
``save_pretrained`` writes); sampling builds the chosen sampler from that schedule's config:
``"dpmsolver++"`` (gene-only default), ``"ddim"``, ``"ddpm"`` or ``"sde-dpmsolver++"``
(in-filling default; the registry
:data:`videogene.pipelines.samplers.SAMPLERS`), picked with :meth:`set_sampler` or the
``sampler=`` argument of ``__call__``. The dataset metadata (time points, ``value_max``, slices)
and tissue masks travel with the pipeline as ``videogene_meta.json`` and ``masks.npy``.
"""

from __future__ import annotations

import difflib
import importlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DiffusionPipeline, DPMSolverMultistepScheduler
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from ..data.meta import MASKS_NAME, META_NAME, DatasetMeta, is_hub_id
from ..data.stream import load_masks, load_metadata
from ..data.units import clip_bound, gene_scales, model_units, to_expression, to_model_units
from ..errors import InputError
from ..utils import get_logger
from .samplers import (  # noqa: F401 (re-exported)
    DEFAULT_GUIDANCE,
    DEFAULT_INFILL_SAMPLER,
    DEFAULT_SAMPLER,
    SAMPLERS,
    check_sampler,
    default_guidance,
    default_sampler,
    exact_outside,
    exact_outside_args,
    is_infill,
    predicted_x0,
)

logger = get_logger(__name__)



@dataclass
class VideoGenePipelineOutput(BaseOutput):
    """What :class:`VideoGenePipeline` returns.

    ``trajectories``: ``np.ndarray`` / ``torch.Tensor`` of shape ``(num_genes, num_samples, T, H, W)``
    in expression units ``[0, value_max]`` (0 outside the tissue), or an ``AnnData`` for
    ``output_type="anndata"``. ``genes``: the gene names in output order. ``timepoints``: the
    frame times. ``masks``: the bool ``(T, H, W)`` tissue masks used.
    """

    trajectories: Any
    genes: list[str]
    timepoints: list[float]
    masks: np.ndarray


def make_sampler(scheduler_config, name: str, *, clip_range: float = 1.0):
    """Build the sampler ``name`` (one of :data:`SAMPLERS`: ``dpmsolver++``, ``ddim``, ``ddpm``
    or ``sde-dpmsolver++``, the stochastic DPM-Solver++ that adds fresh noise at every step as
    the ancestral sampler does), a diffusers scheduler, from the config of a training noise
    schedule.

    ``clip_range``: predicted clean samples are clipped to ``[-clip_range, clip_range]`` (the
    data range in model units, ``videogene.data.units.clip_bound``; 1 for ``[-1, 1]`` data)
    when the schedule clips (``clip_sample``).
    """
    clip = bool(dict(scheduler_config).get("clip_sample", True))
    if name in ("dpmsolver++", "sde-dpmsolver++"):
        # "trailing" spacing starts sampling at the last training step (pure noise) for few steps;
        # thresholding at 1.0 clips predicted x0 to the data range [-1, 1], as clip_sample does
        # for DDPM / DDIM (guided predictions overshoot it early in sampling). Dynamic
        # thresholding divides by its bound, which is a plain clip only when the bound is 1:
        # other data ranges sample without it
        return DPMSolverMultistepScheduler.from_config(
            scheduler_config, algorithm_type=name, solver_order=2, timestep_spacing="trailing",
            thresholding=clip and clip_range == 1.0, sample_max_value=1.0,
        )
    if name == "ddim":
        return DDIMScheduler.from_config(scheduler_config, timestep_spacing="trailing",
                                         clip_sample_range=float(clip_range))
    if name == "ddpm":
        return DDPMScheduler.from_config(scheduler_config, clip_sample_range=float(clip_range))
    check_sampler(name)
    raise AssertionError(f"sampler {name!r} is in SAMPLERS but make_sampler cannot build it")


def trajectories_to_anndata(trajectories: np.ndarray, genes: Sequence[str], timepoints: Sequence[float],
                            masks: np.ndarray, *, uns: dict | None = None):
    """Lay out ``(G, S, T, H, W)`` trajectories as an AnnData scanpy can open.

    One row per tissue pixel of each frame of each sample, genes as columns (CSR float32).
    Keys written: ``obs["timepoint"]`` (float day), ``obs["frame"]`` (int), ``obs["sample"]``
    (int), ``obs["slice"]`` (str ``"generated_s<sample>_t<time>"``, one per sample and frame, as
    in the atlas layout), ``obs["row"]``, ``obs["col"]`` (pixel), ``obsm["spatial"]`` (``(n, 2)``
    float, ``[col, row]`` in pixels), ``uns["videogene"]`` (``uns``).
    """
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    traj = np.asarray(trajectories, dtype=np.float32)
    g, s, t, h, w = traj.shape
    masks = np.asarray(masks, dtype=bool)
    blocks, obs_parts, coords = [], [], []
    for si in range(s):
        for ti in range(t):
            rows, cols = np.nonzero(masks[ti])
            vals = traj[:, si, ti, rows, cols].T  # (n_pixels, G)
            blocks.append(sp.csr_matrix(vals))
            n = rows.size
            obs_parts.append(pd.DataFrame({
                "timepoint": np.full(n, float(timepoints[ti])),
                "frame": np.full(n, ti, dtype=np.int32),
                "sample": np.full(n, si, dtype=np.int32),
                "slice": np.full(n, f"generated_s{si}_t{float(timepoints[ti]):g}", dtype=object),
                "row": rows.astype(np.int32),
                "col": cols.astype(np.int32),
            }))
            coords.append(np.stack([cols, rows], axis=1).astype(np.float32))
    X = sp.vstack(blocks, format="csr").astype(np.float32) if blocks else sp.csr_matrix((0, g))
    obs = pd.concat(obs_parts, ignore_index=True)
    obs["slice"] = obs["slice"].astype("category")
    obs.index = [f"s{a}_t{b}_p{c}_{d}" for a, b, c, d in
                 zip(obs["sample"], obs["frame"], obs["row"], obs["col"])]
    adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=[str(x) for x in genes]))
    adata.obsm["spatial"] = np.concatenate(coords, axis=0) if coords else np.zeros((0, 2), np.float32)
    adata.uns["videogene"] = dict(uns or {})
    return adata


def _read_meta(folder: Path) -> tuple[dict | None, np.ndarray | None]:
    """The dataset metadata and masks saved beside the pipeline, each None when absent."""
    meta = load_metadata(folder) if (folder / META_NAME).is_file() else None
    masks = load_masks(folder) if (folder / MASKS_NAME).is_file() else None
    return meta, masks


class VideoGenePipeline(DiffusionPipeline):
    """Generate gene-expression trajectories (videos over developmental time) for named genes.

    Args:
        unet: a ``videogene.models.VideoGeneUNet`` (its ``config.gene_names`` is the vocabulary).
        scheduler: the training noise schedule (any diffusers scheduler; samplers derive from it).

    Attributes ``meta`` (dataset metadata dict or None) and ``masks`` (bool ``(n_slices, H, W)``
    or None) are saved and loaded beside the components. ``sampler`` is the sampling algorithm
    (None: by pass, :func:`~videogene.pipelines.samplers.default_sampler`).
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet, scheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        self.meta: dict | None = None
        self.masks: np.ndarray | None = None
        self.sampler: str | None = None
        self.source_dir: Path | None = None

    # ------------------------------------------------------------------ vocabulary and metadata
    @property
    def gene_names(self) -> list[str]:
        names = getattr(self.unet.config, "gene_names", None)
        if names:
            return [str(n) for n in names]
        if self.meta and self.meta.get("genes"):
            return [str(n) for n in self.meta["genes"]]
        return [str(i) for i in range(int(self.unet.config.num_genes))]

    @property
    def timepoints(self) -> list[float]:
        """The training time points (from the metadata; empty without it)."""
        return [float(t) for t in (self.meta or {}).get("timepoints", [])]

    @property
    def value_max(self) -> float:
        return DatasetMeta.of(self.meta or {}).value_max

    @property
    def model_units(self) -> dict:
        """The dataset's expression -> model-units mapping (``videogene.data.units``)."""
        return model_units(self.meta, dataset=self.source_dir or "pipeline metadata")

    def gene_scale(self, genes: Sequence[str]) -> np.ndarray:
        """Per-gene scales (expression units) of ``genes`` from the metadata, float32 ``(g,)``;
        ``value_max`` for every gene with metadata from before per-gene scales (or none)."""
        return gene_scales(self.meta, genes, dataset=self.source_dir or "pipeline metadata")

    def set_metadata(self, meta: dict | None, masks: np.ndarray | None) -> None:
        """Attach dataset metadata and bool ``(n_slices, H, W)`` tissue masks."""
        if masks is not None:
            masks = np.asarray(masks).astype(bool)
            if masks.ndim != 3:
                raise InputError(f"masks: expected (n_slices, H, W), got shape {masks.shape}")
            if meta is not None and len(meta.get("slices", [])) not in (0, masks.shape[0]):
                raise InputError(f"masks: {masks.shape[0]} masks but {len(meta['slices'])} slices in "
                                 "the metadata")
        self.meta, self.masks = meta, masks

    def set_sampler(self, name: str | None) -> VideoGenePipeline:
        """Choose the sampling algorithm: one of :data:`SAMPLERS` (``"dpmsolver++"``,
        ``"ddim"``, ``"ddpm"`` or ``"sde-dpmsolver++"``), or None for the default by pass:
        :data:`DEFAULT_SAMPLER` from the gene alone, :data:`DEFAULT_INFILL_SAMPLER` when
        in-filling (:func:`~videogene.pipelines.samplers.default_sampler`)."""
        self.sampler = None if name is None else check_sampler(name)
        return self

    def gene_ids(self, genes: Sequence[str | int] | str | int) -> tuple[list[int], list[str]]:
        """Map gene names (or integer ids) to ids; unknown names raise InputError with close matches."""
        if isinstance(genes, (str, int, np.integer)):
            genes = [genes]
        names = self.gene_names
        index = {n: i for i, n in enumerate(names)}
        ids: list[int] = []
        for g in genes:
            if isinstance(g, (int, np.integer)) and not isinstance(g, bool):
                if not 0 <= int(g) < len(names):
                    raise InputError(f"gene id {int(g)}: out of range ({len(names)} genes)")
                ids.append(int(g))
            elif str(g) in index:
                ids.append(index[str(g)])
            else:
                close = difflib.get_close_matches(str(g), names, n=5, cutoff=0.6)
                lower = [n for n in names if n.lower() == str(g).lower()]
                close = list(dict.fromkeys(lower + close))
                hint = f"; close matches: {', '.join(close)}" if close else "; no close matches"
                raise InputError(f"gene {g!r}: not among the model's {len(names)} genes{hint}")
        if not ids:
            raise InputError("genes: none given")
        return ids, [names[i] for i in ids]

    def masks_for(self, timepoints: Sequence[float], masks=None) -> np.ndarray:
        """Bool ``(T, H, W)`` tissue masks for the requested time points.

        ``masks`` given: ``(H, W)`` (same for every frame) or ``(T, H, W)``. Otherwise from the
        metadata: for each time the *first* slice (metadata order) of the nearest observed time
        point (a time with data is its own nearest; ties go to the earlier time). The first
        slice is a real tissue shape the model saw in training, and the same canvas as
        ``expected_expression(..., slice_index=0)``; a union of slices would be a shape no
        frame ever had. Without metadata or masks every pixel is tissue.
        """
        t_count = len(timepoints)
        if masks is not None:
            m = masks.detach().cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
            if m.ndim == 2:
                m = np.broadcast_to(m, (t_count, *m.shape))
            if m.ndim != 3 or m.shape[0] != t_count:
                raise InputError(f"masks: expected (H, W) or ({t_count}, H, W) for {t_count} time "
                                 f"points, got shape {tuple(np.shape(masks))}")
            return m.astype(bool)
        if self.masks is None or not self.meta or not self.meta.get("slices"):
            size = int(self.unet.config.sample_size)
            logger.warning("no tissue masks in the pipeline: treating the whole %dx%d canvas as tissue",
                           size, size)
            return np.ones((t_count, size, size), dtype=bool)
        slice_times = np.array([float(s["timepoint"]) for s in self.meta["slices"]])
        observed = np.unique(slice_times)
        out = []
        for t in timepoints:
            nearest = observed[int(np.argmin(np.abs(observed - float(t))))]
            first = int(np.flatnonzero(slice_times == nearest)[0])
            out.append(self.masks[first])
        return np.stack(out).astype(bool)

    def _resolve_times(self, timepoints) -> list[float]:
        """The requested days as floats (default: the training time points); one-line errors."""
        if timepoints is None:
            timepoints = self.timepoints
            if not timepoints:
                raise InputError("timepoints: none given and the pipeline has no metadata time points")
        try:
            times = [float(t) for t in np.atleast_1d(np.asarray(timepoints, dtype=np.float64))]
        except (TypeError, ValueError):
            raise InputError(f"timepoints: expected numbers, got {timepoints!r}") from None
        if not times or not all(np.isfinite(times)):
            raise InputError(f"timepoints: not all finite: {times}")
        return times

    def _sample_with_context(self, genes, timepoints, *, context, dataset, masks, output_type: str,
                             return_dict: bool, **sample_kwargs):
        """In-filling: sample the context video, return the requested frames (see ``__call__``)."""
        from .context import array_context, check_context_model, observed_context

        check_context_model(self.unet, self.source_dir or "in memory")
        ids, names = self.gene_ids(genes)
        times = self._resolve_times(timepoints)
        if isinstance(context, str):
            if context != "observed":
                raise InputError(f"context {context!r}: expected 'none', 'observed' or an array "
                                 "(genes, time points, H, W)")
            video = observed_context(self, names, times, dataset,
                                     masks=None if masks is None else self.masks_for(times, masks))
        else:
            video = array_context(context, names, times, self.masks_for(times, masks))
        scale = self.gene_scale(names)[:, None, None, None]  # (g, 1, 1, 1)
        ctx = np.where(video.given[:, :, None, None],
                       to_model_units(video.frames, scale, self.model_units), 0.0)
        out = self(ids, video.times, masks=video.masks, output_type="pt", return_dict=True,
                   context_frames=torch.from_numpy(ctx.astype(np.float32))[:, None],
                   context_mask=torch.from_numpy(video.given), **sample_kwargs)
        req = video.requested
        x = out.trajectories[:, :, req]  # (g, s, T_req, h, w)
        given = torch.from_numpy(video.given[:, req]).to(x.device)[:, None, :, None, None]
        x = torch.where(given, torch.from_numpy(video.frames[:, req]).to(x)[:, None], x)
        n_given = int(video.given.sum())
        return self._output(x, names, [video.times[i] for i in req], video.masks[req],
                            output_type=output_type, return_dict=return_dict, uns={
                                "num_inference_steps": sample_kwargs["num_inference_steps"],
                                "guidance_scale": float(sample_kwargs["guidance_scale"]),
                                "sampler": sample_kwargs["sampler"],
                                "context": context if isinstance(context, str) else "array",
                                "context_frames": n_given})

    # ------------------------------------------------------------------ save / load
    def save_pretrained(self, save_directory, *args, **kwargs):
        """diffusers ``save_pretrained`` plus ``videogene_meta.json`` and ``masks.npy``."""
        super().save_pretrained(save_directory, *args, **kwargs)
        folder = Path(save_directory)
        if self.meta is not None:
            (folder / META_NAME).write_text(json.dumps(self.meta, indent=1))
        if self.masks is not None:
            np.save(folder / MASKS_NAME, np.asarray(self.masks, dtype=bool))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Load from a local folder or a Hub id; reads ``videogene_meta.json`` and ``masks.npy`` too."""
        folder = Path(str(pretrained_model_name_or_path))
        if not folder.is_dir():
            if not is_hub_id(str(pretrained_model_name_or_path)):
                raise InputError(f"model {pretrained_model_name_or_path}: no such folder")
            from huggingface_hub import snapshot_download

            hub_keys = ("revision", "cache_dir", "token", "local_files_only")
            folder = Path(snapshot_download(str(pretrained_model_name_or_path),
                                            **{k: kwargs[k] for k in hub_keys if k in kwargs}))
        index_file = folder / "model_index.json"
        if not index_file.is_file():
            raise InputError(f"model {pretrained_model_name_or_path}: no model_index.json in {folder}")
        # diffusers resolves custom components only from modules already imported; import our own
        # (and only our own) modules named in model_index.json.
        for value in json.loads(index_file.read_text()).values():
            if isinstance(value, list) and value and str(value[0] or "").split(".")[0] == "videogene":
                importlib.import_module(value[0])
        pipe = super().from_pretrained(folder, **kwargs)
        pipe.set_metadata(*_read_meta(folder))
        pipe.source_dir = folder
        return pipe

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def __call__(
        self,
        genes: Sequence[str | int] | str | int,
        timepoints: Sequence[float] | None = None,
        *,
        num_samples: int = 1,
        num_inference_steps: int = 25,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
        output_type: str = "np",
        masks=None,
        batch_size: int = 8,
        progress: bool = True,
        sampler: str | None = None,
        return_dict: bool = True,
        context: str | np.ndarray | None = None,
        dataset=None,
        context_frames: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ):
        """Sample ``num_samples`` trajectories per gene at ``timepoints`` (default: training times).

        Classifier-free guidance with the null gene: ``eps = eps_u + s * (eps_c - eps_u)``;
        ``guidance_scale <= 1`` runs the conditional pass only; None = ``DEFAULT_GUIDANCE`` (2)
        from the gene alone, ``DEFAULT_INFILL_GUIDANCE`` (1) with context
        (:func:`~videogene.pipelines.samplers.default_guidance`). ``sampler`` None: the one
        :meth:`set_sampler` chose, else ``DEFAULT_SAMPLER`` (``"dpmsolver++"``) from the gene
        alone and ``DEFAULT_INFILL_SAMPLER`` (``"sde-dpmsolver++"``) with context
        (:func:`~videogene.pipelines.samplers.default_sampler`). Trajectories are processed
        ``batch_size`` at a time (gene-major, sample-minor); all noise comes from ``generator``
        in that order, so a seeded generator and the same ``batch_size`` reproduce the output
        (use a CPU generator to get the same noise on every device). Outputs are in expression units:
        each gene's samples are mapped back with its scale,
        ``videogene.data.units.to_expression(x, gene_scale[gene], meta)`` (``(x + 1) / 2 *
        value_max`` for metadata without per-gene scales), clipped to ``[0, value_max]`` and 0
        outside the tissue (see :meth:`masks_for`); the mask is also the model's ``tissue_mask``
        input.

        In-filling (models with ``context_channels``, :mod:`videogene.pipelines.context`):
        ``context="observed"`` fills the requested time points from the gene's observed
        frames in ``dataset`` (the prepared dataset the model was trained on; default the
        training config's ``data.path``), held-out frames excluded; ``context`` as an array
        ``(genes, T, H, W)`` in expression units aligned with ``timepoints`` (NaN frames: not
        given) uses those frames. ``"none"`` (or None) generates from the gene alone. Given
        frames come back as they were given (for a model with ``context_source=
        "timepoint_mean"`` the observed days are day images, and arrays should be too). Low
        level: ``context_frames`` ``(genes, c, T, H,
        W)`` clean frames in *model units* and ``context_mask`` ``(genes, T)`` bool are given
        to the model at every step (both guidance branches).

        Returns :class:`VideoGenePipelineOutput` (or a tuple ``(trajectories,)``).
        """
        if output_type not in ("np", "pt", "anndata"):
            raise InputError(f"output_type {output_type!r}: expected 'np', 'pt' or 'anndata'")
        if num_samples < 1 or num_inference_steps < 1 or batch_size < 1:
            raise InputError("num_samples, num_inference_steps and batch_size must be >= 1")
        pass_context = context if context_frames is None else "frames"
        if guidance_scale is None:
            guidance_scale = default_guidance(pass_context)
        sampler = check_sampler(sampler or self.sampler or default_sampler(pass_context))
        if is_infill(context):
            if context_frames is not None:
                raise InputError("context and context_frames: give one of them")
            return self._sample_with_context(
                genes, timepoints, context=context, dataset=dataset, masks=masks,
                output_type=output_type, return_dict=return_dict, num_samples=num_samples,
                num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                generator=generator, batch_size=batch_size, progress=progress, sampler=sampler)
        ids, names = self.gene_ids(genes)
        times = self._resolve_times(timepoints)
        mask_np = self.masks_for(times, masks)  # (T, H, W)
        units = self.model_units
        scales = self.gene_scale(names)  # (genes,) expression units
        sched = make_sampler(self.scheduler.config, sampler,
                             clip_range=clip_bound(units))

        device = self._execution_device
        dtype = self.unet.dtype
        t_count, h, w = mask_np.shape
        channels = int(self.unet.config.in_channels)
        do_cfg = guidance_scale > 1.0
        null_id = int(self.unet.null_gene_id)
        value_max = self.value_max
        outside = exact_outside_args(self.unet.config, units)

        mask = torch.from_numpy(mask_np).to(device=device, dtype=dtype)  # (f, h, w)
        frame_times = torch.tensor(times, device=device, dtype=dtype)  # (f,)
        jobs = [gid for gid in ids for _ in range(num_samples)]
        batches = [jobs[i:i + batch_size] for i in range(0, len(jobs), batch_size)]
        if (context_frames is None) != (context_mask is None):
            raise InputError("context_frames and context_mask: give both or neither")
        if context_frames is not None:
            want = (len(ids), channels, t_count, h, w)
            if tuple(context_frames.shape) != want or tuple(context_mask.shape) != want[:1] + want[2:3]:
                raise InputError(f"context_frames / context_mask: expected shapes {want} and "
                                 f"{want[:1] + want[2:3]}, got {tuple(context_frames.shape)} and "
                                 f"{tuple(context_mask.shape)}")
            # one row per job (gene-major, sample-minor), like ``jobs``
            ctx_all = context_frames.to(device=device, dtype=dtype).repeat_interleave(num_samples, 0)
            cmask_all = context_mask.to(device=device).bool().repeat_interleave(num_samples, 0)
        start = 0
        outs = []
        bar = self.progress_bar(total=len(batches) * num_inference_steps) if progress else None
        for batch in batches:
            b = len(batch)
            cond = torch.tensor(batch, device=device, dtype=torch.long)
            gene_in = torch.cat([cond, torch.full_like(cond, null_id)]) if do_cfg else cond
            n_in = gene_in.shape[0]
            tissue = mask[None, None].expand(n_in, 1, t_count, h, w)  # (b, 1, f, h, w)
            times_in = frame_times[None].expand(n_in, t_count)  # (b, f)
            present = torch.ones(n_in, t_count, dtype=torch.bool, device=device)
            extra = {}
            if context_frames is not None:
                ctx, cmask = ctx_all[start:start + b], cmask_all[start:start + b]
                extra = {"context": torch.cat([ctx, ctx]) if do_cfg else ctx,
                         "context_mask": torch.cat([cmask, cmask]) if do_cfg else cmask}

            sched.set_timesteps(num_inference_steps, device=device)
            x = randn_tensor((b, channels, t_count, h, w), generator=generator, device=device,
                             dtype=dtype) * sched.init_noise_sigma
            # self-conditioning: the previous step's clean estimate (of the guided output)
            x0_prev = torch.zeros_like(x) if self.unet.config.self_condition else None
            for t in sched.timesteps:
                x_in = torch.cat([x, x]) if do_cfg else x
                x_in = sched.scale_model_input(x_in, t)
                if x0_prev is not None:
                    extra["self_cond"] = torch.cat([x0_prev, x0_prev]) if do_cfg else x0_prev
                eps = self.unet(x_in, t.expand(n_in) if t.ndim == 0 else t, gene_in, times_in,
                                frame_mask=present, tissue_mask=tissue, return_dict=False,
                                **extra)[0]
                if do_cfg:
                    eps_c, eps_u = eps.chunk(2)
                    eps = eps_u + guidance_scale * (eps_c - eps_u)
                if outside is not None:
                    eps = exact_outside(sched, sched.scale_model_input(x, t), eps, t, mask, **outside)
                if x0_prev is not None:
                    x0_prev = predicted_x0(sched, x, eps, t)
                x = sched.step(eps, t, x, generator=generator, return_dict=False)[0]
                if bar is not None:
                    bar.update(1)
            if context_frames is not None:  # observed frames are the observation
                x = torch.where(cmask[:, None, :, None, None], ctx, x)
            start += b
            outs.append(x[:, 0].float())  # (b, f, h, w)
        if bar is not None:
            bar.close()

        x = torch.cat(outs).reshape(len(ids), num_samples, t_count, h, w)
        scale = torch.from_numpy(scales).to(x)[:, None, None, None, None]  # (g, 1, 1, 1, 1)
        x = to_expression(x, scale, units).clamp(0.0, value_max) * mask.float()
        self.maybe_free_model_hooks()
        return self._output(x, names, times, mask_np, output_type=output_type,
                            return_dict=return_dict, uns={
                                "num_inference_steps": num_inference_steps,
                                "guidance_scale": float(guidance_scale),
                                "sampler": sampler,
                                "context": "frames" if context_frames is not None else "none"})

    def _output(self, x: torch.Tensor, names: list[str], times: list[float], mask_np: np.ndarray,
                *, output_type: str, return_dict: bool, uns: dict):
        """``x`` (genes, samples, T, H, W) in expression units -> the requested output type."""
        if output_type == "pt":
            result = x
        else:
            result = x.cpu().numpy().astype(np.float32)
            if output_type == "anndata":
                result = trajectories_to_anndata(result, names, times, mask_np, uns={
                    "value_max": self.value_max,
                    "gene_scale": [float(v) for v in self.gene_scale(names)],
                    "model_units": self.model_units, **uns, "genes": names, "timepoints": times})
        if not return_dict:
            return (result,)
        return VideoGenePipelineOutput(trajectories=result, genes=names, timepoints=times, masks=mask_np)
