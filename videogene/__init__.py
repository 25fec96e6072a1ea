"""videogene: conditional video diffusion models of spatiotemporal gene expression.

Sub-packages follow the pipeline: ``data`` (synthetic atlas, dataset stream), ``pp``
(AnnData -> rasters), ``models``, ``training``, ``pipelines``, ``tl`` (tools: embeddings,
evaluation; no files written), ``jobs`` (generate, evaluate, embed, demo: the report folders)
and ``pl`` (plots). Heavy imports happen lazily inside them.
"""

__version__ = "0.1.0"
