"""videogene.pp: AnnData slices -> aligned sparse rasters (scanpy-style, keyword-only options).

- :func:`rasterize` one slice onto a square canvas (writes ``adata.uns["videogene_raster"]``)
- :func:`fit_alignment` / :func:`apply_alignment`: centre, principal axes, flip, scale
- :func:`orient_slices`: each slice's handedness and turn from expression (``prepare --orientation``)
- :func:`morans_i` (dense canvases) / :func:`morans_i_sparse` (a sparse raster): spatial signal;
  :func:`spatially_variable`: the flag prepare writes
- :func:`parse_time`, :func:`looks_like_counts`, :func:`normalize_log1p`: ingest helpers
"""

from ._align import DIHEDRAL_OPS, apply_alignment, canvas_pixels, fit_alignment, fold_op, op_image
from ._normalize import check_values, looks_like_counts, normalize_log1p, parse_time
from ._orient import orient_slices
from ._rasterize import UNS_KEY, densify, rasterize, rasterize_matrix
from ._spatial import SPATIAL_THRESHOLD, morans_i, morans_i_sparse, spatially_variable

__all__ = [
    "DIHEDRAL_OPS",
    "SPATIAL_THRESHOLD",
    "UNS_KEY",
    "apply_alignment",
    "canvas_pixels",
    "check_values",
    "densify",
    "fit_alignment",
    "fold_op",
    "looks_like_counts",
    "morans_i",
    "morans_i_sparse",
    "normalize_log1p",
    "op_image",
    "orient_slices",
    "parse_time",
    "rasterize",
    "rasterize_matrix",
    "spatially_variable",
]
