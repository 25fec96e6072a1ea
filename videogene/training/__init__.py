"""videogene.training: the library behind the root ``train.py``.

- ``config``: :class:`TrainConfig` and :func:`load_config` (YAML + dotted ``key=value`` overrides)
- ``diffusion``: noise schedule, min-SNR weights, masked loss, the per-step generator
- ``optim``: AdamW and the warm-up + cosine schedule
- ``stream``: the per-rank data stream with exact skipping on resume
- ``checkpointing``: checkpoint/export folders, pruning, ``export-latest``
- ``validation``: fixed-noise denoising loss and sampled image grids
- ``hub``: model card rendering and Hub upload

See docs/training.md.
"""

from .config import TrainConfig, config_to_dict, load_config, save_config

__all__ = ["TrainConfig", "config_to_dict", "load_config", "save_config"]
