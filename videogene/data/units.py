"""Expression <-> model units: the one place that says what the network sees of a gene.

A gene's frame ``x`` (log-normalized expression, >= 0) is divided by the gene's scale ``s``
(``meta["gene_scale"]``: the 99th percentile of its non-zero tissue values over training frames,
floored at ``meta["gene_scale_floor"]``) and clipped, ``u = clip(x / s, 0, 1)``, then mapped to
model units by the dataset's mapping ``meta["model_units"]``:

- ``{"mapping": "minus_one_one"}``: ``y = 2 u - 1`` (no expression -> -1, the gene's scale -> +1)
- ``{"mapping": "centered", "center": c, "std": sd, "sigma_data": sigma}``:
  ``y = (u - c) / sd * sigma``; ``c`` and ``sd`` are the mean and standard deviation of ``u``
  over the tissue pixels of all training frames, so the data the network sees has mean 0 and
  standard deviation ``sigma`` there (EDM's ``sigma_data``).

Zero expression maps to :func:`zero_level` (absent frames and pixels outside the tissue get it
too). The stream (:class:`videogene.data.GeneVideoDataset`), the pipeline's output, train.py's
validation and the in-filling context all go through :func:`to_model_units` /
:func:`to_expression` (numpy arrays or torch tensors; ``scale`` broadcasts against the values).

Datasets prepared before per-gene scales (no ``gene_scale`` in the metadata) keep today's
mapping ``x / value_max * 2 - 1``: every gene's scale is ``value_max`` and the mapping is
``minus_one_one``; :func:`model_units` logs once per dataset that it is old.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import InputError
from ..utils import get_logger
from .meta import DEFAULT_VALUE_MAX

logger = get_logger("videogene.data.units")

MAPPINGS = ("minus_one_one", "centered")
DEFAULT_MAPPING = "centered"  # measured: docs/training.md, "Model units"
SIGMA_DATA = 0.5
GENE_SCALE_QUANTILE = 0.99
GENE_SCALE_FLOOR = 0.5
NEW_KEYS = ("gene_scale", "gene_scale_floor", "gene_scale_rule", "spatial_signal",
            "spatially_variable", "spatial_threshold", "model_units")

_WARNED: set[str] = set()


def gene_scale_rule(floor: float = GENE_SCALE_FLOOR, quantile: float = GENE_SCALE_QUANTILE) -> str:
    """One-line description of the per-gene scale (stored as ``meta["gene_scale_rule"]``)."""
    return (f"per gene: {quantile * 100:g}th percentile of its non-zero tissue values over the "
            f"training frames (hold-out time points excluded), at least {floor:g}")


# ----------------------------------------------------------------------------- metadata
def is_legacy(meta: Mapping) -> bool:
    """True for metadata written before per-gene scales (no ``gene_scale``)."""
    return "gene_scale" not in meta


def require_meta_field(meta: Mapping, key: str, dataset: object = "dataset") -> object:
    """``meta[key]``, or a one-line InputError naming ``dataset`` and the missing field
    (:meth:`DatasetMeta.require` for a plain mapping)."""
    from .meta import DatasetMeta

    return DatasetMeta(meta, source=dataset).require(key)


def _check_params(params: Mapping) -> dict:
    p = dict(params)
    name = p.get("mapping")
    if name not in MAPPINGS:
        raise InputError(f"model_units: mapping {name!r} is not one of {', '.join(MAPPINGS)}")
    if name == "centered":
        for k in ("center", "std", "sigma_data"):
            if k not in p:
                raise InputError(f"model_units: 'centered' mapping without {k!r}")
        if not float(p["std"]) > 0 or not float(p["sigma_data"]) > 0:
            raise InputError(f"model_units: std and sigma_data must be > 0, got {p}")
    return p


def model_units(meta: Mapping | None, *, dataset: object = None) -> dict:
    """The mapping parameters of a dataset (``meta["model_units"]``).

    Metadata without per-gene scales gives ``{"mapping": "minus_one_one", "legacy": True}``
    and logs once per ``dataset`` (name used in the message) that the dataset is old. ``None``
    (a pipeline without metadata) gives the same without the log line.
    """
    if meta is None:
        return {"mapping": "minus_one_one", "legacy": True}
    if is_legacy(meta):
        # once per dataset, however it is named (path, resolved folder, Hub id)
        key = json.dumps([meta.get("genes", [])[:20], len(meta.get("genes", [])),
                          meta.get("resolution"), meta.get("value_max"),
                          [sl.get("name") for sl in meta.get("slices", [])]], default=str)
        if key not in _WARNED:
            _WARNED.add(key)
            logger.warning("%s: prepared without per-gene scales (older videogene): every gene is "
                           "mapped as x / value_max * 2 - 1; run `videogene prepare` again for "
                           "per-gene scales and spatially variable genes",
                           dataset if dataset is not None else "dataset")
        return {"mapping": "minus_one_one", "legacy": True}
    return _check_params(meta.get("model_units") or {"mapping": "minus_one_one"})


def _params(units: Mapping | None) -> dict:
    """Mapping parameters from a params dict (has ``mapping``) or a dataset metadata dict."""
    if units is not None and "mapping" in units:
        return _check_params(units)
    return model_units(units)


def gene_scales(meta: Mapping | None, genes: Sequence[str | int] | None = None, *,
                dataset: object = None) -> np.ndarray:
    """Per-gene scales, float32, for ``genes`` (names or ids; default every gene in order).

    Old metadata (and ``None``): ``value_max`` for every gene. Unknown names raise InputError.
    """
    meta = meta or {}
    vocab = [str(g) for g in meta.get("genes", [])]
    if is_legacy(meta):
        n = len(vocab) if genes is None else len(list(genes))
        return np.full(n, float(meta.get("value_max", DEFAULT_VALUE_MAX)), dtype=np.float32)
    if genes is None:
        ids = np.arange(len(vocab))
    else:
        index = {g: i for i, g in enumerate(vocab)}
        ids_l = []
        for g in genes:
            if isinstance(g, (int, np.integer)) and not isinstance(g, bool):
                ids_l.append(int(g))
            elif str(g) in index:
                ids_l.append(index[str(g)])
            else:
                raise InputError(f"{dataset or 'dataset'}: gene {g!r} is not in the metadata's "
                                 f"{len(vocab)} genes (no scale for it)")
        ids = np.asarray(ids_l, dtype=np.int64)
    scale = np.asarray(meta["gene_scale"], dtype=np.float32)
    if len(scale) != len(vocab):
        raise InputError(f"{dataset or 'dataset'}: gene_scale has {len(scale)} entries for "
                         f"{len(vocab)} genes")
    if ids.size and (ids.min() < 0 or ids.max() >= len(scale)):
        raise InputError(f"{dataset or 'dataset'}: gene id out of range ({len(scale)} genes)")
    return scale[ids]


# ----------------------------------------------------------------------------- the mapping
def _is_torch(x) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _like(x, scale):
    """``scale`` as an array/tensor that broadcasts with ``x`` (same library, dtype, device)."""
    if _is_torch(x):
        import torch

        return torch.as_tensor(scale, dtype=x.dtype, device=x.device)
    return np.asarray(scale, dtype=np.result_type(x, np.float32))


def _clip(x, lo, hi):
    return x.clamp(lo, hi) if _is_torch(x) else np.clip(x, lo, hi)


def to_model_units(x, scale, units: Mapping | None):
    """Expression ``x`` (>= 0; numpy or torch) -> model units, given each gene's ``scale``.

    ``u = clip(x / scale, 0, 1)`` then the mapping of ``units`` (a ``model_units`` dict or
    the dataset metadata). ``scale`` must broadcast against ``x``.
    """
    p = _params(units)
    if not _is_torch(x):
        x = np.asarray(x, dtype=np.result_type(x, np.float32))
    u = _clip(x / _like(x, scale), 0.0, 1.0)
    if p["mapping"] == "minus_one_one":
        return u * 2.0 - 1.0
    return (u - float(p["center"])) * (float(p["sigma_data"]) / float(p["std"]))


def to_expression(y, scale, units: Mapping | None, *, clip: bool = True):
    """Model units ``y`` (numpy or torch) -> expression, the inverse of :func:`to_model_units`.

    With ``clip`` (default) ``u`` is clipped to ``[0, 1]`` first, so the result lies in
    ``[0, scale]``.
    """
    p = _params(units)
    if not _is_torch(y):
        y = np.asarray(y, dtype=np.result_type(y, np.float32))
    if p["mapping"] == "minus_one_one":
        u = (y + 1.0) / 2.0
    else:
        u = y * (float(p["std"]) / float(p["sigma_data"])) + float(p["center"])
    if clip:
        u = _clip(u, 0.0, 1.0)
    return u * _like(y, scale)


def zero_level(units: Mapping | None) -> float:
    """Model units of zero expression: what absent frames and pixels outside the tissue hold."""
    return float(to_model_units(np.float32(0.0), 1.0, units))


def model_range(units: Mapping | None) -> tuple[float, float]:
    """``(lo, hi)``: model units of zero expression and of a gene's scale (the data range)."""
    return zero_level(units), float(to_model_units(np.float32(1.0), 1.0, units))


