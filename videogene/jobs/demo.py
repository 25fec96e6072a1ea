"""The main job: synthesize (or read) -> prepare -> train -> generate -> evaluate -> embed.

``videogene demo`` runs it; with no input files it uses the built-in synthetic atlas. Each
step leaves a marker with its settings in the output folder, so running the job again skips
the steps that are already done with the same settings (``force=True`` redoes everything).
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import InputError
from ..utils import check_output_dir, get_logger, resource_path

logger = get_logger(__name__)

DEMO_MARKERS = ("Col3a1", "Hba-x", "Sox2", "Ttn", "Afp")
DEMO_RESOLUTION = 32
DEMO_HOLDOUT = 12.5
#: what the demo's evaluation generates (bounded so the demo keeps its time; see README)
DEMO_EVAL = {"max_genes": 24, "num_samples": 2, "num_inference_steps": 20}
#: bumped when `videogene prepare` writes different data for the same settings
PREPARE_REVISION = 2


def _step(out: Path, name: str, settings: dict, fn: Callable[[], dict], *, force: bool) -> dict:
    """Run ``fn`` unless ``out/.done-<name>`` records the same settings; return its summary."""
    marker = out / f".done-{name}"
    key = hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
    if not force and marker.exists():
        saved = json.loads(marker.read_text())
        if saved.get("key") == key:
            logger.info("step %s: already done with these settings, skipping", name)
            print(f"[videogene demo] {name}: up to date (skipped)", file=sys.stderr)
            return saved["summary"]
    print(f"[videogene demo] {name} ...", file=sys.stderr)
    t0 = time.perf_counter()
    summary = fn()
    summary = dict(summary or {}, seconds=round(time.perf_counter() - t0, 1))
    marker.write_text(json.dumps({"key": key, "settings": settings, "summary": summary},
                                 indent=2, default=str))
    print(f"[videogene demo] {name}: done in {summary['seconds']} s", file=sys.stderr)
    return summary


def _train(config: Path, dataset: Path, output_dir: Path, overrides: Sequence[str]) -> dict:
    """``videogene.training.loop`` in a child process (its memory is returned when it ends)."""
    cmd = [sys.executable, "-m", "videogene.training.loop", "--config", str(config),
           f"data.path={dataset}", f"output_dir={output_dir}", *overrides]
    logger.info("running %s", " ".join(cmd))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(cmd, env=env, check=False)
    if proc.returncode != 0:
        raise InputError(f"training failed (exit {proc.returncode}): {' '.join(cmd)}")
    return {"output_dir": str(output_dir), "command": " ".join(cmd)}


def _pick_genes(dataset: Path, requested: Sequence[str] | None, n: int = 4) -> list[str]:
    """The requested genes, else demo markers present in the data, else the most expressed."""
    from ..data import load_metadata

    vocab = load_metadata(dataset)["genes"]
    if requested:
        return list(requested)
    present = [g for g in DEMO_MARKERS if g in set(vocab)]
    if len(present) >= 2:
        return present[:n]
    import pyarrow.parquet as pq

    table = pq.read_table(sorted((dataset / "data").glob("*.parquet")), columns=["gene", "mean"])
    ranked = sorted(zip(table["mean"].to_pylist(), table["gene"].to_pylist()), reverse=True)
    return [g for _, g in ranked[:n]]


def run_main_job(out_dir: str | os.PathLike, *, inputs: Sequence[str] | None = None,
                 config: str | None = None, overrides: Sequence[str] = (),
                 timepoint: float | None = None, genes: Sequence[str] | None = None,
                 force: bool = False, time_key: str = "timepoint", slice_key: str = "slice",
                 spatial_key: str = "spatial") -> dict:
    """Run the whole job into ``out_dir`` and write ``out_dir/index.html``; return a summary.

    ``time_key``, ``slice_key`` and ``spatial_key`` name the input files' columns as in
    ``videogene prepare``.
    """
    from ..data import load_metadata, prepare_dataset
    from ..data.synthetic import SynthConfig, write_atlas
    from .embed import analyze_embeddings
    from .evaluate import evaluate_model
    from .generate import generate_trajectories

    out = check_output_dir(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_path = Path(config) if config else resource_path("configs", "tiny.yaml")
    if not config_path.exists():
        raise InputError(f"{config_path}: training config not found")
    summary: dict = {"out": str(out)}

    # 1. the atlas: the built-in synthetic one, or the user's files
    if inputs:
        sources = [str(Path(p)) for p in inputs]
        for p in sources:
            if not Path(p).exists():
                raise InputError(f"{p}: file not found")
    else:
        atlas_dir = out / "atlas"
        synth = SynthConfig()
        summary["synth"] = _step(out, "synth", synth.to_dict(),
                                 lambda: write_atlas(synth, atlas_dir, preview=True, progress=True),
                                 force=force)
        sources = [str(atlas_dir / "atlas.h5ad")]

    # 2. prepare: hold out an interior time point when there are at least three
    dataset = out / "dataset"

    def prepare() -> dict:
        kwargs = dict(resolution=DEMO_RESOLUTION, timepoint=timepoint, progress=True,
                      time_key=time_key, slice_key=slice_key, spatial_key=spatial_key)
        if inputs:
            meta = prepare_dataset(sources, dataset, **kwargs)
            tps = meta["timepoints"]
            if len(tps) == 1:
                print(f"[videogene demo] one time point (E{tps[0]:g}): there is nothing to "
                      "interpolate or hold out; the run still trains the model, generates that "
                      "stage and analyses the gene embeddings", file=sys.stderr)
            elif len(tps) < 3:
                print(f"[videogene demo] {len(tps)} time points: none is interior, so nothing is "
                      "held out and the evaluation is skipped", file=sys.stderr)
            if len(tps) < 3:
                return {"timepoints": tps, "holdout": []}
            holdout = [tps[len(tps) // 2]]
        else:
            holdout = [DEMO_HOLDOUT]
        meta = prepare_dataset(sources, dataset, holdout_timepoints=holdout, **kwargs)
        return {"timepoints": meta["timepoints"], "holdout": holdout,
                "genes": len(meta["genes"]), "slices": len(meta["slices"])}

    summary["prepare"] = _step(out, "prepare", {"sources": sources, "timepoint": timepoint,
                                                "resolution": DEMO_RESOLUTION, "keys": [
                                                    time_key, slice_key, spatial_key],
                                                # datasets of older prepares (mirrored slices,
                                                # no per-gene scale) are redone
                                                "prepare": PREPARE_REVISION},
                               prepare, force=force)

    # 3. train
    train_dir = out / "train"
    summary["train"] = _step(
        out, "train", {"config": config_path.read_text(), "overrides": list(overrides),
                       "dataset": summary["prepare"]},
        lambda: _train(config_path, dataset, train_dir, overrides), force=force)

    # 4. generate trajectories for a few genes, every half day
    chosen = _pick_genes(dataset, genes)
    tps = load_metadata(dataset)["timepoints"]
    grid = [round(tps[0] + 0.5 * i, 3) for i in range(int((tps[-1] - tps[0]) / 0.5) + 1)]
    summary["generate"] = _step(
        out, "generate", {"genes": chosen, "timepoints": grid, "train": summary["train"]},
        lambda: generate_trajectories(str(train_dir), chosen, grid, out / "generate",
                                      num_samples=2, num_inference_steps=25), force=force)

    # 5. evaluate on the held-out time point (needs one)
    if summary["prepare"].get("holdout"):
        summary["evaluate"] = _step(
            out, "evaluate", {"train": summary["train"], "settings": DEMO_EVAL},
            lambda: evaluate_model(str(train_dir), str(dataset), out / "evaluate", **DEMO_EVAL),
            force=force)
    else:
        summary["evaluate"] = {"skipped": "fewer than three time points: nothing to hold out"}

    # 6. gene embeddings
    summary["embed"] = _step(
        out, "embed", {"train": summary["train"], "queries": chosen},
        lambda: analyze_embeddings(str(train_dir), out / "embed", queries=chosen,
                                   dataset=str(dataset)), force=force)

    write_index(out, summary)
    summary["index"] = str(out / "index.html")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _fmt(x, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(float(x), spec)


def verdict(summary: dict) -> list[str]:
    """Plain-language conclusions of a run, most important first (HTML-safe sentences).

    From the evaluation's headline (the gene set and reference it names) and the embedding
    scores: does the model beat the baselines on the held-out day, by how much, on which
    metric it wins and loses; does it reproduce its training frames; is the learned gene
    table better than the data-only baseline.
    """
    lines: list[str] = []
    ev = summary.get("evaluate") or {}
    h = ev.get("headline") if isinstance(ev, dict) else None
    if ev.get("skipped"):
        lines.append(f"No held-out evaluation: {ev['skipped']}.")
    elif h:
        held = ", ".join(f"E{float(t):g}" for t in ev.get("heldout_timepoints", []))
        scope = (f"held-out day {held}, {h['n_genes']} genes of set '{h['gene_set']}', scored "
                 f"against the {h['against']}")
        for model, comps in h.get("comparisons", {}).items():
            lin = comps.get("linear") or next(iter(comps.values()), None)
            if not lin:
                continue
            base = "linear interpolation" if "linear" in comps else next(iter(comps))
            p, r = lin.get("pearson", {}), lin.get("rmse", {})
            wins = [b for b, c in comps.items() if (c.get("pearson") or {}).get("outcome") == "win"]
            diff = (None if p.get("model") is None or p.get("baseline") is None
                    else p["model"] - p["baseline"])
            ratio = (None if not r.get("baseline") or r.get("model") is None
                     else r["model"] / r["baseline"])
            word = "beats" if p.get("outcome") == "win" and r.get("outcome") == "win" else (
                "loses to" if p.get("outcome") == "loss" and r.get("outcome") == "loss" else
                "is mixed against")
            lines.append(
                f"<b>{html.escape(model)}</b> {word} {base} ({scope}): median Pearson "
                f"{_fmt(p.get('model'))} vs {_fmt(p.get('baseline'))} ({_fmt(diff, '+.3f')}, "
                f"{p.get('outcome') or 'n/a'}), median RMSE {_fmt(r.get('model'))} vs "
                f"{_fmt(r.get('baseline'))} (ratio {_fmt(ratio, '.2f')}, "
                f"{r.get('outcome') or 'n/a'}); on Pearson it beats "
                f"{', '.join(wins) if wins else 'none'} of the baselines "
                f"({', '.join(comps)}).")
        train = (h.get("train_frames") or {}).get("methods", {})
        if "model" in train:
            ref = train.get("mean_image") or {}
            lines.append(f"On its training frames the model reaches median Pearson "
                         f"{_fmt(train['model'].get('pearson'))} (the mean over the other "
                         f"observed days: {_fmt(ref.get('pearson'))}): "
                         + ("it reproduces what it was trained on."
                            if (train['model'].get('pearson') or 0) >= 0.5 else
                            "it does not yet reproduce what it was trained on, so it cannot "
                            "interpolate either."))
    emb = summary.get("embed") or {}
    learned, base = emb.get("learned") or {}, emb.get("baseline") or {}
    if learned.get("knn_precision") is not None:
        k_l, k_b = learned["knn_precision"], base.get("knn_precision")
        cmp_ = ("" if k_b is None else
                f" vs {_fmt(k_b)} for the data-only PCA baseline: the learned table is "
                + ("better" if k_l > k_b else "worse"))
        lines.append(f"Gene table: kNN precision@10 against {html.escape(str(emb.get('labels')))} "
                     f"{_fmt(k_l)}{cmp_} (chance {_fmt(learned.get('knn_precision_chance'))}).")
    return lines


def write_index(out: Path, summary: dict) -> Path:
    """A one-page HTML summary: the verdict first, then every picture and table under ``out``."""
    sections = [("Evaluation on held-out frames", "evaluate"), ("Gene embeddings", "embed"),
                ("Generated trajectories", "generate"), ("Synthetic atlas", "atlas"),
                ("Dataset", "dataset"), ("Training", "train")]
    parts = ["<!doctype html><meta charset='utf-8'><title>videogene run</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
             "img{max-width:100%;border:1px solid #ddd;margin:4px 0}"
             "li{margin:6px 0}</style>",
             f"<h1>videogene run: {html.escape(str(out))}</h1>", "<h2>Verdict</h2>", "<ul>"]
    parts += [f"<li>{line}</li>" for line in verdict(summary)] or ["<li>no results yet</li>"]
    parts.append("</ul><p>All figures: <a href='summary.json'>summary.json</a>; per step below."
                 "</p>")
    for title, sub in sections:
        folder = out / sub
        if not folder.exists():
            continue
        parts.append(f"<h2>{title}</h2>")
        # learned before baseline, top-level files before those in sub-folders
        for f in sorted(folder.rglob("*"), key=lambda f: (len(f.relative_to(folder).parts),
                                                         f.name.startswith("baseline_"), f.name)):
            rel = f.relative_to(out).as_posix()
            if "checkpoint-" in rel or ".done" in rel:
                continue
            if f.suffix in (".png", ".gif") and f.stat().st_size < 20_000_000:
                parts.append(f"<p><b>{html.escape(rel)}</b><br><img src='{html.escape(rel)}'></p>")
            elif f.suffix in (".md", ".json", ".tsv") and f.parent == folder:
                parts.append(f"<p><a href='{html.escape(rel)}'>{html.escape(rel)}</a></p>")
    index = out / "index.html"
    index.write_text("\n".join(parts) + "\n")
    return index
