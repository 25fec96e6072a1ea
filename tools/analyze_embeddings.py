#!/usr/bin/env python
"""Export and analyse a trained model's gene embeddings (same as ``videogene embed``).

    python tools/analyze_embeddings.py --model runs/demo/train --out runs/demo/embed \
        --query Sox2 --query Ttn [--dataset DATASET_DIR] [--k 10] [--no-ema] [--seed 0]

Writes embeddings.h5ad / .tsv, neighbors.tsv, gene_map.png, cluster_time_heatmap.png and
scores.json (learned vs a PCA baseline when the dataset is available); prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import sys

from videogene.cli import add_embed_args
from videogene.errors import InputError
from videogene.tl.embeddings import analyze_embeddings
from videogene.utils import setup_logging


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_embed_args(parser)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    a = parser.parse_args(argv)
    setup_logging(a.verbose)
    try:
        res = analyze_embeddings(a.model, a.out, queries=a.queries, dataset=a.dataset, k=a.k,
                                 use_ema=not a.no_ema, seed=a.seed)
    except (InputError, FileNotFoundError) as exc:
        print(f"analyze_embeddings: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
