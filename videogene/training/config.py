"""Training configuration: nested frozen dataclasses loaded from YAML plus dotted overrides.

    cfg = load_config("configs/tiny.yaml", ["max_steps=200", "data.gene_sampling=nnz"])
    cfg.diffusion.snr_gamma          # 5.0
    config_to_dict(cfg)              # plain dict, what is saved next to every checkpoint

Override values are parsed as YAML scalars or lists (``betas=[0.9,0.99]``, ``seed=3``,
``data.holdout_timepoints=null``). Unknown keys raise :class:`~videogene.errors.InputError`
naming the key and listing close matches. No ``eval``/``exec``, no module globals.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..data.choices import GENE_SAMPLING, SLICE_DRAW
from ..errors import InputError

MIXED_PRECISION = ("no", "bf16", "fp16")
GENE_EMBEDDING_INITS = ("random", "data")
PREDICTION_TYPES = ("epsilon", "v_prediction")
LOSS_WEIGHTINGS = ("min_snr", "edm")
TIMESTEP_SAMPLINGS = ("uniform", "lognormal")
CONTEXT_SIZES = ("uniform", "leave_one_out", "mixed")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                 "constant_with_warmup")
REPORT_TO = ("tensorboard", "wandb", "none")


def _check_choice(section: str, name: str, value: Any, choices: Iterable[Any]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise InputError(f"config {section}{name}={value!r}: expected one of "
                         f"{', '.join(map(str, choices))}")


@dataclass(frozen=True)
class DataConfig:
    """Where the training videos come from and how genes are drawn."""

    path: str = ""  # prepared dataset folder (videogene prepare) or a Hub dataset id
    holdout_timepoints: tuple[float, ...] | None = None  # added to the dataset meta's hold-out
    gene_sampling: str = "uniform"  # "uniform", "nnz" (by non-zero fraction) or "spatial"
    nonspatial_rate: float = 0.25  # gene_sampling "spatial": visits per epoch of a gene without
    # spatial signal (meta["spatially_variable"] false); the others get one
    shuffle_buffer: int = 256
    slice_draw: str = "random"  # "random" (a slice per time point), "aligned" (one position for
    # all) or "context_aligned" (aligned for the examples given clean context, random otherwise)

    def __post_init__(self) -> None:
        _check_choice("data.", "gene_sampling", self.gene_sampling, GENE_SAMPLING)
        _check_choice("data.", "slice_draw", self.slice_draw, SLICE_DRAW)
        if self.shuffle_buffer < 1:
            raise InputError(f"config data.shuffle_buffer={self.shuffle_buffer}: must be >= 1")
        if not 0 < self.nonspatial_rate <= 1:
            raise InputError(f"config data.nonspatial_rate={self.nonspatial_rate}: must be in (0, 1]")


@dataclass(frozen=True)
class ModelConfig:
    """``preset`` picks ``videogene.models.MODEL_PRESETS[preset]``; any field set here overrides it.

    ``None`` means "the preset's value". ``num_genes``, ``sample_size`` and ``gene_names``
    always come from the dataset.
    """

    preset: str = "tiny"
    block_out_channels: tuple[int, ...] | None = None
    layers_per_block: int | None = None
    spatial_attention: tuple[bool, ...] | None = None
    temporal_attention: bool | None = None
    attention_head_dim: int | None = None
    norm_num_groups: int | None = None
    gene_embed_dim: int | None = None
    embed_dim: int | None = None
    frame_time_scale: float | None = None
    frame_time_embedding: str | None = None  # "sinusoidal" or "fourier" (smooth over the days)
    frame_time_frequencies: int | None = None
    coord_channels: bool | None = None  # canvas coordinates as input channels
    gene_tokens: int | None = None  # gene tokens for cross-attention (0: none)
    cross_attention: tuple[bool, ...] | None = None  # per level (None: the spatial-attention levels)
    context_channels: bool | None = None  # clean context frames as input (in-filling)
    context_interpolation: bool | None = None  # + their time-linear interpolation per frame
    context_fill: bool | None = None  # context frames filled outside their tissue from its edge
    context_source: str | None = None  # "slice" or "timepoint_mean" (mean of the day's slices)
    self_condition: bool | None = None  # the model's previous clean estimate as input
    mask_channel: bool | None = None
    exact_outside: bool | None = None  # outputs outside the tissue: the exact zero-level ones
    exact_outside_max_snr: float | None = None  # ... at noise levels of SNR <= this only
    dropout: float | None = None
    attention_backend: str | None = None  # "sdpa" (default) or "xformers"
    gene_embed_init_std: float | None = None  # initial spread of the gene table (0.02)

    def overrides(self) -> dict[str, Any]:
        """The fields set explicitly (not None), as keyword arguments for the model."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name != "preset" and v is not None:
                out[f.name] = list(v) if isinstance(v, tuple) else v
        return out


