"""The sampler registry: the names of the sampling algorithms and the sampling defaults.

One list, imported wherever a sampler is named (``VideoGenePipeline``, ``videogene.cli``,
``videogene.tl.evaluate``, ``videogene.pipelines.generate``). This module imports nothing
heavy (no torch, no diffusers), so it is cheap to import from modules that keep diffusers lazy.

"Sampler" is the sampling algorithm a pipeline builds from the training noise schedule
(:func:`videogene.pipelines.pipeline_videogene.make_sampler`); "scheduler" is the noise
schedule itself (the pipeline's ``scheduler`` component, a diffusers scheduler).
"""

from __future__ import annotations

from ..errors import InputError

#: Sampling algorithms of :class:`~videogene.pipelines.VideoGenePipeline`, default first.
SAMPLERS: tuple[str, ...] = ("dpmsolver++", "ddim", "ddpm")
#: The sampler used when none is named.
DEFAULT_SAMPLER: str = SAMPLERS[0]
#: Classifier-free guidance scale of generation and evaluation when none is given.
DEFAULT_GUIDANCE: float = 2.0


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
