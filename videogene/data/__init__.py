"""videogene.data: the synthetic atlas, dataset preparation and the training stream.

Imports are lazy so that ``import videogene.data.synthetic`` stays light:
``prepare_dataset`` (.prepare), ``GeneVideoDataset``, ``load_metadata``, ``load_masks``,
``read_gene_canvases`` (.stream).
"""

from __future__ import annotations

import importlib

_LAZY = {
    "prepare_dataset": ".prepare",
    "GeneVideoDataset": ".stream",
    "load_metadata": ".stream",
    "load_masks": ".stream",
    "read_gene_canvases": ".stream",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
