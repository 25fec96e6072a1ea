"""Checkpoint folders: naming, resume resolution, pruning, the ``export-latest`` pointer.

    OUTPUT_DIR/checkpoint-<step>/   accelerator.save_state (model, optimizer, LR, EMA, RNG)
    OUTPUT_DIR/export-<step>/       videogene.pipelines.export_pipeline (design §5)
    OUTPUT_DIR/export-latest        symlink to the newest export-<step> (a copy where links fail)
    OUTPUT_DIR/export-latest.txt    the newest export's folder name, one line
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

import torch

from ..errors import InputError
from ..utils import get_logger

logger = get_logger("training")
_STEP_RE = re.compile(r"^(checkpoint|export)-(\d+)$")


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / f"checkpoint-{step}"


def export_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / f"export-{step}"


def step_of(path: str | Path) -> int:
    m = _STEP_RE.match(Path(path).name)
    if not m:
        raise InputError(f"{path}: not a checkpoint-<step> or export-<step> folder")
    return int(m.group(2))


def list_step_dirs(output_dir: str | Path, kind: str = "checkpoint") -> list[Path]:
    """``checkpoint-<step>`` (or ``export-<step>``) folders, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and not p.is_symlink()
             and (m := _STEP_RE.match(p.name)) and m.group(1) == kind]
    return sorted(found, key=step_of)


def resolve_resume(output_dir: str | Path, spec: str | None) -> Path | None:
    """``"latest"`` -> the newest checkpoint (None if there is none yet); a path must exist."""
    if not spec:
        return None
    if spec == "latest":
        ckpts = list_step_dirs(output_dir)
        if not ckpts:
            logger.info("resume=latest: no checkpoint in %s, starting from scratch", output_dir)
            return None
        return ckpts[-1]
    p = Path(spec)
    if not p.is_dir() and (Path(output_dir) / spec).is_dir():
        p = Path(output_dir) / spec
    if not p.is_dir():
        raise InputError(f"--resume {spec}: checkpoint folder not found")
    step_of(p)
    return p


def prune(output_dir: str | Path, limit: int | None, kind: str = "checkpoint") -> list[Path]:
    """Delete all but the ``limit`` newest ``<kind>-<step>`` folders; returns what was removed."""
    if limit is None:
        return []
    dirs = list_step_dirs(output_dir, kind)
    doomed = dirs[: max(0, len(dirs) - limit)]
    for d in doomed:
        shutil.rmtree(d, ignore_errors=True)
        logger.info("removed old %s %s", kind, d.name)
    return doomed


def point_export_latest(output_dir: str | Path, target: str | Path) -> Path:
    """Make ``output_dir/export-latest`` point at ``target`` (relative symlink, else a copy)."""
    root = Path(output_dir)
    target = Path(target)
    link = root / "export-latest"
    tmp = root / ".export-latest.tmp"
    if tmp.is_symlink() or tmp.exists():
        _remove(tmp)
    try:
        os.symlink(target.name, tmp, target_is_directory=True)
    except OSError:  # no symlinks here (some Windows / network file systems): copy
        shutil.copytree(target, tmp)
    if link.is_symlink() or link.exists():
        _remove(link)
    os.replace(tmp, link)
    (root / "export-latest.txt").write_text(target.name + "\n")
    return link


def check_resumable(checkpoint: str | Path) -> None:
    """One-line error for a checkpoint of the flat-layer model (``down_layers.*`` keys).

    Its weights would load through the model's key remap, but the optimizer and EMA states
    are stored in parameter order, which changed with the per-level blocks: resuming would
    fail at the first step or, for same-shape parameters, silently swap moments.
    """
    path = Path(checkpoint) / "model.safetensors"
    if not path.is_file():
        return
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        old = any(k.split(".", 1)[0] in ("down_layers", "up_layers", "mid_layers") for k in f.keys())
    if old:
        raise InputError(f"checkpoint {checkpoint}: written by an older videogene (flat layer "
                         "layout), its optimizer state cannot be resumed; start a new output_dir "
                         "(its exports still load for sampling)")


def _remove(p: Path) -> None:
    if p.is_symlink() or p.is_file():
        p.unlink()
    else:
        shutil.rmtree(p)


def _update(h, name: str, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(name.encode())
    h.update(str(t.dtype).encode())
    h.update(str(tuple(t.shape)).encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 over the model's state dict (names, dtypes, shapes, bytes), in name order."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        _update(h, name, t)
    return h.hexdigest()


def tensor_digest(t: torch.Tensor) -> str:
    """SHA-256 over one tensor (dtype, shape, bytes), as :func:`weights_digest` hashes each."""
    h = hashlib.sha256()
    _update(h, "", t)
    return h.hexdigest()
