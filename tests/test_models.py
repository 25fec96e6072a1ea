"""VideoGeneUNet: shapes, masking invariance, conditioning, serialization, checkpointing, presets."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from videogene.errors import InputError
from videogene.models import (
    MODEL_PRESETS,
    VideoGeneUNet,
    VideoGeneUNetOutput,
    count_parameters,
    estimate_flops,
    expand_frame_times,
    model_from_preset,
    preset_parameter_count,
)
from videogene.models.embeddings import fill_outside_tissue, interpolate_context

NUM_GENES = 12


pytestmark = pytest.mark.usefixtures("one_thread")


def make_model(seed: int = 0, **overrides) -> VideoGeneUNet:
    """Tiny model whose zero-initialised layers are given random weights, so that every
    path contributes to the output (a fresh model outputs exactly zero)."""
    torch.manual_seed(seed)
    model = model_from_preset("tiny", NUM_GENES, 16, **overrides)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


def make_inputs(b: int = 2, f: int = 4, h: int = 16, w: int = 16, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    days = torch.tensor([9.5 + i for i in range(f)])
    return dict(sample=torch.randn(b, 1, f, h, w, generator=g),
                timestep=torch.randint(0, 1000, (b,), generator=g),
                gene_ids=torch.arange(b) % NUM_GENES,
                frame_times=days.repeat(b, 1),
                tissue_mask=(torch.rand(b, 1, f, h, w, generator=g) > 0.3).float())


def run(model: VideoGeneUNet, **inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).sample


def test_fresh_model_outputs_zeros():
    model = model_from_preset("tiny", NUM_GENES, 16)
    out = model(**make_inputs())
    assert isinstance(out, VideoGeneUNetOutput)
    assert out.sample.shape == (2, 1, 4, 16, 16)
    assert torch.count_nonzero(out.sample) == 0


@pytest.mark.parametrize("f,h,w", [(4, 16, 16), (3, 16, 16), (1, 8, 8), (5, 8, 24), (7, 16, 8)])
def test_output_shapes(f, h, w):
    model = make_model()
    inputs = make_inputs(b=3, f=f, h=h, w=w)
    out = run(model, **inputs)
    assert out.shape == (3, 1, f, h, w)
    assert torch.isfinite(out).all()
    (tup,) = model(**inputs, return_dict=False)
    assert torch.equal(tup, model(**inputs).sample)


def test_channels_scalar_timestep_and_no_mask_channel():
    model = make_model(in_channels=2, out_channels=3, mask_channel=False)
    inputs = make_inputs()
    inputs["sample"] = torch.randn(2, 2, 4, 16, 16)
    inputs["timestep"] = 250
    inputs["tissue_mask"] = None
    out = run(model, **inputs)
    assert out.shape == (2, 3, 4, 16, 16)
    per_example = run(model, **{**inputs, "timestep": torch.tensor([250, 250])})
    torch.testing.assert_close(out, per_example)


def test_absent_frames_do_not_affect_present_outputs():
    model = make_model()
    inputs = make_inputs()
    frame_mask = torch.tensor([[True, False, True, True], [True, True, False, False]])
    base = run(model, **inputs, frame_mask=frame_mask)

    changed = {k: v.clone() for k, v in inputs.items()}
    absent = ~frame_mask  # (b, f)
    g = torch.Generator().manual_seed(7)
    sample, tmask = changed["sample"], changed["tissue_mask"]
    sample[absent.nonzero(as_tuple=True)[0], :, absent.nonzero(as_tuple=True)[1]] = \
        torch.randn(int(absent.sum()), 1, 16, 16, generator=g) * 5
    tmask[absent.nonzero(as_tuple=True)[0], :, absent.nonzero(as_tuple=True)[1]] = 0.0
    changed["frame_times"][absent] = 30.0
    other = run(model, **changed, frame_mask=frame_mask)

    present = frame_mask[:, None, :, None, None].expand_as(base)
    torch.testing.assert_close(other[present], base[present], atol=1e-5, rtol=0)
    assert (other[~present] - base[~present]).abs().max() > 1e-3  # absent outputs did change

    # without the mask the same change leaks into the other frames (temporal attention works)
    leak = (run(model, **changed) - run(model, **inputs))[present].abs().max()
    assert leak > 1e-4


def test_present_frame_change_reaches_other_present_frames():
    model = make_model()
    inputs = make_inputs()
    frame_mask = torch.tensor([[True, False, True, True], [True, True, True, True]])
    base = run(model, **inputs, frame_mask=frame_mask)
    changed = {k: v.clone() for k, v in inputs.items()}
    changed["sample"][0, :, 0] += 1.0  # present frame 0 of example 0
    out = run(model, **changed, frame_mask=frame_mask)
    assert (out[0, :, 2] - base[0, :, 2]).abs().max() > 1e-4  # frame 2 sees frame 0
    torch.testing.assert_close(out[1], base[1], atol=1e-6, rtol=0)  # other example untouched


def test_example_with_no_present_frame_is_finite():
    model = make_model()
    out = run(model, **make_inputs(), frame_mask=torch.zeros(2, 4, dtype=torch.bool))
    assert torch.isfinite(out).all()


def test_gene_conditioning():
    model = make_model()
    inputs = make_inputs()
    gene_a = run(model, **{**inputs, "gene_ids": torch.tensor([3, 3])})
    gene_b = run(model, **{**inputs, "gene_ids": torch.tensor([5, 5])})
    null = run(model, **{**inputs, "gene_ids": torch.full((2,), model.null_gene_id)})
    assert model.null_gene_id == NUM_GENES
    assert (gene_a - gene_b).abs().max() > 1e-4
    assert (gene_a - null).abs().max() > 1e-4


def test_unseen_continuous_frame_time():
    model = make_model()
    inputs = make_inputs()
    times = torch.tensor([[9.5, 10.5, 12.0, 13.5]] * 2)
    at_12 = run(model, **{**inputs, "frame_times": times})
    times_125 = times.clone().index_fill_(1, torch.tensor([2]), 12.5)
    at_125 = run(model, **{**inputs, "frame_times": times_125})
    assert torch.isfinite(at_12).all()
    assert (at_12[:, :, 2] - at_125[:, :, 2]).abs().max() > 1e-4


def test_tissue_mask_channel_is_used():
    model = make_model()
    inputs = make_inputs()
    with_mask = run(model, **inputs)
    ones = run(model, **{**inputs, "tissue_mask": torch.ones_like(inputs["tissue_mask"])})
    default = run(model, **{**inputs, "tissue_mask": None})
    assert (with_mask - ones).abs().max() > 1e-4
    torch.testing.assert_close(default, ones)


def test_save_load_round_trip(tmp_path):
    names = [f"Gene{i}" for i in range(NUM_GENES)]
    model = make_model(gene_names=names)
    inputs = make_inputs()
    model.save_pretrained(tmp_path / "unet")
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = VideoGeneUNet.from_pretrained(tmp_path / "unet").eval()
    assert loaded.config.gene_names == names
    assert loaded.null_gene_id == NUM_GENES
    torch.testing.assert_close(run(loaded, **inputs), run(model, **inputs), atol=0, rtol=0)


def test_gene_embeddings_table():
    model = make_model(gene_names=[f"G{i}" for i in range(NUM_GENES)])
    table = model.gene_embeddings()
    assert table.shape == (NUM_GENES, MODEL_PRESETS["tiny"]["gene_embed_dim"])
    assert not table.requires_grad
    torch.testing.assert_close(table, model.gene_embedding.weight[:NUM_GENES].detach())
    assert model.gene_embeddings(detach=False).requires_grad
    names, array = model.gene_embedding_table()
    assert names[0] == "G0" and len(names) == NUM_GENES
    assert array.shape == tuple(table.shape) and array.dtype.name == "float32"
    assert (array == table.numpy()).all()
    assert model_from_preset("tiny", 3).gene_embedding_table()[0] == ["0", "1", "2"]


def test_bad_config_and_inputs_raise_input_error():
    with pytest.raises(InputError, match="gene_names"):
        model_from_preset("tiny", 3, gene_names=["a", "b"])
    with pytest.raises(InputError, match="spatial_attention"):
        model_from_preset("tiny", 3, spatial_attention=(True,))
    with pytest.raises(InputError, match="attention_backend"):
        model_from_preset("tiny", 3, attention_backend="flash")
    with pytest.raises(InputError, match="preset"):
        model_from_preset("huge", 3)
    model = make_model()
    inputs = make_inputs()
    with pytest.raises(InputError, match="divisible"):
        run(model, **make_inputs(h=15))
    with pytest.raises(InputError, match="frame_times"):
        run(model, **{**inputs, "frame_times": torch.zeros(2, 3)})
    with pytest.raises(InputError, match="frame_mask"):
        run(model, **inputs, frame_mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(InputError, match="sample"):
        run(model, **{**inputs, "sample": torch.zeros(2, 4, 16, 16)})
    with pytest.raises(InputError, match="timestep"):
        run(model, **{**inputs, "timestep": torch.tensor([1, 2, 3])})
    with pytest.raises(InputError, match="gene_ids"):
        run(model, **{**inputs, "gene_ids": torch.tensor([1])})


def test_expand_frame_times():
    times = expand_frame_times([9.5, 12.0, 16.5], 2)
    assert times.shape == (2, 3) and times.dtype == torch.float32
    assert times[1, 1].item() == 12.0
    with pytest.raises(InputError, match="frame_times"):
        expand_frame_times(torch.zeros(3, 4), 2)


@pytest.mark.skipif(importlib.util.find_spec("xformers") is not None, reason="xformers installed")
def test_xformers_backend_missing_is_a_clear_error():
    with pytest.raises(InputError, match="xformers is not installed"):
        model_from_preset("tiny", 3, attention_backend="xformers")


def test_gradient_checkpointing_same_gradients():
    inputs = make_inputs()
    frame_mask = torch.tensor([[True, False, True, True], [True, True, True, True]])
    grads = []
    for checkpointing in (False, True):
        model = make_model().train()
        if checkpointing:
            model.enable_gradient_checkpointing()
            assert model.is_gradient_checkpointing
        out = model(**inputs, frame_mask=frame_mask).sample
        out.square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 50
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5, msg=name)


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = model_from_preset("tiny", NUM_GENES, 16).train()
    inputs = make_inputs(seed=3)
    target = torch.randn(2, 1, 4, 16, 16, generator=torch.Generator().manual_seed(4))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = (model(**inputs).sample - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_presets_and_counts():
    assert set(MODEL_PRESETS) == {"tiny", "small", "base", "large"}
    tiny = model_from_preset("tiny", NUM_GENES, 16)
    small = model_from_preset("small", NUM_GENES, 64)
    assert count_parameters(tiny) < 200_000
    assert 1_000_000 < count_parameters(small) < 10_000_000
    assert count_parameters(small, trainable_only=True) == count_parameters(small)
    assert 30e6 <= preset_parameter_count("base", 1000, 64) <= 60e6
    assert 150e6 <= preset_parameter_count("large", 1000, 64) <= 300e6
    # presets never carry dataset-dependent keys
    for cfg in MODEL_PRESETS.values():
        assert not {"num_genes", "sample_size", "gene_names"} & set(cfg)
    out = run(small.eval(), **make_inputs(f=3))
    assert out.shape == (2, 1, 3, 16, 16)


def test_estimate_flops():
    model = make_model()
    f4 = estimate_flops(model, 4, 16)
    f8 = estimate_flops(model, 8, 16)
    assert f4 > 2 * count_parameters(model)  # convs reuse weights at every pixel
    assert 1.9 * f4 < f8 < 2.3 * f4  # ~linear in frames (temporal attention is quadratic)
    assert estimate_flops(model, 4, 32) > 3.5 * f4


# ------------------------------------------------------------------ gene identity, time, context
NEW_FIELDS = ("frame_time_embedding", "frame_time_range", "frame_time_frequencies", "coord_channels",
              "gene_tokens", "cross_attention", "context_channels")


def make_full_model(seed: int = 0, **overrides) -> VideoGeneUNet:
    """Tiny model with every optional input on (coordinates, gene tokens, smooth time, context)."""
    kw = dict(coord_channels=True, gene_tokens=2, frame_time_embedding="fourier",
              frame_time_range=(9.5, 12.5), context_channels=True)
    return make_model(seed, **{**kw, **overrides})


def test_presets_turn_on_the_gene_identity_paths():
    for name, cfg in MODEL_PRESETS.items():
        assert cfg["coord_channels"] and cfg["gene_tokens"] >= 2, name
        assert cfg["frame_time_embedding"] == "fourier" and cfg["context_channels"], name
    model = model_from_preset("tiny", NUM_GENES, 16)
    assert model.gene_token_proj is not None
    assert any(layer.cross is not None for layer in model.mid_block.layers)


def test_bare_config_is_the_old_architecture_and_old_exports_load(tmp_path):
    import json

    old_kw = {k: v for k, v in MODEL_PRESETS["tiny"].items() if k not in NEW_FIELDS}
    torch.manual_seed(0)
    old = VideoGeneUNet(num_genes=NUM_GENES, sample_size=16, **old_kw)
    assert old.gene_token_proj is None and old.conv_in.in_channels == 2  # sample + tissue mask
    assert all(layer.cross is None for layer in old.mid_block.layers)
    # the original parameter names: an export written before the new fields has exactly these
    assert {"frame_time_embed.0.weight", "frame_time_embed.2.weight", "gene_proj.0.weight"} <= set(
        old.state_dict())
    assert not any(k.startswith("gene_token_proj") for k in old.state_dict())
    with torch.no_grad():
        for p in old.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    old.save_pretrained(tmp_path / "unet")
    cfg_file = tmp_path / "unet" / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg = {k: v for k, v in cfg.items() if k not in NEW_FIELDS}  # as written before they existed
    cfg_file.write_text(json.dumps(cfg))
    loaded = VideoGeneUNet.from_pretrained(tmp_path / "unet").eval()
    assert loaded.config.gene_tokens == 0 and not loaded.config.context_channels
    assert loaded.config.frame_time_embedding == "sinusoidal"
    inputs = make_inputs()
    torch.testing.assert_close(run(loaded, **inputs), run(old.eval(), **inputs), atol=0, rtol=0)
    with pytest.raises(InputError, match="no context channels"):
        run(loaded, **inputs, context=inputs["sample"], context_mask=torch.ones(2, 4, dtype=torch.bool))


def test_full_model_shapes_save_load_and_checkpointing(tmp_path):
    model = make_full_model()
    inputs = make_inputs()
    ctx = dict(context=torch.randn(2, 1, 4, 16, 16), context_mask=torch.tensor([[True, False] * 2] * 2))
    out = run(model, **inputs, **ctx)
    assert out.shape == (2, 1, 4, 16, 16) and torch.isfinite(out).all()
    model.save_pretrained(tmp_path / "unet")
    loaded = VideoGeneUNet.from_pretrained(tmp_path / "unet").eval()
    assert tuple(loaded.config.frame_time_range) == (9.5, 12.5)
    torch.testing.assert_close(run(loaded, **inputs, **ctx), out, atol=0, rtol=0)
    grads = []
    for checkpointing in (False, True):
        m = make_full_model().train()
        if checkpointing:
            m.enable_gradient_checkpointing()
        m(**inputs, **ctx).sample.square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None})
    assert any(n.startswith("gene_token_proj") for n in grads[0])
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5, msg=name)


def test_coordinates_and_gene_tokens_make_the_gene_act_per_pixel():
    # with the adaptive norm alone a gene can only scale/shift channels; through the tokens
    # it changes the output differently at different pixels of a constant input
    model = make_full_model(context_channels=False)
    inputs = {**make_inputs(), "sample": torch.zeros(2, 1, 4, 16, 16), "tissue_mask": None}
    a = run(model, **{**inputs, "gene_ids": torch.tensor([1, 1])})
    b = run(model, **{**inputs, "gene_ids": torch.tensor([2, 2])})
    diff = (a - b)[0, 0, 0]  # (h, w)
    assert diff.std() > 1e-3
    no_tokens = make_full_model(context_channels=False, gene_tokens=0)
    assert not any(k.startswith("gene_token_proj") for k in no_tokens.state_dict())
    assert no_tokens.conv_in.in_channels == model.conv_in.in_channels == 4  # sample, mask, y, x


def test_fourier_frame_time_interpolates_and_sinusoidal_does_not():
    from videogene.models.embeddings import FrameTimeEmbedding

    days = torch.tensor([10.0, 11.0, 12.0])
    smooth = FrameTimeEmbedding("fourier", 16, width=8, time_range=(9.0, 16.0)).features(days)
    sharp = FrameTimeEmbedding("sinusoidal", 16, width=32, scale=10.0).features(days)

    def between(f):  # distance of the middle day from its neighbours' mean, relative
        return ((f[1] - (f[0] + f[2]) / 2).norm() / (f[0] - f[2]).norm()).item()
    assert between(smooth) < 0.3
    assert between(sharp) > 0.5
    with pytest.raises(InputError, match="frame_time_range"):
        FrameTimeEmbedding("fourier", 16, width=8, time_range=(12.0, 12.0))
    with pytest.raises(InputError, match="frame_time_embedding"):
        make_model(frame_time_embedding="learned")


@pytest.mark.parametrize("interpolation", [False, True])
def test_context_inputs(interpolation):
    model = make_full_model(context_interpolation=interpolation)
    inputs = make_inputs()
    none = run(model, **inputs)
    all_false = run(model, **inputs, context=torch.randn(2, 1, 4, 16, 16),
                    context_mask=torch.zeros(2, 4, dtype=torch.bool))
    torch.testing.assert_close(all_false, none, atol=0, rtol=0)  # nothing marked: no context
    cmask = torch.tensor([[True, False, False, False], [False, False, True, False]])
    ctx = torch.randn(2, 1, 4, 16, 16, generator=torch.Generator().manual_seed(5))
    with_ctx = run(model, **inputs, context=ctx, context_mask=cmask)
    assert (with_ctx[0, :, 2] - none[0, :, 2]).abs().max() > 1e-4  # the context reaches frame 2
    # the noisy input at a context frame is replaced by the clean frame: changing it does nothing
    noisy = {**inputs, "sample": inputs["sample"].clone()}
    noisy["sample"][0, :, 0] += 3.0
    torch.testing.assert_close(run(model, **noisy, context=ctx, context_mask=cmask), with_ctx)
    # context values outside the context frames are ignored
    ctx2 = ctx.clone()
    ctx2[0, :, 1:] = 7.0
    torch.testing.assert_close(run(model, **inputs, context=ctx2, context_mask=cmask), with_ctx)
    with pytest.raises(InputError, match="both or neither"):
        run(model, **inputs, context=ctx)
    with pytest.raises(InputError, match="context_mask"):
        run(model, **inputs, context=ctx, context_mask=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(InputError, match="context"):
        run(model, **inputs, context=ctx[:, :, :3], context_mask=cmask[:, :3])


@pytest.mark.parametrize("interpolation", [False, True])
def test_absent_frames_do_not_affect_present_outputs_with_context_and_tokens(interpolation):
    model = make_full_model(context_interpolation=interpolation)
    inputs = make_inputs()
    frame_mask = torch.tensor([[True, False, True, True], [True, True, False, False]])
    cmask = torch.tensor([[True, False, False, False], [False, True, False, False]])
    ctx = torch.randn(2, 1, 4, 16, 16)
    base = run(model, **inputs, frame_mask=frame_mask, context=ctx, context_mask=cmask)
    changed = {k: v.clone() for k, v in inputs.items()}
    absent = (~frame_mask).nonzero(as_tuple=True)
    changed["sample"][absent[0], :, absent[1]] = 9.0
    changed["frame_times"][~frame_mask] = 30.0
    other = run(model, **changed, frame_mask=frame_mask, context=ctx, context_mask=cmask)
    present = frame_mask[:, None, :, None, None].expand_as(base)
    torch.testing.assert_close(other[present], base[present], atol=1e-5, rtol=0)


@pytest.mark.parametrize("order", [[0, 1, 2, 3, 4], [3, 0, 4, 2, 1]])
def test_interpolate_context_is_linear_in_time_between_given_frames(order):
    days = torch.tensor([9.5, 10.5, 11.5, 13.5, 14.5])
    values = torch.tensor([1.0, 10.0, -5.0, 30.0, 2.0])
    given = torch.tensor([False, True, False, True, False])
    idx = torch.tensor(order)  # frames need not be sorted by time
    ctx = values[idx].reshape(1, 1, 5, 1, 1).expand(1, 1, 5, 2, 3)
    out = interpolate_context(ctx, given[idx][None], days[idx][None])
    assert out.shape == ctx.shape
    # before the first given day: that day; between: time-linear (11.5 is a third of the way
    # from 10.5 to 13.5); a given day: itself; after the last: the last
    want = torch.tensor([10.0, 10.0, 10.0 + 20.0 / 3, 30.0, 30.0])[idx]
    torch.testing.assert_close(out[0, 0, :, 1, 2], want)
    torch.testing.assert_close(out, out[:, :, :, :1, :1].expand_as(out))
    nothing = interpolate_context(ctx, torch.zeros(1, 5, dtype=torch.bool), days[idx][None])
    assert not nothing.any()


def test_fill_outside_tissue_fills_ring_by_ring_and_keeps_the_tissue():
    frames = torch.full((1, 2, 2, 7, 7), -0.3)  # (b, c, f, h, w)
    tissue = torch.zeros(1, 1, 2, 7, 7)
    tissue[0, 0, 0, 3, 2:4] = 1.0
    frames[0, :, 0, 3, 2] = torch.tensor([1.0, 10.0])
    frames[0, :, 0, 3, 3] = torch.tensor([3.0, 30.0])
    out = fill_outside_tissue(frames, tissue, rings=2)
    assert out.shape == frames.shape
    torch.testing.assert_close(out[0, :, 0, 3, 2:4], frames[0, :, 0, 3, 2:4])  # tissue untouched
    # ring 1: the mean of the tissue pixels among the 3x3 neighbours; ring 2: of ring 1's
    torch.testing.assert_close(out[0, 0, 0, 3, 1], torch.tensor(1.0))
    torch.testing.assert_close(out[0, 0, 0, 2, 2], torch.tensor(2.0))
    torch.testing.assert_close(out[0, 1, 0, 3, 4], torch.tensor(30.0))
    torch.testing.assert_close(out[0, 0, 0, 3, 0], torch.tensor(1.0))
    torch.testing.assert_close(out[0, 0, 0, 1, 1], torch.tensor(1.5))  # mean of (2,1), (2,2)
    assert (out[0, :, 0, 0] == -0.3).all() and (out[0, :, 0, :, 6] == -0.3).all()  # ring 3: kept
    torch.testing.assert_close(out[:, :, 1], frames[:, :, 1])  # a frame without tissue: unchanged
    assert (fill_outside_tissue(frames, tissue)[0, 0, 0] != -0.3).sum() == 2 + 10  # 7 // 4: 1 ring


@pytest.mark.parametrize("fill", [False, True])
def test_context_fill_reads_a_context_frame_only_inside_its_tissue(fill):
    model = make_full_model(context_fill=fill)
    inputs = make_inputs()
    cmask = torch.tensor([[True, False, True, False], [False, True, False, False]])
    ctx = torch.randn(2, 1, 4, 16, 16, generator=torch.Generator().manual_seed(5))
    base = run(model, **inputs, context=ctx, context_mask=cmask)
    outside = inputs["tissue_mask"] == 0
    changed = torch.where(outside, torch.full_like(ctx, 5.0), ctx)
    other = run(model, **inputs, context=changed, context_mask=cmask)
    if fill:  # outside its tissue a context frame shows its own tissue's edge, whatever it held
        torch.testing.assert_close(other, base, atol=1e-5, rtol=0)
    else:
        assert (other - base).abs().max() > 1e-3
    inside = run(model, **inputs, context=torch.where(outside, ctx, ctx + 1.0), context_mask=cmask)
    assert (inside - base).abs().max() > 1e-3


def test_context_interpolation_needs_context_channels():
    with pytest.raises(InputError, match="context_interpolation"):
        make_model(context_interpolation=True, context_channels=False)
    with pytest.raises(InputError, match="context_fill"):
        make_model(context_fill=True, context_channels=False)


def test_self_condition_input():
    model = make_full_model(self_condition=True)
    inputs = make_inputs()
    none = run(model, **inputs)
    torch.testing.assert_close(run(model, **inputs, self_cond=torch.zeros(2, 1, 4, 16, 16)), none,
                               atol=0, rtol=0)  # no estimate = a zero estimate
    est = torch.randn(2, 1, 4, 16, 16, generator=torch.Generator().manual_seed(7))
    with_est = run(model, **inputs, self_cond=est)
    assert (with_est - none).abs().max() > 1e-4
    # at a context frame the clean frame is the input: the estimate there is not read
    cmask = torch.tensor([[True, False, False, False], [False, False, True, False]])
    ctx = torch.randn(2, 1, 4, 16, 16)
    a = run(model, **inputs, context=ctx, context_mask=cmask, self_cond=est)
    est2 = est.clone()
    est2[0, :, 0] = 5.0
    est2[1, :, 2] = -5.0
    torch.testing.assert_close(run(model, **inputs, context=ctx, context_mask=cmask, self_cond=est2), a)
    with pytest.raises(InputError, match="self_cond: expected shape"):
        run(model, **inputs, self_cond=est[:, :, :3])
    with pytest.raises(InputError, match="self_condition=False"):
        run(make_full_model(), **inputs, self_cond=est)
    assert model.conv_in.in_channels == make_full_model().conv_in.in_channels + 1