@dataclass(frozen=True)
class DiffusionConfig:
    """Noise schedule and loss (DDPMScheduler for training)."""

    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "v_prediction"  # see docs/training.md, "Prediction target"
    rescale_betas_zero_snr: bool = False
    snr_gamma: float | None = 5.0  # min-SNR-gamma loss weighting; None: plain MSE
    gene_dropout: float = 0.1  # probability of replacing the gene with the null gene (for CFG)
    tissue_loss_weight: float = 1.0  # extra loss weight inside tissue (1.0: none)
    snr_shift: float = 1.0  # multiply the schedule's SNR by snr_shift**2 (weak, sparse signals)
    loss_weighting: str = "min_snr"  # "min_snr" (snr_gamma) or "edm" (sigma_data)
    sigma_data: float = 0.5  # EDM weighting: the data's standard deviation in model units
    timestep_sampling: str = "uniform"  # "uniform" over steps or "lognormal" (EDM, p_mean/p_std)
    p_mean: float = -1.2
    p_std: float = 1.2
    context_none_prob: float = 0.5  # in-filling models: probability of no context frames
    context_size: str = "uniform"  # in-filling models: context subset size (draw_context)
    input_perturbation: float = 0.0  # DDPM-IP: noisy input made with noise + gamma * extra noise
    self_condition_prob: float = 0.5  # self-conditioning models: share of micro-batches given x0-hat

    def __post_init__(self) -> None:
        _check_choice("diffusion.", "beta_schedule", self.beta_schedule, BETA_SCHEDULES)
        _check_choice("diffusion.", "prediction_type", self.prediction_type, PREDICTION_TYPES)
        _check_choice("diffusion.", "loss_weighting", self.loss_weighting, LOSS_WEIGHTINGS)
        _check_choice("diffusion.", "timestep_sampling", self.timestep_sampling, TIMESTEP_SAMPLINGS)
        _check_choice("diffusion.", "context_size", self.context_size, CONTEXT_SIZES)
        if self.loss_weighting == "edm" and self.prediction_type != "v_prediction":
            raise InputError("config diffusion.loss_weighting=edm needs "
                             "diffusion.prediction_type=v_prediction")
        if self.sigma_data <= 0 or self.p_std <= 0:
            raise InputError("config diffusion.sigma_data and diffusion.p_std: must be > 0")
        if not (math.isfinite(self.input_perturbation) and self.input_perturbation >= 0.0):
            raise InputError(f"config diffusion.input_perturbation={self.input_perturbation}: "
                             "must be a finite number >= 0 (0: off)")
        if not 0.0 <= self.self_condition_prob <= 1.0:
            raise InputError(f"config diffusion.self_condition_prob={self.self_condition_prob}: "
                             "must be in [0, 1]")
        if not 0.0 <= self.context_none_prob <= 1.0:
            raise InputError(f"config diffusion.context_none_prob={self.context_none_prob}: "
                             "must be in [0, 1]")
        if self.rescale_betas_zero_snr and self.prediction_type != "v_prediction":
            raise InputError("config diffusion.rescale_betas_zero_snr=true needs "
                             "diffusion.prediction_type=v_prediction (zero terminal SNR)")
        if not 0.0 <= self.gene_dropout < 1.0:
            raise InputError(f"config diffusion.gene_dropout={self.gene_dropout}: must be in [0, 1)")
        if self.snr_shift <= 0:
            raise InputError(f"config diffusion.snr_shift={self.snr_shift}: must be > 0")
        if self.tissue_loss_weight < 1.0:
            raise InputError(f"config diffusion.tissue_loss_weight={self.tissue_loss_weight}: "
                             "must be >= 1 (1 = no emphasis)")
        if self.snr_gamma is not None and self.snr_gamma <= 0:
            raise InputError(f"config diffusion.snr_gamma={self.snr_gamma}: must be > 0 or null")


