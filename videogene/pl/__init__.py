"""videogene.pl: plots (matplotlib, Agg backend), imported lazily.

- ``plot_atlas_preview``: genes x time points of an atlas (``videogene synth``)
- ``plot_trajectory_grid``, ``save_trajectory_gif``: generated trajectories
- ``plot_gene_scatter``, ``plot_example_frames``: held-out evaluation
- ``plot_gene_map``, ``plot_cluster_time_heatmap``: gene embeddings
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "plot_atlas_preview": ".atlas",
    "plot_trajectory_grid": ".trajectories",
    "save_trajectory_gif": ".trajectories",
    "plot_gene_scatter": ".evaluation",
    "plot_example_frames": ".evaluation",
    "plot_gene_map": ".embeddings",
    "plot_cluster_time_heatmap": ".embeddings",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
