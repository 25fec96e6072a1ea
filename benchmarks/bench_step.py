"""Where the time of one training step goes: train.py's loop body, phase by phase.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_step.py            # CPU, tiny, 32 px
    python benchmarks/bench_step.py --device cuda --preset base --resolution 64 --batch 32 \\
        --bf16 --workers 8 --dataset DATASET_DIR                         # GPU (gpu_check.sh)

Runs the same library calls as the loop of ``train.py`` (``batch_stream``, ``to_device``,
``step_generator``, ``diffusion_loss``, ``accelerator.backward``, ``clip_grad_norm_``, AdamW, the
LR schedule, diffusers' ``EMAModel`` as train.py builds it, the logging ``reduce().item()``) on
a small synthetic atlas and reports

1. free-running steps/s (no extra synchronisation): what train.py does;
2. the same steps with a device synchronisation after each phase: where the time goes;
3. per phase, from torch.profiler: leaf ATen ops per step (about one kernel launch each on a
   GPU), ``aten::_local_scalar_dense`` calls (``.item()``/``float()`` of a tensor: a host sync
   on a GPU) and, on CUDA, kernel launches and synchronising runtime calls;
4. on CUDA, every synchronising call of one step with its file:line
   (``torch.cuda.set_sync_debug_mode``);
5. host-side pieces timed alone: the noise draw on the CPU generator (``StepNoise.draw``), the
   same draw on the device, the in-filling context draw, EMA with ``foreach`` (the loop) and per
   parameter (before), one logging event;
6. a model-only step on one fixed on-device batch (noise already on the device; forward, loss,
   backward, AdamW): the rate the issue asks train.py to reach 90% of.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
import traceback
import warnings
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from _common import markdown_table, report  # noqa: E402

PHASES = ["data", "h2d", "seed", "loss", "backward", "clip", "optimizer", "lr", "ema", "log"]
PHASE_DOC = {
    "data": "next(batch_stream(loader))",
    "h2d": "to_device(batch) (non_blocking; pinned when CUDA exists)",
    "seed": "step_generator + torch.manual_seed",
    "loss": "diffusion_loss: draws on the device, forward, masked loss",
    "backward": "accelerator.backward",
    "clip": "accelerator.clip_grad_norm_",
    "optimizer": "AdamW step + zero_grad",
    "lr": "lr_scheduler.step",
    "ema": "EMAModel.step (foreach, as the training loop)",
    "log": "loss_sum += loss.detach(); every logging_steps reduce().item()",
}
LAUNCH_NAMES = {"cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx"}
SYNC_NAMES = {"cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize",
              "cudaMemcpy"}


class Timer:
    """``with timer("phase"):`` adds the phase's wall time; optionally synchronises the device
    at the end of each phase (attribution) and labels it for the profiler."""

    def __init__(self, device, *, sync: bool, label: bool):
        import torch

        self.sync_fn = torch.cuda.synchronize if (sync and device.type == "cuda") else None
        self.label = label
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, name: str):
        import torch

        ctx = torch.profiler.record_function(f"phase:{name}") if self.label else contextlib.nullcontext()
        t0 = time.perf_counter()
        with ctx:
            yield
            if self.sync_fn is not None:
                self.sync_fn()
        self.seconds[name] += time.perf_counter() - t0


def _dataset(args) -> Path:
    if args.dataset:
        return Path(args.dataset)
    from bench_stream import _dataset as cached_dataset

    return cached_dataset(args.genes, args.resolution, args.bins, args.shard_genes)


def setup(args):
    """train.py's sections 1-4 for one process: accelerator, stream, model, EMA, optimizer."""
    import torch
    from accelerate import Accelerator
    from diffusers.training_utils import EMAModel

    from videogene.data import load_metadata
    from videogene.models import VideoGeneUNet, count_parameters, model_from_preset
    from videogene.training.config import load_config
    from videogene.training.diffusion import make_noise_scheduler
    from videogene.training.loop import frame_time_range
    from videogene.training.optim import build_lr_scheduler, build_optimizer
    from videogene.training.stream import batch_stream, build_dataset, build_loader
    from videogene.utils import set_seed

    ds = _dataset(args)
    meta = load_metadata(ds)
    overrides = [f"data.path={ds}", f"train_batch_size={args.batch}",
                 f"mixed_precision={'bf16' if args.bf16 else 'no'}", "report_to=none",
                 f"max_steps={10**6}"]
    if args.workers is not None:
        overrides.append(f"dataloader_num_workers={args.workers}")
    cfg = load_config(ROOT / "configs" / f"{args.preset}.yaml", overrides + list(args.set))
    accelerator = Accelerator(cpu=args.device == "cpu", mixed_precision=cfg.mixed_precision)
    set_seed(cfg.seed)
    loader = build_loader(build_dataset(cfg, ds), cfg.train_batch_size, cfg.dataloader_num_workers)
    model = model_from_preset(cfg.model.preset, num_genes=len(meta["genes"]),
                              sample_size=int(meta["resolution"]), gene_names=list(meta["genes"]),
                              **cfg.model.overrides(),
                              frame_time_range=frame_time_range(meta["timepoints"]))
    n_params = count_parameters(model)
    if cfg.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    ema = EMAModel(model.parameters(), decay=cfg.ema_decay, foreach=True, model_cls=VideoGeneUNet,
                   model_config=model.config) if cfg.use_ema else None
    optimizer = build_optimizer(model, cfg)
    lr_scheduler = build_lr_scheduler(optimizer, cfg)
    if args.compile or cfg.torch_compile:
        model = torch.compile(model)
    model, optimizer = accelerator.prepare(model, optimizer)
    if ema is not None:
        ema.to(accelerator.device)
    raw = accelerator.unwrap_model(model, keep_torch_compile=False)
    return dict(cfg=cfg, meta=meta, accelerator=accelerator, model=model, raw=raw, ema=ema,
                optimizer=optimizer, lr_scheduler=lr_scheduler, n_params=n_params,
                noise_scheduler=make_noise_scheduler(cfg.diffusion), stream=batch_stream(loader),
                dataset=ds, workers=cfg.dataloader_num_workers)