@dataclass(frozen=True)
class ValidationConfig:
    """Periodic validation: a short DDIM sample of a few genes and a fixed-noise denoising loss."""

    genes: tuple[str, ...] = ()  # gene names; empty: the first ``num_genes`` of the vocabulary
    num_genes: int = 4
    num_inference_steps: int = 10
    guidance_scale: float = 1.0
    loss_batches: int = 2  # batches of the fixed validation set for the denoising loss


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``train.py`` needs. See docs/training.md for what each option means."""

    output_dir: str = "runs/train"
    seed: int = 0
    max_steps: int = 1000
    train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    checkpointing_steps: int = 500
    checkpoints_total_limit: int | None = 3
    validation_steps: int = 500
    learning_rate: float = 2e-4
    lr_warmup_steps: int = 100
    lr_scheduler: str = "cosine"
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    gene_embedding_lr_scale: float = 1.0  # LR multiplier of the gene table (rows train sparsely)
    gene_embedding_init: str = "random"  # "random" or "data" (PCA of each gene's training frames)
    gene_embedding_init_rms: float = 1.0  # "data": root mean square of the starting table
    gene_embedding_init_components: int | None = None  # "data": PCs in the start (null: all columns)
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"
    use_ema: bool = True
    ema_decay: float = 0.999
    gradient_checkpointing: bool = False
    torch_compile: bool = False
    report_to: str = "tensorboard"
    logging_steps: int = 10
    dataloader_num_workers: int = 0
    resume_from_checkpoint: str | None = None  # "latest" or a checkpoint folder
    push_to_hub: bool = False
    hub_model_id: str | None = None
    hub_private: bool = False
    push_every_checkpoint: bool = False
    debug_dump_weights: bool = False  # every rank writes a hash of its weights (tests)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)

    def __post_init__(self) -> None:
        _check_choice("", "mixed_precision", self.mixed_precision, MIXED_PRECISION)
        _check_choice("", "lr_scheduler", self.lr_scheduler, LR_SCHEDULERS)
        _check_choice("", "report_to", self.report_to, REPORT_TO)
        for name in ("max_steps", "train_batch_size", "gradient_accumulation_steps",
                     "checkpointing_steps", "validation_steps", "logging_steps"):
            if getattr(self, name) < 1:
                raise InputError(f"config {name}={getattr(self, name)}: must be >= 1")
        if self.checkpoints_total_limit is not None and self.checkpoints_total_limit < 1:
            raise InputError(f"config checkpoints_total_limit={self.checkpoints_total_limit}: "
                             "must be >= 1 or null")
        if not 0.0 <= self.ema_decay < 1.0:
            raise InputError(f"config ema_decay={self.ema_decay}: must be in [0, 1)")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise InputError(f"config learning_rate={self.learning_rate}: must be a number > 0")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise InputError(f"config {name}={getattr(self, name)}: must be in [0, 1)")
        for name in ("adam_weight_decay", "adam_epsilon", "max_grad_norm", "lr_warmup_steps",
                     "dataloader_num_workers"):
            if not getattr(self, name) >= 0:
                raise InputError(f"config {name}={getattr(self, name)}: must be >= 0")
        _check_choice("", "gene_embedding_init", self.gene_embedding_init, GENE_EMBEDDING_INITS)
        if not self.gene_embedding_init_rms > 0:
            raise InputError(f"config gene_embedding_init_rms={self.gene_embedding_init_rms}: "
                             "must be > 0")
        n = self.gene_embedding_init_components
        if n is not None and not (isinstance(n, int) and n >= 1):
            raise InputError(f"config gene_embedding_init_components={n}: must be an integer "
                             ">= 1 or null")
        if not self.gene_embedding_lr_scale > 0:
            raise InputError(f"config gene_embedding_lr_scale={self.gene_embedding_lr_scale}: "
                             "must be > 0")
        if self.push_to_hub and not self.hub_model_id:
            raise InputError("config push_to_hub=true needs hub_model_id (--hub_model_id user/name)")

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


# ----------------------------------------------------------------------------- loading
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for name, tp in _field_types(cls).items():
        if dataclasses.is_dataclass(tp):
            keys.extend(_all_keys(tp, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _unknown_key(key: str, root: type) -> InputError:
    return _unknown_keys([key], root)


def _unknown_keys(keys: Sequence[str], root: type) -> InputError:
    """One error naming every unknown key, each with its close matches."""
    parts = []
    for key in keys:
        close = difflib.get_close_matches(key, _all_keys(root), n=3, cutoff=0.5)
        parts.append(f"{key!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
    if len(parts) == 1:
        return InputError(f"config: unknown key {parts[0].replace(' (', '; ', 1).rstrip(')')}")
    return InputError(f"config: {len(parts)} unknown keys: {', '.join(parts)}")


def _find_unknown(values: Mapping[str, Any], cls: type, prefix: str = "") -> list[str]:
    """Dotted names of every key in ``values`` that ``cls`` (a config dataclass) lacks."""
    types_ = _field_types(cls)
    bad = []
    for name, value in values.items():
        if name not in types_:
            bad.append(f"{prefix}{name}")
        elif dataclasses.is_dataclass(types_[name]) and isinstance(value, Mapping):
            bad.extend(_find_unknown(value, types_[name], f"{prefix}{name}."))
    return bad


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (str, int, float, bool, tuple, Optional)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except InputError as exc:
                errors.append(str(exc))
        raise InputError(errors[0] if errors else f"config {key}={value!r}: bad value")
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            value = [value]
        (item_tp, *_rest) = typing.get_args(tp)
        return tuple(_coerce(v, item_tp, key) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise InputError(f"config {key}={value!r}: expected true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise InputError(f"config {key}={value!r}: expected an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise InputError(f"config {key}={value!r}: expected a number")
    if tp is str:
        if isinstance(value, bool):  # YAML 1.1 reads an unquoted no/yes (mixed_precision=no) as a bool
            return "yes" if value else "no"
        if isinstance(value, (str, int, float)):
            return str(value)
        raise InputError(f"config {key}={value!r}: expected a string")
    raise InputError(f"config {key}: unsupported type {tp}")


def _build(cls: type, values: Mapping[str, Any], prefix: str, root: type) -> Any:
    types_ = _field_types(cls)
    kwargs = {}
    for name, value in values.items():
        key = f"{prefix}{name}"
        if name not in types_:
            raise _unknown_key(key, root)
        tp = types_[name]
        if dataclasses.is_dataclass(tp):
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise InputError(f"config {key}: expected a mapping of options, got {value!r}")
            kwargs[name] = _build(tp, value, f"{key}.", root)
        else:
            kwargs[name] = _coerce(value, tp, key)
    return cls(**kwargs)


def _set_dotted(tree: dict, key: str, value: Any, root: type) -> None:
    parts = key.split(".")
    cls = root
    node = tree
    for i, part in enumerate(parts):
        types_ = _field_types(cls)
        if part not in types_:
            raise _unknown_key(key, root)
        tp = types_[part]
        last = i == len(parts) - 1
        if dataclasses.is_dataclass(tp):
            if last:
                raise InputError(f"config {key}: is a section; set one of its keys, e.g. {key}."
                                 f"{next(iter(_field_types(tp)))}=...")
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise InputError(f"config {key}: section {part!r} is not a mapping")
            cls = tp
        elif last:
            node[part] = value
        else:
            raise _unknown_key(key, root)


def parse_override(text: str) -> tuple[str, Any]:
    """``"data.gene_sampling=nnz"`` -> ``("data.gene_sampling", "nnz")`` (value parsed as YAML)."""
    if "=" not in text:
        raise InputError(f"config override {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    key = key.strip().lstrip("-")
    if not key:
        raise InputError(f"config override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def config_from_dict(values: Mapping[str, Any] | None, overrides: Iterable[str] = ()) -> TrainConfig:
    """Build a :class:`TrainConfig` from a nested dict plus ``key=value`` overrides."""
    tree = _deep_copy(dict(values or {}))
    unknown = _find_unknown(tree, TrainConfig)
    for text in overrides:
        key, value = parse_override(text)
        try:
            _set_dotted(tree, key, value, TrainConfig)
        except InputError:
            if _find_unknown(_nest(key, value), TrainConfig):
                unknown.append(key)
                continue
            raise
    if unknown:
        raise _unknown_keys(unknown, TrainConfig)
    return _build(TrainConfig, tree, "", TrainConfig)


def _nest(key: str, value: Any) -> dict:
    node: Any = value
    for part in reversed(key.split(".")):
        node = {part: node}
    return node


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> TrainConfig:
    """Read a YAML config (or the defaults when ``path`` is None) and apply overrides."""
    values: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"config {p}: file not found")
        try:
            values = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise InputError(f"config {p}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(values, dict):
            raise InputError(f"config {p}: expected a mapping at the top level")
    return config_from_dict(values, overrides)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) of a config dataclass: YAML/JSON-able."""
    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        return v
    return conv(cfg)


def flat_config(cfg: TrainConfig) -> dict[str, Any]:
    """Dotted-key flat dict with scalar values (what trackers such as TensorBoard accept)."""
    out: dict[str, Any] = {}

    def walk(d: Mapping[str, Any], prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, Mapping):
                walk(v, f"{prefix}{k}.")
            elif v is None or isinstance(v, (list, tuple)):
                out[f"{prefix}{k}"] = str(v)
            else:
                out[f"{prefix}{k}"] = v
    walk(config_to_dict(cfg), "")
    return out


def save_config(cfg: TrainConfig, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return p


def _deep_copy(d: Any) -> Any:
    if isinstance(d, Mapping):
        return {k: _deep_copy(v) for k, v in d.items()}
    return d
