"""Frame-level metrics comparing a generated (or baseline) expression canvas with a real one.

Every function takes canvases in expression units (log-normalized, ``0 .. value_max``) and,
where it says so, a boolean tissue mask of the same shape; pixel statistics use only the
tissue pixels. All functions return plain Python floats and never emit NumPy warnings.

Conventions for degenerate input (documented because they decide how silent genes score):

- Correlations (:func:`pearson`, :func:`spearman`) of a *constant* image are undefined.
  If both images are constant over the tissue they score 1.0 when the constants agree
  (within ``1e-6``) and 0.0 otherwise; if exactly one is constant they score 0.0
  (no linear/rank relation can be shown). A silent gene predicted silent therefore counts
  as a perfect correlation, and a silent gene predicted with any pattern as none.
- An empty mask (no tissue pixels) makes the pixel metrics NaN; :func:`summarize` ignores
  NaN values and reports how many were finite.

:func:`score_frames` bundles all metrics for one frame and :func:`score_samples` scores a
stack of generated samples both as their mean and one by one (averaged over samples).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from scipy import ndimage, stats

#: Pixels below this value (expression units) count as zero for the zero-fraction metrics.
#: Generated canvases are continuous and never exactly 0, hence a small threshold; real
#: log-normalized values of an expressed pixel are at least log1p(small count) >> 0.05.
ZERO_THRESHOLD = 0.05

#: Metric names produced by :func:`score_frames`, with ``True`` where larger is better.
METRICS: dict[str, bool] = {
    "pearson": True,
    "spearman": True,
    "ssim": True,
    "rmse": False,
    "zero_fraction_error": False,  # signed: generated minus real; closer to 0 is better
    "abs_zero_fraction_error": False,
    "wasserstein": False,
}

_CONST_TOL = 1e-8


def _tissue(img: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    a = np.asarray(img, dtype=np.float64)
    if mask is None:
        return a.ravel()
    m = np.asarray(mask, dtype=bool)
    if m.shape != a.shape:
        raise ValueError(f"mask shape {m.shape} does not match image shape {a.shape}")
    return a[m]


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two 1-D vectors with the constant-input convention above."""
    if x.size == 0:
        return float("nan")
    xc = x - x.mean()
    yc = y - y.mean()
    sx = np.sqrt(np.mean(xc * xc))
    sy = np.sqrt(np.mean(yc * yc))
    x_const = sx <= _CONST_TOL * max(1.0, abs(x.mean()))
    y_const = sy <= _CONST_TOL * max(1.0, abs(y.mean()))
    if x_const or y_const:
        if x_const and y_const and abs(x.mean() - y.mean()) <= 1e-6:
            return 1.0
        return 0.0
    r = float(np.mean(xc * yc) / (sx * sy))
    return float(np.clip(r, -1.0, 1.0))


