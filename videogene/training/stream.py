"""The training data stream seen by one rank: dataset resolution, per-rank DataLoader, exact skipping.

Each rank builds its own ``DataLoader`` over its own shard of :class:`videogene.data.GeneVideoDataset`
(``rank``/``world_size`` from the Accelerator). The loader is *not* passed to
``accelerator.prepare``: Accelerate would otherwise wrap the IterableDataset in a
``DataLoaderDispatcher`` (``dispatch_batches=True`` is its default for IterableDatasets) that reads
on rank 0 and splits each batch across ranks, on top of the dataset's own sharding. Batches are
moved to the device by hand; gradient accumulation then counts micro-steps only.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..data.meta import resolve_dataset
from ..errors import InputError
from ..utils import get_logger
from .config import TrainConfig

logger = get_logger("training")


def resolve_dataset_dir(path: str) -> Path:
    """``config data.path``: a prepared dataset folder, or a Hub dataset id (downloaded whole)."""
    return resolve_dataset(path, name="config data.path")


def build_dataset(cfg: TrainConfig, dataset_dir: Path, *, rank: int = 0, world_size: int = 1,
                  seed: int | None = None, gene_sampling: str | None = None):
    """The training stream of ``cfg``; a model whose ``context_source`` (preset and
    ``model:`` overrides) is ``timepoint_mean`` also gets each frame's day image
    (``context_video``)."""
    from ..data import GeneVideoDataset
    from ..models import preset_config

    model_cfg = preset_config(cfg.model.preset, **cfg.model.overrides())

    holdout = cfg.data.holdout_timepoints
    return GeneVideoDataset(
        dataset_dir, seed=cfg.seed if seed is None else seed, rank=rank, world_size=world_size,
        gene_sampling=gene_sampling or cfg.data.gene_sampling, shuffle_buffer=cfg.data.shuffle_buffer,
        nonspatial_rate=cfg.data.nonspatial_rate,
        holdout_timepoints=None if holdout is None else list(holdout),
        infinite=False,  # one pass per iter(); batch_stream moves the epochs (set_epoch)
        context_video=model_cfg.get("context_source", "slice") == "timepoint_mean",
        slice_draw=cfg.data.slice_draw,
    )


def build_loader(dataset, batch_size: int, num_workers: int = 0) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                      persistent_workers=False, pin_memory=torch.cuda.is_available())


def _set_epoch(dataset, epoch: int) -> None:
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)


def batch_stream(loader: DataLoader, *, start_batch: int = 0) -> Iterator[tuple[int, dict]]:
    """Endless ``(epoch, batch)`` stream over epochs, resuming after ``start_batch`` batches.

    Each epoch re-seeds the dataset with ``set_epoch``; the first ``start_batch`` batches of
    the stream (what an interrupted run consumed) are skipped, whole epochs at once when the
    loader's length is known exactly (single worker), else by reading and dropping them. An
    epoch without a batch is an error only when the rank's shard has no gene (a sampled epoch
    of a small shard can be empty).
    """
    dataset = loader.dataset
    first_epoch, skip = 0, start_batch
    if skip and loader.num_workers <= 1:
        try:
            per_epoch = len(loader)
        except TypeError:
            per_epoch = 0
        if per_epoch > 0:
            first_epoch, skip = divmod(skip, per_epoch)
    for epoch in itertools.count(first_epoch):
        _set_epoch(dataset, epoch)
        n = 0
        for batch in loader:
            n += 1
            if skip:
                skip -= 1
                continue
            yield epoch, batch
        if n == 0 and not (hasattr(dataset, "has_genes") and dataset.has_genes(epoch)):
            raise InputError(f"dataset {getattr(dataset, 'dataset_dir', '')}: this rank's shard "
                             "yields no batch (too few genes for the number of processes?)")


def fixed_batches(loader: DataLoader, n: int) -> list[dict]:
    """The first ``n`` batches of epoch 0 (validation set; deterministic by the dataset's seed)."""
    _set_epoch(loader.dataset, 0)
    return list(itertools.islice(iter(loader), n))


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
