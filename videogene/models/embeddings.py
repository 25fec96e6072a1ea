"""Conditioning inputs of the VideoGeneUNet: frame-time embeddings, canvas coordinates, gene tokens.

- :class:`FrameTimeEmbedding`: developmental day -> ``(..., d)``. ``"sinusoidal"`` is the
  original (days x ``frame_time_scale`` at geometric frequencies up to 1 per unit: a day
  between two sampled ones is an input never seen); ``"fourier"`` normalises the day to the
  dataset's range ``[first, last] -> [0, 1]`` and uses only low frequencies (``t`` and
  ``sin/cos(pi k t)``, ``k = 1 .. n``), so the embedding of a day between two sampled ones
  lies between theirs.
- :func:`coordinate_grid`: ``(2, h, w)`` canvas coordinates in [-1, 1] (input channels, so
  every layer can know where it is).
- :class:`GeneTokens`: the gene embedding projected to a few tokens that pixels attend to
  (cross-attention), with the frame's time added so a token can ask for different things
  at different days.
- :func:`interpolate_context`: every frame's time-linear interpolation of the given context
  frames around it (an input channel for in-filling: the network starts from the linear
  estimate and learns the correction).
- :func:`fill_outside_tissue`: context frames filled outside their own tissue from the tissue's
  edge, ring by ring (a day's tissue reaches past its neighbours', and the temporal attention
  reads the context pixel by pixel).
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor, nn

from ..errors import InputError
from .blocks import mlp, sinusoidal_embedding

FRAME_TIME_EMBEDDINGS = ("sinusoidal", "fourier")


class FrameTimeEmbedding(nn.Sequential):
    """Developmental days ``(...,)`` -> ``(..., out_dim)``: an MLP over fixed features. A
    Sequential, so its weights keep the names of the original ``mlp`` (old exports load)."""

    def __init__(self, kind: str, out_dim: int, *, width: int, scale: float = 10.0,
                 time_range: tuple[float, float] | None = None, frequencies: int = 2) -> None:
        if kind not in FRAME_TIME_EMBEDDINGS:
            raise InputError(f"frame_time_embedding: {kind!r} is not one of {FRAME_TIME_EMBEDDINGS}")
        if kind == "fourier" and frequencies < 1:
            raise InputError(f"frame_time_frequencies: must be >= 1, got {frequencies}")
        # without a range (a model built outside training): days / 10, smooth over ~10 days
        lo, hi = (float(time_range[0]), float(time_range[1])) if time_range else (0.0, 10.0)
        if not hi > lo:
            raise InputError(f"frame_time_range: expected (first, last) with last > first, got "
                             f"{time_range}")
        in_dim = int(width) if kind == "sinusoidal" else 1 + 2 * int(frequencies)
        super().__init__(*mlp(in_dim, out_dim))
        self.kind, self.width, self.scale = kind, int(width), float(scale)
        self.lo, self.span, self.frequencies = lo, hi - lo, int(frequencies)

    def features(self, days: Tensor) -> Tensor:
        if self.kind == "sinusoidal":
            return sinusoidal_embedding(days.float() * self.scale, self.width)
        t = (days.float() - self.lo) / self.span  # (...,) 0 at the first day, 1 at the last
        k = torch.arange(1, self.frequencies + 1, device=days.device, dtype=torch.float32)
        arg = math.pi * t[..., None] * k  # (..., n)
        return torch.cat([t[..., None], torch.sin(arg), torch.cos(arg)], dim=-1)

    def forward(self, days: Tensor, dtype: torch.dtype) -> Tensor:
        return super().forward(self.features(days).to(dtype))


def coordinate_grid(h: int, w: int, *, device=None, dtype=torch.float32) -> Tensor:
    """``(2, h, w)``: row (y) and column (x) position of each pixel centre, in [-1, 1]."""
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w * 2 - 1
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"))
    return grid.to(dtype)


def interpolate_context(context: Tensor, context_mask: Tensor, frame_times: Tensor) -> Tensor:
    """Each frame's linear interpolation in developmental time of the given context frames.

    ``context`` ``(b, c, f, h, w)``, ``context_mask`` ``(b, f)`` bool, ``frame_times`` ``(b, f)``
    days. A frame between two given frames gets their time-linear mix (a given frame: itself);
    before the first or after the last given frame: the nearest given frame; an example with
    nothing given: zeros. Frames need not be sorted by time.
    """
    given = context_mask.to(torch.bool)[:, None, :]  # (b, 1, f_src)
    t = frame_times.to(torch.float32)
    dt = t[:, None, :] - t[:, :, None]  # (b, f_dst, f_src): source time minus target time
    inf = torch.tensor(float("inf"), device=dt.device)
    before = torch.where(given & (dt <= 0), -dt, inf)  # distance back to each earlier source
    after = torch.where(given & (dt >= 0), dt, inf)
    d_prev, i_prev = before.min(dim=-1)  # (b, f_dst)
    d_next, i_next = after.min(dim=-1)
    has_prev, has_next = torch.isfinite(d_prev), torch.isfinite(d_next)
    both = has_prev & has_next
    span = torch.where(both, d_prev + d_next, torch.ones_like(d_prev))
    lam = torch.where(both & (span > 0), d_prev / span.clamp_min(1e-12), torch.zeros_like(d_prev))
    w_prev = torch.where(has_prev, 1 - lam, torch.zeros_like(lam))
    w_next = torch.where(both, lam, has_next.to(lam.dtype))
    f = context.shape[2]
    weights = (nn.functional.one_hot(i_prev, f) * w_prev[..., None]
               + nn.functional.one_hot(i_next, f) * w_next[..., None])  # (b, f_dst, f_src)
    return torch.einsum("bij,bcjhw->bcihw", weights.to(context.dtype), context)


def fill_outside_tissue(frames: Tensor, tissue_mask: Tensor, *, rings: int | None = None) -> Tensor:
    """``frames`` ``(b, c, f, h, w)`` with every pixel outside its frame's tissue filled from the
    tissue, ring by ring: each ring's pixels take the mean of their already-filled 3x3 neighbours.

    ``tissue_mask`` ``(b, 1, f, h, w)`` 0/1. ``rings`` None: ``max(h, w) // 4`` (pixels farther
    from a frame's tissue keep their value; aligned sections overlap far more). A frame without
    tissue is returned unchanged. Without it a context day reads as "not expressed" wherever the
    day being generated has tissue that the context day lacks.
    """
    b, c, f, h, w = frames.shape
    x = rearrange(frames, "b c f h w -> (b f) c h w")
    known = rearrange(tissue_mask > 0.5, "b one f h w -> (b f) one h w").to(x.dtype)  # (n, 1, h, w)
    total = x * known
    for _ in range(max(h, w) // 4 if rings is None else int(rings)):
        s = nn.functional.avg_pool2d(total, 3, stride=1, padding=1, divisor_override=1)
        n = nn.functional.avg_pool2d(known, 3, stride=1, padding=1, divisor_override=1)
        new = (known == 0) & (n > 0)  # (n, 1, h, w): the next ring
        total = torch.where(new, s / n.clamp_min(1.0), total)
        known = torch.where(new, torch.ones_like(known), known)
    x = torch.where(known > 0, total, x)
    return rearrange(x, "(b f) c h w -> b c f h w", b=b, f=f)


class GeneTokens(nn.Module):
    """Gene embedding ``(b, g)`` + per-frame time embedding ``(b, f, d)`` ->
    ``((b f), n_tokens, d)`` tokens for cross-attention."""

    def __init__(self, gene_dim: int, dim: int, n_tokens: int) -> None:
        super().__init__()
        self.n_tokens = int(n_tokens)
        self.proj = nn.Sequential(nn.Linear(gene_dim, dim), nn.SiLU(),
                                  nn.Linear(dim, self.n_tokens * dim))
        self.time_proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, gene: Tensor, frame_emb: Tensor) -> Tensor:
        tokens = rearrange(self.proj(gene), "b (n d) -> b 1 n d", n=self.n_tokens)
        tokens = tokens + self.time_proj(frame_emb)[:, :, None]  # (b, f, n, d)
        return self.norm(rearrange(tokens, "b f n d -> (b f) n d"))
