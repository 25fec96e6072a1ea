"""videogene.pipelines: sampling trajectories from a trained model, export and loading.

- :class:`VideoGenePipeline` / :class:`VideoGenePipelineOutput`: the diffusers pipeline.
- :func:`export_pipeline` / :func:`load_pipeline`: the export folder of docs/design.md §5.
- :func:`resolve_pipeline`: what every "model or path" argument goes through (a loaded
  pipeline, an export folder, a training output_dir or a Hub id -> ``(pipe, name)``).
- :data:`SAMPLERS`, :data:`DEFAULT_SAMPLER`, :data:`DEFAULT_INFILL_SAMPLER`,
  :data:`DEFAULT_GUIDANCE`, :data:`DEFAULT_INFILL_GUIDANCE`: the sampler registry and sampling
  defaults
  (:mod:`videogene.pipelines.samplers`, no diffusers import).

Writing trajectories to a folder (``videogene generate``) is a job:
:func:`videogene.jobs.generate_trajectories`.

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
    "resolve_pipeline": ".loading",
    "SAMPLERS": ".samplers",
    "DEFAULT_SAMPLER": ".samplers",
    "DEFAULT_INFILL_SAMPLER": ".samplers",
    "DEFAULT_GUIDANCE": ".samplers",
    "DEFAULT_INFILL_GUIDANCE": ".samplers",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
