"""Gene embeddings: export the learned table, neighbours, clusters, maps and scores.

- :func:`gene_embeddings` turns a trained model's gene-embedding table into an AnnData (genes
  as rows) annotated with data statistics, PCA, a 2-D map and clusters.
- :func:`baseline_embedding` gives the same treatment to a model-free embedding: PCA of each
  gene's aligned expression over all slices and time points of a prepared dataset.
- :func:`neighbors` lists the most cosine-similar genes of a gene.
- :func:`enriched_celltype` labels each gene of an annotated .h5ad with the cell type in which
  it is most enriched (for real data, where no true gene programs exist).
- :func:`analyze_embeddings` does all of it and writes files (``videogene embed``).
"""

from __future__ import annotations

import difflib
import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..utils import check_output_dir, get_logger
from . import scores

logger = get_logger("videogene.tl.embeddings")

__all__ = [
    "gene_embeddings",
    "baseline_embedding",
    "neighbors",
    "enriched_celltype",
    "analyze_embeddings",
    "kmeans",
    "score_embedding",
]

# Labels that carry no information about a gene's pattern: not scored by kNN precision.
UNINFORMATIVE_LABELS = ("silent",)


# ============================================================================ model / dataset
def _resolve_model(model_or_path, use_ema: bool) -> tuple[Any, Any, str]:
    """(unet, pipeline or None, description) from a model, a pipeline or a path / Hub id."""
    if isinstance(model_or_path, (str, os.PathLike)):
        from ..pipelines import load_pipeline

        pipe = load_pipeline(str(model_or_path), use_ema=use_ema, device="cpu")
        return pipe.unet, pipe, str(model_or_path)
    if hasattr(model_or_path, "unet") and hasattr(model_or_path.unet, "gene_embeddings"):
        return model_or_path.unet, model_or_path, type(model_or_path).__name__
    if hasattr(model_or_path, "gene_embeddings"):
        return model_or_path, None, type(model_or_path).__name__
    raise InputError(f"model_or_path: expected a VideoGeneUNet, a VideoGenePipeline or a path/Hub "
                     f"id, got {type(model_or_path).__name__}")


def _export_dirs(pipe, path: str | None) -> list[Path]:
    """Folders that may hold the export's training_config.yaml."""
    cands: list[Path] = []
    for attr in ("source_dir", "export_dir"):
        v = getattr(pipe, attr, None)
        if isinstance(v, (str, os.PathLike)):
            cands.append(Path(v))
    cfg = getattr(pipe, "config", None)
    v = getattr(cfg, "_name_or_path", None) if cfg is not None else None
    if isinstance(v, (str, os.PathLike)):
        cands.append(Path(v))
    if path is not None:
        cands += [Path(path), Path(path) / "export-latest"]
    return [c for c in cands if c.is_dir()]


def _dataset_from_export(pipe, path: str | None) -> Path | None:
    """The prepared dataset named by the export's training_config.yaml (``data.path``), if any."""
    from ..data.stream import META_NAME
    from ..pipelines.loading import TRAINING_CONFIG, read_training_config

    for d in _export_dirs(pipe, path):
        f = d / TRAINING_CONFIG
        try:
            cfg = read_training_config(d)
        except InputError:
            logger.warning("%s: not valid YAML; no dataset statistics", f)
            return None
        if cfg is None:
            continue
        data = cfg.get("data") or {}
        p = data.get("path") if isinstance(data, dict) else None
        if not p:
            return None
        for cand in (Path(p), d / p, d.parent / p):
            if (cand / META_NAME).is_file():
                return cand
        logger.warning("the dataset %s named in %s is not here; embedding without data "
                       "statistics (pass dataset= to add them)", p, f)
        return None
    return None


def _check_dataset(dataset) -> Path:
    p = Path(dataset)
    if not (p / "videogene_meta.json").is_file():
        raise InputError(f"dataset {p}: not a prepared dataset folder (no videogene_meta.json)")
    return p


