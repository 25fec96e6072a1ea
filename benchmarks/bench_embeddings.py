#!/usr/bin/env python
"""Learned gene embeddings vs a model-free PCA baseline, on the synthetic atlas and seqFISH.

    python benchmarks/bench_embeddings.py --work runs/bench_embeddings               # full
    python benchmarks/bench_embeddings.py --genes 48 --resolution 16 --max-steps 20 \
        --timepoints 9.5,11.5,13.5 --bins 600 --no-append                             # smoke

For each data set: prepare it (``videogene.data.prepare_dataset``), train the tiny preset with
the root ``train.py`` (a subprocess, ``python train.py --config configs/tiny.yaml
data.path=... output_dir=... max_steps=N``), then ``videogene.jobs.analyze_embeddings`` scores
the learned table and ``baseline_embedding`` (PCA of each gene's aligned expression) against
the same labels:

- synthetic atlas: the true gene programs (``var["program"]``); ARI/NMI of the clusters and
  kNN precision (silent genes left out of kNN precision);
- seqFISH E8.5 embryo (one time point, two embryos as slices, ``slice_key="sample"``): the
  cell type in which each gene is most enriched (``enriched_celltype``); neighbours of
  well-known markers are listed in the notes.

Prints a Markdown table and appends it to docs/benchmarks.md (``--no-append`` to skip).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, report  # noqa: E402

SEQFISH = ROOT.parent / "shared" / "data" / "lohoff2022_seqfish_e8.5_embryo1-2.h5ad"
MARKERS = ("Ttn", "Sox2", "Foxa2", "Tbx5", "Pax6")
SYNTH_MARKERS = ("Sox2", "Ttn", "Pax6", "Afp", "Hoxc10", "Actb")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="runs/bench_embeddings", help="working folder")
    p.add_argument("--config", default=str(ROOT / "configs" / "tiny.yaml"), help="training config")
    p.add_argument("--max-steps", type=int, default=2000, help="training steps per data set")
    p.add_argument("--resolution", type=int, default=32, help="canvas side (32)")
    p.add_argument("--genes", type=int, default=None, help="synthetic genes (default: SynthConfig)")
    p.add_argument("--timepoints", default=None, help="synthetic time points (default: SynthConfig)")
    p.add_argument("--slices", type=int, default=None, help="synthetic slices per time point")
    p.add_argument("--bins", type=int, default=None, help="synthetic bins per slice")
    p.add_argument("--k", type=int, default=10, help="neighbours for kNN precision (10)")
    p.add_argument("--baseline-components", type=int, default=32,
                   help="PCA components of the baseline (32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-synthetic", action="store_true")
    p.add_argument("--skip-seqfish", action="store_true")
    p.add_argument("--no-append", action="store_true", help="do not append to docs/benchmarks.md")
    p.add_argument("train_overrides", nargs="*", metavar="KEY=VALUE",
                   help="extra train.py overrides, e.g. train_batch_size=16")
    return p.parse_args(argv)


def train(dataset: Path, out: Path, a: argparse.Namespace) -> float:
    """Train with the root train.py; returns wall seconds (skipped when an export exists)."""
    if any(out.glob("export-*/model_index.json")):
        print(f"[bench] reusing the trained model in {out}", flush=True)
        return float("nan")
    cmd = [sys.executable, str(ROOT / "train.py"), "--config", a.config, f"data.path={dataset}",
           f"output_dir={out}", f"max_steps={a.max_steps}", f"seed={a.seed}",
           f"checkpointing_steps={max(a.max_steps, 1)}", f"validation_steps={max(a.max_steps, 1)}",
           "report_to=none", *a.train_overrides]
    print("[bench] " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    return time.perf_counter() - t0


def rows_for(name: str, res: dict, train_s: float, steps: int) -> list[dict]:
    rows = []
    for side in ("learned", "baseline"):
        s = res.get(side)
        if not s:
            continue
        rows.append({"data": name, "embedding": side,
                     "dim": res["dim"] if side == "learned" else res.get("baseline_dim", ""),
                     "genes": s["n_labelled"], "labels": s["n_labels"], "k": s["k"],
                     "kNN precision": s["knn_precision"], "chance": s["knn_precision_chance"],
                     "ARI": s.get("ari", float("nan")), "NMI": s.get("nmi", float("nan")),
                     "clusters": s.get("n_clusters", ""),
                     "train steps": steps if side == "learned" else "",
                     "train s": round(train_s, 1) if side == "learned" else ""})
    return rows


def main(argv=None) -> int:
    a = parse_args(argv)
    import anndata as ad

    from videogene.data.prepare import prepare_dataset
    from videogene.jobs.embed import analyze_embeddings
    from videogene.tl.embeddings import enriched_celltype
    from videogene.utils import parse_timepoints, setup_logging

    setup_logging(0)
    work = Path(a.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    notes: list[str] = []

    if not a.skip_synthetic:
        from videogene.data.synthetic import SynthConfig, write_atlas

        kw = {"seed": a.seed}
        if a.genes is not None:
            kw["n_genes"] = a.genes
        if a.timepoints is not None:
            kw["timepoints"] = tuple(parse_timepoints(a.timepoints))
        if a.slices is not None:
            kw["slices_per_timepoint"] = a.slices
        if a.bins is not None:
            kw["bins_per_slice"] = a.bins
        cfg = SynthConfig(**kw)
        atlas_dir = work / "synthetic_atlas"
        if not (atlas_dir / "atlas.h5ad").is_file():
            write_atlas(cfg, atlas_dir, preview=False, progress=True)
        ds = work / "synthetic_data"
        if not (ds / "videogene_meta.json").is_file():
            prepare_dataset([atlas_dir / "atlas.h5ad"], ds, resolution=a.resolution)
        model_dir = work / "synthetic_train"
        train_s = train(ds, model_dir, a)
        genes = set(ad.read_h5ad(atlas_dir / "atlas.h5ad", backed="r").var_names)
        res = analyze_embeddings(str(model_dir), work / "synthetic_embed", dataset=ds, k=a.k,
                                 queries=[g for g in SYNTH_MARKERS if g in genes], seed=a.seed,
                                 baseline_components=a.baseline_components)
        res["baseline_dim"] = _baseline_dim(work / "synthetic_embed")
        rows += rows_for(f"synthetic ({cfg.n_genes} genes, {len(cfg.timepoints)} t)", res,
                         train_s, a.max_steps)
        notes.append(_neighbour_notes("synthetic", res))

    if not a.skip_seqfish:
        if not SEQFISH.is_file():
            print(f"[bench] {SEQFISH} not found: seqFISH skipped", flush=True)
        else:
            ds = work / "seqfish_data"
            if not (ds / "videogene_meta.json").is_file():
                prepare_dataset([SEQFISH], ds, slice_key="sample", timepoint=8.5,
                                resolution=a.resolution)
            model_dir = work / "seqfish_train"
            train_s = train(ds, model_dir, a)
            labels = enriched_celltype(SEQFISH, groupby="celltype")
            genes = set(labels)
            res = analyze_embeddings(str(model_dir), work / "seqfish_embed", dataset=ds, k=a.k,
                                     labels=labels, queries=[g for g in MARKERS if g in genes],
                                     seed=a.seed, baseline_components=a.baseline_components)
            res["baseline_dim"] = _baseline_dim(work / "seqfish_embed")
            rows += rows_for("seqFISH E8.5 (enriched cell type)", res, train_s, a.max_steps)
            notes.append(_neighbour_notes("seqFISH", res, labels))

    if not rows:
        print("[bench] nothing ran", flush=True)
        return 1
    (work / "bench_rows.json").write_text(json.dumps(rows, indent=2, default=str))
    note = ("Labels: synthetic = true gene program (silent genes left out of kNN precision); "
            "seqFISH = cell type of highest mean-expression enrichment ('Low quality' excluded). "
            "kNN precision uses cosine similarity; 'chance' is its expectation for random "
            "neighbours. Baseline: PCA of per-gene standardised tissue-pixel vectors "
            f"(all slices, non-held-out time points). Training: {Path(a.config).name}, "
            f"{a.max_steps} steps, resolution {a.resolution}.\n\n" + "\n\n".join(n for n in notes if n))
    report("Gene embeddings: learned vs PCA baseline", rows, notes=note, append=not a.no_append)
    return 0


def _baseline_dim(embed_dir: Path) -> int | str:
    p = embed_dir / "baseline_embeddings.h5ad"
    if not p.is_file():
        return ""
    import anndata as ad

    b = ad.read_h5ad(p, backed="r")
    n = int(b.n_vars)
    b.file.close()
    return n


def _neighbour_notes(name: str, res: dict, labels: dict | None = None) -> str:
    neigh = res.get("neighbors") or {}
    if not neigh:
        return ""
    lines = [f"Nearest genes in the learned {name} embedding (k={len(next(iter(neigh.values())))}):"]
    for q, genes in neigh.items():
        if labels is not None:
            shown = ", ".join(f"{g} ({labels.get(g) or '-'})" for g in genes)
            lines.append(f"- {q} ({labels.get(q) or '-'}): {shown}")
        else:
            lines.append(f"- {q}: {', '.join(genes)}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
