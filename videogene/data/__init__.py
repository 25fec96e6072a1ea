"""videogene.data: the synthetic atlas, dataset preparation and the training stream.

Imports are lazy so that ``import videogene.data.synthetic`` stays light:
``prepare_dataset`` (.prepare), ``GeneVideoDataset``, ``load_metadata``, ``load_masks``,
``read_gene_canvases``, ``stored_slices`` (.stream); the expression <-> model-units mapping
``to_model_units``, ``to_expression``, ``gene_scales``, ``model_units``, ``require_meta_field``
(.units).
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY = {
    "prepare_dataset": ".prepare",
    "GeneVideoDataset": ".stream",
    "load_metadata": ".stream",
    "load_masks": ".stream",
    "read_gene_canvases": ".stream",
    "stored_slices": ".stream",
    "to_model_units": ".units",
    "to_expression": ".units",
    "gene_scales": ".units",
    "model_units": ".units",
    "require_meta_field": ".units",
}

__all__ = list(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
