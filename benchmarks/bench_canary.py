"""Memorisation canary figures for one training configuration (videogene.training.canary).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_canary.py --steps 400 \\
        --set diffusion.snr_gamma=null --set model.gene_tokens=0

Prints top-1 (of 8), own-gene Pearson (mean, min), the held-out-day smoothness gain, the
in-fill and linear Pearson at the held-out day, and the timings, as one JSON line (and with
``--append`` a Markdown row in docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", type=int, default=4, help="samples per gene for the mean video")
    p.add_argument("--inference-steps", type=int, default=20)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="training config override (repeatable)")
    p.add_argument("--label", default="", help="name of the variant in the output")
    p.add_argument("--workdir", default=None, help="keep the run here (default: a temp folder)")
    p.add_argument("--append", action="store_true", help="append a row to docs/benchmarks.md")
    a = p.parse_args(argv)
    import torch

    from videogene.training.canary import run_canary

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        res = run_canary(a.workdir or tmp, steps=a.steps, overrides=a.set, seed=a.seed,
                         num_samples=a.samples, num_inference_steps=a.inference_steps)
    res = {"label": a.label or " ".join(a.set) or "default", **res}
    print(json.dumps(res), flush=True)
    if a.append:
        cols = ["label", "steps", "top1", "own_pearson_mean", "own_pearson_min", "smooth_gain",
                "infill_pearson", "linear_pearson", "seconds_train"]
        report("Memorisation canary (benchmarks/bench_canary.py)", [res], columns=cols)
    return res


if __name__ == "__main__":
    main()
