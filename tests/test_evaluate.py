"""Held-out evaluation: protocol helpers, and evaluate_model end to end on the tiny atlas."""

from __future__ import annotations

import json
import math

import pytest

from videogene.errors import InputError
from videogene.tl import evaluate as ev


def _meta(times=(9.5, 10.5, 11.5, 12.5), genes=("a", "b", "c"), holdout=None):
    slices = [{"name": f"t{t}_s{k}", "timepoint": t} for t in times for k in range(2)]
    return {"genes": list(genes), "timepoints": list(times), "slices": slices, "resolution": 8,
            "holdout": holdout or {"timepoints": [], "frames": []}}


# ----------------------------------------------------------------------------- protocol
def test_holdout_spec_union_and_frames():
    meta = _meta(holdout={"timepoints": [11.5], "frames": [["b", 10.5], ["a", 11.5]]})
    spec = ev.holdout_spec(meta, {"data": {"holdout_timepoints": [12.5]}})
    assert spec["timepoints"] == [11.5, 12.5]
    assert spec["frames"] == [["b", 10.5]]  # (a, 11.5) is covered by the whole time point
    assert "training_config.yaml data.holdout_timepoints" in spec["sources"]
    frames = ev.heldout_frames(meta, spec=spec)
    assert frames == [("b", 10.5), ("a", 11.5), ("b", 11.5), ("c", 11.5),
                      ("a", 12.5), ("b", 12.5), ("c", 12.5)]
    only_frames = ev.heldout_frames(_meta(holdout={"timepoints": [], "frames": [["c", 9.5]]}))
    assert only_frames == [("c", 9.5)]


def test_heldout_frames_errors():
    with pytest.raises(InputError, match="nothing is held out"):
        ev.heldout_frames(_meta(), name="dataset X")
    with pytest.raises(InputError, match="13.5 has no slice"):
        ev.heldout_frames(_meta(holdout={"timepoints": [13.5], "frames": []}))
    with pytest.raises(InputError, match="gene 'zz'"):
        ev.heldout_frames(_meta(holdout={"timepoints": [], "frames": [["zz", 9.5]]}))


def test_select_genes_stratified_and_deterministic():
    genes = [f"g{i}" for i in range(20)]
    expr = [0.0] * 12 + [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]  # 12 silent, 8 expressed
    pick = ev.select_genes(genes, expr, 8)
    assert pick == ev.select_genes(genes, expr, 8)
    assert len(pick) == 8
    chosen_expr = [expr[genes.index(g)] for g in pick]
    assert sum(e > 0 for e in chosen_expr) == 6  # at least 75% expressed although only 40% are
    assert 4.0 in chosen_expr and 0.5 in chosen_expr  # both ends of the expressed range
    assert pick == sorted(pick, key=genes.index)
    assert ev.select_genes(genes, expr, None) == genes
    assert len(ev.select_genes(genes, [0.0] * 20, 5)) == 5  # nothing expressed: silent ones
    with pytest.raises(InputError, match="max_genes"):
        ev.select_genes(genes, expr, 0)


# ----------------------------------------------------------------------------- end to end
def _export(tmp_path, dataset_dir, name):
    from diffusers import DDPMScheduler

    from videogene.data import load_metadata
    from videogene.models import model_from_preset
    from videogene.pipelines import export_pipeline

    meta = load_metadata(dataset_dir)
    unet = model_from_preset("tiny", len(meta["genes"]), int(meta["resolution"]),
                             gene_names=list(meta["genes"]))
    return export_pipeline(tmp_path / name, unet=unet, scheduler=DDPMScheduler(),
                           dataset_dir=dataset_dir,
                           training_config={"max_steps": 0, "data": {"holdout_timepoints": None}})


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_dataset_holdout):
    tmp = tmp_path_factory.mktemp("evaluate")
    export = _export(tmp, tiny_dataset_holdout, "export")
    out = tmp / "report"
    summary = ev.evaluate_model(export, tiny_dataset_holdout, out, num_samples=2,
                                num_inference_steps=2, batch_size=48, seed=0, device="cpu",
                                progress=False)
    return export, out, summary


