"""A gene table that starts from the data (``gene_embedding_init: data``).

Each gene row starts at the principal components of the gene's training frames (every tissue
pixel of every slice of every time point that training sees, standardised per gene, as the
model-free baseline of ``videogene.tl.baseline_embedding``). A random start gives the network
nothing to tell genes apart by until each row has been visited hundreds of times; a data start
hands it, from step 0, a code in which genes with similar layouts are close. Training then moves
the rows as usual. See docs/training.md, results log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..data.holdout import tkey

logger = logging.getLogger(__name__)

SKETCH_DIM = 1024  # above this many tissue pixels the vectors are randomly projected first


def data_gene_table(dataset_dir: str | Path, dim: int, *, heldout_timepoints: Iterable[float] = (),
                    heldout_frames: Iterable[tuple[str, float]] = (), rms: float = 1.0,
                    seed: int = 0, progress: bool = True) -> np.ndarray:
    """``(num_genes, dim)`` float32 rows in vocabulary order: PCA scores of each gene's frames.

    Args:
        dataset_dir: prepared dataset folder.
        dim: table width (the model's ``gene_embed_dim``); columns past the rank are zero.
        heldout_timepoints: time points training never sees; their slices are left out.
        heldout_frames: ``(gene, time point)`` pairs training never sees; zero in that gene's
            vector (``data.holdout.holdout_spec`` gives both lists).
        rms: root mean square of the returned table (the scores keep their relative variances).
        seed: seed of the random projection used when a gene's vector is longer than
            ``SKETCH_DIM`` (Johnson-Lindenstrauss: correlations between genes are kept).
    """
    from ..data import load_masks, load_metadata, read_gene_canvases

    meta = load_metadata(dataset_dir)
    masks = np.asarray(load_masks(dataset_dir), dtype=bool)
    held = {tkey(t) for t in heldout_timepoints}
    slice_t = np.array([tkey(s["timepoint"]) for s in meta.slices])
    use = ~np.isin(slice_t, sorted(held))
    pix = masks & use[:, None, None]
    d = int(pix.sum())
    genes = meta.genes
    width = min(d, SKETCH_DIM)
    proj = None
    if d > SKETCH_DIM:
        rng = np.random.default_rng(seed)
        proj = (rng.standard_normal((d, width)) / np.sqrt(width)).astype(np.float32)
    x = np.zeros((len(genes), max(width, 1)), dtype=np.float32)
    pos = {g: i for i, g in enumerate(genes)}
    frames: dict[str, list[float]] = {}
    for g, t in heldout_frames:
        frames.setdefault(str(g), []).append(tkey(t))
    it = read_gene_canvases(dataset_dir)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, total=len(genes), desc="gene table from data", unit="gene", leave=False)
    for gene, canvas in it:
        canvas = np.asarray(canvas, dtype=np.float32)
        if gene in frames:
            canvas = np.where(np.isin(slice_t, frames[gene])[:, None, None], 0.0, canvas)
        v = canvas[pix]
        v = v - v.mean()
        sd = float(v.std())
        if sd > 0:  # genes never expressed in training frames keep a zero vector
            v = v / sd
            x[pos[gene]] = v @ proj if proj is not None else v
    x = x.astype(np.float64) - x.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    k = min(dim, len(s))
    scores = np.zeros((len(genes), dim))
    scores[:, :k] = u[:, :k] * s[:k]
    # Fix signs (largest |score| positive) so the table does not flip between LAPACK builds.
    signs = np.sign(scores[np.abs(scores).argmax(axis=0), np.arange(dim)])
    signs[signs == 0] = 1
    scores *= signs[None, :]
    norm = float(np.sqrt((scores ** 2).mean()))
    if norm > 0:
        scores *= rms / norm
    total = float((s ** 2).sum())
    logger.info("gene table from data: %d genes, %d components of %d tissue pixels (%.0f%% of "
                "the variance)%s", len(genes), k, d, 100 * float((s[:k] ** 2).sum()) / max(total, 1e-12),
                f", projected to {width}" if proj is not None else "")
    return scores.astype(np.float32)


def init_gene_table(model, dataset_dir: str | Path, *, heldout_timepoints: Iterable[float] = (),
                    heldout_frames: Iterable[tuple[str, float]] = (), rms: float = 1.0,
                    seed: int = 0, progress: bool = True) -> None:
    """Copy :func:`data_gene_table` into ``model.gene_embedding``; the null row becomes zero.

    Zero is the centre of the scores, so the unconditional (null) gene sits at the average
    gene, which is what classifier-free guidance contrasts against.
    """
    import torch

    table = data_gene_table(dataset_dir, int(model.config.gene_embed_dim),
                            heldout_timepoints=heldout_timepoints,
                            heldout_frames=heldout_frames, rms=rms, seed=seed,
                            progress=progress)
    weight = model.gene_embedding.weight
    with torch.no_grad():
        weight[: table.shape[0]].copy_(torch.from_numpy(table))
        weight[model.null_gene_id].zero_()
