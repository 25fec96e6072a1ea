"""A gene table that starts from the data (``gene_embedding_init: data``).

Each gene row starts at the principal components of the gene's pattern vector (every tissue
pixel of every slice that training sees, standardised per gene: :mod:`videogene.data.features`,
shared with the model-free baseline ``videogene.tl.baseline_embedding``). A random start gives
the network nothing to tell genes apart by until each row has been visited hundreds of times; a
data start hands it, from step 0, a code in which genes with similar layouts are close.
Training then moves the rows as usual. See docs/training.md, results log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..data.features import PatternVectors
from ..errors import InputError

logger = logging.getLogger(__name__)


def data_gene_table(dataset_dir: str | Path, dim: int, *, heldout_timepoints: Iterable[float] = (),
                    heldout_frames: Iterable[tuple[str, float]] = (), rms: float = 1.0,
                    components: int | None = None, seed: int = 0,
                    progress: bool = True) -> np.ndarray:
    """``(num_genes, dim)`` float32 rows in vocabulary order: PCA scores of each gene's frames.

    Args:
        dataset_dir: prepared dataset folder.
        dim: table width (the model's ``gene_embed_dim``); columns past the rank are zero.
        heldout_timepoints: time points training never sees; their slices are left out.
        heldout_frames: ``(gene, time point)`` pairs training never sees; zero in that gene's
            vector (``DatasetMeta.holdout_spec`` gives both lists).
        rms: root mean square of the returned table (the scores keep their relative variances).
        components: principal components that fill the first columns (``None``: all ``dim``);
            the remaining columns start at zero, so the rows' cosine neighbourhoods are those
            of the first ``components`` while the model keeps ``dim`` columns to learn in.
        seed: seed of the random projection of very large atlases
            (:class:`videogene.data.features.PatternVectors`).
    """
    from ..data import load_masks, load_metadata, read_gene_canvases, stored_slices

    n = dim if components is None else int(components)
    if not 1 <= n <= dim:
        raise InputError(f"config gene_embedding_init_components={components}: must be between "
                         f"1 and the table width model.gene_embed_dim={dim}")
    meta = load_metadata(dataset_dir)
    vectors = PatternVectors(meta, load_masks(dataset_dir), meta.genes,
                             heldout_timepoints=heldout_timepoints,
                             heldout_frames=heldout_frames, seed=seed)
    stored = stored_slices(dataset_dir)
    it = read_gene_canvases(dataset_dir)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, total=len(meta.genes), desc="gene table from data", unit="gene", leave=False)
    for gene, canvas in it:
        vectors.add(gene, canvas, stored[gene])
    scores, ratio = vectors.pca(n)
    scores = np.pad(scores, ((0, 0), (0, dim - n)))
    norm = float(np.sqrt((scores.astype(np.float64) ** 2).mean()))
    if norm > 0:
        scores = scores * np.float32(rms / norm)
    logger.info("gene table from data: %d genes, %d components of %d tissue pixels (%.0f%% of "
                "the variance) in %d columns%s", len(meta.genes), n, vectors.n_pixels,
                100 * ratio.sum(), dim, ", randomly projected first" if vectors.sketched else "")
    return scores.astype(np.float32)


def init_gene_table(model, dataset_dir: str | Path, *, heldout_timepoints: Iterable[float] = (),
                    heldout_frames: Iterable[tuple[str, float]] = (), rms: float = 1.0,
                    components: int | None = None, seed: int = 0,
                    progress: bool = True) -> None:
    """Copy :func:`data_gene_table` into ``model.gene_embedding``; the null row becomes zero.

    Zero is the centre of the scores, so the unconditional (null) gene sits at the average
    gene, which is what classifier-free guidance contrasts against.
    """
    import torch

    table = data_gene_table(dataset_dir, int(model.config.gene_embed_dim),
                            heldout_timepoints=heldout_timepoints,
                            heldout_frames=heldout_frames, rms=rms, components=components,
                            seed=seed, progress=progress)
    weight = model.gene_embedding.weight
    with torch.no_grad():
        weight[: table.shape[0]].copy_(torch.from_numpy(table))
        weight[model.null_gene_id].zero_()
