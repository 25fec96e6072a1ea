#!/usr/bin/env python
"""Ingest .h5ad slices into a streamable gene-video dataset (same as ``videogene prepare``).

    python tools/prepare_dataset.py atlas.h5ad --out runs/data --resolution 64
    python tools/prepare_dataset.py embryo.h5ad --out runs/seq --slice-key sample --timepoint 8.5
    python tools/prepare_dataset.py atlas.h5ad --out runs/data --reference-slice E12.5_s1

Writes Parquet shards, videogene_meta.json, masks.npy and a dataset card. Slices are oriented
by expression against a reference slice (--orientation expression|moments|none).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from videogene.cli import run_tool  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_tool("prepare", description=__doc__))
