"""Loading exports of the older flat module layout (videogene <= 883c349) into the per-level one
of :class:`~videogene.models.VideoGeneUNet` (docs/design.md section 4)."""

from __future__ import annotations

import re

from ..errors import InputError

# Exports written before the per-level modules (videogene <= 883c349) name layers by their place
# in flat lists: down_layers.7, downsamplers.1, mid_layers.0, up_layers.4, upsamplers.0.
_LEGACY_KEY = re.compile(r"(down_layers|downsamplers|mid_layers|up_layers|upsamplers)\.(\d+)\.(.+)")


def legacy_key(name: str, index: int, levels: int, layers_per_block: int) -> str | None:
    """Per-level path of entry ``index`` of the old flat list ``name`` (None: no such entry)."""
    n = layers_per_block + (name == "up_layers")  # layers per level (one more on the way up)
    size, path = {"down_layers": (levels * n, f"down_blocks.{index // n}.layers.{index % n}"),
                  "downsamplers": (levels - 1, f"down_blocks.{index}.downsample"),
                  "mid_layers": (2, f"mid_block.layers.{index}"),
                  "up_layers": (levels * n, f"up_blocks.{index // n}.layers.{index % n}"),
                  "upsamplers": (levels - 1, f"up_blocks.{index}.upsample")}[name]
    return path if index < size else None


def remap_legacy_keys(state_dict, block_out_channels, layers_per_block: int, *, prefix: str = "") -> int:
    """Rename, in place, the old positional keys under ``prefix`` (``down_layers.7.resnet...``)
    to the per-level ones (``down_blocks.3.layers.1.resnet...``); returns how many were renamed.
    An old key this config has no place for raises :class:`InputError` (one line)."""
    levels, renamed = len(block_out_channels), {}
    for key in list(state_dict):
        m = _LEGACY_KEY.fullmatch(key[len(prefix):]) if key.startswith(prefix) else None
        if m is None:
            continue
        new = legacy_key(m[1], int(m[2]), levels, int(layers_per_block))
        if new is None:
            raise InputError(f"state dict key {key!r}: the old layout of this model config "
                             f"({levels} levels, layers_per_block={layers_per_block}) has no "
                             f"{m[1]}.{m[2]}; the weights belong to another config")
        renamed[key] = f"{prefix}{new}.{m[3]}"
    if clash := set(renamed.values()) & set(state_dict):
        raise InputError(f"state dict key {min(clash)!r}: also present in the old positional "
                         "layout; the state dict mixes two layouts")
    for old, new in renamed.items():
        state_dict[new] = state_dict.pop(old)
    return len(renamed)
