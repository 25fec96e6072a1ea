"""Training throughput of the VideoGeneUNet presets vs diffusers' UNet3DConditionModel.

For each (preset, canvas, batch) the script times full training steps (forward, MSE loss,
backward, AdamW step) of the VideoGeneUNet and, on the same batches, of a
``UNet3DConditionModel`` sized to about the same parameter count (the gene embedding is fed to
it as a 1-token ``encoder_hidden_states`` sequence; the tissue mask is an input channel for both).
Every configuration runs in its own subprocess so that the peak RSS is its own.

CPU (default):   .venv/bin/python benchmarks/bench_model.py
GPU:             python benchmarks/bench_model.py --device cuda --bf16 --compile \\
                     --runs tiny:16:32 small:64:32 base:64:16 large:64:8
MFU (GPU) = 3 x forward FLOPs per example (FlopCounterMode) x examples/s / peak FLOP/s.
``first_step_s`` is the first warm-up step (with --compile: compilation included). On CUDA the
baseline's attention runs in chunks of --baseline-chunk sequences: its temporal attention over
batch x pixels sequences exceeds the kernels' grid limit (65535) at 64x64 and batch >= 16.
``--json FILE`` appends each row as one JSON line as soon as it is measured (benchmarks/gpu_check.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_gib, report  # noqa: E402

NUM_GENES = 1000
# dense bf16 peaks (FLOP/s), matched on the device name
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


# --------------------------------------------------------------------------- models
def build_ours(preset: str, size: int):
    from videogene.models import model_from_preset

    return model_from_preset(preset, NUM_GENES, size)


def chunk_sdpa(chunk: int) -> None:
    """Make ``F.scaled_dot_product_attention`` (this process only) run in slices of at most
    ``chunk`` along the first (batch) dimension: the CUDA attention kernels put that dimension
    on a grid axis limited to 65535, which diffusers' temporal attention (one sequence per
    example and pixel) exceeds. The result is the same function; only the launches differ."""
    import torch
    import torch.nn.functional as F

    sdpa = F.scaled_dot_product_attention

    def chunked(query, key, value, attn_mask=None, *args, **kwargs):
        n = query.shape[0]
        if n <= chunk:
            return sdpa(query, key, value, attn_mask, *args, **kwargs)
        outs = []
        for i in range(0, n, chunk):
            m = attn_mask
            if m is not None and m.dim() == query.dim() and m.shape[0] == n:
                m = m[i:i + chunk]
            outs.append(sdpa(query[i:i + chunk], key[i:i + chunk], value[i:i + chunk], m,
                             *args, **kwargs))
        return torch.cat(outs)

    F.scaled_dot_product_attention = chunked


class Baseline3D:
    """diffusers UNet3DConditionModel + a gene embedding fed as one cross-attention token."""

    @staticmethod
    def build(preset: str, size: int, target_params: int):
        import torch
        from diffusers import UNet3DConditionModel
        from torch import nn

        from videogene.models import MODEL_PRESETS, count_parameters

        cfg = MODEL_PRESETS[preset]
        groups = 4 if cfg["block_out_channels"][0] < 32 else 8
        n = len(cfg["block_out_channels"])

        def make(scale: float, heads: int):
            chans = tuple(max(groups, round(c * scale / groups) * groups)
                          for c in cfg["block_out_channels"])
            return dict(sample_size=size, in_channels=2, out_channels=1,
                        down_block_types=("CrossAttnDownBlock3D",) * (n - 1) + ("DownBlock3D",),
                        up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * (n - 1),
                        block_out_channels=chans, layers_per_block=cfg["layers_per_block"],
                        norm_num_groups=groups, cross_attention_dim=cfg["gene_embed_dim"],
                        attention_head_dim=heads)  # diffusers: this is the number of heads

        best = None
        for scale in [0.25 + 0.05 * i for i in range(24)]:
            for heads in (1, 2, 4, 8):
                kwargs = make(scale, heads)
                if any(c % heads for c in kwargs["block_out_channels"]):
                    continue
                with torch.device("meta"):
                    params = count_parameters(UNet3DConditionModel(**kwargs))
                err = abs(params / target_params - 1)
                if best is None or err < best[0]:
                    best = (err, kwargs)
        unet = UNet3DConditionModel(**best[1])

        class Wrapped(nn.Module):
            def __init__(self):
                super().__init__()
                self.unet = unet
                self.gene_embedding = nn.Embedding(NUM_GENES + 1, cfg["gene_embed_dim"])

            def forward(self, sample, timestep, gene_ids, frame_times, frame_mask, tissue_mask):
                x = torch.cat([sample, tissue_mask], dim=1)
                tokens = self.gene_embedding(gene_ids)[:, None]  # (b, 1, d)
                return self.unet(x, timestep, encoder_hidden_states=tokens).sample

        return Wrapped(), best[1]


def build(spec: dict):
    """(model, description) for one run spec (on the current default device)."""
    from videogene.models import count_parameters

    ours = build_ours(spec["preset"], spec["size"])
    if spec["model"] == "videogene":
        return ours, f"VideoGeneUNet[{spec['preset']}]"
    model, kwargs = Baseline3D.build(spec["preset"], spec["size"], count_parameters(ours))
    return model, f"UNet3DConditionModel{tuple(kwargs['block_out_channels'])}"


def forward_flops(spec: dict) -> int:
    """Forward FLOPs of one example, counted on a meta-device copy (FlopCounterMode does not
    see the CPU flash-attention kernel; on meta every matmul, conv and attention is counted)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model, _ = build(spec)
    batch = make_batch(1, spec["frames"], spec["size"], "meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(**batch)
    return int(counter.get_total_flops())


# --------------------------------------------------------------------------- one run
def make_batch(b: int, f: int, size: int, device, seed: int = 0) -> dict:
    import torch

    g = torch.Generator().manual_seed(seed)
    frame_mask = torch.rand(b, f, generator=g) > 0.2
    frame_mask[:, 0] = True
    batch = dict(sample=torch.randn(b, 1, f, size, size, generator=g),
                 timestep=torch.randint(0, 1000, (b,), generator=g),
                 gene_ids=torch.randint(0, NUM_GENES, (b,), generator=g),
                 frame_times=(9.5 + 0.5 * torch.arange(f)).repeat(b, 1),
                 frame_mask=frame_mask,
                 tissue_mask=(torch.rand(b, 1, f, size, size, generator=g) > 0.3).float())
    return {k: v.to(device) for k, v in batch.items()}


def run_one(spec: dict) -> dict:
    import torch

    from videogene.models import count_parameters

    device = torch.device(spec["device"])
    if device.type == "cpu" and spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    chunk = spec.get("baseline_chunk")
    if chunk is None:
        chunk = 32768 if device.type == "cuda" else 0
    if spec["model"] != "videogene" and chunk > 0:
        chunk_sdpa(chunk)
    flops = forward_flops(spec)
    torch.manual_seed(0)
    model, desc = build(spec)
    model = model.to(device).train()
    if spec["model"] == "videogene" and spec.get("checkpointing"):
        model.enable_gradient_checkpointing()
    batch = make_batch(spec["batch"], spec["frames"], spec["size"], device)
    step_model = (torch.compile(model, backend=spec.get("compile_backend") or "inductor")
                  if spec.get("compile") else model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    target = torch.randn_like(batch["sample"])
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(spec.get("bf16")))

    def step():
        with autocast:
            out = step_model(**batch)
            if not torch.is_tensor(out):
                out = out.sample
        loss = (out.float() - target).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    for i in range(spec["warmup"]):
        step()
        if i == 0:
            sync()
            first_step_s = time.perf_counter() - t0
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(spec["steps"]):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    step_s = sorted(times)[len(times) // 2]  # median
    eps = spec["batch"] / step_s
    row = dict(model=desc, params_M=count_parameters(model) / 1e6,
               shape=f"{spec['frames']}x{spec['size']}x{spec['size']}", batch=spec["batch"],
               step_s=step_s, examples_per_s=eps, fwd_GFLOP=flops / 1e9,
               train_TFLOP_s=3 * flops * eps / 1e12, peak_rss_GiB=peak_rss_gib(),
               first_step_s=first_step_s if spec["warmup"] else None,
               compile=bool(spec.get("compile")), bf16=bool(spec.get("bf16")))
    if device.type == "cuda":
        row["peak_gpu_GiB"] = torch.cuda.max_memory_allocated() / 2**30
        name = torch.cuda.get_device_name(0)
        peak = spec.get("peak_tflops") or next((v / 1e12 for k, v in PEAK_BF16.items() if k in name),
                                               None)
        if peak:
            # without --bf16 the matmuls run in TF32 at about half the bf16 peak
            peak_eff = peak if spec.get("bf16") else peak / 2
            row["MFU"] = 3 * flops * eps / (peak_eff * 1e12)
    return row


# --------------------------------------------------------------------------- driver
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", default=["tiny:16:8", "tiny:64:8", "small:64:4", "base:64:1"],
                   help="PRESET:SIZE:BATCH entries")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2, help="warm-up steps (>= 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend (aot_eager: graph capture without code generation)")
    p.add_argument("--baseline-chunk", type=int, default=None,
                   help="sequences per attention call in the diffusers baseline (default: "
                   "32768 on CUDA, unchunked on CPU; 0 = unchunked)")
    p.add_argument("--worker-timeout", type=float, default=None,
                   help="seconds after which one configuration is abandoned (reported failed)")
    p.add_argument("--json", default=None, metavar="FILE",
                   help="append each row as one JSON line to FILE as soon as it is measured")
    p.add_argument("--checkpointing", action="store_true", help="gradient checkpointing (ours)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--peak-tflops", type=float, default=None, help="override the device peak")
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--no-append", action="store_true", help="do not append to docs/benchmarks.md")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        print("RESULT " + json.dumps(run_one(json.loads(a.worker))), flush=True)
        return

    rows = []
    for entry in a.runs:
        preset, size, batch = entry.split(":")
        for model in ["videogene"] + ([] if a.no_baseline else ["unet3d"]):
            spec = dict(preset=preset, size=int(size), batch=int(batch), frames=a.frames,
                        model=model, steps=a.steps, warmup=a.warmup, device=a.device, bf16=a.bf16,
                        compile=a.compile, compile_backend=a.compile_backend,
                        checkpointing=a.checkpointing, threads=a.threads,
                        peak_tflops=a.peak_tflops, baseline_chunk=a.baseline_chunk)
            try:
                proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                                      capture_output=True, text=True, timeout=a.worker_timeout)
            except subprocess.TimeoutExpired:
                print(f"{entry} {model}: no result within {a.worker_timeout:g} s", file=sys.stderr)
                continue
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not lines:
                print(f"{entry} {model}: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
                continue
            row = json.loads(lines[-1][len("RESULT "):])
            row["run"] = entry
            rows.append(row)
            print(json.dumps(row), flush=True)
            if a.json:
                with open(a.json, "a") as fh:
                    fh.write(json.dumps({"bench": "model", **row}) + "\n")
    if not rows:
        sys.exit("no run succeeded")
    for row in rows:  # speed-up of ours over the baseline on the same run
        base = next((r for r in rows if r["run"] == row["run"] and r is not row
                     and r["model"].startswith("UNet3D")), None)
        if base and row["model"].startswith("VideoGene"):
            row["speedup_vs_unet3d"] = row["examples_per_s"] / base["examples_per_s"]
    columns = ["model", "params_M", "shape", "batch", "step_s", "examples_per_s", "speedup_vs_unet3d",
               "fwd_GFLOP", "train_TFLOP_s", "first_step_s", "peak_rss_GiB"]
    if a.device.startswith("cuda"):
        columns += ["peak_gpu_GiB", "MFU"]
    flags = " ".join(f for f, on in [("bf16", a.bf16), ("compile", a.compile),
                                     ("checkpointing", a.checkpointing)] if on)
    report(f"VideoGeneUNet training throughput ({a.device}{', ' + flags if flags else ''})", rows,
           columns=columns, append=not a.no_append,
           notes=(f"Median of {a.steps} AdamW training steps after {a.warmup} warm-up steps; "
                  "fwd_GFLOP per example from torch FlopCounterMode (train = 3x forward); "
                  "UNet3DConditionModel sized to about the same parameter count and fed the gene "
                  "embedding as one cross-attention token. Each row in its own process."))


if __name__ == "__main__":
    main()
