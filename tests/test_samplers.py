"""The sampler registry (videogene.pipelines.samplers): one list, one set of defaults."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

from videogene.errors import InputError
from videogene.pipelines.samplers import (
    DEFAULT_GUIDANCE,
    DEFAULT_INFILL_GUIDANCE,
    DEFAULT_INFILL_SAMPLER,
    DEFAULT_SAMPLER,
    SAMPLERS,
    check_sampler,
    default_guidance,
    default_sampler,
    resolve_sampler,
)


def test_registry_is_light():
    code = ("import sys, videogene.pipelines.samplers, videogene.tl.evaluate; "
            "bad = [m for m in ('diffusers', 'torch') if m in sys.modules]; "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_everyone_uses_the_registry():
    import videogene.pipelines as pipelines
    from videogene.cli import build_parser
    from videogene.jobs import evaluate as jobs_ev
    from videogene.jobs.generate import generate_trajectories
    from videogene.pipelines import pipeline_videogene as pv
    from videogene.tl import heldout as ho

    assert DEFAULT_SAMPLER in SAMPLERS and DEFAULT_SAMPLER == "dpmsolver++"
    assert DEFAULT_INFILL_SAMPLER in SAMPLERS and DEFAULT_INFILL_SAMPLER == "sde-dpmsolver++"
    assert pipelines.DEFAULT_INFILL_SAMPLER == DEFAULT_INFILL_SAMPLER
    assert pv.SAMPLERS is SAMPLERS and jobs_ev._SAMPLERS is SAMPLERS and pipelines.SAMPLERS is SAMPLERS
    assert pipelines.DEFAULT_GUIDANCE == DEFAULT_GUIDANCE == 2.0
    assert pipelines.DEFAULT_INFILL_GUIDANCE == DEFAULT_INFILL_GUIDANCE == 1.0
    # defaults of every entry point that samples; None = by context (default_guidance)
    call = inspect.signature(pv.VideoGenePipeline.__call__).parameters
    assert call["guidance_scale"].default is None and call["sampler"].default is None
    gen = inspect.signature(generate_trajectories).parameters
    assert gen["guidance_scale"].default is None
    ev = inspect.signature(jobs_ev.evaluate_model).parameters
    assert ev["infill_guidance_scale"].default == DEFAULT_INFILL_GUIDANCE
    assert gen["sampler"].default is None
    assert ev["scheduler"].default == DEFAULT_SAMPLER
    assert ev["infill_scheduler"].default == DEFAULT_INFILL_SAMPLER
    videos = inspect.signature(ho.generate_videos).parameters
    assert videos["guidance_scale"].default is None and videos["scheduler"].default is None
    assert ev["guidance_scale"].default == DEFAULT_GUIDANCE
    # the CLI: --scheduler keeps its name; its choices and defaults are the registry's
    parser = build_parser()
    for command in ("generate", "evaluate"):
        sub = parser._subparsers._group_actions[0].choices[command]
        acts = {a.dest: a for a in sub._actions}
        assert tuple(acts["scheduler"].choices) == SAMPLERS
        assert acts["scheduler"].default == (None if command == "generate" else DEFAULT_SAMPLER)
        assert acts["guidance"].default == (None if command == "generate" else DEFAULT_GUIDANCE)
    ev_acts = {a.dest: a for a in parser._subparsers._group_actions[0].choices["evaluate"]._actions}
    assert ev_acts["infill_guidance"].default == DEFAULT_INFILL_GUIDANCE
    assert tuple(ev_acts["infill_scheduler"].choices) == SAMPLERS
    assert ev_acts["infill_scheduler"].default == DEFAULT_INFILL_SAMPLER
    # a sampler built for every registered name
    from diffusers import DDPMScheduler

    config = DDPMScheduler(num_train_timesteps=100).config
    for name in SAMPLERS:
        assert pv.make_sampler(config, name) is not None
    with pytest.raises(InputError, match="sampler 'euler': expected one of dpmsolver\\+\\+, ddim"):
        pv.make_sampler(config, "euler")


def test_check_and_resolve():
    assert check_sampler("ddim") == "ddim"
    with pytest.raises(InputError, match="scheduler 'x'"):
        check_sampler("x", what="scheduler")
    assert resolve_sampler(None, None, default="ddpm") == "ddpm"
    assert resolve_sampler("ddim", None) == "ddim"
    with pytest.warns(FutureWarning, match="'scheduler'.*deprecated"):
        assert resolve_sampler(None, "ddim") == "ddim"
    with pytest.warns(FutureWarning), pytest.raises(InputError, match="give one of them"):
        resolve_sampler("ddim", "ddpm")


def test_generate_trajectories_sampler_keyword_and_deprecated_alias(tmp_path):
    from videogene.jobs import generate_trajectories

    # a bad sampler fails before the model is looked at, under either keyword
    with pytest.raises(InputError, match="sampler 'euler'"):
        generate_trajectories(tmp_path / "no-model", ["g"], [10.0], tmp_path / "o", sampler="euler")
    with pytest.warns(FutureWarning, match="generate_trajectories"), \
            pytest.raises(InputError, match="sampler 'euler'"):
        generate_trajectories(tmp_path / "no-model", ["g"], [10.0], tmp_path / "o", scheduler="euler")
    assert "sampler" in inspect.signature(generate_trajectories).parameters


def test_generate_trajectories_deprecated_scheduler_keyword_still_samples(tiny_export_dir, tmp_path):
    from videogene.jobs import generate_trajectories
    from videogene.pipelines import load_pipeline

    pipe = load_pipeline(tiny_export_dir, device="cpu")
    gene = pipe.gene_names[0]
    kw = dict(num_samples=1, num_inference_steps=1, progress=False, seed=3)
    new = generate_trajectories(pipe, [gene], [10.0], tmp_path / "new", sampler="ddim", **kw)
    with pytest.warns(FutureWarning, match="'scheduler'"):
        old = generate_trajectories(pipe, [gene], [10.0], tmp_path / "old", scheduler="ddim", **kw)
    assert new["sampler"] == old["sampler"] == "ddim"
    assert pipe.sampler is None  # a pipeline passed in is not changed
    assert new["mean_expression"] == old["mean_expression"]


@pytest.mark.parametrize("context, want", [(None, DEFAULT_GUIDANCE), ("none", DEFAULT_GUIDANCE),
                                           ("observed", DEFAULT_INFILL_GUIDANCE),
                                           ("frames", DEFAULT_INFILL_GUIDANCE)])
def test_default_guidance_by_context(context, want):
    assert default_guidance(context) == want


@pytest.mark.parametrize("context, want", [(None, DEFAULT_SAMPLER), ("none", DEFAULT_SAMPLER),
                                           ("observed", DEFAULT_INFILL_SAMPLER),
                                           ("frames", DEFAULT_INFILL_SAMPLER)])
def test_default_sampler_by_context(context, want):
    assert default_sampler(context) == want


@pytest.mark.parametrize("sampler", ["dpmsolver++", "ddim", "sde-dpmsolver++"])
@pytest.mark.parametrize("preset", ["tiny", "small"])
@pytest.mark.parametrize("clip_range", [1.0, 3.0])  # [-1, 1] data; a centred mapping's wider bound
def test_one_step_returns_the_clean_estimate(sampler, preset, clip_range):
    """The expected-expression readout (`model_expected`) rests on this: one sampler step from
    pure noise lands on the network's x0 estimate, the posterior mean, with no noise added."""
    import torch

    from videogene.pipelines.pipeline_videogene import make_sampler
    from videogene.training.config import load_config
    from videogene.training.diffusion import make_noise_scheduler

    dcfg = load_config(f"configs/{preset}.yaml").diffusion
    train = make_noise_scheduler(dcfg)
    s = make_sampler(train.config, sampler, clip_range=clip_range)
    s.set_timesteps(1)
    t = int(s.timesteps[0])
    assert t == dcfg.num_train_timesteps - 1  # starts at the pure-noise end of the schedule
    abar = train.alphas_cumprod[t].double()
    a, sigma = abar.sqrt(), (1 - abar).sqrt()
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 1, 3, 8, 8, generator=g, dtype=torch.float64) - 0.5  # inside the clip range
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    x_t = a * x0 + sigma * eps
    out = {"v_prediction": a * eps - sigma * x0, "epsilon": eps, "sample": x0}[dcfg.prediction_type]
    prev = s.step(out.float(), t, x_t.float()).prev_sample
    torch.testing.assert_close(prev.double(), x0, atol=2e-4, rtol=0)
