"""The diffusion objective: DDPM noise schedule, loss weights (min-SNR or EDM), random context
subsets for in-filling, the masked per-example loss.

The noise schedule built by :func:`make_noise_scheduler` is the one authority of the
parametrisation: :func:`noise_and_target` (forward diffusion and the regression target, used
by the training loss and by ``validation.denoising_loss``) and the min-SNR weights read the
prediction type from ``scheduler.config``, never from the training config.

Random draws: one seeded generator per micro-step (:func:`step_generator`); everything is drawn
on the batch's device (:func:`generator_on`), so a step neither builds tensors on the host
nor copies them over, and a resumed run draws the same numbers.

Layout: the stream gives ``video`` as ``(b, f, 1, h, w)``; the model works on ``(b, c, f, h, w)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr
from einops import rearrange

from ..pipelines.samplers import PREDICTION_TARGETS, exact_outside, predicted_x0
from .config import DiffusionConfig


def make_noise_scheduler(dcfg: DiffusionConfig) -> DDPMScheduler:
    """The training scheduler; its config is what the export's ``scheduler/`` holds.

    With ``snr_shift`` k != 1 the named beta schedule is turned into explicit
    ``trained_betas`` whose SNR is k**2 times the original at every step, which is what
    scaling the data by k would do. Expression videos are mostly the same value (no
    expression) with small excursions, so in [-1, 1] their signal is weak against unit noise;
    the shift lets the network see gene-specific structure at more noise levels. Samplers
    built from this config (``VideoGenePipeline``) inherit the same betas.
    """
    kwargs = dict(
        num_train_timesteps=dcfg.num_train_timesteps,
        beta_schedule=dcfg.beta_schedule,
        prediction_type=dcfg.prediction_type,
        rescale_betas_zero_snr=dcfg.rescale_betas_zero_snr,
        clip_sample=True,  # samples live in [-1, 1]
        timestep_spacing="trailing" if dcfg.rescale_betas_zero_snr else "leading",
    )
    if dcfg.snr_shift != 1.0:
        base = DDPMScheduler(**kwargs)
        kwargs["trained_betas"] = shifted_betas(base.alphas_cumprod, dcfg.snr_shift)
    return DDPMScheduler(**kwargs)


def shifted_betas(alphas_cumprod: torch.Tensor, shift: float) -> list[float]:
    """Betas whose cumulative alphas have SNR ``shift**2`` times that of ``alphas_cumprod``."""
    abar = alphas_cumprod.double()
    snr = abar / (1 - abar).clamp_min(1e-20) * shift**2
    new = snr / (1 + snr)
    prev = torch.cat([torch.ones(1, dtype=new.dtype), new[:-1]])
    return (1 - new / prev).clamp(0.0, 0.999).tolist()




def noise_and_target(scheduler, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward diffusion and regression target, ``(noisy, target)``, both shaped like ``x0``.

    ``noisy = scheduler.add_noise(x0, noise, timesteps)``; the target is what the model predicts
    under ``scheduler.config.prediction_type``: ``noise`` (``"epsilon"``), the velocity
    ``sqrt(abar) noise - sqrt(1 - abar) x0`` (``"v_prediction"``) or ``x0`` (``"sample"``). The
    scheduler's config is the only place the prediction type is read from: the training loss
    and the validation loss both come here, and samplers are built from the same config.
    """
    prediction_type = scheduler.config.prediction_type
    noisy = scheduler.add_noise(x0, noise, timesteps)
    if prediction_type == "v_prediction":
        target = scheduler.get_velocity(x0, noise, timesteps)
    elif prediction_type == "epsilon":
        target = noise
    elif prediction_type == "sample":
        target = x0
    else:
        raise ValueError(f"scheduler prediction_type {prediction_type!r}: expected one of "
                         f"{', '.join(PREDICTION_TARGETS)}")
    return noisy, target


