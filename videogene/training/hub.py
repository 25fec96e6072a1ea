"""Model card rendering (``model_cards/template.md``) and uploading an export to the Hub."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, ModelCard, ModelCardData

from ..data.meta import DatasetMeta
from ..errors import InputError
from ..utils import get_logger
from .config import TrainConfig

logger = get_logger("training")
DEFAULT_TEMPLATE = Path(__file__).resolve().parents[1] / "resources" / "model_cards" / "template.md"


def render_model_card(cfg: TrainConfig, meta: Mapping[str, Any], *, step: int,
                      num_parameters: int | None = None, num_processes: int = 1,
                      metrics: Mapping[str, float] | None = None, repo_or_path: str | None = None,
                      template_path: str | Path | None = None) -> str:
    """Fill the model card template with the data, the training config and the metrics."""
    template = Path(template_path) if template_path else DEFAULT_TEMPLATE
    if not template.is_file():
        raise InputError(f"model card template {template}: file not found")
    genes = list(meta.get("genes", []))
    holdout = (list(cfg.data.holdout_timepoints) if cfg.data.holdout_timepoints is not None
               else list(meta.get("holdout", {}).get("timepoints", [])))
    synthetic = "synthetic" in meta
    sources = sorted({str(s.get("source", "")) for s in meta.get("slices", []) if s.get("source")})
    card_data = ModelCardData(
        license="apache-2.0", library_name="diffusers",
        tags=["videogene", "spatial-transcriptomics", "video-diffusion", "gene-expression",
              *(["synthetic"] if synthetic else [])],
    )
    d = cfg.diffusion
    card = ModelCard.from_template(
        card_data, template_path=str(template),
        model_name=(cfg.hub_model_id or Path(cfg.output_dir).name or "videogene model"),
        dataset=cfg.data.path, num_genes=len(genes),
        timepoints=", ".join(map(str, meta.get("timepoints", []))),
        num_slices=len(meta.get("slices", [])), resolution=meta.get("resolution", "?"),
        normalization=meta.get("normalization", "?"), value_max=DatasetMeta.of(meta).value_max,
        holdout_timepoints=", ".join(map(str, holdout)) or "none",
        data_source=("synthetic atlas (videogene synth)" if synthetic
                     else ", ".join(sources) or "user AnnData"),
        synthetic=synthetic,
        preset=cfg.model.preset, num_parameters=f"{num_parameters:,}" if num_parameters else "?",
        step=step, max_steps=cfg.max_steps, train_batch_size=cfg.train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, num_processes=num_processes,
        learning_rate=cfg.learning_rate, lr_scheduler=cfg.lr_scheduler,
        lr_warmup_steps=cfg.lr_warmup_steps, num_train_timesteps=d.num_train_timesteps,
        beta_schedule=d.beta_schedule, prediction_type=d.prediction_type,
        rescale_betas_zero_snr=d.rescale_betas_zero_snr, snr_gamma=d.snr_gamma,
        loss_weighting=d.loss_weighting, sigma_data=d.sigma_data, snr_shift=d.snr_shift,
        timestep_sampling=d.timestep_sampling, context_none_prob=d.context_none_prob,
        tissue_loss_weight=d.tissue_loss_weight,
        gene_sampling=cfg.data.gene_sampling + (
            f" (genes without spatial signal at {cfg.data.nonspatial_rate:g} visits per epoch)"
            if cfg.data.gene_sampling == "spatial" else ""),
        slice_draw=cfg.data.slice_draw,
        gene_dropout=d.gene_dropout, use_ema=cfg.use_ema, ema_decay=cfg.ema_decay,
        mixed_precision=cfg.mixed_precision,
        metrics={k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in (metrics or {}).items()},
        repo_or_path=repo_or_path or cfg.hub_model_id or f"{cfg.output_dir}/export-latest",
        example_gene=genes[0] if genes else "GENE",
    )
    return str(card)


def push_folder_to_hub(folder: str | Path, repo_id: str, *, private: bool = False,
                       commit_message: str = "Upload videogene export", token: str | None = None,
                       api: HfApi | None = None) -> str:
    """``create_repo`` (exist_ok) + ``upload_folder``; returns the commit URL (or the repo id)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"push to hub: folder {folder} not found")
    if not repo_id:
        raise InputError("push to hub: hub_model_id is empty")
    api = api or HfApi(token=token)
    api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=str(folder),
                             commit_message=commit_message)
    url = str(getattr(info, "commit_url", None) or info or repo_id)
    logger.info("pushed %s to the Hub: %s", folder, url)
    return url
