"""Building blocks of the VideoGeneUNet: factorized space-time layers and the per-level modules.

Every block works on frames folded into the batch, ``((b f), c, h, w)``; only the temporal
attention unfolds them (``(b f) c h w -> b (h w) f c``). All normalisation is per frame
(GroupNorm over ``c h w`` of one frame), so a frame's features never mix with other frames'
except through temporal attention, which masks absent frames as padded keys.

The UNet is a list of levels (diffusers-style): :class:`DownBlock` (its layers, then a
downsample), one :class:`MidBlock`, :class:`UpBlock` (coarsest first: its layers, each eating a
skip connection, then an upsample). Each level runs its :class:`SpaceTimeLayer` s under gradient
checkpointing when the model's ``enable_gradient_checkpointing`` turned it on.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..errors import InputError

ATTENTION_BACKENDS = ("sdpa", "xformers")


def sinusoidal_embedding(x: Tensor, dim: int, *, max_period: float = 10000.0) -> Tensor:
    """``(...,)`` float -> ``(..., dim)``: ``[cos | sin]`` of ``x`` at geometric frequencies
    ``1 ... 1/max_period``. Works for continuous inputs (diffusion time, developmental days)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period)
                      * torch.arange(half, device=x.device, dtype=torch.float32) / half)
    args = x.float()[..., None] * freqs  # (..., half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def num_groups(channels: int, groups: int) -> int:
    """Largest divisor of ``channels`` not above ``groups`` (GroupNorm needs a divisor)."""
    return max(g for g in range(1, min(groups, channels) + 1) if channels % g == 0)


def zero_module(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def mlp(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))


