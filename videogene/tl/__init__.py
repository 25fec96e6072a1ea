"""videogene.tl: tools, scanpy-style — arrays, AnnData or a model in, results out, no files.

Gene embeddings (:mod:`.embeddings`, :mod:`.clustering`, :mod:`.scores`) and the held-out
evaluation (:mod:`.heldout`: the protocol; :mod:`.baselines`, :mod:`.metrics`; :mod:`.evaluate`:
scoring and summaries). The jobs that write report folders are in :mod:`videogene.jobs`.
Names are imported lazily so that ``import videogene.tl`` stays cheap.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "gene_embeddings": ".embeddings",
    "neighbors": ".embeddings",
    "baseline_embedding": ".embeddings",
    "enriched_celltype": ".embeddings",
    "score_embedding": ".embeddings",
    "kmeans": ".clustering",
    "adjusted_rand_index": ".scores",
    "normalized_mutual_info": ".scores",
    "knn_precision": ".scores",
    "score_frames": ".metrics",
    "heldout_frames": ".heldout",
    "gene_sets": ".heldout",
    "compute_baselines": ".baselines",
    "score_methods": ".evaluate",
    "summarize_methods": ".evaluate",
    "summarize_gene_sets": ".evaluate",
    "headline": ".evaluate",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