def min_snr_weights(scheduler: DDPMScheduler, timesteps: torch.Tensor, gamma: float | None,
                    prediction_type: str) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023), shape ``(b,)``; ones when ``gamma`` is None.

    For epsilon prediction the MSE weight is ``min(snr, gamma) / snr``; for v prediction
    ``min(snr, gamma) / (snr + 1)``.
    """
    if gamma is None:
        return torch.ones(timesteps.shape, device=timesteps.device)
    snr = compute_snr(scheduler, timesteps)
    if prediction_type == "v_prediction":
        return torch.minimum(snr, torch.full_like(snr, gamma)) / (snr + 1.0)
    return (gamma / snr).clamp(max=1.0)  # = min(snr, gamma) / snr, and 1 where snr -> 0


def edm_weights(scheduler: DDPMScheduler, timesteps: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """EDM's loss weight (Karras et al. 2022) ``lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2``
    on the clean-data error, rewritten for the v target: with ``x0_err = s * v_err``
    (``s = sqrt(1 - abar)``, ``a = sqrt(abar)``, ``sigma = s / a``) the weight on the v-MSE is
    ``(s^2 + sd^2 a^2) / sd^2``: 1 everywhere for ``sd = 1`` (v-prediction *is* EDM's
    preconditioning with ``sigma_data = 1``), rising towards ``1 / sd^2`` at high noise for
    ``sd < 1``. Shape ``(b,)``."""
    abar = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    return ((1 - abar) + sigma_data**2 * abar) / sigma_data**2


def loss_weights(scheduler: DDPMScheduler, timesteps: torch.Tensor, dcfg: DiffusionConfig
                 ) -> torch.Tensor:
    """Per-example loss weights of ``dcfg.loss_weighting`` (``min_snr`` or ``edm``), ``(b,)``.

    The min-SNR weights depend on the prediction type, read from ``scheduler.config`` (as in
    :func:`noise_and_target`)."""
    if dcfg.loss_weighting == "edm":
        return edm_weights(scheduler, timesteps, dcfg.sigma_data)
    return min_snr_weights(scheduler, timesteps, dcfg.snr_gamma, scheduler.config.prediction_type)


def lognormal_timesteps(scheduler: DDPMScheduler, n: int, p_mean: float, p_std: float,
                        generator: torch.Generator) -> torch.Tensor:
    """EDM's noise-level distribution on the discrete schedule: ``ln sigma ~ N(p_mean, p_std)``
    with ``sigma = sqrt((1 - abar) / abar)``, mapped to the step of nearest ``ln sigma``.
    Drawn on ``generator``'s device; returns int64 steps there."""
    device = generator.device
    abar = scheduler.alphas_cumprod.to(device).double()
    log_sigma = 0.5 * torch.log((1 - abar).clamp_min(1e-20) / abar.clamp_min(1e-20))  # (T,)
    target = torch.randn(n, generator=generator, dtype=torch.float64, device=device) * p_std + p_mean
    return (log_sigma[None] - target[:, None]).abs().argmin(dim=1)


def draw_context(frame_present: torch.Tensor, none_prob: float, generator: torch.Generator,
                 *, size: str = "uniform") -> torch.Tensor:
    """Random clean-context frames for in-filling training (masked conditional video
    diffusion), ``(b, f)`` bool. Per example: no context with probability ``none_prob``
    (gene-only generation, the gene table must carry the gene); otherwise a random non-empty
    proper subset of the present frames, of size ``size``: ``"uniform"`` draws it uniformly
    in ``1 .. n_present - 1``, ``"leave_one_out"`` takes ``n_present - 1`` (every present frame
    but a random one: the shape of in-filling a missing day from all observed ones),
    ``"mixed"`` takes leave-one-out for half of the examples with context and a uniform size
    for the others (which half is read off the number that decided "context or none", so no
    extra number is drawn). Examples with fewer than two present frames get none. The same
    random numbers are drawn for every size. Drawn on ``frame_present``'s device, from
    ``generator`` when it is there (else from :func:`generator_on`): no host round trip."""
    present = frame_present.bool()
    device = present.device
    generator = generator_on(generator, device)
    b, f = present.shape
    u = torch.rand(b, generator=generator, device=device)  # (b,)
    use = u >= none_prob
    scores = torch.rand(b, f, generator=generator, device=device).masked_fill(~present, 2.0)
    rank = scores.argsort(dim=1).argsort(dim=1)  # (b, f) 0 = first in the random order
    n_present = present.sum(dim=1)
    k = (torch.rand(b, generator=generator, device=device)
         * (n_present - 1).clamp_min(0)).long() + 1  # (b,)
    if size == "leave_one_out":
        k = (n_present - 1).clamp_min(1)
    elif size == "mixed":
        loo = u >= none_prob + 0.5 * (1.0 - none_prob)  # the upper half of the examples with context
        k = torch.where(loo, (n_present - 1).clamp_min(1), k)
    return (rank < k[:, None]) & present & (use & (n_present >= 2))[:, None]


