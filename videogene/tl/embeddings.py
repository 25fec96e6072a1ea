"""Gene embeddings: the learned table and a data-only baseline as AnnData, neighbours, scores.

- :func:`gene_embeddings` turns a trained model's gene-embedding table into an AnnData (genes
  as rows) annotated with data statistics, PCA, a 2-D map and clusters
  (:mod:`videogene.tl.clustering`).
- :func:`baseline_embedding` gives the same treatment to a model-free embedding: PCA of each
  gene's aligned expression over all slices and time points of a prepared dataset.
- :func:`neighbors` lists the most cosine-similar genes of a gene.
- :func:`enriched_celltype` labels each gene of an annotated .h5ad with the cell type in which
  it is most enriched (for real data, where no true gene programs exist).
- :func:`score_embedding` scores an embedding's clusters and neighbours against labels.

The job that does all of it and writes files (``videogene embed``) is
:func:`videogene.jobs.embed.analyze_embeddings`.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.features import PatternVectors, pca
from ..errors import InputError
from ..utils import get_logger
from . import scores
from .clustering import _cluster

logger = get_logger("videogene.tl.embeddings")

__all__ = [
    "gene_embeddings",
    "baseline_embedding",
    "neighbors",
    "enriched_celltype",
    "score_embedding",
]

# Labels that carry no information about a gene's pattern: not scored by kNN precision.
UNINFORMATIVE_LABELS = ("silent",)


# ============================================================================ model / dataset
def _resolve_model(model_or_path, use_ema: bool) -> tuple[Any, Any, str]:
    """(unet, pipeline or None, name): a bare ``VideoGeneUNet`` as it is, anything else through
    :func:`videogene.pipelines.resolve_pipeline` (a path or Hub id is loaded on the CPU)."""
    if hasattr(model_or_path, "gene_embeddings") and not hasattr(model_or_path, "unet"):
        return model_or_path, None, type(model_or_path).__name__
    from ..pipelines.loading import resolve_pipeline

    pipe, name = resolve_pipeline(model_or_path, use_ema=use_ema, device="cpu")
    return pipe.unet, pipe, name


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
    from ..data.meta import META_NAME
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
                 keep_vectors: bool = False, train_cfg: Mapping | None = None,
                 export_meta: Mapping | None = None, progress: bool = True):
        from ..data import load_masks, load_metadata, read_gene_canvases, stored_slices

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
        # Pattern vectors leave out what training never saw (the dataset's hold-out, and the
        # model's export meta and training config when given): the model's view of the data.
        self.holdout = self.meta.holdout_spec(train_cfg, export_meta)
        n_tissue = masks.reshape(masks.shape[0], -1).sum(axis=1)
        t_index = {t: i for i, t in enumerate(self.timepoints)}
        slice_ti = np.array([t_index[float(t)] for t in slice_t])
        ng, nt = len(self.genes), len(self.timepoints)
        self.nnz_fraction = np.zeros(ng)
        self.mean = np.zeros(ng)
        self.time_profile = np.zeros((ng, nt))
        self.vectors = (PatternVectors(self.meta, masks, self.genes,
                                       heldout_timepoints=self.holdout.get("timepoints", ()),
                                       heldout_frames=self.holdout.get("frames", ()))
                        if keep_vectors else None)
        stored = stored_slices(self.dataset_dir, genes=self.genes)
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
            on = stored[gene]  # (n_slices,) slices without the gene are no observation
            tissue = np.where(masks & on[:, None, None], canvas, 0.0)
            per_slice_sum = tissue.reshape(tissue.shape[0], -1).sum(axis=1)
            total_tissue = max(int(n_tissue[on].sum()), 1)
            self.nnz_fraction[i] = float((tissue > 0).sum()) / total_tissue
            self.mean[i] = float(per_slice_sum.sum()) / total_tissue
            for ti in range(nt):
                sel = (slice_ti == ti) & on
                denom = n_tissue[sel].sum()
                self.time_profile[i, ti] = per_slice_sum[sel].sum() / denom if denom else np.nan
            if self.vectors is not None:
                self.vectors.add(gene, canvas, on)

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


# ============================================================================ annotation
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
    pcs, ratio = pca(x, 50)
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
    training output_dir / Hub id (read with :func:`videogene.pipelines.resolve_pipeline`,
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
        from ..pipelines.loading import read_training_config

        train_cfg = (read_training_config(getattr(pipe, "source_dir", None))
                     if pipe is not None else None)
        features = _DatasetFeatures(dataset_dir, list(adata.obs_names), train_cfg=train_cfg,
                                    export_meta=meta, keep_vectors=keep_vectors,
                                    progress=progress)
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
    whatever their level; genes never expressed stay all-zero; where the gene was not observed,
    its held-out frames and slices that do not store it, it holds 0:
    :class:`videogene.data.features.PatternVectors`). The first ``n_components``
    principal components across genes are the embedding. Obs/obsm/uns as in
    :func:`gene_embeddings`, ``uns["embedding"]["kind"] == "baseline_pca"``.
    """
    feats = _DatasetFeatures(_check_dataset(dataset_dir), genes, keep_vectors=True,
                             progress=progress)
    return _baseline_from_features(feats, n_components=n_components, seed=seed,
                                   n_neighbors=n_neighbors, n_clusters=n_clusters)


def _baseline_from_features(feats: _DatasetFeatures, *, n_components: int, seed: int,
                            n_neighbors: int, n_clusters: int | None):
    pcs, ratio = pca(feats.vectors.x, n_components)  # rows: standardised pattern vectors
    adata = _new_adata(pcs, feats.genes, "pc")
    _annotate(adata, features=feats, meta=feats.meta, n_neighbors=n_neighbors, seed=seed,
              n_clusters=n_clusters)
    adata.uns["embedding"] = {"kind": "baseline_pca", "source": str(feats.dataset_dir),
                              "dim": int(pcs.shape[1]),
                              "variance_ratio_sum": float(ratio.sum()),
                              "preprocessing": "per-gene standardised tissue-pixel vectors"
                              + (", randomly projected" if feats.vectors.sketched else ""),
                              "holdout": feats.holdout}
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


def __getattr__(name: str):
    # the file-writing job moved to videogene.jobs.embed; the old path keeps working for scripts
    if name == "analyze_embeddings":
        from ..jobs.embed import analyze_embeddings

        return analyze_embeddings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
