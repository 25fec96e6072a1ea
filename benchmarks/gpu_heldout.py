#!/usr/bin/env python
"""The GPU run of the issue "The model learns genes": ``bench_heldout.py`` with ``small`` on a
2,000-gene atlas at 64 px (E12.5 held out) inside one time budget (8 minutes on one H100/H200).

Training time is not known before the card is seen, so the run sizes itself:

1. atlas and prepared dataset (``bench_heldout.py --prepare-only``);
2. a probe: ``train.py`` for ``--probe-steps`` steps (bf16, loader workers), its steps/s read
   from the TensorBoard log (median over the logging intervals after the first), then
   ``evaluate_model`` of the probe's export on one gene (start-up) and then, timed, on
   ``--probe-genes`` genes (at least one pipeline batch): the cost per gene;
3. the training steps that fit what is left after the evaluation's share
   (``--eval-seconds``) and the genes that evaluation can score in that share;
4. ``bench_heldout.py`` with those steps and genes (it reuses the atlas and the dataset): the
   same headline table as on the CPU, the targets line and the gene table vs PCA.

Everything is printed; ``$OUT`` (when set) receives ``gpu_heldout.md`` (the table),
``plan.json`` (the probe's figures and the chosen sizes), ``log.txt`` and the evaluation's
``report.md``. Append the table to docs/benchmarks.md by hand.

    python benchmarks/gpu_heldout.py                       # the GPU machine (about 8 minutes)
    python benchmarks/gpu_heldout.py --tiny --budget 300   # the same steps at toy size on CPU
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import steady, train_perf  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=460, help="seconds for the whole run (460)")
    p.add_argument("--eval-seconds", type=float, default=110,
                   help="share of the budget kept for the evaluation (110)")
    p.add_argument("--tail-seconds", type=float, default=40,
                   help="kept for train.py start-up/export, embed and the table (40)")
    p.add_argument("--preset", default="small", help="configs/<preset>.yaml (small)")
    p.add_argument("--genes", type=int, default=2000, help="atlas genes (2000)")
    p.add_argument("--resolution", type=int, default=64, help="canvas side (64)")
    p.add_argument("--batch-size", type=int, default=64, help="train_batch_size (64)")
    p.add_argument("--workers", type=int, default=8, help="dataloader_num_workers (8)")
    p.add_argument("--mixed-precision", default="bf16", help="train.py mixed_precision (bf16)")
    p.add_argument("--probe-steps", type=int, default=60, help="probe training steps (60)")
    p.add_argument("--probe-genes", type=int, default=32,
                   help="genes of the timed probe evaluation (32; at least --eval-batch-size)")
    p.add_argument("--eval-batch-size", type=int, default=32, help="genes per pipeline call (32)")
    p.add_argument("--max-eval-genes", type=int, default=400, help="evaluate at most N genes (400)")
    p.add_argument("--train-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra train.py override for the probe and the run; repeat for several")
    p.add_argument("--work", default="/tmp/vg_gpu_heldout",
                   help="work folder, emptied first (/tmp/vg_gpu_heldout)")
    p.add_argument("--tiny", action="store_true",
                   help="debugging on CPU: tiny preset, 60 genes, 16 px, batch 8, no workers, "
                        "fp32, probe 8 steps on 4 genes (explicit options do not apply)")
    a = p.parse_args(argv)
    if a.tiny:
        a.preset, a.genes, a.resolution, a.batch_size, a.workers = "tiny", 60, 16, 8, 0
        a.mixed_precision, a.probe_steps, a.probe_genes, a.eval_batch_size = "no", 8, 4, 8
        a.eval_seconds, a.tail_seconds = min(a.eval_seconds, 60), min(a.tail_seconds, 30)
    return a


def steps_per_second(out: Path) -> float:
    """Median ``perf/steps_per_s`` of a train.py run over its logging intervals after the
    first (warm-up, loader start)."""
    values = train_perf(out).get("perf/steps_per_s")
    if not values:
        raise SystemExit(f"gpu_heldout: error: no perf/steps_per_s in {out}/logs")
    return statistics.median(steady(values))


def main(argv=None) -> int:
    a = parse_args(argv)
    t_start = time.time()
    deadline = t_start + a.budget
    work = Path(a.work)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    dest = Path(os.environ["OUT"]) if os.environ.get("OUT") else work / "out"
    dest.mkdir(parents=True, exist_ok=True)
    log = open(dest / "log.txt", "w")
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    py = sys.executable
    bench = [py, str(ROOT / "benchmarks" / "bench_heldout.py"), "--preset", a.preset,
             "--genes", str(a.genes), "--resolution", str(a.resolution), "--work", str(work)]
    train_args = [f"mixed_precision={a.mixed_precision}", f"dataloader_num_workers={a.workers}",
                  *a.train_arg]

    def run(cmd: list[str], what: str, timeout: float | None = None) -> str:
        print(f"+ [{time.time() - t_start:.0f}s] {what}: {' '.join(cmd)}", flush=True)
        log.write(f"\n#### {what}: {' '.join(cmd)}\n")
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        lines = []
        # the whole group: train.py and loader workers would keep the pipe open
        watchdog = (threading.Timer(max(1.0, timeout), os.killpg, (proc.pid, signal.SIGKILL))
                    if timeout else None)
        if watchdog:
            watchdog.start()
        try:
            for line in proc.stdout:
                lines.append(line)
                log.write(line)
                if not line.startswith(("train:", "\r")) and "it/s]" not in line:
                    print(line, end="", flush=True)
            proc.wait()
        finally:
            if watchdog:
                watchdog.cancel()
        log.flush()
        if proc.returncode != 0:
            why = "killed at the budget" if proc.returncode == -9 else f"exit {proc.returncode}"
            raise SystemExit(f"gpu_heldout: error: {what} failed ({why}); see {dest / 'log.txt'}")
        return "".join(lines)

    # 1. atlas and dataset
    t0 = time.time()
    dataset = Path(run([*bench, "--prepare-only"], "atlas and dataset").strip().splitlines()[-1])
    plan = {"data_s": time.time() - t0}

    # 2. probe: training speed, then the evaluation's cost per gene
    probe = work / "probe"
    t0 = time.time()
    run([py, str(ROOT / "train.py"), "--config", str(ROOT / "configs" / f"{a.preset}.yaml"),
         f"data.path={dataset}", f"output_dir={probe}", f"max_steps={a.probe_steps}",
         f"train_batch_size={a.batch_size}", f"logging_steps={max(1, a.probe_steps // 6)}",
         "lr_warmup_steps=0", f"checkpointing_steps={a.probe_steps}",
         f"validation_steps={a.probe_steps}", "validation.num_genes=1", *train_args], "probe training")
    plan["probe_train_s"] = time.time() - t0
    plan["steps_per_s"] = steps_per_second(probe)
    # one gene first (start-up, CUDA initialisation, caches), then full pipeline batches timed:
    # genes of one batch run side by side, so only whole batches give the cost per gene
    sys.path.insert(0, str(ROOT))
    import torch

    from videogene.jobs.evaluate import evaluate_model

    t0 = time.time()
    n_probe = max(a.probe_genes, a.eval_batch_size)
    for n in (1, n_probe):
        t = time.perf_counter()
        evaluate_model(probe, dataset, work / "probe_eval", max_genes=n,
                       batch_size=a.eval_batch_size, progress=False)
    plan["probe_eval_s"] = time.time() - t0
    plan["eval_s_per_gene"] = per_gene = (time.perf_counter() - t) / n_probe
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the benchmark's own process needs the card next

    # 3. sizes that fit the rest of the budget
    left = deadline - time.time()
    train_s = left - a.eval_seconds - a.tail_seconds
    if train_s < 30:
        raise SystemExit(f"gpu_heldout: error: {left:.0f} s left after the probe, too little to "
                         f"train (raise --budget or lower --eval-seconds)")
    plan["train_budget_s"] = train_s
    plan["max_steps"] = max(10, int(plan["steps_per_s"] * train_s))
    plan["eval_genes"] = int(min(a.max_eval_genes, a.genes, max(
        a.probe_genes, a.eval_seconds / per_gene)))
    plan["visits_per_gene"] = plan["max_steps"] * a.batch_size / a.genes
    print(f"gpu_heldout: plan {json.dumps(plan)}", flush=True)
    (dest / "plan.json").write_text(json.dumps(plan, indent=2))

    # 4. the benchmark itself
    t0 = time.time()
    cmd = [*bench, "--max-steps", str(plan["max_steps"]), "--batch-size", str(a.batch_size),
           "--launcher", "python", "--max-genes", str(plan["eval_genes"]),
           "--eval-batch-size", str(a.eval_batch_size), "--no-append"]
    for t in train_args:
        cmd += ["--train-arg", t]
    out = run(cmd, "bench_heldout", timeout=deadline - time.time() + 30)
    plan["bench_s"] = time.time() - t0
    plan["total_s"] = time.time() - t_start
    (dest / "plan.json").write_text(json.dumps(plan, indent=2))
    start = out.find("## Held-out time point")
    table = out[start:] if start >= 0 else out
    (dest / "gpu_heldout.md").write_text(
        table + f"\n\nPlan (benchmarks/gpu_heldout.py): {json.dumps(plan)}\n")
    report = work / "evaluate" / "report.md"
    if report.is_file():
        shutil.copy(report, dest / "report.md")
    print(f"gpu_heldout: done in {plan['total_s']:.0f} s; plan {json.dumps(plan)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