def masked_loss(pred: torch.Tensor, target: torch.Tensor, *, frame_present: torch.Tensor,
                tissue_mask: torch.Tensor | None = None, tissue_loss_weight: float = 1.0
                ) -> torch.Tensor:
    """Per-example mean squared error over present frames, ``(b,)``.

    ``pred``/``target`` ``(b, c, f, h, w)``, ``frame_present`` ``(b, f)`` bool,
    ``tissue_mask`` ``(b, 1, f, h, w)``. With ``tissue_loss_weight`` w > 1, pixels inside the
    tissue count w times as much as those outside (the mean is normalised by the weights, so
    the loss scale stays comparable). Examples with no present frame give 0.
    """
    err = (pred.float() - target.float()).pow(2)  # (b, c, f, h, w)
    w = frame_present.to(err.dtype)[:, None, :, None, None].expand_as(err)
    if tissue_mask is not None and tissue_loss_weight != 1.0:
        w = w * (1.0 + (tissue_loss_weight - 1.0) * tissue_mask.to(err.dtype))
    return (err * w).sum(dim=(1, 2, 3, 4)) / w.sum(dim=(1, 2, 3, 4)).clamp_min(1e-8)


@dataclass
class StepNoise:
    """The random draws of one micro-step: all from one generator, so resumes are exact.

    Drawn directly on ``device``: from ``generator`` when it lives there, else from a
    generator on ``device`` seeded by one draw of ``generator`` (:func:`generator_on`). On the
    CPU the numbers are those of the CPU generator."""

    noise: torch.Tensor  # (b, c, f, h, w)
    timesteps: torch.Tensor  # (b,) int64
    drop_gene: torch.Tensor  # (b,) bool

    @classmethod
    def draw(cls, shape: tuple[int, ...], num_train_timesteps: int, gene_dropout: float,
             generator: torch.Generator, device: torch.device | str,
             scheduler: DDPMScheduler | None = None, dcfg: DiffusionConfig | None = None
             ) -> StepNoise:
        device = torch.device(device)
        generator = generator_on(generator, device)
        noise = torch.randn(shape, generator=generator, dtype=torch.float32, device=device)
        if dcfg is not None and dcfg.timestep_sampling == "lognormal":
            timesteps = lognormal_timesteps(scheduler, shape[0], dcfg.p_mean, dcfg.p_std, generator)
        else:
            timesteps = torch.randint(0, num_train_timesteps, (shape[0],), generator=generator,
                                      device=device)
        drop = torch.rand(shape[0], generator=generator, device=device) < gene_dropout
        return cls(noise, timesteps, drop)


