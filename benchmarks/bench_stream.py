"""The training stream alone: examples per second per DataLoader worker (no model).

    .venv/bin/python benchmarks/bench_stream.py [--genes 2000] [--resolution 64] [--workers 0,1,2]
    python benchmarks/bench_stream.py --dataset DATASET_DIR --workers 0,1,4,8 --json rows.jsonl

A GPU consumes ``batch x steps/s`` examples per second; the stream must deliver several times
that per rank (issue: >= 3x), so this measures what one loader worker delivers on this
machine, with the batch collated exactly as ``train.py`` does (``build_loader``), and the host
cost of one step's batch move (pinned memory where CUDA exists). The synthetic atlas and its
prepared dataset are cached in the temp folder. Workers read whole Parquet shards when the
shard count is a multiple of the workers (else every worker reads every shard and keeps one
example in n): ``--shard-genes`` sets the shards of the prepared dataset.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report  # noqa: E402


def _dataset(genes: int, resolution: int, bins: int, shard_genes: int = 1000) -> Path:
    from videogene.data.prepare import prepare_dataset
    from videogene.data.synthetic import SynthConfig, write_atlas

    root = Path(tempfile.gettempdir()) / f"videogene_bench_stream_g{genes}_b{bins}"
    atlas = root / "atlas" / "atlas.h5ad"
    if not atlas.exists():
        write_atlas(SynthConfig(n_genes=genes, bins_per_slice=bins, seed=0), atlas.parent,
                    preview=False, progress=True)
    ds = root / f"dataset_{resolution}_s{shard_genes}"
    if not (ds / "videogene_meta.json").exists():
        prepare_dataset([atlas], ds, resolution=resolution, holdout_timepoints=[12.5],
                        shard_genes=shard_genes, progress=True)
    return ds


def _measure(ds: Path, *, workers: int, batch: int, seconds: float) -> dict:
    from videogene.data import GeneVideoDataset
    from videogene.training.stream import batch_stream, build_loader

    loader = build_loader(GeneVideoDataset(ds, seed=0), batch, workers)
    it = batch_stream(loader)
    next(it)  # start-up (worker spawn, first shard read) is not counted
    n, t0 = 0, time.perf_counter()
    # epoch boundaries restart the loader's workers (persistent_workers=False): the longest
    # wait between two batches shows that stall; partial batches show in the mean batch size
    epochs, waits, last = set(), [], t0
    while time.perf_counter() - t0 < seconds:
        epoch, b = next(it)
        now = time.perf_counter()
        waits.append(now - last)
        epochs.add(epoch)
        last = now
        n += b["video"].shape[0]
    dt = time.perf_counter() - t0
    per_s = n / dt
    shards = len(list((Path(ds) / "data").glob("train-*.parquet")))
    return {"workers": workers, "shards": shards, "batch": batch, "examples/s": per_s,
            "examples/s per worker": per_s / max(workers, 1),
            "ms per batch": 1000 * dt / max(len(waits), 1), "mean batch": n / max(len(waits), 1),
            "epochs seen": len(epochs), "longest wait ms": 1000 * max(waits, default=0.0)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--genes", type=int, default=2000)
    p.add_argument("--bins", type=int, default=3000, help="bins per slice of the atlas")
    p.add_argument("--resolution", type=int, nargs="+", default=[32, 64])
    p.add_argument("--workers", default="0,1,2", help="DataLoader workers to try (comma list)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seconds", type=float, default=10.0, help="measuring time per row")
    p.add_argument("--shard-genes", type=int, default=1000, help="genes per Parquet shard")
    p.add_argument("--dataset", nargs="+", default=None, metavar="DIR",
                   help="prepared dataset folder(s) to read instead of the cached synthetic "
                   "atlas (--genes, --bins, --resolution, --shard-genes are then ignored)")
    p.add_argument("--json", default=None, metavar="FILE",
                   help="append each row as one JSON line to FILE as soon as it is measured")
    p.add_argument("--no-append", action="store_true", help="print only")
    a = p.parse_args(argv)
    if a.dataset:
        from videogene.data import load_metadata

        sets = [(int(load_metadata(Path(d))["resolution"]), Path(d)) for d in a.dataset]
    else:
        sets = [(res, _dataset(a.genes, res, a.bins, a.shard_genes)) for res in a.resolution]
    rows = []
    for res, ds in sets:
        for w in (int(x) for x in a.workers.split(",")):
            row = {"resolution": res, **_measure(ds, workers=w, batch=a.batch, seconds=a.seconds)}
            print(row, flush=True)
            rows.append(row)
            if a.json:
                with open(a.json, "a") as fh:
                    fh.write(json.dumps({"bench": "stream", **row}) + "\n")
    report("Training stream throughput (no model)", rows, append=not a.no_append,
           notes="workers 0 = in the training process. Each example is one gene's whole video "
                 "(8 frames, one random slice per time point), collated by the default "
                 "DataLoader as in train.py. Compare examples/s per rank with batch x steps/s "
                 "of the model on the GPU (benchmarks/bench_model.py).")


if __name__ == "__main__":
    main()
