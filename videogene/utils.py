"""Small helpers shared by the CLI and the library."""

from __future__ import annotations

import logging
import math
import random

import numpy as np

from .errors import InputError

logger = logging.getLogger("videogene")


def get_logger(name: str = "videogene") -> logging.Logger:
    """Logger under the ``videogene`` namespace (configure with ``setup_logging``)."""
    return logging.getLogger(name if name.startswith("videogene") else f"videogene.{name}")


def setup_logging(verbosity: int = 0) -> None:
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")


def parse_timepoints(spec: str | float | list | tuple) -> list[float]:
    """Parse ``"9.5:16.5:0.5"`` (inclusive range), ``"9.5,12,16.5"`` or a list into floats.

    >>> parse_timepoints("9.5:11:0.5")
    [9.5, 10.0, 10.5, 11.0]
    """
    if isinstance(spec, (int, float)):
        return [float(spec)]
    if isinstance(spec, (list, tuple)):
        out: list[float] = []
        for item in spec:
            out.extend(parse_timepoints(item))
        return out
    text = str(spec).strip()
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) != 3:
                raise ValueError
            start, stop, step = parts
            if step <= 0 or stop < start:
                raise InputError(f"time points {text!r}: need start <= stop and step > 0")
            n = int(math.floor((stop - start) / step + 1e-9)) + 1
            return [round(start + i * step, 6) for i in range(n)]
        values = [float(p) for p in text.replace(" ", "").split(",") if p]
    except ValueError:
        raise InputError(
            f"time points {text!r}: expected START:STOP:STEP (e.g. 9.5:16.5:0.5) or a comma list"
        ) from None
    if not values:
        raise InputError("time points: none given")
    return values


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def check_output_dir(path, *, name: str = "--out"):
    """Check, before any work, that ``path`` can become a writable output folder.

    Creates nothing: an existing folder must be writable, an absent one must have a nearest
    existing parent that is a writable folder (probed with a temporary file, which also
    catches read-only file systems where ``os.access`` answers yes to root). Returns the
    ``Path``; raises :class:`InputError` naming ``name`` and the path.
    """
    import os
    import tempfile
    from pathlib import Path

    if path is None or not str(path).strip():
        raise InputError(f"{name}: no output folder given")
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise InputError(f"{name} {p}: exists and is not a folder")
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"{name} {p}: {probe} is a file, not a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".videogene-write-test-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise InputError(f"{name} {p}: cannot write in {probe} ({exc.strerror or exc})") from None
    return p


def resource_path(*parts: str):
    """A file shipped with the package: ``configs/...`` or ``model_cards/...``.

    ``videogene/resources`` links to the repository's ``configs/`` and ``model_cards/`` (one
    source), and the wheel carries their content, so installed copies find them too.
    """
    from pathlib import Path

    path = Path(__file__).resolve().parent / "resources" / Path(*parts)
    if not path.exists():
        raise InputError(f"{path}: not found in the installed videogene (reinstall the package)")
    return path