# ============================================================================ dataset features
class _DatasetFeatures:
    """One pass over a prepared dataset: per-gene statistics, time profiles, tissue vectors."""

    def __init__(self, dataset_dir: Path, genes: Sequence[str] | None = None, *,
                 keep_vectors: bool = False, progress: bool = True):
        from ..data import load_masks, load_metadata, read_gene_canvases

        self.dataset_dir = Path(dataset_dir)
        self.meta = load_metadata(self.dataset_dir)
        masks = np.asarray(load_masks(self.dataset_dir), dtype=bool)
        vocab = list(self.meta["genes"])
        if genes is None:
            genes = vocab
        in_vocab = set(vocab)
        self.genes = [g for g in genes if g in in_vocab]
        self.missing = [g for g in genes if g not in in_vocab]
        if self.missing:
            logger.warning("%d gene(s) of the model are not in the dataset %s (no statistics): %s",
                           len(self.missing), self.dataset_dir, ", ".join(self.missing[:10]))
        slice_t = np.array([float(s["timepoint"]) for s in self.meta["slices"]])
        self.timepoints = [float(t) for t in self.meta["timepoints"]]
        held = {float(t) for t in (self.meta.get("holdout") or {}).get("timepoints", [])}
        # Baseline vectors skip held-out time points: the model never saw them either.
        self.vector_slices = np.array([t not in held for t in slice_t])
        n_tissue = masks.reshape(masks.shape[0], -1).sum(axis=1)
        t_index = {t: i for i, t in enumerate(self.timepoints)}
        slice_ti = np.array([t_index[float(t)] for t in slice_t])
        ng, nt = len(self.genes), len(self.timepoints)
        self.nnz_fraction = np.zeros(ng)
        self.mean = np.zeros(ng)
        self.time_profile = np.zeros((ng, nt))
        vec_mask = masks[self.vector_slices]
        self.vectors = (np.zeros((ng, int(vec_mask.sum())), dtype=np.float32)
                        if keep_vectors else None)
        total_tissue = max(int(n_tissue.sum()), 1)
        it = read_gene_canvases(self.dataset_dir, genes=self.genes)
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(it, total=ng, desc="reading genes", unit="gene", leave=False)
        pos = {g: i for i, g in enumerate(self.genes)}
        for gene, canvas in it:
            i = pos[gene]
            canvas = np.asarray(canvas, dtype=np.float32)
            if canvas.shape != masks.shape:
                raise InputError(f"dataset {self.dataset_dir}: gene {gene} canvas {canvas.shape} "
                                 f"does not match masks.npy {masks.shape}")
            tissue = np.where(masks, canvas, 0.0)
            per_slice_sum = tissue.reshape(tissue.shape[0], -1).sum(axis=1)
            self.nnz_fraction[i] = float((tissue > 0).sum()) / total_tissue
            self.mean[i] = float(per_slice_sum.sum()) / total_tissue
            for ti in range(nt):
                sel = slice_ti == ti
                denom = n_tissue[sel].sum()
                self.time_profile[i, ti] = per_slice_sum[sel].sum() / denom if denom else np.nan
            if self.vectors is not None:
                self.vectors[i] = canvas[self.vector_slices][vec_mask]

    def peak_timepoint(self) -> np.ndarray:
        out = np.full(len(self.genes), np.nan)
        prof = np.nan_to_num(self.time_profile, nan=-np.inf)
        has = np.isfinite(prof).any(axis=1) & (np.nan_to_num(self.time_profile) > 0).any(axis=1)
        out[has] = np.asarray(self.timepoints)[prof[has].argmax(axis=1)]
        return out


def _synthetic_programs(meta: Mapping, genes: Sequence[str]) -> dict[str, np.ndarray] | None:
    """True per-gene programs of the synthetic atlas (regenerated from ``meta["synthetic"]``)."""
    synth = meta.get("synthetic") if meta else None
    if not synth:
        return None
    from ..data import synthetic

    cfg = synth if not isinstance(synth, str) else json.loads(synth)
    table = synthetic.gene_table(synthetic.SynthConfig.from_dict(dict(cfg)))
    table = table.reindex(list(genes))
    if table["program"].isna().any():
        missing = table.index[table["program"].isna()].tolist()
        logger.warning("%d gene(s) have no synthetic program (not in the regenerated atlas): %s",
                       len(missing), ", ".join(map(str, missing[:10])))
    return {"program": table["program"].to_numpy(),
            "program_kind": table["program_kind"].astype(object).to_numpy(),
            "program_name": table["program_name"].astype(object).to_numpy()}


