"""Training: loss pieces, checkpoint helpers, model card, and real tiny runs of train.py.

Runs use the tiny prepared dataset (48 genes, 4 time points, 16x16) and the tiny model on CPU:
an in-process run with a patched Hub client, a resume that must be bit-identical, a
two-process ``accelerate launch`` run, and ~50 steps that must lower the denoising loss.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from videogene.errors import InputError
from videogene.training import checkpointing as ckpt
from videogene.training.config import load_config
from videogene.training.diffusion import (
    make_noise_scheduler,
    masked_loss,
    min_snr_weights,
    step_generator,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
FAST = ["report_to=none", "validation.num_inference_steps=2", "validation.num_genes=2",
        "validation.loss_batches=1", "lr_warmup_steps=1", "logging_steps=1"]


# ----------------------------------------------------------------------------- pieces
def test_masked_loss_ignores_absent_frames_and_weights_tissue():
    pred = torch.zeros(2, 1, 3, 4, 4)
    target = torch.zeros(2, 1, 3, 4, 4)
    target[:, :, 1] = 1.0  # frame 1 wrong everywhere
    present = torch.tensor([[True, True, True], [True, False, True]])
    loss = masked_loss(pred, target, frame_present=present)
    assert loss[0].item() == pytest.approx(1 / 3)
    assert loss[1].item() == pytest.approx(0.0)  # the wrong frame is absent: ignored
    # tissue emphasis: error only outside tissue counts less when tissue is weighted up
    tissue = torch.zeros(2, 1, 3, 4, 4)
    tissue[..., :2, :] = 1.0
    target2 = torch.zeros_like(target)
    target2[..., 2:, :] = 1.0  # error outside tissue only
    plain = masked_loss(pred, target2, frame_present=present, tissue_mask=tissue)
    emph = masked_loss(pred, target2, frame_present=present, tissue_mask=tissue, tissue_loss_weight=3.0)
    assert plain[0].item() == pytest.approx(0.5)
    assert emph[0].item() == pytest.approx(0.25)  # outside weight 1 of total (3 + 1)
    nothing = masked_loss(pred, target, frame_present=torch.zeros(2, 3, dtype=torch.bool))
    assert torch.all(nothing == 0)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_min_snr_weights(prediction_type):
    cfg = load_config(None, [f"diffusion.prediction_type={prediction_type}"])
    sched = make_noise_scheduler(cfg.diffusion)
    t = torch.tensor([0, 10, 500, 999])
    w = min_snr_weights(sched, t, 5.0, prediction_type)
    snr = sched.alphas_cumprod[t] / (1 - sched.alphas_cumprod[t])
    denom = snr + 1 if prediction_type == "v_prediction" else snr
    assert torch.allclose(w, torch.minimum(snr, torch.tensor(5.0)) / denom, rtol=1e-4)
    assert torch.all(w <= 1.0 + 1e-6)
    assert w[0] < w[-1] or prediction_type == "v_prediction"  # low noise is down-weighted
    assert torch.all(min_snr_weights(sched, t, None, prediction_type) == 1)


@pytest.mark.parametrize("rescale", [False, True])
def test_snr_shift_scales_the_schedule_and_reaches_the_samplers(rescale):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    over = ["diffusion.prediction_type=v_prediction", f"diffusion.rescale_betas_zero_snr={rescale}"]
    base = make_noise_scheduler(load_config(None, over).diffusion)
    shifted = make_noise_scheduler(load_config(None, [*over, "diffusion.snr_shift=4"]).diffusion)

    def snr(s):
        return s.alphas_cumprod / (1 - s.alphas_cumprod)

    inner = slice(1, 990)  # the clipped ends of the cosine schedule aside
    # float32 alphas: 1 - abar loses digits where abar is near 1
    assert torch.allclose(snr(shifted)[inner] / snr(base)[inner], torch.tensor(16.0), rtol=2e-2)
    assert bool(torch.all(shifted.alphas_cumprod[:-1] > base.alphas_cumprod[:-1]))
    if rescale:
        assert float(shifted.alphas_cumprod[-1]) < 1e-6  # zero terminal SNR is kept
    for cls in (DDIMScheduler, DPMSolverMultistepScheduler):  # what the pipeline builds
        sampler = cls.from_config(shifted.config)
        # (DPM-Solver++ nudges a zero terminal alpha to 2**-24 to keep its sigmas finite)
        assert torch.allclose(sampler.alphas_cumprod[:-1], shifted.alphas_cumprod[:-1])


def test_step_generator_is_a_function_of_seed_step_rank():
    a = torch.randn(5, generator=step_generator(0, 3, 1))
    b = torch.randn(5, generator=step_generator(0, 3, 1))
    assert torch.equal(a, b)
    others = [step_generator(1, 3, 1), step_generator(0, 4, 1), step_generator(0, 3, 0),
              step_generator(0, 3, 1, 1)]
    assert all(not torch.equal(a, torch.randn(5, generator=g)) for g in others)


def test_checkpoint_helpers(tmp_path):
    assert ckpt.resolve_resume(tmp_path, "latest") is None
    assert ckpt.resolve_resume(tmp_path, None) is None
    with pytest.raises(InputError, match="not found"):
        ckpt.resolve_resume(tmp_path, str(tmp_path / "checkpoint-9"))
    for s in (2, 10, 4):
        ckpt.checkpoint_dir(tmp_path, s).mkdir()
        ckpt.export_dir(tmp_path, s).mkdir()
    assert [ckpt.step_of(p) for p in ckpt.list_step_dirs(tmp_path)] == [2, 4, 10]  # numeric order
    assert ckpt.resolve_resume(tmp_path, "latest").name == "checkpoint-10"
    assert ckpt.resolve_resume(tmp_path, "checkpoint-4").name == "checkpoint-4"
    removed = ckpt.prune(tmp_path, 2)
    assert [p.name for p in removed] == ["checkpoint-2"]
    assert [p.name for p in ckpt.list_step_dirs(tmp_path)] == ["checkpoint-4", "checkpoint-10"]
    link = ckpt.point_export_latest(tmp_path, ckpt.export_dir(tmp_path, 4))
    link = ckpt.point_export_latest(tmp_path, ckpt.export_dir(tmp_path, 10))  # re-pointing works
    assert link.resolve() == ckpt.export_dir(tmp_path, 10).resolve()
    assert (tmp_path / "export-latest.txt").read_text().strip() == "export-10"
    exports = [p.name for p in ckpt.list_step_dirs(tmp_path, "export")]
    assert exports == ["export-2", "export-4", "export-10"]


def test_model_card_renders(tiny_dataset):
    from videogene.data import load_metadata
    from videogene.training.hub import render_model_card

    meta = load_metadata(tiny_dataset)
    cfg = load_config(TINY, [f"data.path={tiny_dataset}", "hub_model_id=me/vg",
                             "data.gene_sampling=nnz"])
    card = render_model_card(cfg, meta, step=123, num_parameters=59641, num_processes=2,
                             metrics={"val/denoising_loss": 0.123456})
    assert card.startswith("---\n") and "license: apache-2.0" in card and "videogene" in card
    assert "# me/vg" in card
    assert "| genes (vocabulary) | 48 |" in card
    assert "preset `tiny`" in card and "59,641" in card and "123 of" in card
    assert "x 2 processes" in card and "| gene sampling | nnz |" in card
    assert "SNR shifted x0.25^2" in card and "min-SNR" not in card  # tiny.yaml: plain v-MSE
    assert "| val/denoising_loss | 0.1235 |" in card
    assert "**synthetic** atlas" in card  # the tiny dataset comes from the synthetic atlas
    assert "## Limitations" in card and "## Intended use" in card
    spatial = load_config(TINY, [f"data.path={tiny_dataset}", "data.gene_sampling=spatial",
                                 "data.nonspatial_rate=0.5"])
    card = render_model_card(spatial, meta, step=1)
    assert "| gene sampling | spatial (genes without spatial signal at 0.5 visits per epoch) |" in card
    assert "{{" not in card and "{%" not in card


# ----------------------------------------------------------------------------- in-process runs
class FakeHfApi:
    """Stands in for huggingface_hub.HfApi: records calls and a snapshot of what was uploaded."""

    calls: list = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, **kw):
        FakeHfApi.calls.append(("create_repo", repo_id, kw))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, repo_id, folder_path, **kw):
        root = Path(folder_path)
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        FakeHfApi.calls.append(("upload_folder", repo_id, {"files": files, "folder": root.name,
                                                           "readme": (root / "README.md").read_text(),
                                                           **kw}))
        return f"https://huggingface.co/{repo_id}/commit/abc"


def _run_in_process(overrides: list[str]) -> dict:
    from accelerate.state import AcceleratorState

    from videogene.training.loop import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CI box is small and shared: one thread is much faster
    try:
        return main(load_config(TINY, overrides))
    finally:
        torch.set_num_threads(threads)
        AcceleratorState._reset_state(True)


@pytest.fixture(scope="module")
def run_a(tiny_dataset, tmp_path_factory):
    """4 steps, checkpoints at 2 and 4, pushed to a fake Hub at every checkpoint."""
    out = tmp_path_factory.mktemp("run_a")
    FakeHfApi.calls = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("videogene.training.hub.HfApi", FakeHfApi)
        summary = _run_in_process([f"data.path={tiny_dataset}", f"output_dir={out}", "max_steps=4",
                                   "checkpointing_steps=2", "validation_steps=2",
                                   "checkpoints_total_limit=5",
                                   "push_to_hub=true", "hub_model_id=me/tiny-videogene",
                                   "push_every_checkpoint=true", *FAST])
    return out, summary, list(FakeHfApi.calls)


def test_run_writes_checkpoints_and_exports(run_a):
    from safetensors.torch import load_file

    from videogene.pipelines import load_pipeline

    out, summary, _ = run_a
    assert summary["step"] == 4
    for step in (2, 4):
        c = out / f"checkpoint-{step}"
        assert (c / "model.safetensors").is_file() and (c / "optimizer.bin").is_file()
        assert load_config(c / "training_config.yaml").max_steps == 4
        e = out / f"export-{step}"
        for rel in ("model_index.json", "unet/config.json", "unet_raw/config.json",
                    "scheduler/scheduler_config.json", "videogene_meta.json", "masks.npy",
                    "training_config.yaml", "README.md"):
            assert (e / rel).is_file(), rel
    assert (out / "export-latest").resolve() == (out / "export-4").resolve()
    assert (out / "validation" / "step-4.png").is_file()
    ema = load_file(out / "export-4" / "unet" / "diffusion_pytorch_model.safetensors")
    raw = load_file(out / "export-4" / "unet_raw" / "diffusion_pytorch_model.safetensors")
    assert ema.keys() == raw.keys()
    assert any(not torch.equal(ema[k], raw[k]) for k in ema), "EMA weights equal the raw weights"
    pipe = load_pipeline(out, device="cpu")  # the generation side finds the newest export
    assert pipe.source_dir.name == "export-4"
    assert len(pipe.gene_names) == 48


def test_push_to_hub_with_patched_client(run_a):
    _, _, calls = run_a
    creates = [c for c in calls if c[0] == "create_repo"]
    uploads = [c for c in calls if c[0] == "upload_folder"]
    assert creates and all(c[1] == "me/tiny-videogene" and c[2]["exist_ok"] for c in creates)
    assert [u[2]["folder"] for u in uploads] == ["export-2", "export-4"]  # push_every_checkpoint
    files = uploads[-1][2]["files"]
    for rel in ("README.md", "model_index.json", "training_config.yaml", "videogene_meta.json",
                "masks.npy", "scheduler/scheduler_config.json",
                "unet/diffusion_pytorch_model.safetensors",
                "unet_raw/diffusion_pytorch_model.safetensors"):
        assert rel in files, rel
    readme = uploads[-1][2]["readme"]
    assert "# me/tiny-videogene" in readme and "| genes (vocabulary) | 48 |" in readme
    assert "4 of 4" in readme and "train/loss" in readme
    assert 'load_pipeline("me/tiny-videogene")' in readme


def test_resume_is_bit_identical(run_a, tmp_path):
    """4 steps straight == 2 steps, stop, resume 2 steps (weights, EMA, optimizer state)."""
    out_a, _, _ = run_a
    out_b = tmp_path / "run_b"
    out_b.mkdir()
    shutil.copytree(out_a / "checkpoint-2", out_b / "checkpoint-2")
    summary = _run_in_process([f"data.path={_dataset_of(out_a)}", f"output_dir={out_b}", "max_steps=4",
                               "checkpointing_steps=2", "validation_steps=2",
                               "resume_from_checkpoint=latest", "checkpoints_total_limit=5", *FAST])
    assert summary["step"] == 4
    same = ["checkpoint-4/model.safetensors", "checkpoint-4/optimizer.bin",
            "export-4/unet/diffusion_pytorch_model.safetensors",
            "export-4/unet_raw/diffusion_pytorch_model.safetensors"]
    for rel in same:
        assert (out_a / rel).read_bytes() == (out_b / rel).read_bytes(), rel
    assert ((out_a / "checkpoint-2/model.safetensors").read_bytes()
            != (out_b / "checkpoint-4/model.safetensors").read_bytes()), "no training after resume"


def _dataset_of(out: Path) -> str:
    return load_config(out / "training_config.yaml").data.path


# ----------------------------------------------------------------------------- subprocess runs
def _env() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env


def test_two_process_run(tiny_dataset, tmp_path):
    """accelerate launch, 2 CPU processes: same weights on both ranks, disjoint gene shards."""
    from videogene.models import VideoGeneUNet

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "configs" / "accelerate" / "cpu_2proc.yaml"), "--main_process_port", "29533",
           str(ROOT / "train.py"), "--config", str(TINY), f"data.path={tiny_dataset}",
           f"output_dir={out}",
           "max_steps=4", "checkpointing_steps=2", "validation_steps=4", "checkpoints_total_limit=1",
           "debug_dump_weights=true", "report_to=tensorboard", "validation.num_inference_steps=2",
           "validation.num_genes=2", "validation.loss_batches=1",
           "data.gene_sampling=uniform"]  # full batches: every gene of a shard once per epoch
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout
    assert "parameters" in proc.stdout and "GFLOPs" in proc.stdout
    dbg = out / "debug"
    for step in (2, 4):
        d0 = (dbg / f"weights-step{step}-rank0.txt").read_text()
        d1 = (dbg / f"weights-step{step}-rank1.txt").read_text()
        assert d0 == d1, f"ranks disagree at step {step}"
    assert (dbg / "weights-step2-rank0.txt").read_text() != (dbg / "weights-step4-rank0.txt").read_text()
    # the data-start gene table: read from the atlas by rank 0 only, received by rank 1
    t0 = (dbg / "gene-table-rank0.txt").read_text().split()
    t1 = (dbg / "gene-table-rank1.txt").read_text().split()
    assert t0[0] == "computed" and t1[0] == "received" and t0[1] == t1[1]
    g0 = (dbg / "genes-rank0.txt").read_text().split()
    g1 = (dbg / "genes-rank1.txt").read_text().split()
    assert len(g0) == len(g1) == 4 * 8  # 4 steps x batch 8 per rank
    assert not set(g0[:24]) & set(g1[:24]), "ranks saw the same genes in their first epoch"
    # checkpoints_total_limit=1 pruned step 2; the export holds rank 0's raw weights
    assert [p.name for p in ckpt.list_step_dirs(out)] == ["checkpoint-4"]
    raw = VideoGeneUNet.from_pretrained(out / "export-4" / "unet_raw")
    assert ckpt.weights_digest(raw) == (dbg / "weights-step4-rank0.txt").read_text()
    assert list((out / "logs").rglob("events.out.tfevents.*")), "no TensorBoard events"
    assert (out / "validation" / "step-4.png").is_file()


def test_cli_help_and_bad_key(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--help"], capture_output=True,
                          text=True, env=_env(), timeout=120)
    assert proc.returncode == 0 and "--resume" in proc.stdout and "--push_to_hub" in proc.stdout
    assert "KEY=VALUE" in proc.stdout
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", str(TINY), "max_stepz=3"],
                          capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 2
    assert "max_stepz" in proc.stderr and "max_steps" in proc.stderr and "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- learning
def test_loss_decreases(tiny_dataset, tmp_path):
    """~50 steps of the tiny model lower the fixed-noise denoising loss on the whole atlas."""
    from videogene.models import VideoGeneUNet, model_from_preset
    from videogene.training.stream import build_dataset, build_loader, fixed_batches
    from videogene.training.validation import denoising_loss

    out = tmp_path / "learn"
    _run_in_process([f"data.path={tiny_dataset}", f"output_dir={out}", "max_steps=50",
                     "checkpointing_steps=50", "validation_steps=50", "learning_rate=2e-3", *FAST])
    cfg = load_config(TINY, [f"data.path={tiny_dataset}"])
    batches = fixed_batches(build_loader(build_dataset(cfg, tiny_dataset, seed=123), 16), 3)
    sched = make_noise_scheduler(cfg.diffusion)
    torch.manual_seed(0)
    fresh = model_from_preset("tiny", num_genes=48, sample_size=16)
    trained = VideoGeneUNet.from_pretrained(out / "export-50" / "unet_raw")
    before = denoising_loss(fresh, sched, batches, seed=1)
    after = denoising_loss(trained, sched, batches, seed=1)
    assert after < 0.8 * before, (before, after)


# ------------------------------------------------------------------ loss weighting, context draws
def test_edm_weights_and_lognormal_timesteps():
    from videogene.training.diffusion import edm_weights, lognormal_timesteps

    sched = make_noise_scheduler(load_config(None, []).diffusion)
    t = torch.tensor([0, 250, 500, 750, 999])
    torch.testing.assert_close(edm_weights(sched, t, 1.0), torch.ones(5))  # v-prediction = EDM, sd = 1
    w = edm_weights(sched, t, 0.5)
    assert torch.all(w[1:] > w[:-1]) and w[0] == pytest.approx(1.0, abs=1e-3)
    assert w[-1] == pytest.approx(4.0, rel=1e-3)  # 1 / sd^2 at pure noise
    # min-SNR with v starves high noise (weight ~ snr there); EDM does not
    cfg = load_config(None, ["diffusion.loss_weighting=edm"]).diffusion
    assert min_snr_weights(sched, t, 5.0, "v_prediction")[-1] < 1e-3 < w[-1]
    g = torch.Generator().manual_seed(0)
    steps = lognormal_timesteps(sched, 4000, cfg.p_mean, cfg.p_std, g)
    abar = sched.alphas_cumprod[steps].double()
    log_sigma = 0.5 * torch.log((1 - abar) / abar)
    assert abs(log_sigma.median().item() - cfg.p_mean) < 0.1
    assert steps.min() >= 0 and steps.max() < 1000
    with pytest.raises(InputError, match="loss_weighting=edm needs"):
        load_config(None, ["diffusion.loss_weighting=edm", "diffusion.prediction_type=epsilon"])
    with pytest.raises(InputError, match="loss_weighting"):
        load_config(None, ["diffusion.loss_weighting=snr"])


def test_draw_context_subsets():
    from videogene.training.diffusion import draw_context

    present = torch.tensor([[True, True, True, False, True]] * 2000
                           + [[True, False, False, False, False]] * 10)
    ctx = draw_context(present, 0.5, torch.Generator().manual_seed(0))
    assert ctx.shape == present.shape and ctx.dtype == torch.bool
    assert not (ctx & ~present).any()  # only present frames
    n = ctx[:2000].sum(dim=1)
    assert (n == 0).float().mean().item() == pytest.approx(0.5, abs=0.05)
    assert n.max() <= 3  # a proper subset: at least one present frame is left to score
    assert set(n[n > 0].tolist()) == {1, 2, 3}
    assert not ctx[2000:].any()  # one present frame: nothing to condition on
    again = draw_context(present, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(ctx, again)
    assert not draw_context(present, 1.0, torch.Generator().manual_seed(0)).any()
    # leave one out: every present frame but one, same examples with context as uniform
    loo = draw_context(present, 0.5, torch.Generator().manual_seed(0), size="leave_one_out")
    assert not (loo & ~present).any() and not loo[2000:].any()
    assert torch.equal(loo.any(dim=1), ctx.any(dim=1))
    assert set(loo[:2000].sum(dim=1).tolist()) == {0, 3}
    assert (ctx <= loo).all()  # the uniform subset is the first k of the same random order
    # mixed: each example with context is either its uniform subset or its leave-one-out one
    mix = draw_context(present, 0.5, torch.Generator().manual_seed(0), size="mixed")
    assert torch.equal(mix.any(dim=1), ctx.any(dim=1))
    is_loo = (mix == loo).all(dim=1) & ~(mix == ctx).all(dim=1)
    assert ((mix == loo).all(dim=1) | (mix == ctx).all(dim=1)).all()
    with_ctx = ctx[:2000].any(dim=1)
    # half take leave one out; uniform drew k = 3 for a third of those already
    assert is_loo[:2000][with_ctx].float().mean().item() == pytest.approx(0.5 * 2 / 3, abs=0.05)


def test_context_size_config():
    from videogene.errors import InputError
    from videogene.training.config import DiffusionConfig

    assert DiffusionConfig().context_size == "uniform"
    assert DiffusionConfig(context_size="leave_one_out").context_size == "leave_one_out"
    with pytest.raises(InputError, match="context_size"):
        DiffusionConfig(context_size="most")


def _loss_batch(b: int, f: int, *, side: int = 16) -> dict[str, torch.Tensor]:
    """A stream batch for the loss tests: ``b`` videos of ``f`` frames in [-1, 1] (global RNG),
    all frames present, tissue everywhere, days 10 .., genes 0-3."""
    return {"video": torch.rand(b, f, 1, side, side) * 2 - 1,
            "tissue_mask": torch.ones(b, f, 1, side, side),
            "frame_times": torch.arange(f).float().repeat(b, 1) + 10, "gene_id": torch.arange(b) % 4,
            "frame_present": torch.ones(b, f, dtype=torch.bool), "sample_weight": torch.ones(b)}


def test_diffusion_loss_scores_only_non_context_frames():
    from videogene.models import model_from_preset
    from videogene.training.diffusion import diffusion_loss

    torch.manual_seed(0)
    model = model_from_preset("tiny", 4, 16, context_channels=True)
    for p in model.parameters():
        if p.ndim > 1 and not p.detach().any():
            torch.nn.init.normal_(p, std=0.1)
    b, f = 6, 4
    batch = _loss_batch(b, f)
    dcfg = load_config(None, ["diffusion.context_none_prob=0.0"]).diffusion
    calls = []

    def spy(*args, **kw):
        calls.append(dict(kw, args=args))
        return model(*args, **kw)
    loss, _ = diffusion_loss(spy, make_noise_scheduler(dcfg), batch, dcfg,
                             generator=torch.Generator().manual_seed(1), null_gene_id=4, context=True)
    assert torch.isfinite(loss)
    cmask = calls[0]["context_mask"]
    assert cmask.any(dim=1).all() and not cmask.all(dim=1).any()
    torch.testing.assert_close(calls[0]["context"], batch["video"].transpose(1, 2))
    loss_off, _ = diffusion_loss(spy, make_noise_scheduler(dcfg), batch, dcfg,
                                 generator=torch.Generator().manual_seed(1), null_gene_id=4)
    assert "context" not in calls[1]
    # a stream with the day means (context_source="timepoint_mean") gives those as context
    day = dict(batch, context_video=torch.rand(b, f, 1, 16, 16))
    diffusion_loss(spy, make_noise_scheduler(dcfg), day, dcfg,
                   generator=torch.Generator().manual_seed(1), null_gene_id=4, context=True)
    torch.testing.assert_close(calls[2]["context"], day["context_video"].transpose(1, 2))
    for a, b in zip(calls[0]["args"], calls[2]["args"], strict=True):  # noisy input, timesteps
        torch.testing.assert_close(a, b)  # still from `video`, with the same draws
    torch.testing.assert_close(calls[2]["context_mask"], cmask)


def test_diffusion_loss_context_examples_take_the_aligned_twin():
    """slice_draw "context_aligned": the examples given context are noised, scored and
    conditioned on ``video_aligned`` (and its masks); the gene-only ones on ``video``."""
    from videogene.models import model_from_preset
    from videogene.training.diffusion import diffusion_loss

    torch.manual_seed(0)
    model = model_from_preset("tiny", 4, 16, context_channels=True)
    b, f = 8, 4
    batch = _loss_batch(b, f)
    twin = dict(batch, video_aligned=torch.rand(b, f, 1, 16, 16) * 2 - 1,
                tissue_mask_aligned=(torch.rand(b, f, 1, 16, 16) > 0.5).float())
    dcfg = load_config(None, ["diffusion.context_none_prob=0.5"]).diffusion
    calls = []

    def spy(*args, **kw):
        calls.append(dict(kw, args=args))
        return model(*args, **kw)
    for bt in (batch, twin):
        diffusion_loss(spy, make_noise_scheduler(dcfg), bt, dcfg,
                       generator=torch.Generator().manual_seed(3), null_gene_id=4, context=True)
    plain, aligned = calls
    with_ctx = plain["context_mask"].any(dim=1)
    assert 0 < with_ctx.sum() < b
    torch.testing.assert_close(aligned["context_mask"], plain["context_mask"])
    want = torch.where(with_ctx[:, None, None, None, None], twin["video_aligned"],
                       batch["video"]).transpose(1, 2)
    torch.testing.assert_close(aligned["context"], want)
    want_mask = torch.where(with_ctx[:, None, None, None, None], twin["tissue_mask_aligned"],
                            batch["tissue_mask"]).transpose(1, 2)
    torch.testing.assert_close(aligned["tissue_mask"], want_mask)
    # the noisy input of the gene-only examples is unchanged, that of the others is not
    same = (aligned["args"][0] == plain["args"][0]).flatten(1).all(dim=1)
    assert torch.equal(same, ~with_ctx)
    # a day-mean model's context (context_source "timepoint_mean") switches with the video
    day = dict(twin, context_video=torch.rand(b, f, 1, 16, 16),
               context_video_aligned=torch.rand(b, f, 1, 16, 16))
    diffusion_loss(spy, make_noise_scheduler(dcfg), day, dcfg,
                   generator=torch.Generator().manual_seed(3), null_gene_id=4, context=True)
    want = torch.where(with_ctx[:, None, None, None, None], day["context_video_aligned"],
                       day["context_video"]).transpose(1, 2)
    torch.testing.assert_close(calls.pop()["context"], want)
    # a model without context channels never looks at the twin
    diffusion_loss(spy, make_noise_scheduler(dcfg), twin, dcfg,
                   generator=torch.Generator().manual_seed(3), null_gene_id=4)
    torch.testing.assert_close(calls[2]["tissue_mask"], batch["tissue_mask"].transpose(1, 2))


# ------------------------------------------------------------------ parametrisation, device draws
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_noise_and_target_follows_the_scheduler_config(prediction_type):
    from diffusers import DDPMScheduler

    from videogene.training.diffusion import noise_and_target

    sched = DDPMScheduler(num_train_timesteps=100, prediction_type=prediction_type)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(3, 1, 2, 4, 4, generator=g), torch.randn(3, 1, 2, 4, 4, generator=g)
    t = torch.tensor([0, 50, 99])
    noisy, target = noise_and_target(sched, x0, noise, t)
    torch.testing.assert_close(noisy, sched.add_noise(x0, noise, t))
    expected = {"epsilon": noise, "v_prediction": sched.get_velocity(x0, noise, t),
                "sample": x0}[prediction_type]
    torch.testing.assert_close(target, expected)
    sched.register_to_config(prediction_type="x0")
    with pytest.raises(ValueError, match="prediction_type 'x0'"):
        noise_and_target(sched, x0, noise, t)


def test_diffusion_loss_reads_the_scheduler_and_logs_a_tensor():
    """The scheduler's prediction type wins over the training config's; ``mse`` stays a tensor."""
    from videogene.training.diffusion import (
        StepNoise,
        diffusion_loss,
        draw_context,
        masked_loss,
        noise_and_target,
    )

    b, f = 4, 3
    batch = _loss_batch(b, f)

    def zero_model(x, t, **kw):
        return type("Out", (), {"sample": torch.zeros_like(x)})()

    dcfg_eps = load_config(None, ["diffusion.prediction_type=epsilon",
                                  "diffusion.snr_gamma=null"]).diffusion
    dcfg_v = load_config(None, ["diffusion.prediction_type=v_prediction",
                                "diffusion.snr_gamma=null"]).diffusion
    sched_v = make_noise_scheduler(dcfg_v)
    loss, logs = diffusion_loss(zero_model, sched_v, batch, dcfg_eps,
                                generator=torch.Generator().manual_seed(5), null_gene_id=4)
    assert torch.is_tensor(logs["mse"]) and logs["mse"].ndim == 0 and not logs["mse"].requires_grad
    # the same draws by hand: the target is v (the scheduler's), not epsilon (the config's)
    g = torch.Generator().manual_seed(5)
    x0 = batch["video"].transpose(1, 2)
    draws = StepNoise.draw(tuple(x0.shape), 1000, dcfg_eps.gene_dropout, g, "cpu", sched_v, dcfg_eps)
    _, v = noise_and_target(sched_v, x0, draws.noise, draws.timesteps)
    want = masked_loss(torch.zeros_like(v), v, frame_present=batch["frame_present"]).mean()
    torch.testing.assert_close(loss.detach(), want)
    torch.testing.assert_close(logs["mse"], want)
    assert float(logs["mse"]) != pytest.approx(float(draws.noise.pow(2).mean()), rel=1e-3)
    # on the CPU, draws come straight from the CPU generator, in a fixed order
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    d = StepNoise.draw((2, 1, 3, 4, 4), 1000, 0.5, g1, "cpu")
    torch.testing.assert_close(d.noise, torch.randn((2, 1, 3, 4, 4), generator=g2))
    assert torch.equal(d.timesteps, torch.randint(0, 1000, (2,), generator=g2))
    assert torch.equal(d.drop_gene, torch.rand(2, generator=g2) < 0.5)
    ctx = draw_context(torch.ones(2, 3, dtype=torch.bool), 0.0, g1)
    assert ctx.device.type == "cpu" and ctx.any(dim=1).all()


@pytest.mark.parametrize("gamma", [0.0, 0.1])
def test_input_perturbation_moves_the_input_not_the_target(gamma):
    """DDPM-IP: the model sees ``add_noise(x0, noise + gamma * extra)``, the loss regresses the
    target of ``noise``; with gamma 0 the draws and the input are those of the plain objective."""
    from videogene.training.diffusion import (
        StepNoise,
        diffusion_loss,
        loss_weights,
        masked_loss,
        noise_and_target,
    )

    b, f = 4, 3
    batch = _loss_batch(b, f, side=8)
    dcfg = load_config(None, [f"diffusion.input_perturbation={gamma}"]).diffusion
    sched = make_noise_scheduler(dcfg)
    seen = []

    def echo_model(x, t, **kw):  # predicts its own input: the loss is then |noisy - target|^2
        seen.append(x)
        return type("Out", (), {"sample": x})()

    loss, _ = diffusion_loss(echo_model, sched, batch, dcfg,
                             generator=torch.Generator().manual_seed(3), null_gene_id=4)
    g = torch.Generator().manual_seed(3)
    x0 = batch["video"].transpose(1, 2)
    draws = StepNoise.draw(tuple(x0.shape), 1000, dcfg.gene_dropout, g, "cpu", sched, dcfg)
    plain, target = noise_and_target(sched, x0, draws.noise, draws.timesteps)
    extra = torch.randn(x0.shape, generator=g)
    want = sched.add_noise(x0, draws.noise + gamma * extra, draws.timesteps)
    torch.testing.assert_close(seen[0], want)
    assert torch.equal(seen[0], plain) == (gamma == 0.0)
    per_example = masked_loss(want, target, frame_present=batch["frame_present"])
    torch.testing.assert_close(loss, (per_example * loss_weights(sched, draws.timesteps, dcfg)).mean())


@pytest.mark.parametrize("key,bad", [("input_perturbation", "-0.1"), ("input_perturbation", ".nan"),
                                     ("input_perturbation", ".inf"), ("self_condition_prob", "1.5")])
def test_new_diffusion_options_reject_bad_values(key, bad):
    with pytest.raises(InputError, match=f"diffusion.{key}"):
        load_config(None, [f"diffusion.{key}={bad}"])


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_predicted_x0_inverts_the_target(prediction_type):
    from diffusers import DDPMScheduler

    from videogene.pipelines.samplers import predicted_x0
    from videogene.training.diffusion import noise_and_target

    sched = DDPMScheduler(num_train_timesteps=100, prediction_type=prediction_type)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(3, 1, 2, 4, 4, generator=g), torch.randn(3, 1, 2, 4, 4, generator=g)
    t = torch.tensor([0, 50, 98])
    noisy, target = noise_and_target(sched, x0, noise, t)
    torch.testing.assert_close(predicted_x0(sched, noisy, target, t), x0, atol=1e-4, rtol=1e-4)
    one = predicted_x0(sched, noisy[1:2], target[1:2], t[1])  # a 0-d timestep, as samplers give
    torch.testing.assert_close(one, x0[1:2], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("prob", [0.0, 1.0])
def test_self_conditioning_feeds_the_first_pass_estimate(prob):
    """Self-conditioning: on a drawn share of the micro-batches a pass without gradient on
    zeros, then its clean estimate as ``self_cond``; zeros (one pass) on the others."""
    from videogene.models import model_from_preset
    from videogene.pipelines.samplers import predicted_x0
    from videogene.training.diffusion import diffusion_loss

    torch.manual_seed(0)
    model = model_from_preset("tiny", 4, 16, context_channels=True, self_condition=True)
    for p in model.parameters():
        if p.ndim > 1 and not p.detach().any():
            torch.nn.init.normal_(p, std=0.1)
    b, f = 8, 3
    batch = _loss_batch(b, f)
    dcfg = load_config(None, [f"diffusion.self_condition_prob={prob}"]).diffusion
    sched = make_noise_scheduler(dcfg)
    calls = []

    def spy(x, t, **kw):
        out = model(x, t, **kw)
        calls.append(dict(kw, x=x, t=t, out=out.sample, grad=torch.is_grad_enabled()))
        return out
    loss, _ = diffusion_loss(spy, sched, batch, dcfg, generator=torch.Generator().manual_seed(2),
                             null_gene_id=4, context=True, self_condition=True)
    assert torch.isfinite(loss) and loss.requires_grad
    if prob == 0.0:
        assert len(calls) == 1 and calls[0]["grad"] and not calls[0]["self_cond"].any()
    else:
        first, second = calls
        assert not first["grad"] and second["grad"] and not first["self_cond"].any()
        assert torch.equal(first["x"], second["x"])
        assert torch.equal(first["context_mask"], second["context_mask"])
        torch.testing.assert_close(second["self_cond"],
                                   predicted_x0(sched, first["x"], first["out"], first["t"]))
    # the coin is drawn last: the noisy input and the context are those of a plain run
    plain = []
    diffusion_loss(lambda x, t, **kw: plain.append((x, kw)) or model(x, t, **kw), sched, batch,
                   dcfg, generator=torch.Generator().manual_seed(2), null_gene_id=4, context=True)
    assert len(plain) == 1 and "self_cond" not in plain[0][1]
    assert torch.equal(plain[0][0], calls[-1]["x"])
    assert torch.equal(plain[0][1]["context_mask"], calls[-1]["context_mask"])


def test_self_conditioning_coin_is_per_micro_batch():
    from videogene.training.diffusion import diffusion_loss

    b, f = 2, 2
    batch = _loss_batch(b, f, side=8)
    dcfg = load_config(None, ["diffusion.self_condition_prob=0.5"]).diffusion
    sched = make_noise_scheduler(dcfg)
    calls = []

    def zero_model(x, t, **kw):
        calls.append(1)
        return type("Out", (), {"sample": x * 0})()
    passes = []
    for seed in range(40):
        calls.clear()
        diffusion_loss(zero_model, sched, batch, dcfg, generator=torch.Generator().manual_seed(seed),
                       null_gene_id=2, self_condition=True)
        passes.append(len(calls))
    assert set(passes) == {1, 2} and 10 <= passes.count(2) <= 30


def test_generator_on_and_step_generator_device():
    from videogene.training.diffusion import generator_on

    g = step_generator(0, 3, 1)
    assert generator_on(g, "cpu") is g and generator_on(g, torch.device("cpu")) is g
    assert step_generator(0, 3, 1, device="cpu").initial_seed() == g.initial_seed()


def test_derived_device_generator_is_a_function_of_the_step(monkeypatch):
    """The path a CUDA batch takes with train.py's CPU step generator, simulated on the CPU:
    one draw of the step generator seeds the device generator, so the step's numbers depend on
    (seed, step, rank, micro_step) only, and a resumed run draws them again."""
    import videogene.training.diffusion as diffusion

    monkeypatch.setattr(diffusion, "_same_device", lambda a, b: False)
    a = diffusion.generator_on(step_generator(0, 3, 1), "cpu")
    b = diffusion.generator_on(step_generator(0, 3, 1), "cpu")
    c = diffusion.generator_on(step_generator(0, 4, 1), "cpu")
    x, y, z = (torch.randn(6, generator=g) for g in (a, b, c))
    assert torch.equal(x, y) and not torch.equal(x, z)
    assert not torch.equal(x, torch.randn(6, generator=step_generator(0, 3, 1)))
    d1 = diffusion.StepNoise.draw((2, 1, 3, 4, 4), 1000, 0.1, step_generator(0, 3, 1), "cpu")
    d2 = diffusion.StepNoise.draw((2, 1, 3, 4, 4), 1000, 0.1, step_generator(0, 3, 1), "cpu")
    assert torch.equal(d1.noise, d2.noise) and torch.equal(d1.timesteps, d2.timesteps)
    present = torch.ones(64, 4, dtype=torch.bool)
    assert torch.equal(diffusion.draw_context(present, 0.5, step_generator(0, 3, 1)),
                       diffusion.draw_context(present, 0.5, step_generator(0, 3, 1)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_step_draws_on_cuda_without_host_syncs():
    """On CUDA: draws on the device, deterministic in the per-step seed, no synchronising call."""
    from videogene.models import model_from_preset
    from videogene.training.diffusion import (
        StepNoise,
        diffusion_loss,
        draw_context,
        generator_on,
        loss_weights,
        noise_and_target,
    )

    dev = torch.device("cuda")
    dcfg = load_config(None, ["diffusion.timestep_sampling=lognormal"]).diffusion
    sched = make_noise_scheduler(dcfg)
    present = torch.ones(8, 4, dtype=torch.bool, device=dev)
    x0 = torch.rand(8, 1, 4, 16, 16, device=dev)

    def draws(gen):
        d = StepNoise.draw(tuple(x0.shape), 1000, 0.1, gen, dev, sched, dcfg)
        ctx = draw_context(present, 0.5, gen)
        noisy, target = noise_and_target(sched, x0, d.noise, d.timesteps)
        return d, ctx, noisy, target, loss_weights(sched, d.timesteps, dcfg)

    draws(generator_on(step_generator(0, 1, 0), dev))  # warm: the schedule's tables move once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        a = draws(generator_on(step_generator(0, 1, 0), dev))
        b = draws(step_generator(0, 1, 0, device=dev))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert a[0].noise.device.type == "cuda" and a[1].device.type == "cuda"
    again = draws(generator_on(step_generator(0, 1, 0), dev))
    assert torch.equal(a[0].noise, again[0].noise) and torch.equal(a[0].timesteps, again[0].timesteps)
    assert torch.equal(a[1], again[1])
    assert torch.equal(b[0].noise, draws(step_generator(0, 1, 0, device=dev))[0].noise)
    assert not torch.equal(a[0].noise, draws(generator_on(step_generator(0, 2, 0), dev))[0].noise)
    # the whole loss: same numbers for the same step, on the device
    torch.manual_seed(0)
    model = model_from_preset("tiny", 4, 16, context_channels=True).to(dev)
    batch = {"video": (torch.rand(8, 4, 1, 16, 16) * 2 - 1).to(dev),
             "tissue_mask": torch.ones(8, 4, 1, 16, 16, device=dev),
             "frame_times": (torch.arange(4).float().repeat(8, 1) + 10).to(dev),
             "gene_id": (torch.arange(8) % 4).to(dev), "frame_present": present,
             "sample_weight": torch.ones(8, device=dev)}
    out = [diffusion_loss(model, sched, batch, dcfg, generator=step_generator(0, 7, 0),
                          null_gene_id=4, context=True) for _ in range(2)]
    assert out[0][1]["mse"].device.type == "cuda"
    assert torch.equal(out[0][0], out[1][0])


@pytest.mark.parametrize("prediction_type", ["v_prediction", "epsilon", "sample"])
def test_exact_outside_is_the_ideal_denoiser_outside(prediction_type):
    from diffusers import DDPMScheduler

    from videogene.pipelines.samplers import exact_outside, predicted_x0
    from videogene.training.diffusion import noise_and_target

    sched = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2",
                          prediction_type=prediction_type)
    g = torch.Generator().manual_seed(0)
    zero = -0.4
    tissue = (torch.rand(3, 1, 2, 8, 8, generator=g) > 0.5).float()  # (b, 1, f, h, w)
    x0 = torch.where(tissue > 0, torch.rand(3, 1, 2, 8, 8, generator=g), torch.tensor(zero))
    t = torch.tensor([0, 50, 99])
    noisy, target = noise_and_target(sched, x0, torch.randn(x0.shape, generator=g), t)
    pred = torch.randn(x0.shape, generator=g)
    out = exact_outside(sched, noisy, pred, t, tissue, zero)
    inside = tissue.bool().expand_as(out)
    torch.testing.assert_close(out[inside], pred[inside])  # the network's own output in tissue
    torch.testing.assert_close(out[~inside], target[~inside], atol=2e-3, rtol=1e-4)  # the target
    x0_hat = predicted_x0(sched, noisy, out, t)
    torch.testing.assert_close(x0_hat[~inside], torch.full_like(x0_hat[~inside], zero),
                               atol=1e-3, rtol=0)
    # max_snr: only the noisier examples (here t = 50 and 99, SNR <= 1) get the exact outputs
    snr = sched.alphas_cumprod[t] / (1 - sched.alphas_cumprod[t])
    assert snr[0] > 1 >= snr[1]
    part = exact_outside(sched, noisy, pred, t, tissue, zero, max_snr=1.0)
    torch.testing.assert_close(part[0], pred[0])
    torch.testing.assert_close(part[1:], out[1:])


def test_diffusion_loss_exact_outside_learns_the_tissue_only():
    from videogene.training.diffusion import diffusion_loss, make_noise_scheduler

    torch.manual_seed(0)
    zero = -1.0
    batch = _loss_batch(4, 3)
    tissue = torch.zeros(4, 3, 1, 16, 16)
    tissue[..., 4:12, 4:12] = 1
    batch["tissue_mask"] = tissue
    batch["video"] = torch.where(tissue > 0, batch["video"], torch.tensor(zero))
    dcfg = load_config(None, []).diffusion
    sched = make_noise_scheduler(dcfg)
    outside = tissue.transpose(1, 2) == 0  # (b, 1, f, h, w)

    def model(level):  # a model whose output is `level` outside the tissue and 0 inside
        weight = torch.zeros((), requires_grad=True)

        def forward(x, t, **kw):
            out = torch.where(outside, torch.tensor(level), torch.zeros(())) * (1 + weight)
            return type("Out", (), {"sample": out})()
        return forward, weight

    def loss(level, zero_level):
        fwd, weight = model(level)
        outside = None if zero_level is None else {"zero": zero_level}
        value, _ = diffusion_loss(fwd, sched, batch, dcfg, generator=torch.Generator().manual_seed(3),
                                  null_gene_id=4, outside=outside)
        value.backward()
        return float(value.detach()), float(weight.grad)

    # with the exact outputs outside, what the network says there neither counts nor trains
    (a, grad_a), (b, grad_b) = loss(0.0, zero), loss(5.0, zero)
    assert a == pytest.approx(b, rel=1e-6) and grad_a == 0 and grad_b == 0
    (c, _), (d, grad_d) = loss(0.0, None), loss(5.0, None)
    assert d > c and grad_d != 0  # without, it does