def step_generator(seed: int, step: int, rank: int, micro_step: int = 0, *,
                   device: torch.device | str | None = None) -> torch.Generator:
    """A generator seeded by ``(seed, step, rank, micro_step)``, on ``device`` (default CPU).

    A function of the four integers only, so a resumed run draws what the uninterrupted run
    drew. A CUDA generator draws on the GPU (no host-side tensors, no copies); given a CPU one,
    :func:`diffusion_loss` derives the device generator with :func:`generator_on`.
    """
    g = torch.Generator(device=torch.device("cpu" if device is None else device))
    # distinct 64-bit mix of the four integers (no Python hash(): it is salted per process)
    mixed = (seed * 1_000_003 + step) * 1_000_033 + rank * 65_537 + micro_step
    g.manual_seed(mixed % (2**63 - 1))
    return g


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.type != "cuda" or a.index == b.index:
        return True
    current = torch.cuda.current_device()
    return (current if a.index is None else a.index) == (current if b.index is None else b.index)


def generator_on(generator: torch.Generator, device: torch.device | str) -> torch.Generator:
    """``generator`` when it lives on ``device``; else a new generator on ``device`` seeded by one
    63-bit draw of ``generator`` (which advances it; on a CPU generator no device is touched).

    Deterministic in ``generator``'s state, so per-step seeded CPU generators
    (:func:`step_generator`) still give exact resumes while the draws themselves happen on the
    device, as one kernel each instead of a host draw plus a pageable copy.
    """
    device = torch.device(device)
    if _same_device(generator.device, device):
        return generator
    seed = torch.randint(0, 2**63 - 1, (1,), generator=generator, device=generator.device)
    return torch.Generator(device=device).manual_seed(int(seed))


