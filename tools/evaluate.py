#!/usr/bin/env python
"""Score a trained videogene model on the held-out frames of a prepared dataset.

Same as ``videogene evaluate``: generates the held-out frames, compares them with the real ones
and with the baselines (nearest time point, linear interpolation, mean image; truth and noise
floor on the synthetic atlas), and writes metrics.json, report.md and plots.

    python tools/evaluate.py --model runs/demo/train --dataset runs/demo/dataset \
        --out runs/demo/evaluate --max-genes 200
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from videogene.cli import _print_json, add_evaluate_args  # noqa: E402
from videogene.errors import InputError  # noqa: E402
from videogene.utils import setup_logging  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_evaluate_args(parser)
    a = parser.parse_args(argv)
    setup_logging(0)
    from videogene.tl.evaluate import evaluate_model

    try:
        _print_json(evaluate_model(
            a.model, a.dataset, a.out, num_samples=a.num_samples, num_inference_steps=a.steps,
            guidance_scale=a.guidance, scheduler=a.scheduler, batch_size=a.batch_size,
            max_genes=a.max_genes, seed=a.seed, use_ema=not a.no_ema, device=a.device,
        ))
    except (InputError, FileNotFoundError) as exc:
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
