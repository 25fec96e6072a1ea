"""One look for every figure: a colour map per quantity, days written one way.

- expression (log1p units): :data:`EXPRESSION_CMAP`, colour bar labelled :data:`EXPRESSION_LABEL`
- relative quantities (share of a peak, 0..1): :data:`RELATIVE_CMAP`
- outside the tissue: :data:`OUTSIDE_COLOUR`
- days: :func:`day_label` (``E9.5``)
"""

from __future__ import annotations

EXPRESSION_CMAP = "magma"
EXPRESSION_LABEL = "log1p expression"
RELATIVE_CMAP = "viridis"
OUTSIDE_COLOUR = "#e6e6e6"


def day_label(t: float) -> str:
    """A developmental day as written everywhere in videogene: ``E9.5``, ``E12``."""
    return f"E{float(t):g}"


def colormap(name: str = EXPRESSION_CMAP):
    """A matplotlib colour map whose masked (outside-tissue) pixels are light grey."""
    import matplotlib

    return matplotlib.colormaps[name].with_extremes(bad=OUTSIDE_COLOUR)
