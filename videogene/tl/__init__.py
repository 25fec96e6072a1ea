"""videogene.tl: tools on trained models — gene embeddings, scores and evaluation.

Names are imported lazily so that ``import videogene.tl`` stays cheap.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "gene_embeddings": "embeddings",
    "neighbors": "embeddings",
    "baseline_embedding": "embeddings",
    "analyze_embeddings": "embeddings",
    "enriched_celltype": "embeddings",
    "adjusted_rand_index": "scores",
    "normalized_mutual_info": "scores",
    "knn_precision": "scores",
    "evaluate_model": "evaluate",
    "score_frames": "evaluate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
