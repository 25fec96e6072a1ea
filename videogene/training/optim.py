"""AdamW with warmup + cosine (or any diffusers schedule)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from diffusers.optimization import get_scheduler

from .config import TrainConfig


def build_optimizer(model: torch.nn.Module | Iterable[torch.nn.Parameter],
                    cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters.

    Given the model, the gene table gets its own group with ``learning_rate *
    gene_embedding_lr_scale``: each row is updated only when its gene is in the batch (once
    per epoch over the genes), so with many genes it moves far less than shared weights.
    """
    if isinstance(model, torch.nn.Module):
        table = getattr(model, "gene_embedding", None)
        table_ids = {id(p) for p in table.parameters()} if table is not None else set()
        params = [p for p in model.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if id(p) not in table_ids]}]
        if table_ids:
            groups.append({"params": [p for p in params if id(p) in table_ids],
                           "lr": cfg.learning_rate * cfg.gene_embedding_lr_scale})
    else:
        groups = [{"params": [p for p in model if p.requires_grad]}]
    return torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=cfg.learning_rate,
        betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.adam_weight_decay,
        eps=cfg.adam_epsilon,
    )


def build_lr_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig):
    """Stepped once per optimizer step (not per process: it is not passed to accelerator.prepare)."""
    return get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.lr_warmup_steps,
                         num_training_steps=cfg.max_steps)