class Loop:
    """The body of train.py's training loop (one optimizer step, no gradient accumulation)."""

    def __init__(self, s: dict):
        self.s = s
        self.step_no = 0
        self.loss_sum, self.loss_n = 0.0, 0

    def step(self, timer: Timer) -> None:
        import torch

        from videogene.training.diffusion import diffusion_loss, step_generator
        from videogene.training.stream import to_device

        s, cfg, acc = self.s, self.s["cfg"], self.s["accelerator"]
        model, optimizer = s["model"], s["optimizer"]
        with timer("data"):
            _, batch = next(s["stream"])
        with timer("h2d"):
            batch = to_device(batch, acc.device)
        with timer("seed"):
            gen = step_generator(cfg.seed, self.step_no, 0, 0)
            torch.manual_seed(gen.initial_seed())
        with acc.accumulate(model):
            with timer("loss"):
                loss, _ = diffusion_loss(model, s["noise_scheduler"], batch, cfg.diffusion,
                                         generator=gen, null_gene_id=s["raw"].null_gene_id,
                                         context=bool(s["raw"].config.context_channels))
            with timer("backward"):
                acc.backward(loss)
            with timer("clip"):
                if acc.sync_gradients and cfg.max_grad_norm > 0:
                    acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            with timer("optimizer"):
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        with timer("lr"):
            s["lr_scheduler"].step()
        with timer("ema"):
            if s["ema"] is not None:
                s["ema"].step(s["raw"].parameters())
        self.step_no += 1
        with timer("log"):
            self.loss_sum, self.loss_n = self.loss_sum + loss.detach(), self.loss_n + 1
            if self.step_no % cfg.logging_steps == 0:
                acc.reduce(self.loss_sum / self.loss_n, reduction="mean").item()
                self.loss_sum, self.loss_n = 0.0, 0


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, reps: int) -> float:
    """Median seconds of ``fn()`` (device synchronised around each call)."""
    times = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def profile_phases(loop: Loop, device, steps: int) -> dict[str, dict[str, float]]:
    """Per phase and step: leaf ATen ops, ``_local_scalar_dense`` calls, CUDA launches/syncs."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    timer = Timer(device, sync=False, label=True)
    with profile(activities=acts) as prof:
        for _ in range(steps):
            loop.step(timer)
        sync(device)
    counts: dict[str, Counter] = defaultdict(Counter)
    for ev in prof.events():
        name = ev.name
        phase, parent = "other", ev.cpu_parent
        while parent is not None:
            if parent.name.startswith("phase:"):
                phase = parent.name[len("phase:"):]
                break
            parent = parent.cpu_parent
        if name.startswith("aten::") and not any(c.name.startswith("aten::") for c in ev.cpu_children):
            counts[phase]["leaf_ops"] += 1
        if name == "aten::_local_scalar_dense":
            counts[phase]["item_syncs"] += 1
        if name in LAUNCH_NAMES:
            counts[phase]["launches"] += 1
        if name in SYNC_NAMES:
            counts[phase]["sync_calls"] += 1
    return {ph: {k: v / steps for k, v in c.items()} for ph, c in counts.items()}


def _site(frames) -> str:
    """The innermost frame of the project's library (else of this script, else any)."""
    ours = [f for f in frames if f.filename.startswith(str(ROOT)) and "/.venv/" not in f.filename]
    lib = [f for f in ours if not f.filename.endswith("bench_step.py")]
    f = (lib or ours or frames)[-1]
    name = f.filename
    if name.startswith(str(ROOT)):
        name = str(Path(name).relative_to(ROOT))
    return f"{name}:{f.lineno} ({f.name})"