def batch_to_model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Stream batch -> model layout: ``x0 (b, 1, f, h, w)``, ``tissue_mask (b, 1, f, h, w)``
    and, when the stream has them, ``context (b, 1, f, h, w)`` (the frames in-filling is given)
    and the aligned draw's ``x0_aligned``/``tissue_mask_aligned`` (and ``context_aligned``;
    ``slice_draw="context_aligned"``)."""
    out = {
        "x0": rearrange(batch["video"], "b f c h w -> b c f h w").float(),
        "tissue_mask": rearrange(batch["tissue_mask"], "b f c h w -> b c f h w").float(),
        "frame_times": batch["frame_times"].float(),
        "frame_present": batch["frame_present"].bool(),
        "gene_id": batch["gene_id"].long(),
        "sample_weight": batch["sample_weight"].float(),
    }
    if "context_video" in batch:
        out["context"] = rearrange(batch["context_video"], "b f c h w -> b c f h w").float()
    if "video_aligned" in batch:
        out["x0_aligned"] = rearrange(batch["video_aligned"], "b f c h w -> b c f h w").float()
        out["tissue_mask_aligned"] = rearrange(batch["tissue_mask_aligned"],
                                               "b f c h w -> b c f h w").float()
    if "context_video_aligned" in batch:
        out["context_aligned"] = rearrange(batch["context_video_aligned"],
                                           "b f c h w -> b c f h w").float()
    return out


def diffusion_loss(model, scheduler: DDPMScheduler, batch: dict[str, torch.Tensor],
                   dcfg: DiffusionConfig, *, generator: torch.Generator, null_gene_id: int,
                   context: bool = False, self_condition: bool = False,
                   outside: dict | None = None
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One micro-batch of the training objective; returns ``(loss, logs)``.

    1. noise, timesteps (uniform or lognormal), null-gene dropout and, with ``context`` (a
    model with context channels), a random clean-context subset of the present frames, all
    from ``generator`` and drawn on the batch's device (:func:`generator_on`); 2.-3. forward
    diffusion and target (:func:`noise_and_target`: the prediction type of
    ``scheduler.config``; with ``dcfg.input_perturbation`` > 0 the noisy input is made with
    ``noise + gamma * extra`` and the target with ``noise``, DDPM-IP); 4. model (with
    ``self_condition``: on a share ``dcfg.self_condition_prob`` of the micro-batches the model's
    own clean estimate from a first pass without gradient is the ``self_cond`` input, else
    zeros; Chen et al. 2022; with ``outside``, the arguments of a model with ``exact_outside``
    (:func:`~videogene.pipelines.samplers.exact_outside_args`), both passes' outputs outside
    the tissue are the exact ones, :func:`~videogene.pipelines.samplers.exact_outside`, so the
    network has no gradient there);
    5. masked (and tissue-emphasised) MSE per example over the
    present frames that are not context, times the loss weight (min-SNR or EDM) and the
    stream's ``sample_weight``, averaged over the batch.

    ``logs["mse"]`` is the unweighted batch-mean MSE as a detached 0-d tensor on the device:
    nothing here reads a value back to the host, so a caller that logs it converts it
    (``float()`` / ``.item()``) only at its logging steps.
    """
    inp = batch_to_model_inputs(batch)
    x0 = inp["x0"]
    # 1. random draws, on the batch's device
    step_gen, generator = generator, generator_on(generator, x0.device)
    draws = StepNoise.draw(tuple(x0.shape), scheduler.config.num_train_timesteps, dcfg.gene_dropout,
                           generator, x0.device, scheduler, dcfg)
    ctx_mask = (draw_context(inp["frame_present"], dcfg.context_none_prob, generator,
                             size=dcfg.context_size) if context else None)
    if ctx_mask is not None and "x0_aligned" in inp:
        # slice_draw "context_aligned": the examples with context show one section for all days
        with_ctx = ctx_mask.any(dim=1)[:, None, None, None, None]  # (b, 1, 1, 1, 1)
        x0 = torch.where(with_ctx, inp["x0_aligned"], x0)
        inp["tissue_mask"] = torch.where(with_ctx, inp["tissue_mask_aligned"], inp["tissue_mask"])
        if "context" in inp:  # a day-mean model's context, on the aligned draw's masks
            inp["context"] = torch.where(with_ctx, inp["context_aligned"], inp["context"])
    gene_ids = torch.where(draws.drop_gene, torch.full_like(inp["gene_id"], null_gene_id),
                           inp["gene_id"])
    # 2.-3. forward diffusion and target
    noisy, target = noise_and_target(scheduler, x0, draws.noise, draws.timesteps)
    if dcfg.input_perturbation > 0:
        # DDPM-IP (Ning et al. 2023): the input sees noise + gamma * extra, the target does not,
        # so training covers the drift of a sampler's own trajectory; drawn last so that runs
        # with the option off keep their random stream.
        extra_noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        noisy = scheduler.add_noise(x0, draws.noise + dcfg.input_perturbation * extra_noise,
                                    draws.timesteps)
    # 4. model
    extra = ({} if ctx_mask is None
             else {"context": inp.get("context", x0), "context_mask": ctx_mask})

    def with_exact_outside(out: torch.Tensor) -> torch.Tensor:
        if outside is None:
            return out
        return exact_outside(scheduler, noisy, out, draws.timesteps, inp["tissue_mask"], **outside)

    call = dict(gene_ids=gene_ids, frame_times=inp["frame_times"], frame_mask=inp["frame_present"],
                tissue_mask=inp["tissue_mask"], **extra)
    if self_condition:
        # one coin per micro-batch from the CPU step generator (no device read-back), drawn
        # last: the extra pass without gradient runs on that share of the steps only
        coin = torch.rand((), generator=step_gen, device=step_gen.device)
        call["self_cond"] = torch.zeros_like(noisy)
        if bool(coin < dcfg.self_condition_prob):
            with torch.no_grad():
                first = with_exact_outside(model(noisy, draws.timesteps, **call).sample)
            call["self_cond"] = predicted_x0(scheduler, noisy, first, draws.timesteps).detach()
    pred = with_exact_outside(model(noisy, draws.timesteps, **call).sample)
    # 5. loss over the present frames that are not given as context
    scored = inp["frame_present"] if ctx_mask is None else inp["frame_present"] & ~ctx_mask
    per_example = masked_loss(pred, target, frame_present=scored,
                              tissue_mask=inp["tissue_mask"],
                              tissue_loss_weight=dcfg.tissue_loss_weight)
    weight = loss_weights(scheduler, draws.timesteps, dcfg)
    loss = (per_example * weight * inp["sample_weight"]).mean()
    return loss, {"mse": per_example.detach().mean()}