# ============================================================================ clustering
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


# ============================================================================ annotation
def _pca(x: np.ndarray, n_comps: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores (n, c), explained variance ratio (c,)) by :class:`sklearn.decomposition.PCA`."""
    from sklearn.decomposition import PCA

    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    c = max(1, min(n_comps, n - 1 if n > 1 else 1, d))
    centred = x - x.mean(axis=0, keepdims=True)
    if n < 2 or not float((centred * centred).sum()) > 0:  # nothing to decompose
        return np.zeros((n, c), dtype=np.float32), np.zeros(c)
    pca = PCA(n_components=c, svd_solver="full")
    pcs = pca.fit_transform(x)
    # Fix signs (largest |score| positive in each component) so that results do not flip
    # between LAPACK builds or scikit-learn versions.
    signs = np.sign(pcs[np.abs(pcs).argmax(axis=0), np.arange(pcs.shape[1])])
    signs[signs == 0] = 1
    pcs = pcs * signs[None, :]
    return pcs.astype(np.float32), np.asarray(pca.explained_variance_ratio_, dtype=np.float64)


def _annotate(adata, *, features: _DatasetFeatures | None, meta: Mapping | None,
              n_neighbors: int, seed: int, n_clusters: int | None) -> None:
    """Add statistics, truth, PCA, 2-D map and clusters to a genes x dims AnnData in place."""
    import pandas as pd

    genes = list(adata.obs_names)
    x = np.asarray(adata.X, dtype=np.float32)
    n = len(genes)
    if features is not None:
        pos = {g: i for i, g in enumerate(features.genes)}
        rows = np.array([pos.get(g, -1) for g in genes])
        ok = rows >= 0
        peak = features.peak_timepoint()
        for name, values in (("nnz_fraction", features.nnz_fraction), ("mean_expression",
                                                                       features.mean),
                             ("peak_timepoint", peak)):
            col = np.full(n, np.nan)
            col[ok] = values[rows[ok]]
            adata.obs[name] = col
        prof = np.full((n, len(features.timepoints)), np.nan, dtype=np.float32)
        prof[ok] = features.time_profile[rows[ok]]
        adata.obsm["time_profile"] = prof
        adata.uns["timepoints"] = np.asarray(features.timepoints, dtype=np.float64)
        adata.uns["dataset"] = str(features.dataset_dir)
    if meta:
        truth = _synthetic_programs(meta, genes)
        if truth is not None:
            adata.obs["program"] = pd.array(truth["program"], dtype="Int64")
            for key in ("program_kind", "program_name"):
                adata.obs[key] = pd.Categorical(
                    [str(v) if isinstance(v, str) else "unknown" for v in truth[key]])
    pcs, ratio = _pca(x, 50)
    adata.obsm["X_pca"] = pcs
    adata.uns["pca"] = {"variance_ratio": ratio.astype(np.float64)}
    if n >= 4:
        try:
            import umap
        except ImportError:
            umap = None
        if umap is not None:
            reducer = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, n - 1),
                                metric="cosine", random_state=seed)
            adata.obsm["X_umap"] = np.asarray(reducer.fit_transform(x), dtype=np.float32)
            adata.uns["map"] = {"method": "umap", "n_neighbors": int(min(n_neighbors, n - 1))}
        else:
            logger.info("umap-learn not installed (the 'analysis' extra): the gene map shows "
                        "the first two principal components")
            adata.uns["map"] = {"method": "pca",
                                "reason": "umap-learn not installed; X_umap holds PC1, PC2"}
    else:
        adata.uns["map"] = {"method": "pca", "reason": "fewer than 4 genes; X_umap holds PC1, PC2"}
    if "X_umap" not in adata.obsm:
        two = np.zeros((n, 2), dtype=np.float32)
        two[:, : min(2, pcs.shape[1])] = pcs[:, :2]
        adata.obsm["X_umap"] = two
    labels, desc = _cluster(x, n_neighbors=n_neighbors, seed=seed, n_clusters=n_clusters)
    cats = sorted(set(labels), key=lambda s: (len(s), s))
    adata.obs["cluster"] = pd.Categorical(labels, categories=cats)
    adata.uns["cluster"] = desc


def _new_adata(table: np.ndarray, genes: Sequence[str], kind: str):
    import anndata as ad
    import pandas as pd

    genes = [str(g) for g in genes]
    if len(set(genes)) != len(genes):
        dup = sorted({g for g in genes if genes.count(g) > 1})
        raise InputError(f"gene names are not unique: {', '.join(dup[:10])}")
    adata = ad.AnnData(np.asarray(table, dtype=np.float32), obs=pd.DataFrame(index=genes))
    adata.var_names = [f"{kind}{i}" for i in range(table.shape[1])]
    return adata


# ============================================================================ public API
def gene_embeddings(model_or_path, *, dataset=None, use_ema: bool = True, n_neighbors: int = 15,
                    seed: int = 0, n_clusters: int | None = None, progress: bool = True):
    """The learned gene-embedding table as an AnnData (genes x embedding dimensions).

    ``model_or_path``: a ``VideoGeneUNet``, a ``VideoGenePipeline`` or an export folder /
    training output_dir / Hub id (read with :func:`videogene.pipelines.load_pipeline`,
    ``use_ema`` picks EMA or raw weights). ``dataset``: the prepared dataset for statistics;
    default the one named by the export's ``training_config.yaml`` (``data.path``) when it is
    present on this machine.

    Writes:
    - ``X``: the embedding, ``obs_names`` the model's genes, ``var_names`` ``emb0 ...``
    - ``obs["nnz_fraction"]``, ``obs["mean_expression"]`` (tissue pixels, all slices),
      ``obs["peak_timepoint"]`` (time of highest mean expression), ``obsm["time_profile"]``
      (genes x ``uns["timepoints"]``), ``uns["dataset"]`` — when a dataset is available
    - ``obs["program"]``, ``obs["program_kind"]``: the true programs when the dataset (or the
      export's metadata) comes from the synthetic atlas
    - ``obsm["X_pca"]``, ``uns["pca"]["variance_ratio"]``
    - ``obsm["X_umap"]``: UMAP (cosine) with umap-learn, else the first two PCs;
      ``uns["map"]["method"]`` says which
    - ``obs["cluster"]``: Leiden on a cosine kNN graph with scanpy + leidenalg, else seeded
      k-means++ on unit vectors with k chosen by the cosine silhouette (or ``n_clusters``);
      ``uns["cluster"]`` says which
    """
    adata, _ = _learned_embeddings(model_or_path, dataset=dataset, use_ema=use_ema,
                                   n_neighbors=n_neighbors, seed=seed, n_clusters=n_clusters,
                                   keep_vectors=False, progress=progress)
    return adata


def _learned_embeddings(model_or_path, *, dataset, use_ema: bool, n_neighbors: int, seed: int,
                        n_clusters: int | None, keep_vectors: bool, progress: bool,
                        queries: Sequence[str] = (), max_k: int | None = None):
    """gene_embeddings + the dataset features it read (for the baseline, without a 2nd pass)."""
    import torch

    unet, pipe, source = _resolve_model(model_or_path, use_ema)
    with torch.no_grad():
        table = unet.gene_embeddings()
    table = table.detach().float().cpu().numpy() if hasattr(table, "detach") else np.asarray(table)
    names = getattr(unet.config, "gene_names", None)
    if names is None and pipe is not None and hasattr(pipe, "gene_names"):
        names = list(pipe.gene_names)  # the dataset vocabulary when the config has no names
    if names is None:
        names = [f"gene{i}" for i in range(table.shape[0])]
        logger.warning("the model has no gene_names; genes are called gene0, gene1, ...")
    if len(names) != table.shape[0]:
        raise InputError(f"model {source}: {len(names)} gene names but {table.shape[0]} "
                         "embedding rows")
    adata = _new_adata(table, names, "emb")
    for q in queries:  # fail before the (slow) dataset pass
        _match_gene(q, list(adata.obs_names), "the model's genes")
    if max_k is not None and max_k > len(names) - 1:
        raise InputError(f"--k {max_k}: the model has {len(names)} genes, so at most "
                         f"{len(names) - 1} neighbours per gene")
    meta = getattr(pipe, "meta", None) if pipe is not None else None
    if dataset is not None:
        dataset_dir = _check_dataset(dataset)
    elif pipe is not None:
        dataset_dir = _dataset_from_export(
            pipe, str(model_or_path) if isinstance(model_or_path, (str, os.PathLike)) else None)
    else:
        dataset_dir = None
    features = None
    if dataset_dir is not None:
        features = _DatasetFeatures(dataset_dir, list(adata.obs_names),
                                    keep_vectors=keep_vectors, progress=progress)
        meta = features.meta
    _annotate(adata, features=features, meta=meta, n_neighbors=n_neighbors, seed=seed,
              n_clusters=n_clusters)
    adata.uns["embedding"] = {"kind": "learned", "source": source,
                              "weights": "ema" if use_ema else "raw", "dim": int(table.shape[1])}
    return adata, features


def baseline_embedding(dataset_dir, *, n_components: int = 32, seed: int = 0,
                       n_neighbors: int = 15, n_clusters: int | None = None,
                       genes: Sequence[str] | None = None, progress: bool = True):
    """A model-free gene embedding: PCA of each gene's aligned expression, same annotation.

    Each gene becomes one vector: its log-expression at every tissue pixel of every slice of
    every non-held-out time point (``read_gene_canvases`` x ``masks.npy``), standardised per
    gene (mean 0, variance 1 — so that two genes are close when their patterns correlate,
    whatever their level; genes never expressed stay all-zero). The first ``n_components``
    principal components across genes are the embedding. Obs/obsm/uns as in
    :func:`gene_embeddings`, ``uns["embedding"]["kind"] == "baseline_pca"``.
    """
    feats = _DatasetFeatures(_check_dataset(dataset_dir), genes, keep_vectors=True,
                             progress=progress)
    return _baseline_from_features(feats, n_components=n_components, seed=seed,
                                   n_neighbors=n_neighbors, n_clusters=n_clusters)


def _baseline_from_features(feats: _DatasetFeatures, *, n_components: int, seed: int,
                            n_neighbors: int, n_clusters: int | None):
    v = feats.vectors.astype(np.float64)
    v -= v.mean(axis=1, keepdims=True)
    sd = v.std(axis=1, keepdims=True)
    v = np.divide(v, sd, out=np.zeros_like(v), where=sd > 0)
    pcs, ratio = _pca(v, n_components)
    adata = _new_adata(pcs, feats.genes, "pc")
    _annotate(adata, features=feats, meta=feats.meta, n_neighbors=n_neighbors, seed=seed,
              n_clusters=n_clusters)
    adata.uns["embedding"] = {"kind": "baseline_pca", "source": str(feats.dataset_dir),
                              "dim": int(pcs.shape[1]),
                              "variance_ratio_sum": float(ratio.sum()),
                              "preprocessing": "per-gene standardised tissue-pixel vectors"}
    return adata


def _match_gene(gene: str, genes: Sequence[str], what: str) -> int:
    pos = {g: i for i, g in enumerate(genes)}
    if gene in pos:
        return pos[gene]
    lower = {g.lower(): i for i, g in enumerate(genes)}
    if gene.lower() in lower:
        return lower[gene.lower()]
    close = difflib.get_close_matches(gene, list(genes), n=5, cutoff=0.6)
    hint = f"; close matches: {', '.join(close)}" if close else ""
    raise InputError(f"gene {gene!r} is not in {what} ({len(genes)} genes){hint}")


def neighbors(emb, gene: str, k: int = 10, *, use_rep: str | None = None):
    """The ``k`` genes most cosine-similar to ``gene`` (itself excluded), most similar first.

    ``emb``: an AnnData from :func:`gene_embeddings` / :func:`baseline_embedding` (``X``, or
    ``obsm[use_rep]``). Returns a DataFrame with columns ``rank``, ``gene``, ``similarity`` and
    ``cluster`` (when clustered). An unknown gene raises InputError listing close matches
    (names are matched exactly first, then case-insensitively).
    """
    import pandas as pd

    genes = [str(g) for g in emb.obs_names]
    i = _match_gene(gene, genes, "the embedding")
    x = np.asarray(emb.obsm[use_rep] if use_rep else emb.X, dtype=np.float64)
    if len(genes) < 2:
        raise InputError("neighbors: the embedding has fewer than 2 genes")
    k = max(1, min(int(k), len(genes) - 1))
    sim = scores.cosine_similarity(x[i : i + 1], x)[0]
    sim[i] = -np.inf
    order = np.argsort(-sim, kind="stable")[:k]
    out = pd.DataFrame({"rank": np.arange(1, k + 1), "gene": [genes[j] for j in order],
                        "similarity": sim[order]})
    if "cluster" in emb.obs:
        out["cluster"] = emb.obs["cluster"].astype(str).to_numpy()[order]
    return out


def enriched_celltype(adata_path, groupby: str = "celltype", *,
                      exclude: Iterable[str] = ("Low quality",), layer: str | None = None,
                      chunk_size: int = 20000) -> dict[str, str | None]:
    """For each gene of an annotated .h5ad, the group in which it is most enriched.

    Enrichment = mean expression in the group / mean expression over all kept cells (cells of
    the ``exclude`` groups are dropped first). Genes with no expression in the kept cells map
    to None. Reads the file in row chunks (``backed="r"``).
    """
    import anndata as ad
    import scipy.sparse as sp

    path = Path(adata_path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    a = ad.read_h5ad(path, backed="r")
    try:
        if groupby not in a.obs:
            raise InputError(f"{path}: obs has no column {groupby!r} "
                             f"(columns: {', '.join(map(str, a.obs.columns))})")
        groups = a.obs[groupby].astype(str).to_numpy()
        keep = ~np.isin(groups, list(exclude))
        cats = sorted(set(groups[keep]))
        if not cats:
            raise InputError(f"{path}: no cells left in obs[{groupby!r}] after excluding "
                             f"{list(exclude)}")
        gi = {c: j for j, c in enumerate(cats)}
        sums = np.zeros((len(cats), a.n_vars))
        counts = np.zeros(len(cats))
        for start in range(0, a.n_obs, chunk_size):
            stop = min(start + chunk_size, a.n_obs)
            sel = keep[start:stop]
            if not sel.any():
                continue
            block = a.layers[layer][start:stop] if layer else a.X[start:stop]
            block = block[sel]
            g = np.array([gi[c] for c in groups[start:stop][sel]])
            ind = sp.csr_matrix((np.ones(len(g)), (g, np.arange(len(g)))),
                                shape=(len(cats), len(g)))
            prod = ind @ block if sp.issparse(block) else ind @ np.asarray(block)
            sums += prod.toarray() if sp.issparse(prod) else np.asarray(prod)
            counts += np.bincount(g, minlength=len(cats))
        names = [str(v) for v in a.var_names]
    finally:
        if getattr(a, "file", None) is not None:
            a.file.close()
    group_mean = sums / np.maximum(counts, 1)[:, None]
    overall = sums.sum(axis=0) / max(counts.sum(), 1)
    ratio = np.divide(group_mean, overall[None, :], out=np.zeros_like(group_mean),
                      where=overall[None, :] > 0)
    best = ratio.argmax(axis=0)
    return {g: (cats[best[j]] if overall[j] > 0 else None) for j, g in enumerate(names)}


def score_embedding(emb, labels: Sequence, *, k: int = 10,
                    exclude: Iterable = UNINFORMATIVE_LABELS) -> dict:
    """ARI / NMI of ``obs["cluster"]`` and kNN precision (on ``X``) against ``labels``.

    Genes whose label is missing (None/NaN) are left out; genes with an ``exclude`` label
    are left out of the kNN precision (see :func:`videogene.tl.scores.knn_precision`) but not
    of ARI/NMI (a clustering should also put silent genes together).
    """
    lab = np.asarray(labels, dtype=object)
    known = np.array([v is not None and v == v for v in lab], dtype=bool)
    if known.sum() < 2:
        raise InputError(f"score_embedding: only {int(known.sum())} gene(s) have a label")
    lab_s = np.array([str(v) for v in lab], dtype=object)
    lab_s[~known] = None
    out: dict[str, Any] = {"n_genes": int(emb.n_obs), "n_labelled": int(known.sum()),
                           "n_labels": int(len(set(lab_s[known]))), "k": int(k)}
    if "cluster" in emb.obs:
        clusters = emb.obs["cluster"].astype(str).to_numpy()
        out["n_clusters"] = int(len(set(clusters)))
        out["ari"] = scores.adjusted_rand_index(lab_s[known].astype(str), clusters[known])
        out["nmi"] = scores.normalized_mutual_info(lab_s[known].astype(str), clusters[known])
    x = np.asarray(emb.X, dtype=np.float64)
    excl = [str(e) for e in exclude]
    out["knn_precision"] = scores.knn_precision(x, lab_s, k=k, exclude=excl)
    out["knn_precision_chance"] = scores.knn_precision_chance(lab_s, exclude=excl)
    out["excluded_labels"] = excl
    return out


# ============================================================================ the whole analysis
def _write_tsv(adata, path: Path) -> None:
    x = np.asarray(adata.X)
    with path.open("w") as fh:
        fh.write("gene\t" + "\t".join(map(str, adata.var_names)) + "\n")
        for g, row in zip(adata.obs_names, x, strict=True):
            fh.write(str(g) + "\t" + "\t".join(f"{v:.6g}" for v in row) + "\n")


def _labels_for(emb, labels: Mapping | None) -> tuple[list | None, str | None]:
    if labels is not None:
        return [labels.get(g) for g in emb.obs_names], "given"
    if "program" in emb.obs:
        prog = emb.obs["program"]
        return [None if prog.isna().iloc[i] else int(prog.iloc[i]) for i in range(emb.n_obs)], \
            "program"
    return None, None


def _exclude_for(emb, label_source: str | None) -> list:
    """Programs that are 'silent' in the synthetic atlas: uninformative for kNN precision."""
    if label_source == "program" and "program_kind" in emb.obs:
        kinds = emb.obs["program_kind"].astype(str).to_numpy()
        progs = emb.obs["program"]
        return sorted({str(int(p)) for p, kd in zip(progs, kinds, strict=True)
                       if kd in UNINFORMATIVE_LABELS and p is not None and p == p})
    return list(UNINFORMATIVE_LABELS)


def _auto_celltype_labels(meta: Mapping | None) -> tuple[dict | None, str | None]:
    """Enrichment labels from the dataset's source .h5ad files, when they carry ``celltype``."""
    if not meta:
        return None, None
    sources = sorted({s.get("source") for s in meta.get("slices", []) if s.get("source")})
    if len(sources) != 1 or not Path(sources[0]).is_file():
        return None, None
    try:
        import anndata as ad

        a = ad.read_h5ad(sources[0], backed="r")
        has = "celltype" in a.obs
        a.file.close()
        if not has:
            return None, None
        return enriched_celltype(sources[0]), f"enriched celltype ({sources[0]})"
    except (OSError, KeyError) as exc:
        logger.warning("could not read cell types from %s: %s", sources[0], exc)
        return None, None


def _score_note(scores: Mapping | None, labels, k: int) -> str | None:
    """One line under a gene map: kNN precision, ARI and NMI against ``labels``."""
    if not scores:
        return None
    parts = [f"kNN precision@{k} {scores['knn_precision']:.3f} (chance "
             f"{scores.get('knn_precision_chance', float('nan')):.3f})"]
    for key, name in (("ari", "ARI"), ("nmi", "NMI")):
        if scores.get(key) is not None:
            parts.append(f"{name} {scores[key]:.3f}")
    return f"against {labels}: " + ", ".join(parts)


def analyze_embeddings(model, out_dir, *, queries: Sequence[str] = (), dataset=None, k: int = 10,
                       use_ema: bool = True, seed: int = 0, labels: Mapping | None = None,
                       n_neighbors: int = 15, baseline_components: int = 32,
                       progress: bool = True) -> dict:
    """Export and analyse a model's gene embeddings; returns a summary dict.

    Writes into ``out_dir``: ``embeddings.h5ad`` (see :func:`gene_embeddings`),
    ``embeddings.tsv`` (gene + embedding columns), ``neighbors.tsv`` (query, rank, gene,
    similarity, cluster; when ``queries`` are given), ``gene_map.png`` (the 2-D map coloured
    by cluster, and by true program when known, queries labelled), ``cluster_time_heatmap.png``
    (clusters x time points, when a dataset is available) and ``scores.json``. With a dataset
    the model-free :func:`baseline_embedding` is computed too (``baseline_embeddings.h5ad``) and
    scored beside the learned one against the true programs (synthetic atlas), ``labels``
    (gene -> label), or the cell type each gene is most enriched in when the dataset's single
    source .h5ad has ``obs["celltype"]``.
    """
    from ..pl.embeddings import plot_cluster_time_heatmap, plot_gene_map

    out = check_output_dir(out_dir)
    if int(k) < 1:
        raise InputError(f"--k: must be >= 1, got {k}")
    emb, feats = _learned_embeddings(model, dataset=dataset, use_ema=use_ema,
                                     n_neighbors=n_neighbors, seed=seed, n_clusters=None,
                                     keep_vectors=True, progress=progress, queries=queries,
                                     max_k=int(k))
    out.mkdir(parents=True, exist_ok=True)
    genes = [str(g) for g in emb.obs_names]
    query_idx = [_match_gene(q, genes, "the model's genes") for q in queries]
    files: dict[str, str] = {}

    emb.write_h5ad(out / "embeddings.h5ad")
    files["embeddings_h5ad"] = str(out / "embeddings.h5ad")
    _write_tsv(emb, out / "embeddings.tsv")
    files["embeddings_tsv"] = str(out / "embeddings.tsv")
    neigh: dict[str, list[str]] = {}
    if query_idx:
        import pandas as pd

        frames = []
        for qi in query_idx:
            df = neighbors(emb, genes[qi], k=k)
            df.insert(0, "query", genes[qi])
            frames.append(df)
            neigh[genes[qi]] = df["gene"].tolist()
        pd.concat(frames).to_csv(out / "neighbors.tsv", sep="\t", index=False,
                                 float_format="%.4f")
        files["neighbors_tsv"] = str(out / "neighbors.tsv")
    query_names = [genes[i] for i in query_idx]
    if "time_profile" in emb.obsm:
        plot_cluster_time_heatmap(emb, out / "cluster_time_heatmap.png")
        files["cluster_time_heatmap_png"] = str(out / "cluster_time_heatmap.png")

    report: dict[str, Any] = {"n_genes": int(emb.n_obs), "dim": int(emb.n_vars),
                              "weights": "ema" if use_ema else "raw",
                              "map": dict(emb.uns["map"]), "cluster": dict(emb.uns["cluster"])}
    dataset_dir = emb.uns.get("dataset")
    base = None
    if feats is not None:
        base = _baseline_from_features(feats, n_components=baseline_components, seed=seed,
                                       n_neighbors=n_neighbors, n_clusters=None)
        base.write_h5ad(out / "baseline_embeddings.h5ad")
        files["baseline_h5ad"] = str(out / "baseline_embeddings.h5ad")
        report["dataset"] = dataset_dir
    lab, source = _labels_for(emb, labels)
    if lab is None and dataset_dir:
        from ..data import load_metadata

        auto, source = _auto_celltype_labels(load_metadata(dataset_dir))
        if auto is not None:
            lab = [auto.get(g) for g in genes]
    if lab is not None:
        excl = _exclude_for(emb, source)
        report["labels"] = source
        report["learned"] = score_embedding(emb, lab, k=k, exclude=excl)
        if base is not None:
            bpos = {g: i for i, g in enumerate(base.obs_names)}
            blab = [None] * base.n_obs
            for g, v in zip(genes, lab, strict=True):
                if g in bpos:
                    blab[bpos[g]] = v
            report["baseline"] = score_embedding(base, blab, k=k, exclude=excl)
    # the learned map first; both coloured the same way, each with its score underneath
    plot_gene_map(emb, out / "gene_map.png", highlight=query_names,
                  title=f"learned gene embedding ({emb.n_obs} genes)",
                  note=_score_note(report.get("learned"), report.get("labels"), k))
    files["gene_map_png"] = str(out / "gene_map.png")
    if base is not None:
        plot_gene_map(base, out / "baseline_gene_map.png", highlight=query_names,
                      title=f"baseline: PCA of expression ({base.n_obs} genes)",
                      note=_score_note(report.get("baseline"), report.get("labels"), k))
        files["baseline_gene_map_png"] = str(out / "baseline_gene_map.png")
    if neigh:
        report["neighbors"] = neigh
    (out / "scores.json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    files["scores_json"] = str(out / "scores.json")
    report["files"] = files
    report["out"] = str(out)
    return report


def _json_default(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)