def sync_sites(loop: Loop, steps: int = 1) -> list[dict]:
    """CUDA: every synchronising call of ``steps`` free-running steps, by the innermost
    project frame (file:line) that led to it (torch.cuda.set_sync_debug_mode("warn"))."""
    import torch

    sites: Counter = Counter()

    def hook(message, category, filename, lineno, file=None, line=None):
        if "synchroniz" not in str(message):
            return
        sites[_site(traceback.extract_stack()[:-1])] += 1

    timer = Timer(torch.device("cuda"), sync=False, label=False)
    loop.step(timer)  # warm (first-call copies of scheduler tables are not steady state)
    torch.cuda.synchronize()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        old = warnings.showwarning
        warnings.showwarning = hook
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                loop.step(timer)
        finally:
            torch.cuda.set_sync_debug_mode(0)
            warnings.showwarning = old
    torch.cuda.synchronize()
    return [{"site": k, "per step": v / steps} for k, v in sites.most_common()]


def host_pieces(s: dict, batch: dict, device, reps: int) -> list[dict]:
    """The host-side pieces of a step timed alone (median ms per call)."""
    import torch
    from diffusers.training_utils import EMAModel

    from videogene.training.diffusion import (
        StepNoise,
        batch_to_model_inputs,
        draw_context,
        step_generator,
    )

    cfg, dcfg = s["cfg"], s["cfg"].diffusion
    inp = batch_to_model_inputs(batch)
    shape = tuple(inp["x0"].shape)
    T = s["noise_scheduler"].config.num_train_timesteps
    rows = []

    def add(piece, fn, note=""):
        rows.append({"piece": piece, "ms per call": 1e3 * timed(fn, device, reps), "note": note})

    add("noise draw on the CPU generator (StepNoise.draw, host part)",
        lambda: StepNoise.draw(shape, T, dcfg.gene_dropout, step_generator(0, 1, 0), "cpu",
                               s["noise_scheduler"], dcfg),
        f"randn {shape} float32 + timesteps + dropout")
    add("StepNoise.draw to the device (as diffusion_loss)",
        lambda: StepNoise.draw(shape, T, dcfg.gene_dropout, step_generator(0, 1, 0), device,
                               s["noise_scheduler"], dcfg),
        "host draw + 3 pageable copies" if device.type == "cuda" else "same as above on CPU")
    dgen = torch.Generator(device=device)

    def on_device():
        dgen.manual_seed(1)
        torch.randn(shape, generator=dgen, device=device)
        torch.randint(0, T, (shape[0],), generator=dgen, device=device)
        torch.rand(shape[0], generator=dgen, device=device)

    add("the same draws on a device generator (alternative)", on_device,
        "seeded per step: resume stays exact")
    present = inp["frame_present"]
    add("draw_context (in-filling subsets)",
        lambda: draw_context(present, dcfg.context_none_prob, step_generator(0, 1, 0)),
        "draws on frame_present's device")
    if s["ema"] is not None:
        params = list(s["raw"].parameters())
        add(f"EMA step, foreach ({len(params)} tensors, the training loop)",
            lambda: s["ema"].step(params), "EMAModel(foreach=True)")
        ema_pp = EMAModel(params, decay=cfg.ema_decay, foreach=False)
        ema_pp.to(device)
        add("EMA step, per parameter (before)", lambda: ema_pp.step(params), "EMAModel(foreach=False)")
        del ema_pp
    loss = torch.ones((), device=device)
    acc = s["accelerator"]
    add(f"logging event (reduce + .item(), every {cfg.logging_steps} steps)",
        lambda: acc.reduce(loss, reduction="mean").item(), "amortised over logging_steps")
    return rows


