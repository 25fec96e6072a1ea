"""Each gene's spatial pattern as one vector, and its principal components.

A gene's pattern vector is its expression at every tissue pixel of every slice that training
sees (hold-out time points left out), standardised per gene over the pixels where it was
observed (mean 0, standard deviation 1: two genes are close when their patterns correlate,
whatever their level; genes never expressed there stay all-zero). Where the gene was not
observed, in its held-out ``(gene, day)`` frames and in slices that do not store it (a
``--gene-set union`` dataset), the vector holds 0, the gene's own mean: neither expressed nor
silent. :class:`PatternVectors` collects them gene by gene
while a caller reads the dataset once; :meth:`PatternVectors.pca` gives the scores. Two users:
the model-free baseline embedding (``videogene.tl.baseline_embedding``) and the data start of
the gene table (``videogene.training.gene_init``).

When the genes x pixels matrix would exceed ``max_floats`` (MOSTA: 25,000 genes x ~10^5
pixels), each vector is first randomly projected to ``sketch_dim`` values (Johnson-Lindenstrauss:
correlations between genes are kept up to a small error); smaller atlases are exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from .holdout import tkey

MAX_EXACT_FLOATS = 2**28  # 1 GiB of float32
SKETCH_DIM = 1024


def pca(x: np.ndarray, n_comps: int) -> tuple[np.ndarray, np.ndarray]:
    """``(scores (n, c), explained variance ratio (c,))`` by :class:`sklearn.decomposition.PCA`.

    Signs are fixed (largest |score| positive in each component) so that results do not flip
    between LAPACK builds or scikit-learn versions.
    """
    from sklearn.decomposition import PCA

    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    c = max(1, min(n_comps, n - 1 if n > 1 else 1, d))
    centred = x - x.mean(axis=0, keepdims=True)
    if n < 2 or not float((centred * centred).sum()) > 0:  # nothing to decompose
        return np.zeros((n, c), dtype=np.float32), np.zeros(c)
    model = PCA(n_components=c, svd_solver="full")
    pcs = model.fit_transform(x)
    signs = np.sign(pcs[np.abs(pcs).argmax(axis=0), np.arange(pcs.shape[1])])
    signs[signs == 0] = 1
    pcs = pcs * signs[None, :]
    return pcs.astype(np.float32), np.asarray(model.explained_variance_ratio_, dtype=np.float64)


class PatternVectors:
    """Pattern vectors of ``genes``, filled by :meth:`add` (one gene's dense canvas at a time).

    Args:
        meta: the dataset metadata (slices and their time points).
        masks: tissue masks ``(n_slices, H, W)``.
        genes: the genes, in the order of the rows.
        heldout_timepoints / heldout_frames: what training never sees
            (``DatasetMeta.holdout_spec()["timepoints"]`` / ``["frames"]``).
        seed: seed of the random projection (only used above ``max_floats``).
        max_floats, sketch_dim: default :data:`MAX_EXACT_FLOATS`, :data:`SKETCH_DIM`.
    """

    def __init__(self, meta: Mapping, masks: np.ndarray, genes: Sequence[str], *,
                 heldout_timepoints: Iterable[float] = (),
                 heldout_frames: Iterable[Sequence] = (), seed: int = 0,
                 max_floats: int | None = None, sketch_dim: int | None = None):
        self.slice_t = np.array([tkey(s["timepoint"]) for s in meta["slices"]])
        held = sorted({tkey(t) for t in heldout_timepoints})
        self.pixels = np.asarray(masks, dtype=bool) & ~np.isin(self.slice_t, held)[:, None, None]
        self.frames: dict[str, list[float]] = {}
        for g, t in heldout_frames:
            self.frames.setdefault(str(g), []).append(tkey(t))
        self.genes = list(genes)
        self.row = {g: i for i, g in enumerate(self.genes)}
        self.n_pixels = int(self.pixels.sum())
        self.proj = None
        width = self.n_pixels
        if len(self.genes) * self.n_pixels > (max_floats or MAX_EXACT_FLOATS):
            width = min(self.n_pixels, sketch_dim or SKETCH_DIM)
            rng = np.random.default_rng(seed)
            self.proj = (rng.standard_normal((self.n_pixels, width)) / np.sqrt(width)
                         ).astype(np.float32)  # (pixels, width)
        self.x = np.zeros((len(self.genes), max(width, 1)), dtype=np.float32)  # (genes, width)

    @property
    def sketched(self) -> bool:
        return self.proj is not None

    def add(self, gene: str, canvas: np.ndarray, stored: np.ndarray | None = None) -> None:
        """``canvas``: the gene's dense ``(n_slices, H, W)`` expression (``read_gene_canvases``);
        ``stored``: its bool ``(n_slices,)`` (``stored_slices``; None: every slice)."""
        canvas = np.asarray(canvas, dtype=np.float32)
        seen = np.ones(len(self.slice_t), dtype=bool) if stored is None else np.array(stored, bool)
        if gene in self.frames:
            seen &= ~np.isin(self.slice_t, self.frames[gene])
        v = canvas[self.pixels]  # (n_pixels,)
        obs = np.broadcast_to(seen[:, None, None], canvas.shape)[self.pixels]  # (n_pixels,)
        if not obs.any():
            return
        v = np.where(obs, v - v[obs].mean(), 0.0).astype(np.float32)
        sd = float(v[obs].std())
        if sd > 0:
            v = v / sd
            self.x[self.row[gene]] = v @ self.proj if self.proj is not None else v

    def pca(self, n_components: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores (genes, n_components), variance ratio)``; columns past the rank are zero."""
        scores, ratio = pca(self.x, n_components)
        out = np.zeros((len(self.genes), n_components), dtype=np.float32)
        out[:, : scores.shape[1]] = scores
        return out, np.pad(ratio, (0, n_components - len(ratio)))