def clip_bound(units: Mapping | None) -> float:
    """Symmetric bound ``max(|lo|, |hi|)`` for samplers that clip predicted clean samples."""
    lo, hi = model_range(units)
    return float(max(abs(lo), abs(hi)))


def centered_params(sum_u: float, sum_u2: float, n: float, *, sigma_data: float = SIGMA_DATA) -> dict:
    """The ``centered`` mapping from sums of ``u`` and ``u**2`` over ``n`` tissue pixels."""
    if n <= 0:
        return {"mapping": "centered", "center": 0.0, "std": 1.0, "sigma_data": float(sigma_data)}
    c = sum_u / n
    var = max(sum_u2 / n - c * c, 0.0)
    sd = math.sqrt(var) if var > 1e-12 else 1.0
    return {"mapping": "centered", "center": float(c), "std": float(sd),
            "sigma_data": float(sigma_data)}


# ----------------------------------------------------------------------------- ingest helper
def grouped_quantile(values: np.ndarray, groups: np.ndarray, n_groups: int, q: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Per-group ``q`` quantile (linear interpolation, as ``np.quantile``) and group sizes.

    ``values`` and ``groups`` (ints in ``[0, n_groups)``) are flat arrays of equal length.
    Groups without values get quantile 0. One sort, no Python loop over groups.
    """
    values = np.asarray(values, dtype=np.float64)
    groups = np.asarray(groups, dtype=np.int64)
    counts = np.bincount(groups, minlength=n_groups)
    out = np.zeros(n_groups, dtype=np.float64)
    if values.size == 0:
        return out, counts
    order = np.lexsort((values, groups))
    v = values[order]
    start = np.zeros(n_groups, dtype=np.int64)
    np.cumsum(counts[:-1], out=start[1:])
    ok = counts > 0
    pos = (counts[ok] - 1) * float(q)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, counts[ok] - 1)
    frac = pos - lo
    out[ok] = v[start[ok] + lo] * (1 - frac) + v[start[ok] + hi] * frac
    return out, counts
