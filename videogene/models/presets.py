"""Model size presets, parameter counts and FLOP estimates.

``MODEL_PRESETS[name]`` holds the ``VideoGeneUNet`` config kwargs except ``num_genes``,
``sample_size`` and ``gene_names`` (which come from the dataset; training also passes the
dataset's ``frame_time_range``). It is the single source: ``configs/<name>.yaml`` only names the
preset (``model: {preset: <name>}``) plus the fields a run changes, so editing a preset here
changes what every config builds.

Every preset turns on the gene-identity and in-filling paths (docs/training.md, "Results log:
the model learns genes"): canvas coordinates as input channels, 4 gene tokens for
cross-attention at the spatial-attention levels, the smooth (Fourier) frame-time embedding and
context channels. A bare ``VideoGeneUNet(...)`` config leaves them off (the original
architecture), which is how exports written before them load.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import InputError
from .unet_videogene import VideoGeneUNet

# the gene-identity, smooth-time and in-filling inputs, the same in every preset
_CONDITIONING = dict(coord_channels=True, gene_tokens=4, frame_time_embedding="fourier",
                     frame_time_frequencies=2, context_channels=True)

MODEL_PRESETS: dict[str, dict] = {
    # milliseconds on CPU at 4 frames x 16x16: tests and smoke runs. One head of 16 channels at
    # the 16-channel level: torch's CPU attention kernel runs two heads of 8 at a third of the
    # speed, same parameters and FLOPs (docs/training.md, "One attention head of 16 channels")
    "tiny": dict(block_out_channels=(8, 16), layers_per_block=1, spatial_attention=(False, True),
                 attention_head_dim=16, norm_num_groups=4, gene_embed_dim=8, embed_dim=32,
                 **_CONDITIONING),
    # a few M parameters: CPU experiments, small atlases
    "small": dict(block_out_channels=(32, 64, 128), layers_per_block=1,
                  spatial_attention=(False, False, True), attention_head_dim=32, norm_num_groups=16,
                  gene_embed_dim=64, embed_dim=128, **_CONDITIONING),
    # ~50M: one GPU, 64x64 canvases
    "base": dict(block_out_channels=(64, 128, 256, 384), layers_per_block=2,
                 spatial_attention=(False, False, True, True), attention_head_dim=64,
                 norm_num_groups=32, gene_embed_dim=128, embed_dim=256, **_CONDITIONING),
    # ~200M: large atlases, 64-128 px canvases
    "large": dict(block_out_channels=(128, 256, 512, 768), layers_per_block=2,
                  spatial_attention=(False, False, True, True), attention_head_dim=64,
                  norm_num_groups=32, gene_embed_dim=256, embed_dim=512, **_CONDITIONING),
}


def preset_config(name: str, **overrides) -> dict:
    """A copy of ``MODEL_PRESETS[name]`` updated with ``overrides``."""
    if name not in MODEL_PRESETS:
        raise InputError(f"model preset {name!r}: unknown, choose from {sorted(MODEL_PRESETS)}")
    return {**copy.deepcopy(MODEL_PRESETS[name]), **overrides}


def model_from_preset(name: str, num_genes: int, sample_size: int = 64, **overrides) -> VideoGeneUNet:
    """Build a ``VideoGeneUNet`` from a preset; ``overrides`` replace any config kwarg
    (e.g. ``gene_names=[...]``, ``dropout=0.1``, ``attention_backend="xformers"``)."""
    return VideoGeneUNet(num_genes=num_genes, sample_size=sample_size,
                         **preset_config(name, **overrides))


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (works on meta-device models too)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def preset_parameter_count(name: str, num_genes: int = 1000, sample_size: int = 64, **overrides) -> int:
    """Parameter count of a preset, built on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        model = model_from_preset(name, num_genes, sample_size, **overrides)
    return count_parameters(model)


def estimate_flops(model: VideoGeneUNet, num_frames: int, sample_size: int | None = None) -> int:
    """Forward FLOPs for one example (``num_frames`` frames of ``sample_size``^2, default
    ``config.sample_size``), counted by ``torch.utils.flop_counter.FlopCounterMode`` on a
    meta-device copy of the model (convolutions, matmuls, attention; one multiply-add = 2 FLOPs).
    A training step costs about 3x this (forward + backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = model.config
    side = int(sample_size or cfg.sample_size)
    with torch.device("meta"):
        meta = VideoGeneUNet.from_config(dict(cfg))
        sample = torch.zeros(1, cfg.in_channels, num_frames, side, side)
        gene_ids = torch.zeros(1, dtype=torch.long)
        frame_times = torch.zeros(1, num_frames)
        timestep = torch.zeros(1)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta(sample, timestep, gene_ids, frame_times)
    return int(counter.get_total_flops())
