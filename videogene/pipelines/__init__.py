"""videogene.pipelines: sampling trajectories from a trained model, export and loading.

- :class:`VideoGenePipeline` / :class:`VideoGenePipelineOutput`: the diffusers pipeline.
- :func:`export_pipeline` / :func:`load_pipeline`: the export folder of docs/design.md §5.
- :func:`generate_trajectories`: sample, save (npz, h5ad) and plot (PNG grid, GIF per gene).
- :data:`SAMPLERS`, :data:`DEFAULT_SAMPLER`, :data:`DEFAULT_GUIDANCE`: the sampler registry and
  sampling defaults (:mod:`videogene.pipelines.samplers`, no diffusers import).

Imports are lazy so that ``import videogene.pipelines`` stays cheap.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "VideoGenePipeline": ".pipeline_videogene",
    "VideoGenePipelineOutput": ".pipeline_videogene",
    "trajectories_to_anndata": ".pipeline_videogene",
    "export_pipeline": ".loading",
    "load_pipeline": ".loading",
    "resolve_export": ".loading",
    "generate_trajectories": ".generate",
    "SAMPLERS": ".samplers",
    "DEFAULT_SAMPLER": ".samplers",
    "DEFAULT_GUIDANCE": ".samplers",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
