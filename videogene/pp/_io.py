"""Open .h5ad inputs lazily (``backed="r"``), list their slices, read one slice at a time."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import InputError
from ..utils import get_logger
from ._normalize import check_values, looks_like_counts, parse_time

logger = get_logger("videogene.pp.io")

#: stored values sampled to decide raw counts vs log-normalized
_DETECT_ROWS = 2000


#: obs columns that often hold the section a cell belongs to
LIKELY_SLICE_COLUMNS = ("sample", "sample_id", "batch", "section", "section_id", "embryo",
                        "slice_id", "slice_name", "library_id", "replicate", "puck", "fov_slice")


def _warn_unused_slice_column(path, obs, coords: np.ndarray, slice_key: str) -> str | None:
    """Warn when a likely slice column exists, is unused, and its groups' coordinates overlap."""
    for col in LIKELY_SLICE_COLUMNS:
        if col not in obs.columns or col == slice_key:
            continue
        groups = pd.factorize(obs[col].astype(str).to_numpy())[0]
        k = int(groups.max()) + 1 if len(groups) else 0
        if not 1 < k <= max(2, len(groups) // 20):
            continue
        boxes = [(coords[groups == g].min(axis=0), coords[groups == g].max(axis=0))
                 for g in range(min(k, 8))]
        overlap = 0.0
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                lo = np.maximum(boxes[i][0], boxes[j][0])
                hi = np.minimum(boxes[i][1], boxes[j][1])
                inter = float(np.prod(np.clip(hi - lo, 0, None)))
                area = min(float(np.prod(b[1] - b[0])) for b in (boxes[i], boxes[j]))
                overlap = max(overlap, inter / area if area > 0 else 0.0)
        if overlap > 0.25:
            logger.warning("%s: no obs[%r] column, so all its cells form one slice, but obs[%r] "
                           "has %d groups whose coordinates overlap (%.0f%%): if they are separate "
                           "sections, pass --slice-key %s", path, slice_key, col, k, 100 * overlap,
                           col)
            return col
    return None


@dataclass
class SliceRef:
    """One slice of one file: its rows, time and (unique) name."""

    name: str
    timepoint: float
    source: str
    rows: np.ndarray
    file: InputFile = field(repr=False)


@dataclass
class InputFile:
    path: Path
    adata: object  # backed AnnData
    var_names: list[str]
    coords: np.ndarray
    slices: list[SliceRef]
    layer: str | None
    is_counts: bool = False
    uns_synthetic: dict | None = None
    _h5: object = None

    def matrix(self):
        """The backed expression matrix (X or the layer), indexable by rows."""
        if self.layer is None:
            return self.adata.X
        import anndata as ad
        import h5py

        if self._h5 is None:
            self._h5 = h5py.File(self.path, "r")
        elem = self._h5["layers"][self.layer]
        return ad.io.sparse_dataset(elem) if isinstance(elem, h5py.Group) else elem

    def read_rows(self, rows: np.ndarray) -> sp.csr_matrix:
        m = self.matrix()
        if len(rows) and rows[-1] - rows[0] + 1 == len(rows):
            x = m[int(rows[0]):int(rows[-1]) + 1]
        else:
            x = m[rows]
        x = sp.csr_matrix(x, dtype=np.float32) if sp.issparse(x) else sp.csr_matrix(
            np.asarray(x, dtype=np.float32))
        check_values(x, name=str(self.path))
        return x

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None
        try:
            self.adata.file.close()
        except Exception:  # noqa: BLE001 - closing a backed file twice is harmless
            pass


def jsonable(obj):
    """uns content -> plain JSON types."""
    return json.loads(json.dumps(obj, default=_json_default))


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (pd.Series, pd.Index)):
        return o.tolist()
    return str(o)


