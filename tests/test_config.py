"""Training config: YAML loading, dotted overrides, errors, frozenness, presets mirrored."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from videogene.errors import InputError
from videogene.training.config import (
    TrainConfig,
    config_from_dict,
    config_to_dict,
    flat_config,
    load_config,
    parse_override,
    save_config,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ["tiny", "small", "base", "large"]


def test_defaults_and_sections():
    cfg = load_config()
    assert isinstance(cfg, TrainConfig)
    assert cfg.lr_scheduler == "cosine"
    assert cfg.mixed_precision == "no"
    assert cfg.diffusion.snr_gamma == 5.0
    assert cfg.diffusion.gene_dropout == 0.1
    assert cfg.data.gene_sampling == "uniform"
    assert cfg.report_to == "tensorboard"


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"max_steps": 10, "data": {"path": "x", "gene_sampling": "nnz"},
                                 "model": {"preset": "small"}}))
    cfg = load_config(p, ["max_steps=25", "learning_rate=3e-4", "data.holdout_timepoints=[11.5, 12]",
                          "model.block_out_channels=[8,16]", "diffusion.snr_gamma=null",
                          "use_ema=false", "hub_model_id=user/model"])
    assert cfg.max_steps == 25
    assert cfg.learning_rate == pytest.approx(3e-4)  # "3e-4" is a YAML string: coerced to float
    assert isinstance(cfg.learning_rate, float)
    assert cfg.data.path == "x" and cfg.data.gene_sampling == "nnz"
    assert cfg.data.holdout_timepoints == (11.5, 12.0)
    assert cfg.model.preset == "small"
    assert cfg.model.overrides() == {"block_out_channels": [8, 16]}
    assert cfg.diffusion.snr_gamma is None
    assert cfg.use_ema is False
    assert cfg.hub_model_id == "user/model"


def test_parse_override_values():
    assert parse_override("a.b=1") == ("a.b", 1)
    assert parse_override("x=[1, 2]") == ("x", [1, 2])
    assert parse_override("x=true") == ("x", True)
    assert parse_override("x=user/name") == ("x", "user/name")
    assert parse_override("--x=2") == ("x", 2)
    with pytest.raises(InputError, match="key=value"):
        parse_override("novalue")


@pytest.mark.parametrize("override, expect", [
    ("data.gene_samplig=nnz", "data.gene_sampling"),
    ("lerning_rate=1", "learning_rate"),
    ("diffusion.snr_gama=1", "diffusion.snr_gamma"),
])
def test_unknown_key_names_close_matches(override, expect):
    with pytest.raises(InputError) as exc:
        load_config(None, [override])
    msg = str(exc.value)
    assert override.split("=")[0] in msg and expect in msg


def test_unknown_key_in_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data:\n  pth: x\n")
    with pytest.raises(InputError, match=r"data\.pth.*data\.path"):
        load_config(p)


@pytest.mark.parametrize("override, match", [
    ("max_steps=abc", "integer"),
    ("use_ema=3", "true or false"),
    ("mixed_precision=fp8", "mixed_precision"),
    ("data.gene_sampling=rare", "gene_sampling"),
    ("data.slice_draw=first", "slice_draw"),
    ("data.nonspatial_rate=1.5", "nonspatial_rate"),
    ("diffusion.prediction_type=x0", "prediction_type"),
    ("max_steps=0", ">= 1"),
    ("push_to_hub=true", "hub_model_id"),
    ("data=3", "section"),
    ("diffusion.snr_shift=0", "snr_shift"),
])
def test_bad_values(override, match):
    with pytest.raises(InputError, match=match):
        load_config(None, [override])


def test_zero_terminal_snr_needs_v_prediction():
    assert load_config(None, ["diffusion.rescale_betas_zero_snr=true"]).diffusion.rescale_betas_zero_snr
    with pytest.raises(InputError, match="v_prediction"):
        load_config(None, ["diffusion.prediction_type=epsilon", "diffusion.rescale_betas_zero_snr=true"])


def test_missing_and_bad_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(InputError, match="mapping"):
        load_config(bad)


def test_frozen():
    cfg = load_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.max_steps = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.data.path = "x"  # type: ignore[misc]
    assert cfg.replace(max_steps=3).max_steps == 3 and cfg.max_steps != 3


def test_round_trip(tmp_path):
    cfg = load_config(None, ["seed=7", "model.spatial_attention=[false, true]",
                             "validation.genes=[a, b]"])
    p = save_config(cfg, tmp_path / "out.yaml")
    again = load_config(p)
    assert again == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg
    flat = flat_config(cfg)
    assert flat["seed"] == 7 and flat["model.spatial_attention"] == "[False, True]"
    assert all(isinstance(v, (int, float, str, bool)) for v in flat.values())


@pytest.mark.parametrize("name", CONFIGS)
def test_config_files_build_their_preset(name):
    """The YAML names its preset; what it sets beyond that differs from the preset (no copies)."""
    from videogene.models import MODEL_PRESETS

    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    assert cfg.model.preset == name
    preset = MODEL_PRESETS[name]
    for key, value in cfg.model.overrides().items():
        want = list(preset[key]) if isinstance(preset.get(key), tuple) else preset.get(key)
        assert value != want, f"configs/{name}.yaml model.{key}={value} repeats the preset"


def test_accelerate_configs_parse():
    folder = ROOT / "configs" / "accelerate"
    names = {p.name for p in folder.glob("*.yaml")}
    assert {"cpu_2proc.yaml", "ddp.yaml", "fsdp.yaml", "deepspeed_zero2.yaml"} <= names
    for p in folder.glob("*.yaml"):
        d = yaml.safe_load(p.read_text())
        assert d["distributed_type"] in {"MULTI_GPU", "FSDP", "DEEPSPEED", "MULTI_CPU", "NO"}
        assert int(d["num_processes"]) >= 1


def test_config_is_light_and_shares_the_streams_choices():
    """The config validates data.* choices against the stream's own lists without importing
    torch (the stream module defines a torch dataset)."""
    import subprocess
    import sys

    code = ("import sys, videogene.training.config as c, videogene.data.choices as ch; "
            "assert c.GENE_SAMPLING is ch.GENE_SAMPLING and c.SLICE_DRAW is ch.SLICE_DRAW; "
            "bad = [m for m in ('torch', 'diffusers') if m in sys.modules]; assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
