#!/usr/bin/env python
"""Score a trained videogene model on the held-out frames of a prepared dataset.

Same as ``videogene evaluate``: generates the held-out frames, compares them with the real ones
and with the baselines (nearest time point, linear interpolation, mean image; truth and noise
floor on the synthetic atlas), and writes metrics.json, report.md and plots.

    python tools/evaluate.py --model runs/demo/train --dataset runs/demo/dataset \
        --out runs/demo/evaluate --max-genes 200
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from videogene.cli import run_tool  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_tool("evaluate", description=__doc__))
