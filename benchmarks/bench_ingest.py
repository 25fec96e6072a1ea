"""Ingest speed and memory: synthetic atlas (default 25,000 genes x 8 time points x 3 slices)
-> prepared dataset, against the time just to read the .h5ad matrices from disk.

    .venv/bin/python benchmarks/bench_ingest.py [--genes 25000] [--resolution 64]

Targets: ingest within 3x of the read time, peak RSS < 4 GiB. Each stage runs in its own
process so that its peak RSS is its own. The atlas is cached in the temp folder.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_gib, report  # noqa: E402


def _stage_write(atlas_dir: str, genes: int, timepoints: list[float], slices: int, bins: int):
    from videogene.data.synthetic import SynthConfig, write_atlas

    cfg = SynthConfig(n_genes=genes, timepoints=tuple(timepoints), slices_per_timepoint=slices,
                      bins_per_slice=bins, seed=0)
    return write_atlas(cfg, atlas_dir, preview=False, progress=True)


def _stage_read(path: str):
    """Read every slice's matrix the way ingest does (backed, one slice at a time)."""
    import anndata as ad
    import numpy as np
    import scipy.sparse as sp

    t0 = time.perf_counter()
    a = ad.read_h5ad(path, backed="r")
    codes = a.obs["slice"].astype(str).to_numpy()
    nnz = 0
    for name in np.unique(codes):
        rows = np.flatnonzero(codes == name)
        x = a.X[int(rows[0]):int(rows[-1]) + 1] if rows[-1] - rows[0] + 1 == len(rows) else a.X[rows]
        nnz += sp.csr_matrix(x).nnz
    return {"seconds": time.perf_counter() - t0, "nnz": int(nnz), "n_obs": int(a.n_obs),
            "n_vars": int(a.n_vars)}


def _stage_prepare(path: str, out: str, resolution: int):
    from videogene.data.prepare import prepare_dataset

    t0 = time.perf_counter()
    meta = prepare_dataset([path], out, resolution=resolution, progress=True)
    size = sum(f.stat().st_size for f in Path(out, "data").glob("*.parquet"))
    return {"seconds": time.perf_counter() - t0, "genes": len(meta["genes"]),
            "slices": len(meta["slices"]), "parquet_mib": size / 2**20}


def _run_stage(*args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--_stage", *args], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"stage {args[0]} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--_stage":
        stage, rest = sys.argv[2], sys.argv[3:]
        if stage == "write":
            res = _stage_write(rest[0], int(rest[1]), json.loads(rest[2]), int(rest[3]), int(rest[4]))
        elif stage == "read":
            res = _stage_read(rest[0])
        else:
            res = _stage_prepare(rest[0], rest[1], int(rest[2]))
        res["peak_rss_gib"] = peak_rss_gib()
        print(json.dumps(res, default=str))
        return 0

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--genes", type=int, default=25000)
    p.add_argument("--timepoints", default="9.5,10.5,11.5,12.5,13.5,14.5,15.5,16.5")
    p.add_argument("--slices", type=int, default=3)
    p.add_argument("--bins", type=int, default=3000)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "videogene_bench_ingest"))
    p.add_argument("--no-append", action="store_true", help="do not append to docs/benchmarks.md")
    a = p.parse_args(argv)
    tps = [float(t) for t in a.timepoints.split(",")]
    atlas_dir = Path(a.cache) / f"atlas_g{a.genes}_t{len(tps)}_s{a.slices}_b{a.bins}"
    atlas = atlas_dir / "atlas.h5ad"
    if not atlas.exists():
        print(f"writing the atlas to {atlas_dir} ...", file=sys.stderr)
        w = _run_stage("write", str(atlas_dir), str(a.genes), json.dumps(tps), str(a.slices),
                       str(a.bins))
        print(f"atlas written in {w.get('seconds', 0):.1f} s", file=sys.stderr)
    read = _run_stage("read", str(atlas))
    with tempfile.TemporaryDirectory() as tmp:
        prep = _run_stage("prepare", str(atlas), str(Path(tmp) / "ds"), str(a.resolution))
    ratio = prep["seconds"] / read["seconds"]
    rows = [{
        "genes": read["n_vars"], "slices": prep["slices"], "cells": read["n_obs"],
        "nnz (cells x genes)": read["nnz"], "resolution": a.resolution,
        "read s": read["seconds"], "ingest s": prep["seconds"], "ingest / read": ratio,
        "nnz/s": read["nnz"] / prep["seconds"], "peak RSS GiB": prep["peak_rss_gib"],
        "read RSS GiB": read["peak_rss_gib"], "parquet MiB": prep["parquet_mib"],
    }]
    notes = (f"Targets: ingest within 3x of the read time ({'met' if ratio <= 3 else 'MISSED'}: "
             f"{ratio:.2f}x), peak RSS < 4 GiB "
             f"({'met' if prep['peak_rss_gib'] < 4 else 'MISSED'}: {prep['peak_rss_gib']:.2f} GiB).")
    report("Ingest (videogene prepare)", rows, notes=notes, append=not a.no_append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
