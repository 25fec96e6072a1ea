"""AdamW with warmup + cosine (or any diffusers schedule)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from diffusers.optimization import get_scheduler

from .config import TrainConfig


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        [p for p in params if p.requires_grad], lr=cfg.learning_rate,
        betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.adam_weight_decay,
        eps=cfg.adam_epsilon,
    )


def build_lr_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig):
    """Stepped once per optimizer step (not per process: it is not passed to accelerator.prepare)."""
    return get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.lr_warmup_steps,
                         num_training_steps=cfg.max_steps)
