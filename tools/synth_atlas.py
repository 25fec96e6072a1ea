#!/usr/bin/env python
"""Write the built-in synthetic atlas (same as ``videogene synth``).

    python tools/synth_atlas.py --out runs/synth --genes 2000 --timepoints 9.5:16.5:1

Writes atlas.h5ad and atlas_preview.png and prints a JSON summary (zero fraction, sizes).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from videogene.cli import run_tool  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_tool("synth", description=__doc__))
