"""Scores for gene embeddings and clusterings; the standard ones come from scikit-learn.

- :func:`adjusted_rand_index` and :func:`normalized_mutual_info` compare a clustering with
  known labels (1.0 = identical partitions; ARI ~ 0 for a random one): thin wrappers around
  :func:`sklearn.metrics.adjusted_rand_score` and
  :func:`sklearn.metrics.normalized_mutual_info_score` that check their input.
- :func:`knn_precision`: the share of each gene's k nearest neighbours (cosine similarity,
  found with :class:`sklearn.neighbors.NearestNeighbors`) that carry the gene's own label,
  averaged over genes; :func:`knn_precision_chance` is the value expected from a random
  embedding.
- :func:`cosine_similarity`, :func:`nearest_neighbors` and :func:`silhouette_score` are the
  building blocks shared with :mod:`videogene.tl.embeddings`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix
from sklearn.metrics.pairwise import cosine_distances
from sklearn.neighbors import NearestNeighbors

from ..errors import InputError

__all__ = [
    "adjusted_rand_index",
    "normalized_mutual_info",
    "knn_precision",
    "knn_precision_chance",
    "cosine_similarity",
    "nearest_neighbors",
    "silhouette_score",
    "contingency_table",
]


def _as_labels(labels, name: str) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise InputError(f"{name}: expected a 1-D sequence of labels, got shape {arr.shape}")
    return arr


def _paired_labels(labels_true: Sequence, labels_pred: Sequence) -> tuple[np.ndarray, np.ndarray]:
    t = _as_labels(labels_true, "labels_true")
    p = _as_labels(labels_pred, "labels_pred")
    if t.shape[0] != p.shape[0]:
        raise InputError(f"labels_true has {t.shape[0]} items but labels_pred has {p.shape[0]}")
    return t, p


def contingency_table(labels_true: Sequence, labels_pred: Sequence) -> np.ndarray:
    """Counts ``n[i, j]`` of items with the i-th true class and the j-th predicted cluster."""
    t, p = _paired_labels(labels_true, labels_pred)
    if t.shape[0] == 0:
        return np.zeros((0, 0), dtype=np.int64)
    return np.asarray(contingency_matrix(t, p), dtype=np.int64)


def adjusted_rand_index(labels_true: Sequence, labels_pred: Sequence) -> float:
    """Adjusted Rand index (Hubert & Arabie 1985) of two partitions of the same items.

    1.0 for identical partitions (up to renaming), ~0 in expectation for independent ones,
    negative when the agreement is below chance. Two partitions that are both trivial
    (one cluster each, or every item alone) score 1.0. Computed by
    :func:`sklearn.metrics.adjusted_rand_score`.
    """
    t, p = _paired_labels(labels_true, labels_pred)
    if t.shape[0] < 2:
        return 1.0
    return float(adjusted_rand_score(t, p))


def normalized_mutual_info(labels_true: Sequence, labels_pred: Sequence) -> float:
    """Mutual information normalised by the arithmetic mean of the two entropies, in [0, 1].

    :func:`sklearn.metrics.normalized_mutual_info_score` with its default
    ``average_method="arithmetic"``; two single-cluster partitions score 1.0, one
    single-cluster partition against a real one 0.0.
    """
    t, p = _paired_labels(labels_true, labels_pred)
    if t.shape[0] == 0:
        return 1.0
    nmi = normalized_mutual_info_score(t, p, average_method="arithmetic")
    return float(np.clip(nmi, 0.0, 1.0))


def cosine_similarity(x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    """Cosine similarity between the rows of ``x`` (and ``y``); zero rows are similar to nothing."""
    x = np.asarray(x, dtype=np.float64)
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if y is None:
        return xn @ xn.T
    y = np.asarray(y, dtype=np.float64)
    yn = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
    return xn @ yn.T


def nearest_neighbors(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most cosine-similar other rows of every row: ``(indices, similarities)``.

    Both ``(n, k)``, most similar first; a row is never its own neighbour. Found by
    :class:`sklearn.neighbors.NearestNeighbors` (``metric="cosine"``, brute force); ties are
    broken by row order so that the result is deterministic.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    if not 1 <= k <= n - 1:
        raise InputError(f"k={k}: need 1 <= k <= {n - 1} (number of genes - 1)")
    k_q = min(k + 1, n - 1)  # one more: tells whether a tie straddles the k-th neighbour
    nn = NearestNeighbors(n_neighbors=k_q, metric="cosine", algorithm="brute").fit(x)
    dist, idx = nn.kneighbors()  # no query points: each row's neighbours exclude itself
    order = np.lexsort((idx, dist))  # by distance, then row
    dist = np.take_along_axis(dist, order, axis=1)
    idx = np.take_along_axis(idx, order, axis=1)
    if k_q > k:
        # Rows whose k-th and (k+1)-th neighbours tie may have tied rows of lower index
        # outside the returned set: rank those rows over all the others.
        tied = np.flatnonzero(dist[:, k - 1] == dist[:, k])
        if tied.size:
            full = cosine_distances(x[tied], x)
            full[np.arange(tied.size), tied] = np.inf
            top = np.argsort(full, axis=1, kind="stable")[:, :k]
            idx[tied, :k] = top
            dist[tied, :k] = np.take_along_axis(full, top, axis=1)
    return idx[:, :k], 1.0 - dist[:, :k]


def _keep_mask(labels: np.ndarray, exclude: Iterable | None) -> np.ndarray:
    keep = np.ones(labels.shape[0], dtype=bool)
    if exclude is not None:
        excl = list(exclude)
        if excl:
            keep &= ~np.isin(labels, np.asarray(excl, dtype=labels.dtype))
    if labels.dtype.kind in "fc":
        keep &= ~np.isnan(labels)
    elif labels.dtype == object:
        keep &= np.array([lab is not None and lab == lab for lab in labels], dtype=bool)
    return keep


def knn_precision(embedding: np.ndarray, labels: Sequence, k: int = 10, *,
                  exclude: Iterable | None = None, return_per_gene: bool = False):
    """Mean share of each gene's ``k`` nearest neighbours (cosine) that share its label.

    ``exclude``: labels that say nothing about a gene (e.g. the synthetic ``"silent"``
    program); genes carrying them — and genes whose label is missing (None/NaN) — are removed
    before the neighbours are searched, so they are neither scored nor counted as neighbours.
    ``k`` is capped at the number of remaining genes - 1. Returns a float in [0, 1], or
    ``(score, per_gene)`` with ``per_gene`` NaN for the removed genes.
    """
    emb = np.asarray(embedding)
    lab = _as_labels(labels, "labels")
    if emb.ndim != 2 or emb.shape[0] != lab.shape[0]:
        raise InputError(f"embedding of shape {emb.shape} does not match {lab.shape[0]} labels")
    keep = _keep_mask(lab, exclude)
    if keep.sum() < 2:
        raise InputError(f"knn_precision: {int(keep.sum())} gene(s) left after excluding "
                         f"{list(exclude or [])}; need at least 2")
    k_eff = min(int(k), int(keep.sum()) - 1)
    idx, _ = nearest_neighbors(emb[keep], k_eff)
    kept_labels = lab[keep]
    same = kept_labels[idx] == kept_labels[:, None]
    per = same.mean(axis=1)
    score = float(per.mean())
    if not return_per_gene:
        return score
    full = np.full(lab.shape[0], np.nan)
    full[keep] = per
    return score, full


def knn_precision_chance(labels: Sequence, *, exclude: Iterable | None = None) -> float:
    """kNN precision expected when neighbours are drawn at random: mean of (n_label - 1)/(n - 1)."""
    lab = _as_labels(labels, "labels")
    lab = lab[_keep_mask(lab, exclude)]
    n = lab.shape[0]
    if n < 2:
        return float("nan")
    _, inv, counts = np.unique(lab, return_inverse=True, return_counts=True)
    return float(((counts[inv] - 1) / (n - 1)).mean())


def silhouette_score(x: np.ndarray, labels: Sequence, *, metric: str = "cosine") -> float:
    """Mean silhouette coefficient, ``metric`` "cosine" (1 - cosine similarity) or "euclidean".

    Items alone in their cluster score 0 (Rousseeuw's convention). Needs 2 <= clusters < n.
    """
    lab = _as_labels(labels, "labels")
    x = np.asarray(x, dtype=np.float64)
    _, inv = np.unique(lab, return_inverse=True)
    n_clusters = int(inv.max()) + 1
    n = x.shape[0]
    if not 2 <= n_clusters <= n - 1:
        raise InputError(f"silhouette_score: needs 2..{n - 1} clusters, got {n_clusters}")
    if metric == "cosine":
        dist = 1.0 - cosine_similarity(x)
    elif metric == "euclidean":
        sq = (x * x).sum(axis=1)
        dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0))
    else:
        raise InputError(f"metric={metric!r}: expected 'cosine' or 'euclidean'")
    np.fill_diagonal(dist, 0.0)
    onehot = np.zeros((n, n_clusters))
    onehot[np.arange(n), inv] = 1.0
    sizes = onehot.sum(axis=0)
    sums = dist @ onehot  # (n, clusters): summed distance of each item to each cluster
    own = sizes[inv]
    a = sums[np.arange(n), inv] / np.maximum(own - 1, 1)
    mean_other = sums / sizes[None, :]
    mean_other[np.arange(n), inv] = np.inf
    b = mean_other.min(axis=1)
    s = (b - a) / np.maximum(np.maximum(a, b), 1e-12)
    s[own == 1] = 0.0
    return float(s.mean())
