"""videogene.pp: AnnData slices -> aligned sparse rasters (scanpy-style, keyword-only options).

- :func:`rasterize` one slice onto a square canvas (writes ``adata.uns["videogene_raster"]``)
- :func:`fit_alignment` / :func:`apply_alignment`: centre, principal axes, flip, scale
- :func:`parse_time`, :func:`looks_like_counts`, :func:`normalize_log1p`: ingest helpers
"""

from ._align import apply_alignment, canvas_pixels, fit_alignment
from ._normalize import check_values, looks_like_counts, normalize_log1p, parse_time
from ._rasterize import UNS_KEY, densify, rasterize, rasterize_matrix

__all__ = [
    "UNS_KEY",
    "apply_alignment",
    "canvas_pixels",
    "check_values",
    "densify",
    "fit_alignment",
    "looks_like_counts",
    "normalize_log1p",
    "parse_time",
    "rasterize",
    "rasterize_matrix",
]