def pearson(pred: np.ndarray, real: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Pearson correlation between ``pred`` and ``real`` over the tissue pixels.

    Constant inputs follow the module convention (1.0 if both constant and equal, else 0.0);
    NaN only when the mask is empty.
    """
    return _corr(_tissue(pred, mask), _tissue(real, mask))


def spearman(pred: np.ndarray, real: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Spearman rank correlation over the tissue pixels (ties get their average rank).

    Equal to the Pearson correlation of the average ranks, so it agrees with
    ``scipy.stats.spearmanr`` on non-degenerate input; constant inputs as in :func:`pearson`.
    """
    x, y = _tissue(pred, mask), _tissue(real, mask)
    if x.size == 0:
        return float("nan")
    return _corr(stats.rankdata(x), stats.rankdata(y))


def rmse(pred: np.ndarray, real: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Root-mean-square error over the tissue pixels, in expression units."""
    x, y = _tissue(pred, mask), _tissue(real, mask)
    if x.size == 0:
        return float("nan")
    return float(np.sqrt(np.mean((x - y) ** 2)))


def zero_fraction(img: np.ndarray, mask: np.ndarray | None = None, *,
                  threshold: float = ZERO_THRESHOLD) -> float:
    """Fraction of tissue pixels whose value is below ``threshold`` (counts as zero)."""
    x = _tissue(img, mask)
    if x.size == 0:
        return float("nan")
    return float(np.mean(x < threshold))


def zero_fraction_error(pred: np.ndarray, real: np.ndarray, mask: np.ndarray | None = None, *,
                        threshold: float = ZERO_THRESHOLD) -> float:
    """Signed zero-fraction error: ``zero_fraction(pred) - zero_fraction(real)``.

    Positive: the prediction is sparser than the real frame; negative: it is denser.
    """
    return zero_fraction(pred, mask, threshold=threshold) - zero_fraction(real, mask,
                                                                          threshold=threshold)


def wasserstein(pred: np.ndarray, real: np.ndarray, mask: np.ndarray | None = None) -> float:
    """1-D Wasserstein (earth mover's) distance between the tissue-pixel value distributions.

    Ignores where the values are, only how they are distributed (sparsity, dynamic range);
    uses ``scipy.stats.wasserstein_distance``. In expression units.
    """
    x, y = _tissue(pred, mask), _tissue(real, mask)
    if x.size == 0:
        return float("nan")
    return float(stats.wasserstein_distance(x, y))


def ssim(pred: np.ndarray, real: np.ndarray, *, data_range: float = 9.0, sigma: float = 1.5,
         truncate: float = 3.5, k1: float = 0.01, k2: float = 0.03) -> float:
    """Structural similarity (Wang et al. 2004) with a Gaussian window, on the whole canvas.

    The standard formulation (as ``skimage.metrics.structural_similarity`` with
    ``gaussian_weights=True``): local means, variances and covariance from a Gaussian filter
    (``sigma`` 1.5, truncated at ``truncate`` sigmas: an 11x11 window; reflected borders;
    population rather than sample covariance), ``C1 = (k1 * data_range)**2``,
    ``C2 = (k2 * data_range)**2``, and the SSIM map averaged after cropping the half-window
    border (the border is kept when the canvas is smaller than the window). Both canvases are
    expected to be 0 outside the tissue. ``data_range`` is the dataset's ``value_max``.
    Identical images give exactly 1; the constants keep constant images finite.
    """
    x = np.asarray(pred, dtype=np.float64)
    y = np.asarray(real, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"ssim needs two 2-D images of the same shape, got {x.shape}, {y.shape}")
    if data_range <= 0:
        raise ValueError(f"ssim data_range must be > 0, got {data_range}")

    def filt(a: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(a, sigma=sigma, truncate=truncate, mode="reflect")

    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    ux, uy = filt(x), filt(y)
    vx = filt(x * x) - ux * ux
    vy = filt(y * y) - uy * uy
    vxy = filt(x * y) - ux * uy
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    pad = int(truncate * sigma + 0.5)
    if min(x.shape) > 2 * pad:
        s = s[pad:-pad, pad:-pad]
    return float(s.mean())


def score_frames(pred: np.ndarray, real: np.ndarray, mask: np.ndarray, *,
                 data_range: float = 9.0, zero_threshold: float = ZERO_THRESHOLD
                 ) -> dict[str, float]:
    """All metrics of one predicted ``(H, W)`` frame against the real one (keys of ``METRICS``).

    ``pred`` is multiplied by ``mask`` first, so that SSIM (computed on the whole canvas)
    does not reward or penalise values outside the tissue; correlation, RMSE, zero fraction
    and Wasserstein use the tissue pixels only.
    """
    pred = np.asarray(pred, dtype=np.float64)
    real = np.asarray(real, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if pred.shape != real.shape or real.shape != mask.shape:
        raise ValueError(f"score_frames: shapes differ: pred {pred.shape}, real {real.shape}, "
                         f"mask {mask.shape}")
    pred = np.where(mask, pred, 0.0)
    real = np.where(mask, real, 0.0)
    zfe = zero_fraction_error(pred, real, mask, threshold=zero_threshold)
    return {
        "pearson": pearson(pred, real, mask),
        "spearman": spearman(pred, real, mask),
        "ssim": ssim(pred, real, data_range=data_range),
        "rmse": rmse(pred, real, mask),
        "zero_fraction_error": zfe,
        "abs_zero_fraction_error": abs(zfe),
        "wasserstein": wasserstein(pred, real, mask),
    }


def score_samples(samples: np.ndarray, real: np.ndarray, mask: np.ndarray, *,
                  data_range: float = 9.0, zero_threshold: float = ZERO_THRESHOLD
                  ) -> tuple[dict[str, float], dict[str, float]]:
    """Score ``(n_samples, H, W)`` generated frames: ``(mean_of_samples, per_sample_average)``.

    The first dict scores the pixel-wise mean of the samples (a point estimate; smoother, so
    it tends to correlate better but is less sparse); the second scores every sample on its
    own and averages each metric over the samples (what one draw looks like).
    """
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim == 2:
        samples = samples[None]
    kw = dict(data_range=data_range, zero_threshold=zero_threshold)
    of_mean = score_frames(samples.mean(axis=0), real, mask, **kw)
    each = [score_frames(s, real, mask, **kw) for s in samples]
    per_sample = {k: _nanmean([e[k] for e in each]) for k in METRICS}
    return of_mean, per_sample


def _nanmean(values: Iterable[float]) -> float:
    a = np.asarray(list(values), dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")


def summarize(records: Iterable[Mapping[str, float]],
              metrics: Iterable[str] = tuple(METRICS)) -> dict[str, dict[str, float]]:
    """Median and mean over frames (genes) of each metric, ignoring non-finite values.

    Returns ``{metric: {"median", "mean", "n"}}`` where ``n`` counts the finite values.
    """
    records = list(records)
    out: dict[str, dict[str, float]] = {}
    for m in metrics:
        a = np.asarray([r.get(m, np.nan) for r in records], dtype=np.float64)
        a = a[np.isfinite(a)]
        out[m] = {"median": float(np.median(a)) if a.size else float("nan"),
                  "mean": float(a.mean()) if a.size else float("nan"),
                  "n": int(a.size)}
    return out
