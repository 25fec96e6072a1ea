"""VideoGeneUNet: a factorized space-time UNet conditioned on a gene embedding and on each frame's
developmental time (docs/design.md section 4).

Frames are time points of one gene's expression video. Spatial layers (2D residual blocks,
spatial self-attention at coarse resolutions) run per frame; temporal self-attention runs across
frames at every pixel after the spatial layers of each resolution (Video Diffusion Models, Ho et
al. 2022). Conditioning = diffusion-time MLP + gene MLP (per example) + developmental-time MLP (per
frame), injected by adaptive GroupNorm in every residual block. Normalisation is per frame and
absent frames are masked keys, so outputs at present frames do not depend on absent frames.

Modules, one per level (diffusers-style): ``conv_in`` -> ``down_blocks[i]`` (level ``i``, finest
first) -> ``mid_block`` -> ``up_blocks[j]`` (coarsest first) -> ``norm_out``, ``conv_out``;
state-dict keys read ``down_blocks.1.layers.0.temporal.qkv.weight``. Exports of the older flat
layout (``down_layers.7...``) load through :func:`remap_legacy_keys`.

Optional (off in a bare config, so exports written before they existed load unchanged; on in
the presets): canvas coordinates as input channels (``coord_channels``), gene tokens that pixels
attend to at the coarse levels (``gene_tokens``, ``cross_attention``), a smooth frame-time
embedding over the dataset's day range (``frame_time_embedding="fourier"``), and clean context
frames for in-filling (``context_channels``: masked conditional video diffusion, Voleti et al.
2022): the context video and a per-frame context mask are extra input channels, and the noisy
input at context frames is zeroed, so training and sampling see the same thing there; with
``context_interpolation`` every frame also gets the time-linear interpolation of the context
frames around it as an input channel; with ``context_fill`` each context frame is filled outside
its own tissue from the tissue's edge (:func:`~videogene.models.embeddings.fill_outside_tissue`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from einops import rearrange, repeat
from torch import Tensor, nn

from ..errors import InputError
from .blocks import (
    ATTENTION_BACKENDS,
    Conditioning,
    DownBlock,
    MidBlock,
    UpBlock,
    load_xformers,
    mlp,
    num_groups,
    sinusoidal_embedding,
    zero_module,
)
from .embeddings import (
    FrameTimeEmbedding,
    GeneTokens,
    coordinate_grid,
    fill_outside_tissue,
    interpolate_context,
)
from .legacy import remap_legacy_keys

#: What an observed day's context frame is (``context_source``).
CONTEXT_SOURCES = ("slice", "timepoint_mean")


@dataclass
class VideoGeneUNetOutput(BaseOutput):
    """``sample``: ``(b, out_channels, f, h, w)`` model prediction (noise, v or x0)."""

    sample: Tensor


class VideoGeneUNet(ModelMixin, ConfigMixin):
    """3D (2D + temporal attention) UNet for gene-expression videos.

    Args:
        num_genes: vocabulary size; gene ids are ``0 .. num_genes - 1`` and ``num_genes`` is the
            learned null gene (classifier-free guidance), see :attr:`null_gene_id`.
        sample_size: nominal canvas side (informational; any side divisible by
            ``2 ** (len(block_out_channels) - 1)`` works).
        in_channels, out_channels: expression channels (1).
        block_out_channels: channels per resolution level (each level halves h and w).
        layers_per_block: residual layers per level on the way down (one more on the way up).
        spatial_attention: per level, whether to add spatial self-attention; ``None`` = the
            coarser half of the levels.
        temporal_attention: temporal self-attention after every spatial layer.
        attention_head_dim: channels per attention head.
        norm_num_groups: GroupNorm groups (reduced to a divisor of the channel count).
        gene_embed_dim: width of the gene embedding table (what :meth:`gene_embeddings` returns).
        embed_dim: width of the combined conditioning embedding (default ``4 * block_out_channels[0]``).
        frame_time_scale: ``"sinusoidal"`` only: developmental days are multiplied by this
            before the embedding (10: half a day is 5 units of the fastest frequency).
        frame_time_embedding: ``"sinusoidal"`` (original) or ``"fourier"`` (smooth over the
            day range: a day between two sampled ones lands between them).
        frame_time_range: ``(first, last)`` day of the training data (``"fourier"``; training
            sets it from the dataset), mapped to [0, 1]; None: ``(0, 10)``.
        frame_time_frequencies: ``"fourier"`` only: ``sin/cos(pi k t)`` for ``k = 1 .. n``.
        coord_channels: add the canvas coordinates (y, x in [-1, 1]) as two input channels.
        gene_tokens: number of gene tokens that pixels attend to (0: no cross-attention).
        cross_attention: per level, whether to cross-attend to the gene tokens (``None`` = the
            levels with spatial attention); the middle always does when ``gene_tokens > 0``.
        context_channels: accept clean context frames (``context``, ``context_mask``) as
            ``in_channels + 1`` extra input channels.
        context_interpolation: with ``context_channels``, also give every frame the time-linear
            interpolation of the context frames around it (``in_channels`` more channels;
            :func:`~videogene.models.embeddings.interpolate_context`).
        context_fill: with ``context_channels``, fill each context frame outside its own tissue
            (``tissue_mask``) from the tissue's edge, ring by ring, instead of showing the
            zero-expression level there (:func:`~videogene.models.embeddings.fill_outside_tissue`).
        context_source: what the context frames of an observed day were trained on (the model
            only records it; the stream and :mod:`videogene.pipelines.context` follow it):
            ``"slice"``, one slice of the day, or ``"timepoint_mean"``, the per-pixel mean
            over the day's slices (the image the baselines use) on that slice's mask.
        self_condition: self-conditioning (Chen et al. 2022, "Analog Bits"): the model's own
            previous estimate of the clean video (``self_cond``, model units) is ``in_channels``
            more input channels; zeros when there is none.
        mask_channel: concatenate the tissue mask to the input as an extra channel.
        exact_outside: the network's output outside the tissue is replaced, in training and in
            every sampler, by the exact output of the known zero-expression level there
            (:func:`~videogene.pipelines.samplers.exact_outside`; the model records it, its
            forward pass lacks the noise schedule), so the loss covers the tissue only.
        exact_outside_max_snr: with ``exact_outside``, only at the noise levels whose
            signal-to-noise ratio is at most this (None: all).
        dropout: dropout inside residual blocks.
        attention_backend: ``"sdpa"`` (torch scaled_dot_product_attention) or ``"xformers"``.
        gene_embed_init_std: standard deviation of the initial gene table. Small, so that after
            training the table holds what the genes' data taught it rather than the random start
            (with a unit-variance start, neighbours stay random for thousands of steps).
        gene_names: optional vocabulary (``len == num_genes``), stored in the config.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        num_genes: int = 1,
        sample_size: int = 64,
        in_channels: int = 1,
        out_channels: int = 1,
        block_out_channels: tuple[int, ...] = (64, 128, 256, 256),
        layers_per_block: int = 2,
        spatial_attention: tuple[bool, ...] | None = None,
        temporal_attention: bool = True,
        attention_head_dim: int = 32,
        norm_num_groups: int = 32,
        gene_embed_dim: int = 128,
        embed_dim: int | None = None,
        frame_time_scale: float = 10.0,
        frame_time_embedding: str = "sinusoidal",
        frame_time_range: tuple[float, float] | None = None,
        frame_time_frequencies: int = 2,
        coord_channels: bool = False,
        gene_tokens: int = 0,
        cross_attention: tuple[bool, ...] | None = None,
        context_channels: bool = False,
        context_interpolation: bool = False,
        context_fill: bool = False,
        context_source: str = "slice",
        self_condition: bool = False,
        mask_channel: bool = True,
        exact_outside: bool = False,
        exact_outside_max_snr: float | None = None,
        dropout: float = 0.0,
        attention_backend: str = "sdpa",
        gene_embed_init_std: float = 0.02,
        gene_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        # 1. validate the configuration
        if int(num_genes) < 1:
            raise InputError(f"num_genes: must be >= 1, got {num_genes}")
        if gene_names is not None and len(gene_names) != num_genes:
            raise InputError(f"gene_names: {len(gene_names)} names for num_genes={num_genes}")
        if not block_out_channels or layers_per_block < 1:
            raise InputError("block_out_channels must be non-empty and layers_per_block >= 1")
        if attention_backend not in ATTENTION_BACKENDS:
            raise InputError(f"attention_backend: {attention_backend!r} is not one of "
                             f"{ATTENTION_BACKENDS}")
        if attention_backend == "xformers":
            load_xformers()
        levels = len(block_out_channels)
        if spatial_attention is None:
            spatial_attention = tuple(i >= levels // 2 for i in range(levels))
        if len(spatial_attention) != levels:
            raise InputError(f"spatial_attention: {len(spatial_attention)} entries for {levels} levels")
        if int(gene_tokens) < 0:
            raise InputError(f"gene_tokens: must be >= 0, got {gene_tokens}")
        cross = tuple(spatial_attention) if cross_attention is None else tuple(cross_attention)
        if len(cross) != levels:
            raise InputError(f"cross_attention: {len(cross)} entries for {levels} levels")
        cross = tuple(bool(c) and int(gene_tokens) > 0 for c in cross)
        if context_interpolation and not context_channels:
            raise InputError("context_interpolation: needs context_channels=True")
        if context_fill and not context_channels:
            raise InputError("context_fill: needs context_channels=True")
        if context_source not in CONTEXT_SOURCES:
            raise InputError(f"context_source: {context_source!r} is not one of {CONTEXT_SOURCES}")
        if context_source != "slice" and not context_channels:
            raise InputError(f"context_source={context_source!r}: needs context_channels=True")
        chans = [int(c) for c in block_out_channels]
        emb_dim = int(embed_dim or 4 * chans[0])
        layer_kw = dict(temporal_attention=temporal_attention, head_dim=attention_head_dim,
                        groups=norm_num_groups, dropout=dropout, backend=attention_backend)

        # 2. conditioning: diffusion time, gene (+ null row), developmental frame time
        self.time_embed = mlp(chans[0], emb_dim)
        self.gene_embedding = nn.Embedding(num_genes + 1, gene_embed_dim)
        nn.init.normal_(self.gene_embedding.weight, std=gene_embed_init_std)
        self.gene_proj = mlp(gene_embed_dim, emb_dim)
        self.frame_time_embed = FrameTimeEmbedding(
            frame_time_embedding, emb_dim, width=chans[0], scale=frame_time_scale,
            time_range=frame_time_range, frequencies=frame_time_frequencies)
        self.gene_token_proj = (GeneTokens(gene_embed_dim, emb_dim, gene_tokens) if gene_tokens
                            else None)

        # 3. levels (diffusers-style): down_blocks[i] at level i, then mid_block, then up_blocks
        #    coarsest first; skip_chans records what each skip connection carries
        extra = (int(mask_channel) + 2 * int(coord_channels)
                 + (in_channels + 1) * int(context_channels) + in_channels * int(context_interpolation)
                 + in_channels * int(self_condition))
        self.conv_in = nn.Conv2d(in_channels + extra, chans[0], 3, padding=1)
        self.down_blocks = nn.ModuleList()
        skip_chans, ch = [chans[0]], chans[0]
        for i, out_ch in enumerate(chans):
            self.down_blocks.append(DownBlock(ch, out_ch, emb_dim, num_layers=layers_per_block,
                                              downsample=i < levels - 1,
                                              spatial_attention=spatial_attention[i],
                                              cross_attention=cross[i], **layer_kw))
            ch = out_ch
            skip_chans += [ch] * (layers_per_block + int(i < levels - 1))
        self.mid_block = MidBlock(ch, emb_dim, cross_attention=int(gene_tokens) > 0, **layer_kw)
        self.up_blocks = nn.ModuleList()
        for i in reversed(range(levels)):  # one more layer per level, each eats one skip
            level_skips = [skip_chans.pop() for _ in range(layers_per_block + 1)]
            self.up_blocks.append(UpBlock(ch, level_skips, chans[i], emb_dim, upsample=i > 0,
                                          spatial_attention=spatial_attention[i],
                                          cross_attention=cross[i], **layer_kw))
            ch = chans[i]

        # 4. output head, zero-initialised: a fresh model predicts 0 everywhere
        self.norm_out = nn.GroupNorm(num_groups(ch, norm_num_groups), ch, eps=1e-6)
        self.conv_out = zero_module(nn.Conv2d(ch, out_channels, 3, padding=1))

    def _fix_state_dict_keys_on_load(self, state_dict) -> None:
        # diffusers' from_pretrained renames keys here, before it compares them with the model's
        remap_legacy_keys(state_dict, self.config.block_out_channels, self.config.layers_per_block)
        super()._fix_state_dict_keys_on_load(state_dict)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # load_state_dict (plain, or accelerate's load_state) reaches the root module first
        remap_legacy_keys(state_dict, self.config.block_out_channels, self.config.layers_per_block,
                          prefix=prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def null_gene_id(self) -> int:
        """Row of the gene table used as the unconditional (null) gene: ``num_genes``."""
        return int(self.config.num_genes)

    def gene_embeddings(self, *, detach: bool = True) -> Tensor:
        """The learned gene table, ``(num_genes, gene_embed_dim)``, row ``i`` = gene id ``i``.
        The null-gene row is not included. ``detach=False`` keeps the autograd link."""
        table = self.gene_embedding.weight[: self.config.num_genes]
        return table.detach() if detach else table

    def gene_embedding_table(self, as_numpy: bool = True) -> tuple[list[str], np.ndarray | Tensor]:
        """``(names, table)``: gene names (``config.gene_names`` or ``"0" ..``) and the table
        (float32 numpy array on CPU unless ``as_numpy=False``)."""
        names = list(self.config.gene_names or [str(i) for i in range(self.config.num_genes)])
        table = self.gene_embeddings()
        return names, (table.float().cpu().numpy() if as_numpy else table)

    def _check_inputs(self, sample: Tensor, gene_ids: Tensor, frame_times: Tensor,
                      frame_mask: Tensor | None, tissue_mask: Tensor | None,
                      context: Tensor | None, context_mask: Tensor | None,
                      self_cond: Tensor | None = None) -> None:
        cfg = self.config
        if sample.ndim != 5 or sample.shape[1] != cfg.in_channels:
            raise InputError(f"sample: expected (b, {cfg.in_channels}, f, h, w), got "
                             f"{tuple(sample.shape)}")
        b, _, f, h, w = sample.shape
        factor = 2 ** (len(cfg.block_out_channels) - 1)
        if h % factor or w % factor:
            raise InputError(f"sample: h, w = {h}, {w} must be divisible by {factor}")
        if tuple(gene_ids.shape) != (b,):
            raise InputError(f"gene_ids: expected shape ({b},), got {tuple(gene_ids.shape)}")
        if tuple(frame_times.shape) != (b, f):
            raise InputError(f"frame_times: expected shape ({b}, {f}), got {tuple(frame_times.shape)}")
        if frame_mask is not None and tuple(frame_mask.shape) != (b, f):
            raise InputError(f"frame_mask: expected shape ({b}, {f}), got {tuple(frame_mask.shape)}")
        if tissue_mask is not None and tuple(tissue_mask.shape) != (b, 1, f, h, w):
            raise InputError(f"tissue_mask: expected shape ({b}, 1, {f}, {h}, {w}), got "
                             f"{tuple(tissue_mask.shape)}")
        if (context is not None or context_mask is not None) and not cfg.context_channels:
            raise InputError("context: this model has no context channels (context_channels="
                             "False); it generates from the gene only")
        if (context is None) != (context_mask is None):
            raise InputError("context and context_mask: give both or neither")
        if context is not None and tuple(context.shape) != tuple(sample.shape):
            raise InputError(f"context: expected shape {tuple(sample.shape)}, got "
                             f"{tuple(context.shape)}")
        if context_mask is not None and tuple(context_mask.shape) != (b, f):
            raise InputError(f"context_mask: expected shape ({b}, {f}), got "
                             f"{tuple(context_mask.shape)}")
        if self_cond is not None and not cfg.self_condition:
            raise InputError("self_cond: this model was not trained with self-conditioning "
                             "(self_condition=False)")
        if self_cond is not None and tuple(self_cond.shape) != tuple(sample.shape):
            raise InputError(f"self_cond: expected shape {tuple(sample.shape)}, got "
                             f"{tuple(self_cond.shape)}")

    def forward(
        self,
        sample: Tensor,
        timestep: Tensor | float | int,
        gene_ids: Tensor,
        frame_times: Tensor,
        frame_mask: Tensor | None = None,
        tissue_mask: Tensor | None = None,
        return_dict: bool = True,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        self_cond: Tensor | None = None,
    ) -> VideoGeneUNetOutput | tuple[Tensor]:
        """Predict for noisy videos.

        Args:
            sample: ``(b, c, f, h, w)`` noisy videos.
            timestep: ``(b,)`` or scalar diffusion time (scheduler units, e.g. 0 .. 999).
            gene_ids: ``(b,)`` long; ``null_gene_id`` for the unconditional branch.
            frame_times: ``(b, f)`` float developmental days (continuous; unseen days work).
            frame_mask: ``(b, f)`` bool, True where the frame is present; absent frames are
                ignored as attention keys (their own outputs are meaningless). None = all present.
            tissue_mask: ``(b, 1, f, h, w)`` 0/1; used when ``mask_channel`` (None = ones).
            context: ``(b, c, f, h, w)`` clean frames in model units (``context_channels``
                models); only frames where ``context_mask`` is True are read.
            context_mask: ``(b, f)`` bool, True where ``context`` holds an observed frame. The
                model's output at context frames is not trained (copy the context there).
                None = no context (the same as all False).
            self_cond: ``(b, c, f, h, w)`` the model's previous clean-video estimate
                (``self_condition`` models; None = zeros, the first step). Zeroed at context
                frames, where the clean frame is the input.
        """
        # 1. inputs: broadcast timestep, fold frames into the batch, add the mask channel
        gene_ids = torch.as_tensor(gene_ids, device=sample.device)
        frame_times = torch.as_tensor(frame_times, device=sample.device)
        self._check_inputs(sample, gene_ids, frame_times, frame_mask, tissue_mask, context,
                           context_mask, self_cond)
        b, _, f, h, w = sample.shape
        timestep = torch.as_tensor(timestep, device=sample.device).reshape(-1)
        if timestep.shape[0] not in (1, b):
            raise InputError(f"timestep: expected a scalar or ({b},), got {timestep.shape[0]} values")
        timestep = timestep.expand(b)
        channels = [sample]
        cm = 0.0  # (b, 1, f, 1, 1) context frames, when the model takes context
        if self.config.context_channels:
            cmask = (torch.zeros(b, f, dtype=torch.bool, device=sample.device)
                     if context_mask is None else context_mask.to(torch.bool))
            cm = rearrange(cmask, "b f -> b 1 f 1 1").to(sample.dtype)
            ctx = torch.zeros_like(sample) if context is None else context.to(sample.dtype) * cm
            if self.config.context_fill and tissue_mask is not None and context is not None:
                # non-context frames are zeros and stay zeros: filling zeros gives zeros
                ctx = fill_outside_tissue(ctx, tissue_mask.to(sample.dtype))  # (b, c, f, h, w)
            # the noisy frames at context positions are zeroed: the clean frame is the input
            channels = [sample * (1 - cm), ctx, cm.expand(b, 1, f, h, w)]
            if self.config.context_interpolation:
                channels.append(interpolate_context(ctx, cmask, frame_times))  # (b, c, f, h, w)
        if self.config.self_condition:
            sc = torch.zeros_like(sample) if self_cond is None else self_cond.to(sample.dtype)
            channels.append(sc * (1 - cm))  # (b, c, f, h, w)
        if self.config.mask_channel:
            if tissue_mask is None:
                tissue_mask = torch.ones_like(sample[:, :1])
            channels.append(tissue_mask.to(sample.dtype))  # (b, 1, f, h, w)
        if self.config.coord_channels:
            grid = coordinate_grid(h, w, device=sample.device, dtype=sample.dtype)
            channels.append(repeat(grid, "two h w -> b two f h w", b=b, f=f))
        x = rearrange(torch.cat(channels, dim=1), "b c f h w -> (b f) c h w")

        # 2. conditioning: per example (time, gene) + per frame (developmental day)
        width = self.config.block_out_channels[0]
        dtype = self.conv_in.weight.dtype
        t_emb = self.time_embed(sinusoidal_embedding(timestep, width).to(dtype))  # (b, d)
        gene = self.gene_embedding(gene_ids.long())  # (b, g)
        g_emb = self.gene_proj(gene)  # (b, d)
        pos = self.frame_time_embed(frame_times, dtype)  # (b, f, d)
        tokens = self.gene_token_proj(gene, pos) if self.gene_token_proj is not None else None
        emb = rearrange((t_emb + g_emb)[:, None] + pos, "b f d -> (b f) d")
        pos = rearrange(pos, "b f d -> (b f) d")

        # 3. key-padding mask for temporal attention; an example with no frame present attends
        #    to all (its output is meaningless, but must not be NaN)
        key_mask = None
        if frame_mask is not None:
            present = frame_mask.to(torch.bool)
            present = present | ~present.any(dim=1, keepdim=True)
            key_mask = rearrange(present, "b f -> b 1 1 f")
        cond = Conditioning(emb, pos, key_mask, f, tokens)

        # 4. the levels: down (collecting skips), middle, up (eating them)
        x = self.conv_in(x)  # ((b f), c0, h, w)
        skips = [x]
        for block in self.down_blocks:
            x, level_skips = block(x, cond)
            skips += level_skips
        x = self.mid_block(x, cond)
        for block in self.up_blocks:
            x = block(x, skips, cond)

        # 5. output head, frames unfolded
        x = self.conv_out(nn.functional.silu(self.norm_out(x)))  # ((b f), out, h, w)
        out = rearrange(x, "(b f) c h w -> b c f h w", b=b, f=f)
        if not return_dict:
            return (out,)
        return VideoGeneUNetOutput(sample=out)


def expand_frame_times(frame_times, batch_size: int, device=None) -> Tensor:
    """``(f,)`` or ``(b, f)`` days -> ``(batch_size, f)`` float tensor (pipeline convenience)."""
    t = torch.as_tensor(frame_times, dtype=torch.float32, device=device)
    if t.ndim == 1:
        t = repeat(t, "f -> b f", b=batch_size)
    if t.ndim != 2 or t.shape[0] != batch_size:
        raise InputError(f"frame_times: expected (f,) or ({batch_size}, f), got {tuple(t.shape)}")
    return t
