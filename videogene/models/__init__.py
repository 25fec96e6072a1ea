"""videogene.models: the VideoGeneUNet and its presets."""

from .presets import (
    MODEL_PRESETS,
    count_parameters,
    estimate_flops,
    model_from_preset,
    preset_config,
    preset_parameter_count,
)
from .unet_videogene import VideoGeneUNet, VideoGeneUNetOutput, expand_frame_times

__all__ = [
    "MODEL_PRESETS",
    "VideoGeneUNet",
    "VideoGeneUNetOutput",
    "count_parameters",
    "estimate_flops",
    "expand_frame_times",
    "model_from_preset",
    "preset_config",
    "preset_parameter_count",
]
