#!/usr/bin/env python
"""AnnData slices -> gene-video dataset; the same as ``videogene prepare``.

    python tools/prepare_dataset.py atlas.h5ad --out data/prepared --resolution 64
"""

from __future__ import annotations

import argparse
import sys

from videogene.cli import add_prepare_args, run_prepare
from videogene.errors import InputError
from videogene.utils import setup_logging


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_prepare_args(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    args = parser.parse_args(argv)
    setup_logging(-1 if args.quiet else 0)
    try:
        run_prepare(args)
    except (InputError, FileNotFoundError) as exc:
        print(f"prepare_dataset: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