def model_only(s: dict, batch: dict, device, steps: int, warmup: int) -> float:
    """Seconds per step of forward + loss + backward + AdamW on one fixed on-device batch
    (noise, timesteps and context drawn once, on the device): the loop without its host side."""
    import torch

    from videogene.training.diffusion import batch_to_model_inputs, masked_loss

    model, optimizer, sched = s["model"], s["optimizer"], s["noise_scheduler"]
    inp = batch_to_model_inputs(batch)
    x0 = inp["x0"]
    g = torch.Generator(device=device).manual_seed(0)
    noise = torch.randn(x0.shape, generator=g, device=device)
    t = torch.randint(0, sched.config.num_train_timesteps, (x0.shape[0],), generator=g, device=device)
    noisy = sched.add_noise(x0, noise, t)
    target = sched.get_velocity(x0, noise, t)
    extra = {}
    if s["raw"].config.context_channels:
        extra = {"context": x0, "context_mask": torch.zeros_like(inp["frame_present"])}

    def step():
        pred = model(noisy, t, gene_ids=inp["gene_id"], frame_times=inp["frame_times"],
                     frame_mask=inp["frame_present"], tissue_mask=inp["tissue_mask"], **extra).sample
        loss = masked_loss(pred, target, frame_present=inp["frame_present"]).mean()
        s["accelerator"].backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - t0) / steps


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--preset", default="tiny", help="configs/<preset>.yaml (tiny)")
    p.add_argument("--resolution", type=int, default=32, help="canvas of the cached atlas (32)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader workers (default: the config's dataloader_num_workers)")
    p.add_argument("--bf16", action="store_true", help="mixed_precision=bf16 (GPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--dataset", default=None, help="prepared dataset folder (default: a cached "
                   "synthetic atlas of --genes genes at --resolution)")
    p.add_argument("--genes", type=int, default=96)
    p.add_argument("--bins", type=int, default=1500)
    p.add_argument("--shard-genes", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=20, help="free-running steps timed")
    p.add_argument("--phase-steps", type=int, default=10, help="steps timed phase by phase")
    p.add_argument("--profile-steps", type=int, default=3, help="steps under torch.profiler")
    p.add_argument("--reps", type=int, default=10, help="repetitions of each host piece")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="training config override (repeatable)")
    p.add_argument("--json", default=None, metavar="FILE",
                   help="append the summary as one JSON line to FILE")
    p.add_argument("--no-append", action="store_true", help="do not append to docs/benchmarks.md")
    a = p.parse_args(argv)

    import torch

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("bench_step.py: error: --device cuda: no CUDA device")
    t_setup = time.perf_counter()
    s = setup(a)
    device = s["accelerator"].device
    cfg = s["cfg"]
    loop = Loop(s)
    free = Timer(device, sync=False, label=False)
    for _ in range(a.warmup):
        loop.step(free)
    sync(device)
    setup_s = time.perf_counter() - t_setup

    # 1. free running
    t0 = time.perf_counter()
    for _ in range(a.steps):
        loop.step(free)
    sync(device)
    step_s = (time.perf_counter() - t0) / a.steps
    # 2. phase by phase
    phased = Timer(device, sync=True, label=False)
    for _ in range(a.phase_steps):
        loop.step(phased)
    phase_ms = {k: 1e3 * v / a.phase_steps for k, v in phased.seconds.items()}
    # 3. profiler
    counts = profile_phases(loop, device, a.profile_steps) if a.profile_steps else {}
    # 4. sync sites (CUDA)
    sites = sync_sites(loop) if device.type == "cuda" else []
    # 5. host pieces, 6. model-only ceiling, on one batch from the stream
    from videogene.training.stream import to_device

    batch = to_device(next(s["stream"])[1], device)
    pieces = host_pieces(s, batch, device, a.reps)
    model_s = model_only(s, batch, device, a.steps, a.warmup)

    total_ms = sum(phase_ms.values())
    rows = []
    for ph in PHASES:
        c = counts.get(ph, {})
        row = {"phase": ph, "what": PHASE_DOC[ph], "ms/step": phase_ms.get(ph, 0.0),
               "share": phase_ms.get(ph, 0.0) / total_ms if total_ms else 0.0,
               "leaf ops/step": c.get("leaf_ops", 0.0), ".item() syncs/step": c.get("item_syncs", 0.0)}
        if device.type == "cuda":
            row["launches/step"] = c.get("launches", 0.0)
            row["sync calls/step"] = c.get("sync_calls", 0.0)
        rows.append(row)
    meta = s["meta"]
    shape = f"{len(meta['timepoints'])}x{meta['resolution']}x{meta['resolution']}"
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    summary = {
        "bench": "step", "device": name, "preset": cfg.model.preset, "params_M": s["n_params"] / 1e6,
        "shape": shape, "batch": cfg.train_batch_size, "bf16": a.bf16, "workers": s["workers"],
        "threads": torch.get_num_threads(), "loop_step_ms": 1e3 * step_s,
        "loop_examples_per_s": cfg.train_batch_size / step_s, "phased_step_ms": total_ms,
        "model_only_step_ms": 1e3 * model_s, "model_only_examples_per_s": cfg.train_batch_size / model_s,
        "loop_over_model_only": model_s / step_s, "setup_s": setup_s,
        "phase_ms": phase_ms, "host_pieces_ms": {r["piece"]: r["ms per call"] for r in pieces},
        "sync_sites": sites,
    }
    print(json.dumps(summary), flush=True)
    if a.json:
        with open(a.json, "a") as fh:
            fh.write(json.dumps(summary) + "\n")

    columns = ["phase", "what", "ms/step", "share", "leaf ops/step", ".item() syncs/step"]
    if device.type == "cuda":
        columns += ["launches/step", "sync calls/step"]
    notes = (f"Preset {cfg.model.preset} ({s['n_params'] / 1e6:.3g} M parameters), {shape}, batch "
             f"{cfg.train_batch_size}, {'bf16' if a.bf16 else 'fp32'}, {s['workers']} loader "
             f"workers, {torch.get_num_threads()} threads, device {name}. "
             f"**Free-running loop: {1e3 * step_s:.1f} ms/step "
             f"({cfg.train_batch_size / step_s:.1f} examples/s); model-only step on a fixed "
             f"on-device batch: {1e3 * model_s:.1f} ms ({cfg.train_batch_size / model_s:.1f} "
             f"examples/s); loop / model-only rate = {model_s / step_s:.2f}.** "
             f"Phase times: {a.phase_steps} steps with a device synchronisation after each phase "
             f"(sum {total_ms:.1f} ms). Op counts: torch.profiler over {a.profile_steps} steps; "
             "a leaf op is an ATen op with no ATen op inside (about one kernel launch on a GPU); "
             "'.item() syncs' counts aten::_local_scalar_dense (a blocking device-to-host read "
             "on a GPU).\n\nHost-side pieces timed alone (median of "
             f"{a.reps}):\n\n" + markdown_table(pieces, ["piece", "ms per call", "note"]))
    if sites:
        notes += ("\n\nSynchronising calls in one step (torch.cuda.set_sync_debug_mode):\n\n"
                  + markdown_table(sites, ["site", "per step"]))
    report(f"Training step: where the time goes ({name}, {cfg.model.preset})", rows,
           columns=columns, append=not a.no_append, notes=notes)
    return summary


if __name__ == "__main__":
    main()