def load_xformers():
    """``xformers.ops``, imported only when the xformers backend is chosen."""
    try:
        import xformers.ops as xops
    except ImportError:
        raise InputError("attention_backend='xformers': xformers is not installed "
                         "(pip install xformers, or use attention_backend='sdpa')") from None
    return xops


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, backend: str = "sdpa") -> Tensor:
    """Multi-head attention. ``q, k, v``: ``(n, heads, L, d)``; ``mask``: bool, True = attend,
    broadcastable to ``(n, heads, Lq, Lk)``, or None. Returns ``(n, heads, Lq, d)``."""
    if backend == "xformers":
        xops = load_xformers()
        bias = None
        if mask is not None:
            n, heads, lq, lk = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
            # xformers wants a float bias whose last dim is allocated to a multiple of 8.
            pad = (lk + 7) // 8 * 8
            full = torch.zeros(n, heads, lq, pad, dtype=q.dtype, device=q.device)
            full[..., :lk].masked_fill_(~mask.expand(n, heads, lq, lk), float("-inf"))
            bias = full[..., :lk]
        out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                              attn_bias=bias)
        return out.transpose(1, 2)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class ResBlock(nn.Module):
    """Per-frame 2D residual block with adaptive GroupNorm (scale/shift from the embedding)."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, *, groups: int = 32,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(num_groups(in_channels, groups), in_channels, eps=1e-6)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, 2 * out_channels)
        self.norm2 = nn.GroupNorm(num_groups(out_channels, groups), out_channels, eps=1e-6,
                                  affine=False)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = (nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels
                     else nn.Identity())

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        # x: ((b f), c_in, h, w); emb: ((b f), d)
        h = self.conv1(F.silu(self.norm1(x)))  # ((b f), c, h, w)
        scale, shift = rearrange(self.emb_proj(F.silu(emb)), "n (two c) -> two n c 1 1", two=2)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """What the three attentions share: ``heads`` of ``head_dim`` channels, a per-frame
    GroupNorm of the input, the subclass's input projections (keyword arguments, registered
    under their names) and a zero-initialised output projection, so a fresh layer is the
    identity (``x + out(...)``)."""

    def __init__(self, channels: int, *, head_dim: int, groups: int, backend: str,
                 **projections: nn.Module) -> None:
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.backend = backend
        self.norm = nn.GroupNorm(num_groups(channels, groups), channels, eps=1e-6)
        for name, proj in projections.items():
            self.add_module(name, proj)
        self.out = zero_module(nn.Linear(channels, channels))

    def attend_pixels(self, x: Tensor, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        # x: ((b f), c, h, w); q: ((b f), heads, (h w), d); k, v: ((b f), heads, l, d)
        out = rearrange(attention(q, k, v, None, self.backend), "n heads l d -> n l (heads d)")
        return x + rearrange(self.out(out), "n (h w) c -> n c h w", h=x.shape[-2], w=x.shape[-1])


class SpatialAttention(Attention):
    """Self-attention over the ``h * w`` positions of each frame (coarse resolutions only)."""

    def __init__(self, channels: int, *, head_dim: int = 32, groups: int = 32,
                 backend: str = "sdpa") -> None:
        super().__init__(channels, head_dim=head_dim, groups=groups, backend=backend,
                         qkv=nn.Linear(channels, 3 * channels))

    def forward(self, x: Tensor) -> Tensor:
        pixels = rearrange(self.norm(x), "n c h w -> n (h w) c")
        q, k, v = rearrange(self.qkv(pixels), "n l (three heads d) -> three n heads l d", three=3,
                            heads=self.heads)
        return self.attend_pixels(x, q, k, v)


class CrossAttention(Attention):
    """Pixels of each frame attend to that frame's gene tokens: the gene says *what* it wants
    *where* (the adaptive norm only sets per-channel scale and shift, the same at every pixel)."""

    def __init__(self, channels: int, token_dim: int, *, head_dim: int = 32, groups: int = 32,
                 backend: str = "sdpa") -> None:
        super().__init__(channels, head_dim=head_dim, groups=groups, backend=backend,
                         q=nn.Linear(channels, channels), kv=nn.Linear(token_dim, 2 * channels))

    def forward(self, x: Tensor, tokens: Tensor) -> Tensor:
        # x: ((b f), c, h, w); tokens: ((b f), n, d)
        q = rearrange(self.q(rearrange(self.norm(x), "n c h w -> n (h w) c")),
                      "n l (heads d) -> n heads l d", heads=self.heads)
        k, v = rearrange(self.kv(tokens), "n t (two heads d) -> two n heads t d", two=2,
                         heads=self.heads)
        return self.attend_pixels(x, q, k, v)


class TemporalAttention(Attention):
    """Self-attention across frames at every pixel, with a learned absolute position signal
    from the (continuous) developmental-time embedding; absent frames are masked keys."""

    def __init__(self, channels: int, pos_dim: int, *, head_dim: int = 32, groups: int = 32,
                 backend: str = "sdpa") -> None:
        super().__init__(channels, head_dim=head_dim, groups=groups, backend=backend,
                         pos_proj=nn.Linear(pos_dim, channels), qkv=nn.Linear(channels, 3 * channels))

    def forward(self, x: Tensor, pos: Tensor, key_mask: Tensor | None, num_frames: int) -> Tensor:
        # x: ((b f), c, h, w); pos: ((b f), d); key_mask: (b, 1, 1, f) bool (True = present) | None
        h, w = x.shape[-2:]
        tokens = self.norm(x) + rearrange(self.pos_proj(pos), "n c -> n c 1 1")  # per-frame norm
        tokens = rearrange(tokens, "(b f) c h w -> b (h w) f c", f=num_frames)
        q, k, v = rearrange(self.qkv(tokens), "b n f (three heads d) -> three b (n heads) f d",
                            three=3, heads=self.heads)
        out = attention(q, k, v, key_mask, self.backend)  # (b, (h w heads), f, d)
        out = self.out(rearrange(out, "b (n heads) f d -> b n f (heads d)", heads=self.heads))
        return x + rearrange(out, "b (h w) f c -> (b f) c h w", h=h, w=w)


class SpaceTimeLayer(nn.Module):
    """ResBlock -> optional spatial attention -> optional cross-attention to the gene tokens ->
    optional temporal attention (the unit that gradient checkpointing wraps)."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, *,
                 spatial_attention: bool, temporal_attention: bool, head_dim: int, groups: int,
                 dropout: float, backend: str, cross_attention: bool = False) -> None:
        super().__init__()
        kw = dict(head_dim=head_dim, groups=groups, backend=backend)
        self.resnet = ResBlock(in_channels, out_channels, emb_dim, groups=groups, dropout=dropout)
        self.spatial = SpatialAttention(out_channels, **kw) if spatial_attention else None
        self.cross = CrossAttention(out_channels, emb_dim, **kw) if cross_attention else None
        self.temporal = TemporalAttention(out_channels, emb_dim, **kw) if temporal_attention else None

    def forward(self, x: Tensor, emb: Tensor, pos: Tensor, key_mask: Tensor | None,
                num_frames: int, tokens: Tensor | None = None) -> Tensor:
        x = self.resnet(x, emb)
        if self.spatial is not None:
            x = self.spatial(x)
        if self.cross is not None:
            x = self.cross(x, tokens)
        if self.temporal is not None:
            x = self.temporal(x, pos, key_mask, num_frames)
        return x


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Conditioning(NamedTuple):
    """What every :class:`SpaceTimeLayer` reads besides ``x``: ``layer(x, *cond)``."""

    emb: Tensor  # ((b f), d): diffusion time + gene + frame time, for the adaptive norms
    pos: Tensor  # ((b f), d): frame time, the temporal attention's position signal
    key_mask: Tensor | None  # (b, 1, 1, f) bool, True = present frame; None = all present
    num_frames: int
    tokens: Tensor | None  # ((b f), n, d) gene tokens for cross-attention


