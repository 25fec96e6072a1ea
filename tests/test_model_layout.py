"""VideoGeneUNet module layout: per-level modules, old (positional) exports, presets as the
single source of the model config.

``tests/data/unet_v1/`` was written by the code before the per-level modules (commit 883c349,
flat ``down_layers.7`` keys; see its README.md): an export of a small 3-level model with two
layers per level and every optional input on, a fixed input and the output it gave, the
parameter count of each preset and the fresh init of the tiny preset under seed 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from videogene.errors import InputError
from videogene.models import MODEL_PRESETS, VideoGeneUNet, model_from_preset, preset_parameter_count
from videogene.models.legacy import remap_legacy_keys

ROOT = Path(__file__).resolve().parents[1]
OLD = ROOT / "tests" / "data" / "unet_v1"
WEIGHTS = OLD / "diffusion_pytorch_model.safetensors"
REFERENCE = json.loads((OLD / "reference.json").read_text())
TOP_LEVEL = {"time_embed", "gene_embedding", "gene_proj", "frame_time_embed", "gene_token_proj",
             "conv_in", "down_blocks", "mid_block", "up_blocks", "norm_out", "conv_out"}


pytestmark = pytest.mark.usefixtures("one_thread")


# The stored output was computed on another CPU: its kernels round the last bits differently
# (2.6e-6 at most on an AMD EPYC against an Intel Xeon's file). A wrong key mapping moves the
# output by far more than this.
STORED = dict(atol=1e-5, rtol=1e-4)


def old_io() -> tuple[dict, torch.Tensor]:
    io = load_file(str(OLD / "io.safetensors"))
    return io, io.pop("output")


def predict(model: VideoGeneUNet, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**inputs).sample


def fresh_old_model() -> VideoGeneUNet:
    return VideoGeneUNet.from_config(VideoGeneUNet.load_config(OLD))


def test_levels_are_modules_with_named_keys():
    model = fresh_old_model()  # 3 levels, layers_per_block=2
    keys = list(model.state_dict())
    assert {k.split(".")[0] for k in keys} == TOP_LEVEL
    assert not any(k.startswith(("down_layers", "up_layers", "mid_layers", "downsamplers",
                                 "upsamplers")) for k in keys)
    assert [len(b.layers) for b in model.down_blocks] == [2, 2, 2]
    assert [len(b.layers) for b in model.up_blocks] == [3, 3, 3]
    assert [b.downsample is not None for b in model.down_blocks] == [True, True, False]
    assert [b.upsample is not None for b in model.up_blocks] == [True, True, False]
    assert len(model.mid_block.layers) == 2
    # up_blocks run coarsest first (diffusers order): the first one works at the deepest width
    assert model.up_blocks[0].layers[0].resnet.conv1.out_channels == 16
    assert "down_blocks.1.layers.0.temporal.qkv.weight" in keys
    assert "up_blocks.2.layers.2.cross.kv.weight" not in keys  # the finest level has no cross-attn
    model.enable_gradient_checkpointing()
    assert all(b.gradient_checkpointing for b in [*model.down_blocks, model.mid_block, *model.up_blocks])


def test_old_export_loads_through_from_pretrained_with_the_same_output():
    model, info = VideoGeneUNet.from_pretrained(OLD, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    inputs, want = old_io()
    torch.testing.assert_close(predict(model, inputs), want, **STORED)


def test_old_state_dict_loads_through_load_state_dict_and_prefixes():
    from safetensors.torch import load_model

    inputs, want = old_io()
    model = fresh_old_model()
    model.load_state_dict(load_file(str(WEIGHTS)))  # strict
    torch.testing.assert_close(predict(model, inputs), want, **STORED)
    model = fresh_old_model()
    load_model(model, str(WEIGHTS))  # how accelerate's load_state reads model.safetensors
    torch.testing.assert_close(predict(model, inputs), want, **STORED)
    # wrapped (DDP's "module.", torch.compile's "_orig_mod."): the prefix is handled
    wrapper = torch.nn.ModuleDict({"module": fresh_old_model()})
    wrapper.load_state_dict({f"module.{k}": v for k, v in load_file(str(WEIGHTS)).items()})
    torch.testing.assert_close(predict(wrapper["module"], inputs), want, **STORED)


def test_old_checkpoint_resumes_through_accelerate_load_state(tmp_path):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    try:
        accelerator = Accelerator(cpu=True)
        model = accelerator.prepare(fresh_old_model())
        accelerator.save_state(str(tmp_path / "ckpt"))
        (tmp_path / "ckpt" / "model.safetensors").write_bytes(WEIGHTS.read_bytes())  # old keys
        accelerator.load_state(str(tmp_path / "ckpt"))
    finally:
        AcceleratorState._reset_state(True)  # the training loop builds its own in other tests
    inputs, want = old_io()
    torch.testing.assert_close(predict(accelerator.unwrap_model(model), inputs), want, **STORED)


def test_new_export_round_trip(tmp_path):
    old = VideoGeneUNet.from_pretrained(OLD)
    old.save_pretrained(tmp_path / "unet")
    keys = load_file(str(tmp_path / "unet" / "diffusion_pytorch_model.safetensors")).keys()
    assert {k.split(".")[0] for k in keys} == TOP_LEVEL
    inputs, want = old_io()
    torch.testing.assert_close(predict(VideoGeneUNet.from_pretrained(tmp_path / "unet"), inputs), want,
                               **STORED)


def test_unmappable_old_keys_are_one_line_input_errors(tmp_path):
    state = load_file(str(WEIGHTS))
    extra = {**state, "down_layers.6.resnet.conv1.bias": torch.zeros(8)}  # 3 levels x 2 = 6 layers
    with pytest.raises(InputError, match=r"down_layers\.6.*layers_per_block=2") as err:
        fresh_old_model().load_state_dict(extra)
    assert "\n" not in str(err.value)
    mixed = {**state, "mid_block.layers.0.resnet.conv1.bias": state["mid_layers.0.resnet.conv1.bias"]}
    with pytest.raises(InputError, match="mixes two layouts"):
        fresh_old_model().load_state_dict(mixed)
    # from_pretrained: an export of another config fails the same way, in one line
    other = fresh_old_model()
    other.save_pretrained(tmp_path / "unet")
    save_file({**state, "upsamplers.2.conv.bias": torch.zeros(16)},
              str(tmp_path / "unet" / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(InputError, match=r"upsamplers\.2"):
        VideoGeneUNet.from_pretrained(tmp_path / "unet")


def test_remap_covers_every_old_key_once():
    state = dict(load_file(str(WEIGHTS)))
    n_old = sum(k.split(".")[0] in {"down_layers", "downsamplers", "mid_layers", "up_layers",
                                    "upsamplers"} for k in state)
    assert remap_legacy_keys(state, (8, 8, 16), 2) == n_old > 0
    assert set(state) == set(fresh_old_model().state_dict())
    assert remap_legacy_keys(state, (8, 8, 16), 2) == 0  # already the new layout: unchanged


def test_parameter_counts_and_fresh_init_unchanged():
    counts = REFERENCE["parameter_counts"]
    assert {name: preset_parameter_count(name, 1000, 64) for name in MODEL_PRESETS} == counts
    torch.manual_seed(0)  # modules are built in the old order: the same seed, the same weights
    model = model_from_preset("tiny", 12, 16)
    want = dict(REFERENCE["tiny_init_seed0_num_genes12"])
    remap_legacy_keys(want, MODEL_PRESETS["tiny"]["block_out_channels"],
                      MODEL_PRESETS["tiny"]["layers_per_block"])
    got = {k: [round(float(v.double().sum()), 6), round(float(v.double().abs().sum()), 6)]
           for k, v in model.state_dict().items()}
    assert got == want


@pytest.mark.parametrize("name", sorted(MODEL_PRESETS))
def test_config_files_name_their_preset_and_only_real_overrides(name):
    from videogene.training.config import load_config

    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    assert cfg.model.preset == name
    preset = MODEL_PRESETS[name]
    for key, value in cfg.model.overrides().items():  # none today; a field equal to the preset
        want = list(preset[key]) if isinstance(preset.get(key), tuple) else preset.get(key)
        assert value != want, f"configs/{name}.yaml model.{key} repeats the preset"


def test_editing_a_preset_changes_what_the_yaml_builds(monkeypatch):
    from videogene.training.config import load_config

    cfg = load_config(ROOT / "configs" / "tiny.yaml")
    monkeypatch.setitem(MODEL_PRESETS, "tiny", {**MODEL_PRESETS["tiny"], "dropout": 0.25,
                                                "embed_dim": 48})
    with torch.device("meta"):  # as train.py builds it
        model = model_from_preset(cfg.model.preset, num_genes=3, sample_size=16,
                                  **cfg.model.overrides())
    assert model.config.dropout == 0.25 and model.config.embed_dim == 48
