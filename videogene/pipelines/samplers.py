"""The sampler registry: the names of the sampling algorithms, the sampling defaults and the
checks of sampling arguments.

One list, imported wherever a sampler is named (``VideoGenePipeline``, ``videogene.cli``,
``videogene.tl.heldout``, ``videogene.jobs``). This module imports nothing heavy (no torch,
no diffusers), so it is cheap to import from modules that keep diffusers lazy.

"Sampler" is the sampling algorithm a pipeline builds from the training noise schedule
(:func:`videogene.pipelines.pipeline_videogene.make_sampler`); "scheduler" is the noise
schedule itself (the pipeline's ``scheduler`` component, a diffusers scheduler).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..errors import InputError
from ..utils import get_logger

logger = get_logger(__name__)

#: Sampling algorithms of :class:`~videogene.pipelines.VideoGenePipeline`, default first.
SAMPLERS: tuple[str, ...] = ("dpmsolver++", "ddim", "ddpm", "sde-dpmsolver++")
#: Prediction types the training target (:func:`videogene.training.diffusion.noise_and_target`)
#: and :func:`predicted_x0` know: the noise, v or the clean sample.
PREDICTION_TARGETS: tuple[str, ...] = ("epsilon", "v_prediction", "sample")
#: The sampler used when none is named, generating from the gene alone.
DEFAULT_SAMPLER: str = SAMPLERS[0]
#: The same for in-filling: on the held-out benchmark's committed weights the stochastic
#: DPM-Solver++ lowered the in-filled samples' RMSE (by about 0.04x linear interpolation's, in 7
#: of 8 paired sampling draws on two training seeds) at the same cost and Pearson; from the gene
#: alone it was mixed (docs/training.md, "The stochastic DPM-Solver++" and "A sampler per
#: pass", which also shows why fewer steps are not the way to more accuracy).
DEFAULT_INFILL_SAMPLER: str = "sde-dpmsolver++"
#: Classifier-free guidance scale of generation and evaluation when none is given.
DEFAULT_GUIDANCE: float = 2.0
#: The same for in-filling (frames generated from a gene's observed frames): the context already
#: pins the layout, and guidance against the null gene *with the same context* overshoots it
#: (held-out benchmark, docs/training.md: in-filled Pearson 0.60 at 2.0, 0.65 at 1.0).
DEFAULT_INFILL_GUIDANCE: float = 1.0


def is_infill(context) -> bool:
    """Whether a ``context`` argument asks for in-filling (anything but None or ``"none"``)."""
    return context is not None and not (isinstance(context, str) and context == "none")


def default_guidance(context=None) -> float:
    """:data:`DEFAULT_INFILL_GUIDANCE` when ``context`` asks for in-filling (:func:`is_infill`),
    else :data:`DEFAULT_GUIDANCE`."""
    return DEFAULT_INFILL_GUIDANCE if is_infill(context) else DEFAULT_GUIDANCE


def default_sampler(context=None) -> str:
    """:data:`DEFAULT_INFILL_SAMPLER` when ``context`` asks for in-filling (:func:`is_infill`),
    else :data:`DEFAULT_SAMPLER`."""
    return DEFAULT_INFILL_SAMPLER if is_infill(context) else DEFAULT_SAMPLER


def check_sampler(name: str, *, what: str = "sampler") -> str:
    """``name`` when it is one of :data:`SAMPLERS`; else an :class:`InputError` naming them.

    ``what`` is the name of the argument in the message (``"scheduler"`` for the older
    keyword and the ``--scheduler`` option).
    """
    if name not in SAMPLERS:
        raise InputError(f"{what} {name!r}: expected one of {', '.join(SAMPLERS)}")
    return name


def resolve_sampler(sampler: str | None, scheduler: str | None, *, default: str | None = None,
                    where: str = "") -> str | None:
    """The sampler of a call that takes ``sampler=`` and the deprecated alias ``scheduler=``.

    Warns (``FutureWarning``) when ``scheduler`` is used; both given and different is an
    :class:`InputError`. Returns ``default`` when neither is given.
    """
    if scheduler is not None:
        import warnings

        warnings.warn(f"{where + ': ' if where else ''}the keyword 'scheduler' (the sampler "
                      "name) is deprecated; use 'sampler'", FutureWarning, stacklevel=3)
        if sampler is not None and sampler != scheduler:
            raise InputError(f"sampler {sampler!r} and scheduler {scheduler!r}: give one of them")
        sampler = scheduler
    return default if sampler is None else sampler


def check_sampling_args(*, num_samples: int, num_inference_steps: int, guidance_scale: float,
                        batch_size: int, infill_guidance_scale: float | None = None) -> None:
    """One-line errors for sampler settings, before a model is loaded."""
    for name, value in (("--num-samples", num_samples), ("--steps", num_inference_steps),
                        ("--batch-size", batch_size)):
        if int(value) < 1:
            raise InputError(f"{name}: must be >= 1, got {value}")
    for name, value in (("--guidance", guidance_scale), ("--infill-guidance", infill_guidance_scale)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise InputError(f"{name}: must be >= 0 (1 = no guidance), got {value}")


def warn_outside_trained_range(timepoints: Sequence[float], trained: Sequence[float], *,
                               source: str) -> list[float]:
    """Warn (naming the trained range) about days the model can only extrapolate to."""
    if not trained:
        return []
    lo, hi = min(trained), max(trained)
    if len(trained) == 1:
        other = [t for t in timepoints if abs(t - lo) > 1e-6]
        if other:
            logger.warning("model %s was trained on one time point (E%g): other days (%s) are "
                           "not interpolated, only extrapolated", source, lo,
                           ", ".join(f"E{t:g}" for t in other[:5]))
        return other
    outside = [t for t in timepoints if t < lo - 1e-6 or t > hi + 1e-6]
    if outside:
        logger.warning("days %s lie outside the trained range E%g-E%g of model %s: extrapolated, "
                       "not interpolated", ", ".join(f"E{t:g}" for t in outside[:5]), lo, hi, source)
    return outside


def _signal_noise(scheduler, noisy, timesteps):
    """``(sqrt(abar), sqrt(1 - abar))`` at ``timesteps``, shaped ``(b, 1, 1, 1, 1)``."""
    abar = scheduler.alphas_cumprod.to(noisy.device)[timesteps.to(noisy.device).long()]
    abar = abar.to(noisy.dtype).reshape(-1, *([1] * (noisy.ndim - 1)))  # (b, 1, 1, 1, 1)
    return abar.sqrt(), (1 - abar).sqrt()


def predicted_x0(scheduler, noisy, pred, timesteps):
    """The clean video a model output ``pred`` implies at ``timesteps`` (shaped like ``noisy``),
    under ``scheduler.config.prediction_type`` (torch tensors; ``timesteps`` ``(b,)``): the
    inverse of :func:`videogene.training.diffusion.noise_and_target`'s
    target (``sqrt(abar) x_t - sqrt(1 - abar) v``, ``(x_t - sqrt(1 - abar) eps) / sqrt(abar)``
    or ``pred`` itself). Self-conditioning feeds it back as an input."""
    a, s = _signal_noise(scheduler, noisy, timesteps)
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "v_prediction":
        return a * noisy - s * pred
    if prediction_type == "epsilon":
        return (noisy - s * pred) / a
    if prediction_type == "sample":
        return pred
    raise ValueError(f"scheduler prediction_type {prediction_type!r}: expected one of "
                     f"{', '.join(PREDICTION_TARGETS)}")


def exact_outside(scheduler, noisy, pred, timesteps, tissue_mask, zero: float, *,
                  max_snr: float | None = None):
    """``pred`` with every pixel outside the tissue replaced by the exact model output there.

    Outside the tissue the clean video is known, the zero-expression level ``zero`` (model
    units, :func:`videogene.data.units.zero_level`), so the ideal denoiser's output follows from
    ``noisy`` alone: ``(sqrt(abar) x_t - zero) / sqrt(1 - abar)`` for v, ``(x_t - sqrt(abar)
    zero) / sqrt(1 - abar)`` for the noise, ``zero`` for the clean sample. A model with
    ``exact_outside`` is trained and sampled through this, so the network fits the tissue only
    and a sampler's trajectory stays on the zero level's outside the tissue. ``tissue_mask``
    broadcasts against ``pred`` (``(b, 1, f, h, w)`` or ``(f, h, w)``; nonzero = tissue).
    ``max_snr``: only at noise levels whose signal-to-noise ratio ``abar / (1 - abar)`` is at most
    this (the high-noise ones, where the network would have to draw the tissue's edge from the
    mask alone); None: at every level.
    """
    a, s = _signal_noise(scheduler, noisy, timesteps)
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "v_prediction":
        exact = (a * noisy - zero) / s
    elif prediction_type == "epsilon":
        exact = (noisy - a * zero) / s
    elif prediction_type == "sample":
        exact = noisy.new_full(noisy.shape, zero)
    else:
        raise ValueError(f"scheduler prediction_type {prediction_type!r}: expected one of "
                         f"{', '.join(PREDICTION_TARGETS)}")
    keep = tissue_mask != 0
    if max_snr is not None:
        keep = keep | (a * a > max_snr * s * s)  # (b, 1, 1, 1, 1): too little noise, network's own
    return pred.where(keep, exact.to(pred.dtype))


def exact_outside_args(config, units) -> dict | None:
    """The keyword arguments of :func:`exact_outside` (``zero``, ``max_snr``) for a model whose
    ``config`` has ``exact_outside`` and data in model ``units`` (a ``model_units`` dict or the
    dataset metadata); None for other models (old exports have no such field)."""
    if not getattr(config, "exact_outside", False):
        return None
    from ..data.units import zero_level

    return {"zero": zero_level(units), "max_snr": getattr(config, "exact_outside_max_snr", None)}