def test_evaluate_model_end_to_end(evaluated, tiny_dataset_holdout):
    from videogene.data import load_metadata

    _, out, summary = evaluated
    meta = load_metadata(tiny_dataset_holdout)
    n_genes = len(meta["genes"])
    assert summary["heldout_timepoints"] == [11.5]
    assert summary["n_frames"] == n_genes and summary["n_genes"] == n_genes
    for name in ("metrics.json", "report.md", "scatter_model_vs_baseline.png", "example_frames.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    methods = set(ev.METHOD_LABELS)  # model, per sample, 3 baselines, truth, replicate
    assert set(metrics["summary"]["methods"]) == methods
    assert len(metrics["records"]) == n_genes
    for rec in metrics["records"]:
        assert set(rec["metrics"]) == methods
        for m, vals in rec["metrics"].items():
            for k, v in vals.items():
                assert v is not None and math.isfinite(v), (rec["gene"], m, k, v)
    for m, s in metrics["summary"]["methods"].items():
        for k, v in s.items():
            assert math.isfinite(v["median"]) and math.isfinite(v["mean"]), (m, k)
    meths = summary["summary"]
    # the noise-free truth agrees with the real frame better than an independent slice does
    assert meths["truth"]["pearson"]["median"] > meths["replicate"]["pearson"]["median"]
    assert meths["truth"]["rmse"]["median"] < meths["replicate"]["rmse"]["median"]
    # linear interpolation uses the neighbours of an interior time: better than the mean image
    assert meths["linear"]["pearson"]["median"] > meths["mean_image"]["pearson"]["median"] - 0.05
    assert metrics["protocol"]["n_interpolated"] == n_genes
    assert summary["model_vs_linear"]["median_pearson_difference"] == pytest.approx(
        meths["model"]["pearson"]["median"] - meths["linear"]["pearson"]["median"])
    report = (out / "report.md").read_text()
    for label in ev.METHOD_LABELS.values():
        assert label in report
    assert "Relative difference" in report and "11.5" in report


def test_evaluate_model_deterministic_and_max_genes(evaluated, tiny_dataset_holdout, tmp_path):
    export, out, summary = evaluated
    again = ev.evaluate_model(export, tiny_dataset_holdout, tmp_path / "r", num_samples=2,
                              num_inference_steps=1, guidance_scale=1.0, batch_size=20, seed=0,
                              max_genes=10, device="cpu", progress=False)
    assert again["n_genes"] == 10 and again["n_frames"] == 10
    full = {r["gene"]: r for r in json.loads((out / "metrics.json").read_text())["records"]}
    sub = json.loads((tmp_path / "r" / "metrics.json").read_text())["records"]
    assert sum(r["expressed"] for r in sub) >= min(8, sum(r["expressed"] for r in full.values()))
    for r in sub:  # baselines do not depend on which genes are evaluated
        assert r["metrics"]["linear"] == full[r["gene"]]["metrics"]["linear"]
        assert r["metrics"]["truth"] == full[r["gene"]]["metrics"]["truth"]


def test_evaluate_model_bad_inputs(evaluated, tiny_dataset_holdout, tiny_dataset, tmp_path):
    export, _, _ = evaluated
    with pytest.raises(InputError, match="no such folder"):
        ev.evaluate_model(tmp_path / "missing_model", tiny_dataset_holdout, tmp_path / "o")
    with pytest.raises(InputError, match="missing_dataset"):
        ev.evaluate_model(export, tmp_path / "missing_dataset", tmp_path / "o")
    no_holdout = _export(tmp_path, tiny_dataset, "export_no_holdout")
    with pytest.raises(InputError, match="nothing is held out"):
        ev.evaluate_model(no_holdout, tiny_dataset, tmp_path / "o", device="cpu", progress=False)
    with pytest.raises(InputError, match="num_samples"):
        ev.evaluate_model(export, tiny_dataset_holdout, tmp_path / "o", num_samples=0)
    with pytest.raises(InputError, match="scheduler 'euler'"):
        ev.evaluate_model(export, tiny_dataset_holdout, tmp_path / "o", scheduler="euler")
    assert not (tmp_path / "o").exists()


def test_tools_wrapper_reports_input_error(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "evaluate.py"
    proc = subprocess.run([sys.executable, str(path), "--model", str(tmp_path / "nope"),
                           "--dataset", str(tmp_path / "nod"), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "evaluate.py: error:" in proc.stderr and "nod" in proc.stderr
    assert "Traceback" not in proc.stderr
