"""The dataset contract: ``videogene_meta.json`` as :class:`DatasetMeta`, and where it lives.

One object answers what every part of videogene needs to know about a prepared dataset (and
the copy an export carries): its genes, days, slices, canvas, value range, per-gene scale and
model units, hold-out, reference slices. It is a ``dict`` (the JSON as written), so code and
files that read ``meta["genes"]`` keep working; new code uses the typed accessors, which are
the one place each fact is derived:

- files: :data:`META_NAME`, :data:`MASKS_NAME`; :func:`is_hub_id` and :func:`dataset_file`
  (a local folder or a Hub dataset id), :func:`resolve_dataset` (the whole folder);
- :meth:`DatasetMeta.load` / :meth:`DatasetMeta.save`;
- layout: ``genes``, ``gene_index``, ``timepoints``, ``resolution``, ``slices``,
  ``value_max``, ``spatially_variable``, :meth:`~DatasetMeta.slices_by_timepoint`,
  :meth:`~DatasetMeta.reference_slice`;
- units (:mod:`videogene.data.units`): :meth:`~DatasetMeta.gene_scales`,
  :meth:`~DatasetMeta.model_units`, :meth:`~DatasetMeta.to_model_units`,
  :meth:`~DatasetMeta.to_expression`;
- hold-out (:mod:`videogene.data.holdout`): :meth:`~DatasetMeta.holdout_spec`,
  :meth:`~DatasetMeta.observed_timepoints` — the one rule training, evaluation, embeddings
  and in-filling use.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

META_NAME = "videogene_meta.json"
MASKS_NAME = "masks.npy"
FORMAT_VERSION = 1
DEFAULT_VALUE_MAX = 9.0  # log-normalized expression range of datasets that do not record it


# ----------------------------------------------------------------------------- locating
def is_hub_id(ref: str | Path) -> bool:
    """``user/name`` that is not a local path: a Hugging Face Hub repository id."""
    ref = str(ref)
    p = Path(ref)
    return (not p.exists() and not p.is_absolute() and not ref.startswith((".", "~"))
            and ref.count("/") == 1 and all(ref.split("/")))


def dataset_file(dataset: str | Path, filename: str) -> Path:
    """Local path of one dataset file; a Hub dataset id downloads it (cached)."""
    ref = str(dataset)
    p = Path(ref).expanduser()
    if p.is_dir():
        f = p / filename
        if not f.exists():
            raise InputError(f"{p}: no {filename} (not a folder written by `videogene prepare`)")
        return f
    if is_hub_id(ref):
        from huggingface_hub import hf_hub_download

        try:
            return Path(hf_hub_download(repo_id=ref, filename=filename, repo_type="dataset"))
        except Exception as exc:  # noqa: BLE001 - report any Hub failure as one line
            raise InputError(f"{ref}: cannot download {filename} from the Hub ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:150] if str(exc) else ''})") from None
    raise InputError(f"{ref}: dataset folder not found")


def resolve_dataset(ref: str | Path, *, name: str = "dataset") -> Path:
    """A prepared dataset folder, or a Hub dataset id downloaded whole (``snapshot_download``)."""
    ref = str(ref or "")
    if not ref:
        raise InputError(f"{name}: not set (a prepared dataset folder or a Hub dataset id)")
    p = Path(ref).expanduser()
    if p.is_dir():
        return p
    if p.exists():
        raise InputError(f"{name}={ref}: not a folder")
    if is_hub_id(ref):
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(ref, repo_type="dataset"))
        except Exception as exc:  # network, missing repo, auth
            raise InputError(f"{name}={ref}: no such folder and not downloadable from the "
                             f"Hugging Face Hub ({type(exc).__name__})") from None
    raise InputError(f"{name}={ref}: no such folder")


# ----------------------------------------------------------------------------- the contract
class DatasetMeta(dict):
    """``videogene_meta.json`` of a prepared dataset or an export (a ``dict`` with typed views).

    ``source`` names where it came from (a folder, a Hub id, "export ...") for error messages.
    """

    def __init__(self, data: Mapping[str, Any] = (), *, source: str | Path | None = None):
        super().__init__(data)
        self.source = str(source) if source is not None else "dataset"

    @classmethod
    def of(cls, meta: Mapping[str, Any], *, source: str | Path | None = None) -> DatasetMeta:
        """``meta`` itself when it already is one, else a wrapped copy."""
        return meta if isinstance(meta, DatasetMeta) else cls(meta, source=source)

    @classmethod
    def load(cls, dataset: str | Path) -> DatasetMeta:
        """From a dataset folder, an export folder or a Hub dataset id."""
        f = dataset_file(dataset, META_NAME)
        try:
            data = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"{f}: unreadable metadata ({exc})") from None
        if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
            got = data.get("format_version") if isinstance(data, dict) else type(data).__name__
            raise InputError(f"{f}: format_version {got!r}, expected {FORMAT_VERSION}")
        return cls(data, source=dataset)

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / META_NAME
        path.write_text(json.dumps(self, indent=1))
        return path

    def require(self, key: str) -> Any:
        """``self[key]``, or a one-line InputError naming the dataset and the missing field."""
        if key not in self:
            raise InputError(f"{self.source}: the dataset metadata has no {key!r} (prepared by an "
                             "older videogene); run `videogene prepare` again")
        return self[key]

    # ------------------------------------------------------------------ layout
    @property
    def genes(self) -> list[str]:
        return list(self.require("genes"))

    @cached_property
    def gene_index(self) -> dict[str, int]:
        """Gene name -> id (row of the gene table, position in ``gene_scale``)."""
        return {g: i for i, g in enumerate(self.require("genes"))}

    @property
    def timepoints(self) -> list[float]:
        return [float(t) for t in self.require("timepoints")]

    @property
    def resolution(self) -> int:
        """Canvas side in pixels (the model's ``sample_size``, the masks' H and W)."""
        return int(self.require("resolution"))

    @property
    def slices(self) -> list[dict]:
        return list(self.require("slices"))

    @property
    def value_max(self) -> float:
        return float(self.get("value_max", DEFAULT_VALUE_MAX))

    @property
    def spatially_variable(self) -> np.ndarray | None:
        """``meta["spatially_variable"]`` as a ``(genes,)`` bool array; None for a dataset
        prepared before prepare wrote it; InputError when it does not have one flag per gene."""
        flags = self.get("spatially_variable")
        if flags is None:
            return None
        n = len(self.require("genes"))
        if len(flags) != n:
            raise InputError(f"{self.source}: 'spatially_variable' has {len(flags)} entries for "
                             f"{n} genes")
        return np.asarray(flags, dtype=bool)

    def slices_by_timepoint(self) -> dict[float, list[int]]:
        from .holdout import slices_by_timepoint

        return slices_by_timepoint(self)

    def reference_slice(self, t: float) -> int:
        """The slice a time point is drawn and scored on (its first slice)."""
        from .holdout import reference_slice

        return reference_slice(self, t)

    # ------------------------------------------------------------------ units
    def gene_scales(self) -> np.ndarray:
        from .units import gene_scales

        return gene_scales(self, dataset=self.source)

    def model_units(self) -> dict:
        from .units import model_units

        return model_units(self, dataset=self.source)

    def to_model_units(self, x, gene_ids):
        """Expression -> model units for the genes ``gene_ids`` (leading axis of ``x``)."""
        from .units import to_model_units

        return to_model_units(x, self._scale_for(x, gene_ids), self.model_units())

    def to_expression(self, y, gene_ids):
        """Model units -> expression for the genes ``gene_ids`` (leading axis of ``y``)."""
        from .units import to_expression

        return to_expression(y, self._scale_for(y, gene_ids), self.model_units())

    def _scale_for(self, x, gene_ids) -> np.ndarray:
        scale = self.gene_scales()[np.asarray(gene_ids, dtype=np.int64)]  # (n,)
        return scale.reshape(scale.shape + (1,) * (len(x.shape) - scale.ndim))  # (n, 1, ...)

    # ------------------------------------------------------------------ hold-out
    def holdout_spec(self, train_cfg: Mapping | None = None,
                     export_meta: Mapping | None = None) -> dict:
        """What training never saw: this metadata's hold-out, the model's copy and the training
        config's ``data.holdout_timepoints`` (:func:`videogene.data.holdout.holdout_spec`)."""
        from .holdout import holdout_spec

        return holdout_spec(self, train_cfg, export_meta)

    def observed_timepoints(self, gene: str, heldout_timepoints: Iterable[float] = ()) -> list:
        from .holdout import observed_timepoints

        return observed_timepoints(self, gene, heldout_timepoints)
