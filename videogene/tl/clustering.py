"""Clustering and PCA of gene tables (rows = genes): what :mod:`videogene.tl.embeddings`
annotates an embedding with.

- :func:`kmeans`: seeded k-means++ (scikit-learn);
- ``_cluster``: Leiden on a cosine kNN graph when scanpy and leidenalg are installed, else
  k-means on unit vectors with k chosen by the cosine silhouette;
- ``_pca``: principal components with signs fixed (stable across LAPACK builds).
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np

from ..errors import InputError
from ..utils import get_logger
from . import scores

logger = get_logger(__name__)

__all__ = ["kmeans"]


def kmeans(x: np.ndarray, k: int, *, seed: int = 0, n_init: int = 4, max_iter: int = 100
           ) -> tuple[np.ndarray, float]:
    """Lloyd's k-means with k-means++ seeding (Arthur & Vassilvitskii 2007): (labels, inertia).

    :class:`sklearn.cluster.KMeans`; deterministic for a given ``seed``, the best of
    ``n_init`` starts (lowest inertia) wins.
    """
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    if not 1 <= k <= n:
        raise InputError(f"kmeans: k={k} must be in 1..{n}")
    km = KMeans(n_clusters=int(k), init="k-means++", n_init=int(n_init), max_iter=int(max_iter),
                algorithm="lloyd", random_state=int(seed))
    with warnings.catch_warnings():
        # fewer distinct points than k: sklearn warns, and returns fewer than k clusters
        warnings.simplefilter("ignore", ConvergenceWarning)
        labels = km.fit_predict(x)
    return np.asarray(labels, dtype=np.int64), float(km.inertia_)


def _kmeans_k_range(n: int) -> list[int]:
    """Candidate cluster counts: 2 .. min(2 * sqrt(n / 2), 30, n - 1)."""
    kmax = min(max(2, int(round(2 * math.sqrt(n / 2)))), 30, n - 1)
    return list(range(2, kmax + 1))


def _cluster(x: np.ndarray, *, n_neighbors: int, seed: int, n_clusters: int | None
             ) -> tuple[np.ndarray, dict]:
    """Cluster the rows of ``x`` (cosine geometry); returns (labels as str, description)."""
    n = x.shape[0]
    if n < 3:
        return np.zeros(n, dtype=int).astype(str), {"method": "none", "reason": "fewer than 3 genes"}
    if n_clusters is None:
        try:
            import anndata as ad
            import leidenalg  # noqa: F401
            import scanpy as sc
        except ImportError:
            pass
        else:
            tmp = ad.AnnData(np.asarray(x, dtype=np.float32))
            sc.pp.neighbors(tmp, n_neighbors=min(n_neighbors, n - 1), use_rep="X",
                            metric="cosine", random_state=seed)
            try:  # scanpy >= 1.10 asks for the flavor; 1.9 has no such argument
                sc.tl.leiden(tmp, random_state=seed, flavor="leidenalg", key_added="cluster")
            except TypeError:
                sc.tl.leiden(tmp, random_state=seed, key_added="cluster")
            labels = tmp.obs["cluster"].astype(str).to_numpy()
            return labels, {"method": "leiden", "n_neighbors": int(min(n_neighbors, n - 1)),
                            "resolution": 1.0, "n_clusters": int(len(set(labels)))}
    # Spherical geometry: k-means on unit vectors matches the cosine neighbours used elsewhere.
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if n_clusters is not None:
        labels, _ = kmeans(xn, int(n_clusters), seed=seed)
        desc = {"method": "kmeans", "k_rule": "given", "n_clusters": int(n_clusters)}
    else:
        from tqdm.auto import tqdm

        best = None
        sil_by_k = {}
        k_range = _kmeans_k_range(n)
        for k in tqdm(k_range, desc="k-means (choosing k)", unit="k", leave=False,
                      disable=n < 500):
            lab, _ = kmeans(xn, k, seed=seed)
            if len(np.unique(lab)) < 2:
                continue
            sil = scores.silhouette_score(xn, lab, metric="cosine")
            sil_by_k[str(k)] = round(sil, 4)
            if best is None or sil > best[0]:
                best = (sil, k, lab)
        if best is None:
            labels, k = np.zeros(n, dtype=int), 1
        else:
            _, k, labels = best
        desc = {"method": "kmeans", "n_clusters": int(k),
                "k_rule": "max cosine silhouette over k = 2..min(2*sqrt(n/2), 30, n-1)",
                "silhouette": json.dumps(sil_by_k)}
        logger.info("scanpy/leidenalg not installed: k-means++ clustering, k=%d by silhouette", k)
    # Renumber clusters by size (0 = largest) so that labels are stable and readable.
    uniq, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[inv].astype(str), desc
