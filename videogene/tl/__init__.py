"""videogene.tl: tools on trained models — gene embeddings, scores and evaluation.

Names are imported lazily so that ``import videogene.tl`` stays cheap.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "gene_embeddings": ".embeddings",
    "neighbors": ".embeddings",
    "baseline_embedding": ".embeddings",
    "analyze_embeddings": ".embeddings",
    "enriched_celltype": ".embeddings",
    "adjusted_rand_index": ".scores",
    "normalized_mutual_info": ".scores",
    "knn_precision": ".scores",
    "evaluate_model": ".evaluate",
    "score_frames": ".evaluate",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
