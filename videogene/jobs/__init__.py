"""videogene.jobs: the jobs that write report folders, one per command that produces files.

- :func:`generate_trajectories` (``videogene generate``, :mod:`.generate`): sample
  trajectories, save them (npz, h5ad) and draw them (PNG grid, GIF per gene);
- :func:`evaluate_model` (``videogene evaluate``, :mod:`.evaluate`): the held-out evaluation,
  ``metrics.json``, ``train_frames.json``, ``report.md`` and plots;
- :func:`analyze_embeddings` (``videogene embed``, :mod:`.embed`): gene-embedding tables,
  neighbours, scores and maps;
- :func:`run_main_job` (``videogene demo``, :mod:`.demo`): every step end to end, with
  ``index.html``.

They take a model or a path (:func:`videogene.pipelines.resolve_pipeline`) and an output
folder, and are built from the pure tools of :mod:`videogene.tl` (arrays and AnnData in,
results out) and the plots of :mod:`videogene.pl`. Imports are lazy so that
``import videogene.jobs`` stays cheap.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "generate_trajectories": ".generate",
    "evaluate_model": ".evaluate",
    "analyze_embeddings": ".embed",
    "run_main_job": ".demo",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
