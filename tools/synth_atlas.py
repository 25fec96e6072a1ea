#!/usr/bin/env python
"""Write the built-in synthetic atlas (same as ``videogene synth``).

    python tools/synth_atlas.py --out runs/synth --genes 2000 --timepoints 9.5:16.5:1
"""

from __future__ import annotations

import argparse
import sys

from videogene.cli import add_synth_args, run_synth
from videogene.errors import InputError
from videogene.utils import setup_logging


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write the synthetic spatiotemporal atlas "
                                "(atlas.h5ad + atlas_preview.png).")
    add_synth_args(p)
    a = p.parse_args(argv)
    setup_logging(0)
    try:
        run_synth(a)
    except InputError as exc:
        print(f"synth_atlas: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
