#!/usr/bin/env python
"""Generate time trajectories for genes from a trained videogene model.

Same as ``videogene generate``: writes trajectories.npz / .h5ad, a PNG grid and a GIF per gene.

    python tools/generate_trajectory.py --model runs/demo --gene Gata4 --timepoints 9.5:16.5:0.5 \
        --out runs/demo/generate
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from videogene.cli import _print_json, add_generate_args  # noqa: E402
from videogene.errors import InputError  # noqa: E402
from videogene.utils import parse_timepoints, setup_logging  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_generate_args(parser)
    a = parser.parse_args(argv)
    setup_logging(0)
    from videogene.pipelines import generate_trajectories

    try:
        _print_json(generate_trajectories(
            a.model, a.genes, parse_timepoints(a.timepoints) if a.timepoints else None, a.out,
            num_samples=a.num_samples, num_inference_steps=a.steps, guidance_scale=a.guidance,
            scheduler=a.scheduler, batch_size=a.batch_size, seed=a.seed, use_ema=not a.no_ema,
            device=a.device,
        ))
    except InputError as exc:
        print(f"generate_trajectory: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
