#!/usr/bin/env python
"""Export and analyse a trained model's gene embeddings (same as ``videogene embed``).

    python tools/analyze_embeddings.py --model runs/demo/train --out runs/demo/embed \
        --query Sox2 --query Ttn [--dataset DATASET_DIR] [--k 10]

Writes embeddings.h5ad / .tsv, neighbors.tsv, gene_map.png, cluster_time_heatmap.png and
scores.json (learned vs a PCA baseline when the dataset is available).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from videogene.cli import run_tool  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_tool("embed", description=__doc__))