def open_input(path, *, time_key: str = "timepoint", slice_key: str = "slice",
               spatial_key: str = "spatial", timepoint: float | None = None,
               layer: str | None = None,
               spatial_axes: tuple[int, int] | None = None) -> InputFile:
    """Open one .h5ad backed, validate it and list its slices (nothing big is read).

    ``spatial_axes``: the two columns of ``obsm[spatial_key]`` that span the section plane
    (default the first two; with more than two columns, e.g. x, y, z, a warning says so).
    """
    import anndata as ad

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected an .h5ad file")
    try:
        adata = ad.read_h5ad(path, backed="r")
    except Exception as exc:  # noqa: BLE001 - any reader failure means "not a readable h5ad"
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: not a readable .h5ad file ({msg[:120]})") from None

    var_names = [str(v) for v in adata.var_names]
    if len(var_names) == 0:
        raise InputError(f"{path}: has no genes")
    if len(set(var_names)) != len(var_names):
        dup = pd.Index(var_names)[pd.Index(var_names).duplicated()].unique()[:3].tolist()
        raise InputError(f"{path}: duplicate gene names (e.g. {', '.join(dup)}); "
                         "make them unique (anndata's var_names_make_unique)")
    if spatial_key not in adata.obsm:
        raise InputError(f"{path}: obsm[{spatial_key!r}] not found "
                         f"(have {list(adata.obsm.keys())}; use --spatial-key)")
    coords = np.asarray(adata.obsm[spatial_key], dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] < 2:
        raise InputError(f"{path}: obsm[{spatial_key!r}] has shape {coords.shape}, expected (n, 2)")
    axes = (0, 1) if spatial_axes is None else tuple(int(a) for a in spatial_axes)
    if len(axes) != 2 or axes[0] == axes[1] or min(axes) < 0 or max(axes) >= coords.shape[1]:
        raise InputError(f"{path}: --spatial-axes {','.join(map(str, axes))}: obsm[{spatial_key!r}] "
                         f"has {coords.shape[1]} columns; give two different ones from 0 to "
                         f"{coords.shape[1] - 1}")
    if spatial_axes is None and coords.shape[1] > 2:
        logger.warning("%s: obsm[%r] has %d columns; the section plane is columns 0 and 1 (x, y), "
                       "column 2 and later are not used (choose with --spatial-axes)", path,
                       spatial_key, coords.shape[1])
    coords = coords[:, list(axes)]
    if not np.isfinite(coords).all():
        raise InputError(f"{path}: obsm[{spatial_key!r}] contains NaN or infinite coordinates")
    if layer is not None and layer not in adata.layers.keys():
        raise InputError(f"{path}: layer {layer!r} not found (have {list(adata.layers.keys())})")

    obs = adata.obs
    n = adata.n_obs
    if n == 0:
        raise InputError(f"{path}: has no cells (0 rows in obs)")
    if time_key in obs.columns:
        col = obs[time_key]
        if col.isna().any():
            raise InputError(f"{path}: obs[{time_key!r}] has missing values")
        uniq = pd.unique(col.astype(str) if isinstance(col.dtype, pd.CategoricalDtype) else col)
        lut = {u: parse_time(u, name=f"{path}: obs[{time_key!r}]") for u in uniq}
        raw = col.astype(str) if isinstance(col.dtype, pd.CategoricalDtype) else col
        times = raw.map(lut).to_numpy(dtype=np.float64)
    elif timepoint is not None:
        times = np.full(n, float(timepoint))
    else:
        raise InputError(f"{path}: obs[{time_key!r}] not found (have {list(obs.columns)}); "
                         "use --time-key, or --timepoint T for a file of one time point")

    if slice_key in obs.columns:
        labels = obs[slice_key].astype(str).to_numpy()
    else:
        labels = np.full(n, path.stem, dtype=object)
        _warn_unused_slice_column(path, obs, coords, slice_key)
    codes, names = pd.factorize(labels, sort=True)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    slices = []
    f = InputFile(path=path, adata=adata, var_names=var_names, coords=coords, slices=slices,
                  layer=layer)
    for i, name in enumerate(names):
        rows = np.sort(order[bounds[i]:bounds[i + 1]])
        ts = np.unique(times[rows])
        if len(ts) != 1:
            raise InputError(f"{path}: slice {name!r} spans several time points {ts.tolist()}")
        slices.append(SliceRef(name=str(name), timepoint=float(ts[0]), source=str(path), rows=rows,
                               file=f))
    sample = f.read_rows(np.arange(min(n, _DETECT_ROWS)))
    f.is_counts = looks_like_counts(sample)
    synth = adata.uns.get("synthetic") if hasattr(adata, "uns") else None
    if synth is not None:
        f.uns_synthetic = jsonable(dict(synth) if not isinstance(synth, str) else json.loads(synth))
    return f
