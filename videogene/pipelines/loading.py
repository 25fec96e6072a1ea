"""Write and read export folders (docs/design.md §5).

``export_pipeline`` writes what training hands to generation, evaluation and embedding;
``load_pipeline`` finds an export from an export folder, a training ``output_dir`` (newest
``export-<step>``) or a Hugging Face Hub id and returns a ready :class:`VideoGenePipeline`;
``resolve_pipeline`` is what every "model or path" argument goes through (a loaded pipeline
or any of those).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from ..data.meta import META_NAME, is_hub_id
from ..errors import InputError
from ..utils import get_logger
from .pipeline_videogene import VideoGenePipeline

logger = get_logger(__name__)

TRAINING_CONFIG = "training_config.yaml"


def read_training_config(folder: str | os.PathLike | None) -> dict | None:
    """The resolved training config saved in an export folder (``training_config.yaml``);
    None when the folder or the file is absent. Invalid YAML is an InputError."""
    if folder is None or not (Path(folder) / TRAINING_CONFIG).is_file():
        return None
    import yaml

    f = Path(folder) / TRAINING_CONFIG
    try:
        cfg = yaml.safe_load(f.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{f}: not valid YAML ({exc})") from None
    return cfg if isinstance(cfg, dict) else None

RAW_SUBFOLDER = "unet_raw"
_EXPORT_RE = re.compile(r"^export-(\d+)$")


def _unwrap(model):
    """The bare module behind torch.compile / DDP wrappers."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def _default_model_card(pipe: VideoGenePipeline, training_config: dict | None) -> str:
    meta = pipe.meta or {}
    genes = pipe.gene_names
    cfg = pipe.unet.config
    lines = [
        "---", "library_name: diffusers", "tags: [videogene, spatial-transcriptomics, video-diffusion]",
        "---", "", "# videogene model", "",
        "A conditional video diffusion model of spatiotemporal gene expression: for a gene it",
        "generates a trajectory of expression maps over developmental time (one frame per time",
        "point), conditioned on a learned gene embedding and each frame's time.", "",
        f"- genes: {len(genes)} (e.g. {', '.join(genes[:8])}{' ...' if len(genes) > 8 else ''})",
        f"- training time points: {meta.get('timepoints', 'unknown')}",
        f"- canvas: {meta.get('resolution', cfg.sample_size)} pixels square",
        f"- values: {meta.get('normalization', 'log1p')} expression in [0, {pipe.value_max:g}]",
        f"- held out: {json.dumps((meta.get('holdout') or {}).get('timepoints', []))}",
        f"- unet: {type(pipe.unet).__name__}, "
        f"{sum(p.numel() for p in pipe.unet.parameters()) / 1e6:.2f} M parameters",
    ]
    if training_config:
        step = training_config.get("max_steps") or training_config.get("step")
        if step:
            lines.append(f"- training steps: {step}")
    lines += [
        "", "## Use", "", "```python", "from videogene.pipelines import load_pipeline", "",
        "pipe = load_pipeline(\"PATH_OR_HUB_ID\")",
        f"out = pipe([\"{genes[0] if genes else 'GENE'}\"], timepoints=None, num_samples=4)",
        "out.trajectories.shape  # (genes, samples, time points, H, W)", "```", "",
        "or `videogene generate --model PATH --gene NAME --out DIR`.", "",
    ]
    return "\n".join(lines)


