"""AdamW with warmup + cosine (or any diffusers schedule)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from diffusers.optimization import get_scheduler

from .config import TrainConfig


def _no_decay(p: torch.nn.Parameter) -> bool:
    """Norm scales, biases and other vectors or scalars: no weight decay."""
    return p.ndim <= 1


def build_optimizer(model: torch.nn.Module | Iterable[torch.nn.Parameter],
                    cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, in decay / no-decay groups.

    Weight decay ``adam_weight_decay`` applies to the weight matrices and kernels
    (``ndim >= 2``) only. Parameters with ``ndim <= 1`` (normalisation scales and shifts,
    biases, learned scalars) get none: decaying a norm's scale towards 0 or a bias towards 0
    is not a useful prior, and it fights the normalisation.

    Given the model, the gene table (``model.gene_embedding``) gets its own group with
    ``learning_rate * gene_embedding_lr_scale`` and no weight decay: each row is updated only
    when its gene is in the batch (once per epoch over the genes), so with many genes it
    moves far less than shared weights, while AdamW's decoupled decay would shrink every row
    at every step, seen or not, pulling rarely seen genes towards the null embedding.

    Groups, in order (empty ones left out): ``decay`` (``weight_decay=adam_weight_decay``),
    ``no_decay`` (0), ``gene_embedding`` (0, scaled LR); each group carries its ``name``. A
    plain iterable of parameters gets the ``decay`` / ``no_decay`` split only.
    """
    if isinstance(model, torch.nn.Module):
        table = getattr(model, "gene_embedding", None)
        table_ids = ({id(p) for p in table.parameters()}
                     if isinstance(table, torch.nn.Module) else set())
        params = [p for p in model.parameters() if p.requires_grad]
    else:
        table_ids = set()
        params = [p for p in model if p.requires_grad]
    rest = [p for p in params if id(p) not in table_ids]
    groups = [
        {"name": "decay", "params": [p for p in rest if not _no_decay(p)],
         "weight_decay": cfg.adam_weight_decay},
        {"name": "no_decay", "params": [p for p in rest if _no_decay(p)], "weight_decay": 0.0},
        {"name": "gene_embedding", "params": [p for p in params if id(p) in table_ids],
         "weight_decay": 0.0, "lr": cfg.learning_rate * cfg.gene_embedding_lr_scale},
    ]
    return torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=cfg.learning_rate,
        betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.adam_weight_decay,
        eps=cfg.adam_epsilon,
    )


def build_lr_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig):
    """Stepped once per optimizer step (not per process: it is not passed to accelerator.prepare)."""
    return get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.lr_warmup_steps,
                         num_training_steps=cfg.max_steps)