class LevelBlock(nn.Module):
    """Base of the per-level modules: ``layers`` (SpaceTimeLayers) run one by one, each under
    gradient checkpointing once ``enable_gradient_checkpointing`` set ``gradient_checkpointing``
    (diffusers sets it on every module that has the attribute)."""

    def __init__(self, layers: list[SpaceTimeLayer]) -> None:
        super().__init__()
        self.gradient_checkpointing = False
        self.layers = nn.ModuleList(layers)

    def run(self, layer: nn.Module, x: Tensor, cond: Conditioning) -> Tensor:
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            return self._gradient_checkpointing_func(layer, x, *cond)
        return layer(x, *cond)


class DownBlock(LevelBlock):
    """A level on the way down: its layers at the level's width, then (all but the coarsest
    level) a stride-2 downsample. Every layer's output and the downsampled map are skips."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, *, num_layers: int,
                 downsample: bool, **layer_kw) -> None:
        super().__init__([SpaceTimeLayer(in_channels if j == 0 else out_channels, out_channels,
                                         emb_dim, **layer_kw) for j in range(num_layers)])
        self.downsample = Downsample(out_channels) if downsample else None

    def forward(self, x: Tensor, cond: Conditioning) -> tuple[Tensor, list[Tensor]]:
        skips = []
        for layer in self.layers:
            x = self.run(layer, x, cond)  # ((b f), c, h, w)
            skips.append(x)
        if self.downsample is not None:
            x = self.downsample(x)  # ((b f), c, h / 2, w / 2)
            skips.append(x)
        return x, skips


class MidBlock(LevelBlock):
    """The coarsest resolution between the paths: a layer with spatial (and, with gene tokens,
    cross) attention, then a residual layer without attention."""

    def __init__(self, channels: int, emb_dim: int, *, cross_attention: bool, temporal_attention: bool,
                 **layer_kw) -> None:
        super().__init__([
            SpaceTimeLayer(channels, channels, emb_dim, spatial_attention=True,
                           cross_attention=cross_attention, temporal_attention=temporal_attention,
                           **layer_kw),
            SpaceTimeLayer(channels, channels, emb_dim, spatial_attention=False,
                           temporal_attention=False, **layer_kw),
        ])

    def forward(self, x: Tensor, cond: Conditioning) -> Tensor:
        for layer in self.layers:
            x = self.run(layer, x, cond)  # ((b f), c, h, w)
        return x


class UpBlock(LevelBlock):
    """A level on the way up: one layer per skip it eats (``skip_channels``, in the order they
    are popped), then (all but the finest level) a nearest-neighbour 2x upsample."""

    def __init__(self, in_channels: int, skip_channels: list[int], out_channels: int, emb_dim: int,
                 *, upsample: bool, **layer_kw) -> None:
        super().__init__([SpaceTimeLayer((in_channels if j == 0 else out_channels) + skip,
                                         out_channels, emb_dim, **layer_kw)
                          for j, skip in enumerate(skip_channels)])
        self.upsample = Upsample(out_channels) if upsample else None

    def forward(self, x: Tensor, skips: list[Tensor], cond: Conditioning) -> Tensor:
        # skips: the down path's outputs, finest first; this level pops its own off the end
        for layer in self.layers:
            x = self.run(layer, torch.cat([x, skips.pop()], dim=1), cond)  # ((b f), c, h, w)
        if self.upsample is not None:
            x = self.upsample(x)  # ((b f), c, 2 h, 2 w)
        return x
