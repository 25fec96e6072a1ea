"""Are the generated samples calibrated? Sample agreement and what a calibrated sampler scores.

Two checks on the sample stacks of one pass of the held-out evaluation (``model`` or
``model_infill``), both medians over the frames of one gene set:

- **Agreement** (any dataset). For a sampler of the right conditional distribution the real
  slice is one more draw: exchangeable with a sample, so a sample agrees with another sample
  (``sample_agreement``, mean Pearson over pairs) as well as with the real slice
  (``observation_agreement``). Samples that agree with each other more than with the data are
  over-confident; less, too diffuse.
- **A calibrated sampler of the model's own posterior** (synthetic atlas: needs the truth, the
  count redraws and the pass's one-step posterior mean). In a Gaussian model with the truth of
  unit variance, the posterior mean correlates ``rho`` with it, a posterior draw adds a residual
  of variance ``1 - rho**2`` and the data's count noise adds ``n = 1 / r**2 - 1`` (``r``: one
  redraw's Pearson with the truth); the mean of ``k`` such samples then scores
  ``rho**2 / sqrt(rho**2 + (1 - rho**2 + n) / k)`` (:func:`calibrated_pearson`; ``rho = 1`` is
  the redraw itself). Comparing it with the samples' score says whether the samples fall short
  of their model's posterior (a sampler problem) or the posterior mean falls short of the truth
  (a model problem, where more samples or a better sampler do not help).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .heldout import FrameSet
from .metrics import pearson

__all__ = ["sample_agreement", "observation_agreement", "calibrated_pearson",
           "required_posterior_pearson", "sample_calibration"]


def sample_agreement(samples: np.ndarray, mask: np.ndarray) -> float:
    """Mean Pearson over the tissue pixels between every pair of ``samples`` ``(S, H, W)``
    (NaN for fewer than 2 samples or constant ones)."""
    vals = [pearson(samples[i], samples[j], mask)
            for i in range(len(samples)) for j in range(i + 1, len(samples))]
    vals = [v for v in vals if np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def observation_agreement(samples: np.ndarray, image: np.ndarray, mask: np.ndarray) -> float:
    """Mean Pearson over the tissue pixels between each of ``samples`` ``(S, H, W)`` and one
    observed ``image`` ``(H, W)``."""
    vals = [v for v in (pearson(s, image, mask) for s in samples) if np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def calibrated_pearson(posterior_pearson, draw_pearson, n_samples: int):
    """Pearson with the truth of the mean of ``n_samples`` draws of a calibrated sampler whose
    posterior mean scores ``posterior_pearson`` and whose data's count noise leaves one draw of
    the truth at ``draw_pearson`` (Gaussian model of the module docstring). Arrays broadcast.
    Extended to every frame so that medians cover the same frames as the samples' scores: a
    negative ``posterior_pearson`` keeps its sign, a ``draw_pearson`` <= 0 (no signal in one
    draw) gives 0; NaN in, NaN out."""
    rho = np.clip(np.asarray(posterior_pearson, dtype=np.float64), -1.0, 1.0)
    r = np.clip(np.asarray(draw_pearson, dtype=np.float64), 0.0, 1.0)
    a = rho ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        noise = 1.0 / r ** 2 - 1.0
        out = np.sign(rho) * a / np.sqrt(a + (1.0 - a + noise) / n_samples)
    out = np.where(r > 0, out, np.where(np.isnan(rho), np.nan, 0.0))
    out = np.where(np.isnan(r), np.nan, out)
    return float(out) if out.ndim == 0 else out


def required_posterior_pearson(target: float, draw_pearson, n_samples: int):
    """The ``posterior_pearson`` at which :func:`calibrated_pearson` reaches ``target``: the
    positive root of ``a**2 = target**2 (a (1 - 1/k) + (1 + n)/k)`` in ``a = rho**2``; above 1
    (returned as is) the target is out of reach of any calibrated sampler of that noise."""
    r = np.asarray(draw_pearson, dtype=np.float64)
    c, k = float(target) ** 2, float(n_samples)
    b = c * (1.0 - 1.0 / k)
    a = (b + np.sqrt(b * b + 4.0 * c / (k * r ** 2))) / 2.0  # (1 + n) = 1 / r**2
    out = np.sqrt(a)
    return float(out) if out.ndim == 0 else out


def _median(values) -> float | None:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    return float(np.median(v)) if v.size else None


def sample_calibration(fs: FrameSet, samples: Sequence[np.ndarray], records: Sequence[Mapping],
                       genes: Sequence[str], *, method: str, expected: str | None = None
                       ) -> dict:
    """Calibration of one pass's ``samples`` (``(S, H, W)`` per frame of ``fs``) over the frames
    of ``genes``; ``records`` from :func:`videogene.tl.evaluate.score_methods` on the same
    frames, ``method`` the pass's name there, ``expected`` its one-step posterior-mean pass.

    Returns ``{"n_frames", "n_samples", "sample_agreement", "observation_agreement"}`` (medians
    over frames; the observation is the real slice) plus, where the records hold the truth, the
    redraws and ``expected``: ``"posterior_mean_pearson"``, ``"draw_pearson"``, ``"pearson"``,
    ``"pearson_per_sample"`` (the samples' scores against the truth), ``"calibrated_pearson"``
    and ``"calibrated_pearson_per_sample"`` (:func:`calibrated_pearson` per frame, then the
    median) and ``"prediction_correlation"`` (frame by frame, calibrated vs actual mean of
    samples).
    """
    members = set(genes)
    idx = [k for k, (g, _) in enumerate(fs.frames) if g in members]
    n_samples = int(samples[idx[0]].shape[0]) if idx else 0
    out: dict = {
        "n_frames": len(idx), "n_samples": n_samples,
        "sample_agreement": _median(sample_agreement(samples[k], fs.masks[k]) for k in idx),
        "observation_agreement": _median(
            observation_agreement(samples[k], fs.real[k], fs.masks[k]) for k in idx),
    }
    truth = [records[k].get("vs_truth") or {} for k in idx]
    if not idx or not all(expected in t and "redraw_per_sample" in t and method in t
                          for t in truth):
        return out

    def col(name: str) -> np.ndarray:
        return np.array([t[name]["pearson"] for t in truth], dtype=np.float64)

    rho, draw, actual = col(expected), col("redraw_per_sample"), col(method)
    pred = calibrated_pearson(rho, draw, n_samples)
    pred1 = calibrated_pearson(rho, draw, 1)
    both = np.isfinite(pred) & np.isfinite(actual)  # all frames but empty ones
    out.update({
        "posterior_mean_pearson": _median(rho), "draw_pearson": _median(draw),
        "pearson": _median(actual), "pearson_per_sample": _median(col(f"{method}_per_sample")),
        "calibrated_pearson": _median(pred), "calibrated_pearson_per_sample": _median(pred1),
        "prediction_correlation": (float(np.corrcoef(pred[both], actual[both])[0, 1])
                                   if both.sum() > 2 else None),
    })
    return out
