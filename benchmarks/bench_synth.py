#!/usr/bin/env python
"""Time ``write_atlas`` on a large synthetic atlas: wall time, peak RSS, zero fraction.

    python benchmarks/bench_synth.py                 # 25,000 genes x 8 time points x 3 slices
    python benchmarks/bench_synth.py --genes 2000 --no-append
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import peak_rss_gib, report  # noqa: E402

from videogene.data.synthetic import SynthConfig, write_atlas  # noqa: E402
from videogene.utils import parse_timepoints  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    d = SynthConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--genes", type=int, default=25_000)
    p.add_argument("--timepoints", default=",".join(str(t) for t in d.timepoints))
    p.add_argument("--slices", type=int, default=d.slices_per_timepoint)
    p.add_argument("--bins", type=int, default=d.bins_per_slice)
    p.add_argument("--preview", action="store_true", help="also draw atlas_preview.png")
    p.add_argument("--out", default=None, help="keep the atlas here (default: a temp folder)")
    p.add_argument("--no-append", action="store_true", help="do not append to docs/benchmarks.md")
    a = p.parse_args(argv)
    cfg = SynthConfig(n_genes=a.genes, timepoints=tuple(parse_timepoints(a.timepoints)),
                      slices_per_timepoint=a.slices, bins_per_slice=a.bins)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(a.out or tmp)
        t0 = time.perf_counter()
        s = write_atlas(cfg, out, preview=a.preview, progress=True)
        wall = time.perf_counter() - t0
        size_mib = (out / "atlas.h5ad").stat().st_size / 2**20
    row = {"genes": cfg.n_genes, "time points": len(cfg.timepoints), "slices": s["slices"],
           "bins": s["n_cells"], "wall s": round(wall, 1), "peak RSS GiB": round(peak_rss_gib(), 2),
           "zero fraction": s["zero_fraction"], "h5ad MiB": round(size_mib, 1),
           "preview": bool(a.preview)}
    report("synthetic atlas: write_atlas", [row], append=not a.no_append,
           notes="Slices are streamed to an on-disk CSR (one slice in memory at a time).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
