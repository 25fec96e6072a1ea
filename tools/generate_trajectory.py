#!/usr/bin/env python
"""Generate time trajectories for genes from a trained videogene model.

Same as ``videogene generate``: writes trajectories.npz / .h5ad, a PNG grid and a GIF per gene.

    python tools/generate_trajectory.py --model runs/demo/train --gene Col3a1 \
        --timepoints 9.5:16.5:0.5 --num-samples 4 --steps 25 --guidance 2.0 --out runs/gen
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from videogene.cli import run_tool  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_tool("generate", description=__doc__))
