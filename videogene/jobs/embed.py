"""``analyze_embeddings``: a model's gene embeddings analysed and written to a folder.

What ``videogene embed`` and ``tools/analyze_embeddings.py`` run: the learned table
(:func:`videogene.tl.gene_embeddings`) and the data-only baseline
(:func:`videogene.tl.baseline_embedding`) from one pass over the dataset, neighbours of the
query genes, scores against the true programs or cell types, tables and maps.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..tl.embeddings import (
    UNINFORMATIVE_LABELS,
    _baseline_from_features,
    _learned_embeddings,
    _match_gene,
    enriched_celltype,
    neighbors,
    score_embedding,
)
from ..utils import check_output_dir, get_logger

__all__ = ["analyze_embeddings"]

logger = get_logger(__name__)


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