def export_pipeline(export_dir, *, unet, scheduler, unet_raw=None, dataset_dir=None,
                    training_config: dict | None = None, model_card: str | None = None) -> Path:
    """Write an export folder (design §5) and return its path.

    ``unet`` goes to ``unet/`` (the EMA weights when EMA is on), ``unet_raw`` (optional, raw
    training weights) to ``unet_raw/``, ``scheduler`` (the training noise schedule) to
    ``scheduler/``; ``videogene_meta.json`` and ``masks.npy`` are copied from ``dataset_dir``;
    ``training_config`` is written as ``training_config.yaml``; ``model_card`` (or a generated
    one) as ``README.md``. The folder is written beside its final place and renamed into it,
    so readers never see a half-written export; an existing folder is replaced.
    """
    import yaml

    export_dir = Path(export_dir)
    pipe = VideoGenePipeline(unet=_unwrap(unet), scheduler=scheduler)
    if dataset_dir is not None:
        from ..data import load_masks, load_metadata

        pipe.set_metadata(load_metadata(dataset_dir), load_masks(dataset_dir))
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{export_dir.name}.tmp-", dir=export_dir.parent))
    try:
        pipe.save_pretrained(tmp)
        if dataset_dir is not None and (Path(dataset_dir) / META_NAME).is_file():
            shutil.copy2(Path(dataset_dir) / META_NAME, tmp / META_NAME)  # byte-identical copy
        if unet_raw is not None:
            _unwrap(unet_raw).save_pretrained(tmp / RAW_SUBFOLDER)
        if training_config is not None:
            (tmp / TRAINING_CONFIG).write_text(
                yaml.safe_dump(json.loads(json.dumps(training_config, default=str)), sort_keys=False))
        (tmp / "README.md").write_text(model_card or _default_model_card(pipe, training_config))
        if export_dir.is_symlink() or export_dir.is_file():
            export_dir.unlink()
        elif export_dir.exists():
            shutil.rmtree(export_dir)
        tmp.rename(export_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("exported pipeline to %s", export_dir)
    return export_dir


def resolve_export(path_or_hub_id) -> Path:
    """The export folder behind an export folder, a training output_dir or a Hub id.

    In an output_dir the ``export-<step>`` with the largest step wins; ``export-latest`` is
    used when there is no numbered export. Hub ids are downloaded with
    ``huggingface_hub.snapshot_download`` (cached).
    """
    text = str(path_or_hub_id)
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / "model_index.json").is_file():
            return path
        numbered = []
        for child in path.iterdir():
            m = _EXPORT_RE.match(child.name)
            if m and (child / "model_index.json").is_file():
                numbered.append((int(m.group(1)), child))
        if numbered:
            return max(numbered)[1]
        if (path / "export-latest" / "model_index.json").is_file():
            return path / "export-latest"
        raise InputError(f"model {text}: no export found (expected model_index.json or "
                         "export-<step>/ folders inside)")
    if path.exists():
        raise InputError(f"model {text}: not a folder")
    if is_hub_id(text):
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(text))
        except Exception as exc:  # network, missing repo, auth: all the same to the user
            raise InputError(f"model {text}: no such folder, and not downloadable from the Hugging "
                             f"Face Hub ({type(exc).__name__})") from None
    raise InputError(f"model {text}: no such folder")


def _best_device(device):
    import torch

    if device is not None:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError):
            raise InputError(f"--device {device!r}: not a device (cpu, cuda, cuda:1, mps ...)") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"--device {device}: CUDA is not available on this machine (use cpu)")
        if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)")
        if dev.type == "mps" and not torch.backends.mps.is_available():
            raise InputError(f"--device {device}: MPS is not available on this machine (use cpu)")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def load_pipeline(path_or_hub_id, *, use_ema: bool = True, device=None) -> VideoGenePipeline:
    """Load a :class:`VideoGenePipeline` from an export folder, a training output_dir or a Hub id.

    ``use_ema=False`` loads the raw training weights from ``unet_raw/`` when the export has
    them (otherwise ``unet/`` already holds raw weights). ``device``: None picks CUDA when
    available. The returned pipeline's ``.meta`` is the dataset metadata, ``.masks`` the tissue
    masks and ``.source_dir`` the export folder.
    """
    folder = resolve_export(path_or_hub_id)
    kwargs = {}
    if not use_ema:
        raw = folder / RAW_SUBFOLDER
        if (raw / "config.json").is_file():
            from ..models import VideoGeneUNet

            kwargs["unet"] = VideoGeneUNet.from_pretrained(raw)
        else:
            logger.info("%s has no %s/: its unet/ holds the raw weights", folder, RAW_SUBFOLDER)
    pipe = VideoGenePipeline.from_pretrained(folder, **kwargs)
    if pipe.masks is None and pipe.meta is None:
        logger.warning("%s has no %s: masks and time points unknown", folder, META_NAME)
    pipe.unet.eval()
    pipe.to(_best_device(device))
    pipe.set_progress_bar_config(leave=False)
    return pipe


def _is_pipeline(obj) -> bool:
    """A loaded pipeline (duck-typed: a denoiser and a gene vocabulary)."""
    return not isinstance(obj, (str, os.PathLike)) and hasattr(obj, "unet") and hasattr(
        obj, "gene_names")


def resolve_pipeline(model_or_path, *, use_ema: bool = True, device=None
                     ) -> tuple[VideoGenePipeline, str]:
    """The pipeline behind a "model or path" argument, and the name reports give it.

    ``model_or_path``: a loaded :class:`VideoGenePipeline` (returned as it is, on its device),
    or an export folder, a training output_dir (newest export) or a Hub id, loaded by
    :func:`load_pipeline` with ``use_ema`` and ``device``. The name is the export folder
    loaded (the id for a Hub id); for a pipeline passed in its ``source_dir``, else
    ``"in-memory pipeline"``. Nothing given or another type is an InputError.
    """
    if _is_pipeline(model_or_path):
        source = getattr(model_or_path, "source_dir", None)
        return model_or_path, str(source) if source else "in-memory pipeline"
    if model_or_path is None or not str(model_or_path).strip():
        raise InputError("model: no path given")
    if not isinstance(model_or_path, (str, os.PathLike)):
        raise InputError("model_or_path: expected a VideoGenePipeline, an export folder, a training "
                         f"output_dir or a Hub id, got {type(model_or_path).__name__}")
    text = str(model_or_path)
    pipe = load_pipeline(text, use_ema=use_ema, device=device)
    return pipe, text if is_hub_id(text) else str(pipe.source_dir)
