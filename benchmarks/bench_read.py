"""Reading a few genes from a prepared dataset: what in-filling and evaluation pay per call.

    .venv/bin/python benchmarks/bench_read.py [--genes 2000] [--resolution 64] [--chunk 2]
    python benchmarks/bench_read.py --dataset DATASET_DIR --chunk 2 8

``videogene evaluate`` in-fills ``batch_size // num_samples`` genes per pipeline call (2 at the
defaults), and each call reads those genes' canvases and stored slices from the Parquet shards
(:func:`videogene.pipelines.context.observed_context`). This times one such read
(``read_gene_canvases`` + ``stored_slices`` for ``--chunk`` genes drawn at random) and projects
the read cost of one in-filled pass over every gene of the dataset and over 25,000 genes at the
same cost per call. The synthetic atlas and its prepared dataset are cached in the temp folder
(shared with ``bench_stream.py``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report  # noqa: E402
from bench_stream import _dataset  # noqa: E402


def _measure(ds: Path, *, chunk: int, calls: int, seed: int) -> dict:
    from videogene.data import load_metadata, read_gene_canvases, stored_slices

    genes = load_metadata(ds)["genes"]
    rng = np.random.default_rng(seed)
    picks = [list(rng.choice(genes, size=chunk, replace=False)) for _ in range(calls + 1)]
    list(read_gene_canvases(ds, genes=picks[0]))  # warm the file cache; not counted
    t0 = time.perf_counter()
    for want in picks[1:]:
        list(read_gene_canvases(ds, genes=want))
        stored_slices(ds, genes=want)
    per_call = (time.perf_counter() - t0) / calls
    n_calls = -(-len(genes) // chunk)
    shards = len(list((ds / "data").glob("train-*.parquet")))
    return {"genes": len(genes), "shards": shards, "chunk": chunk, "ms per call": 1000 * per_call,
            "one in-filled pass, s": per_call * n_calls,
            "25,000 genes, min": per_call * -(-25_000 // chunk) / 60}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--genes", type=int, default=2000)
    p.add_argument("--bins", type=int, default=3000, help="bins per slice of the atlas")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--shard-genes", type=int, default=1000, help="genes per Parquet shard")
    p.add_argument("--dataset", default=None, metavar="DIR",
                   help="prepared dataset to read instead of the cached synthetic atlas")
    p.add_argument("--chunk", type=int, nargs="+", default=[2, 8], help="genes per call")
    p.add_argument("--calls", type=int, default=20, help="timed calls per row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-append", action="store_true", help="print only")
    a = p.parse_args(argv)
    ds = Path(a.dataset) if a.dataset else _dataset(a.genes, a.resolution, a.bins, a.shard_genes)
    rows = []
    for chunk in a.chunk:
        row = _measure(ds, chunk=chunk, calls=a.calls, seed=a.seed)
        print(row, flush=True)
        rows.append(row)
    report("Reading a few genes (in-filling context, evaluation)", rows, append=not a.no_append,
           notes="One call = `read_gene_canvases` + `stored_slices` for `chunk` random genes, "
                 "what each in-filling pipeline call reads; a pass calls it once per chunk of "
                 "genes. The 25,000-gene column assumes the same cost per call.")


if __name__ == "__main__":
    main()
