"""Held-out evaluation: protocol helpers, and evaluate_model end to end on the tiny atlas."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from videogene.errors import InputError
from videogene.jobs import evaluate as jobs_ev
from videogene.tl import evaluate as ev
from videogene.tl import heldout as ho


def _meta(times=(9.5, 10.5, 11.5, 12.5), genes=("a", "b", "c"), holdout=None):
    slices = [{"name": f"t{t}_s{k}", "timepoint": t} for t in times for k in range(2)]
    return {"genes": list(genes), "timepoints": list(times), "slices": slices, "resolution": 8,
            "holdout": holdout or {"timepoints": [], "frames": []}}


# ----------------------------------------------------------------------------- protocol
def test_holdout_spec_union_and_frames():
    meta = _meta(holdout={"timepoints": [11.5], "frames": [["b", 10.5], ["a", 11.5]]})
    spec = ho.holdout_spec(meta, {"data": {"holdout_timepoints": [12.5]}})
    assert spec["timepoints"] == [11.5, 12.5]
    assert spec["frames"] == [["b", 10.5]]  # (a, 11.5) is covered by the whole time point
    assert "training_config.yaml data.holdout_timepoints" in spec["sources"]
    frames = ho.heldout_frames(meta, spec=spec)
    assert frames == [("b", 10.5), ("a", 11.5), ("b", 11.5), ("c", 11.5),
                      ("a", 12.5), ("b", 12.5), ("c", 12.5)]
    only_frames = ho.heldout_frames(_meta(holdout={"timepoints": [], "frames": [["c", 9.5]]}))
    assert only_frames == [("c", 9.5)]


def test_heldout_frames_errors():
    with pytest.raises(InputError, match="nothing is held out"):
        ho.heldout_frames(_meta(), name="dataset X")
    with pytest.raises(InputError, match="13.5 has no slice"):
        ho.heldout_frames(_meta(holdout={"timepoints": [13.5], "frames": []}))
    with pytest.raises(InputError, match="gene 'zz'"):
        ho.heldout_frames(_meta(holdout={"timepoints": [], "frames": [["zz", 9.5]]}))


def test_select_genes_stratified_and_deterministic():
    genes = [f"g{i}" for i in range(20)]
    expr = [0.0] * 12 + [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]  # 12 silent, 8 expressed
    pick = ho.select_genes(genes, expr, 8)
    assert pick == ho.select_genes(genes, expr, 8)
    assert len(pick) == 8
    chosen_expr = [expr[genes.index(g)] for g in pick]
    assert sum(e > 0 for e in chosen_expr) == 6  # at least 75% expressed although only 40% are
    assert 4.0 in chosen_expr and 0.5 in chosen_expr  # both ends of the expressed range
    assert pick == sorted(pick, key=genes.index)
    assert ho.select_genes(genes, expr, None) == genes
    assert len(ho.select_genes(genes, [0.0] * 20, 5)) == 5  # nothing expressed: silent ones
    with pytest.raises(InputError, match="max_genes"):
        ho.select_genes(genes, expr, 0)


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
    summary = jobs_ev.evaluate_model(export, tiny_dataset_holdout, out, num_samples=2,
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


def _finite_medians(methods):
    for m, s in methods.items():
        for k, v in s.items():
            assert v["median"] is not None and math.isfinite(v["median"]), (m, k)
            assert v["mean"] is not None and math.isfinite(v["mean"]), (m, k)
            assert v["n"] > 0, (m, k)


def test_metrics_json_layout(evaluated, tiny_dataset_holdout, tiny_synth_config):
    from videogene.data import load_metadata
    from videogene.data.synthetic import gene_table

    _, out, summary = evaluated
    meta = load_metadata(tiny_dataset_holdout)
    metrics = json.loads((out / "metrics.json").read_text())
    s = metrics["summary"]
    assert {"methods", "vs_linear", "by_gene_set", "vs_truth", "train_frames", "headline"} <= set(s)
    kinds = gene_table(tiny_synth_config)["program_kind"].astype(str)
    present = [k for k in ("domain", "temporal", "gradient", "scattered", "housekeeping", "silent")
               if (kinds[meta["genes"]] == k).any()]
    expected_sets = ["all", "spatial", *present]
    assert list(s["by_gene_set"]) == expected_sets
    assert list(s["vs_truth"]["by_gene_set"]) == expected_sets
    assert list(s["train_frames"]["by_gene_set"]) == expected_sets
    assert list(s["train_frames"]["vs_truth"]["by_gene_set"]) == expected_sets
    # the `all` set is the whole evaluation: the same summaries as summary.methods
    assert s["by_gene_set"]["all"]["methods"] == s["methods"]
    assert s["by_gene_set"]["all"]["vs_linear"] == s["vs_linear"]
    for name in ("all", "spatial", "domain"):
        entry = s["by_gene_set"][name]
        assert set(entry) == {"n_genes", "n_frames", "methods", "vs_linear"}
        assert entry["n_genes"] == metrics["protocol"]["gene_sets"][name]["n_genes"] > 0
        assert set(entry["methods"]) == set(ev.METHOD_LABELS)
        _finite_medians(entry["methods"])
        truth_entry = s["vs_truth"]["by_gene_set"][name]
        # against the truth the truth itself is not a method (it would score exactly 1)
        assert set(truth_entry["methods"]) == set(ev.METHOD_LABELS) - {"truth"}
        _finite_medians(truth_entry["methods"])
        train = s["train_frames"]["by_gene_set"][name]
        assert set(train["methods"]) == set(ev.TRAIN_FRAME_METHODS)
        assert train["n_frames"] == 3 * entry["n_genes"]  # observed: 9.5, 10.5, 12.5
        _finite_medians(train["methods"])
        assert set(s["train_frames"]["vs_truth"]["by_gene_set"][name]["methods"]) == (
            set(ev.TRAIN_FRAME_METHODS) - {"truth"})
    assert s["train_frames"]["timepoints"] == [9.5, 10.5, 12.5]
    # per frame: against the real slice and against the truth
    for rec in metrics["records"]:
        assert set(rec["vs_truth"]) == set(ev.METHOD_LABELS) - {"truth"}
    # the truth is closer to the truth than one noisy slice is, and a perfect predictor of it
    # beats every other method's RMSE there (the truth scored against the real slice)
    dom = s["vs_truth"]["by_gene_set"]["domain"]["methods"]
    assert dom["replicate"]["pearson"]["median"] < 1.0
    assert s["by_gene_set"]["domain"]["methods"]["truth"]["pearson"]["median"] > (
        s["by_gene_set"]["domain"]["methods"]["replicate"]["pearson"]["median"])
    # a perfect sampler (new count draws of the real slice): its mean of draws is closer to the
    # truth than one draw; it is a reference, not a model method
    assert dom["redraw"]["pearson"]["median"] > dom["redraw_per_sample"]["pearson"]["median"]
    assert dom["redraw"]["rmse"]["median"] < dom["redraw_per_sample"]["rmse"]["median"]
    assert "redraw" not in summary["headline"]["comparisons"]
    # the real slice is itself one count draw of the truth: a redraw agrees with the truth about
    # as well as the real slice does (same slice, same noise model), frame by frame in the median
    real_vs_truth = [r["metrics"]["truth"]["pearson"] for r in metrics["records"]]
    draw_vs_truth = [r["vs_truth"]["redraw_per_sample"]["pearson"] for r in metrics["records"]]
    assert abs(np.median(draw_vs_truth) - np.median(real_vs_truth)) < 0.1
    train_records_json = json.loads((out / "train_frames.json").read_text())["records"]
    assert all("redraw" in r["vs_truth"] for r in train_records_json)
    assert metrics["protocol"]["redraw"].startswith("2 new count draws")
    train_records = json.loads((out / "train_frames.json").read_text())["records"]
    assert len(train_records) == s["train_frames"]["n_frames"] == 3 * len(meta["genes"])
    assert {r["timepoint"] for r in train_records} == {9.5, 10.5, 12.5}
    # headline: `spatial` against the truth on the synthetic atlas, also in the returned summary
    h = summary["headline"]
    assert h == json.loads(json.dumps(s["headline"]))
    assert h["gene_set"] == "spatial" and h["against"] == "truth"
    assert h["n_genes"] == s["vs_truth"]["by_gene_set"]["spatial"]["n_genes"]
    assert h["methods"]["linear"]["pearson"] == pytest.approx(
        s["vs_truth"]["by_gene_set"]["spatial"]["methods"]["linear"]["pearson"]["median"])
    for b in ("nearest", "linear", "mean_image"):
        for metric in ("pearson", "rmse"):
            c = h["comparisons"]["model"][b][metric]
            assert c["outcome"] in ("win", "loss", "tie")
            assert 0.0 <= c["win_rate"] <= 1.0
    assert h["train_frames"]["against"] == "truth"
    assert math.isfinite(h["train_frames"]["methods"]["model"]["pearson"])
    assert summary["gene_sets"] == {k: v["n_genes"] for k, v in metrics["protocol"]["gene_sets"].items()}
    # calibration of both passes' samples on the headline's set (tl.calibration)
    cal = s["calibration"]
    assert cal["gene_set"] == "spatial" and list(cal["passes"]) == ["model", "model_infill"]
    for name, c in cal["passes"].items():
        assert c["n_frames"] == h["n_frames"] and c["n_samples"] == 2
        for key in ("sample_agreement", "observation_agreement", "posterior_mean_pearson",
                    "draw_pearson", "calibrated_pearson", "calibrated_pearson_per_sample"):
            assert -1.0 <= c[key] <= 1.0, (name, key)
        # the samples' own score is the headline's (both cover every frame of the set)
        assert c["pearson"] == pytest.approx(h["methods"][name]["pearson"])
        assert -1.0 <= c["prediction_correlation"] <= 1.0
    assert summary["calibration"] == json.loads(json.dumps(cal))
    report = (out / "report.md").read_text()
    assert "## Are the samples calibrated? (`spatial` genes)" in report
    assert "a calibrated sampler of this posterior" in report
    assert "## Headline: `spatial` genes against the truth" in report
    assert "Against the noise-free truth" in report and "Training frames" in report
    for name in expected_sets:
        assert f"### `{name}`" in report
    assert (out / "scatter_model_vs_baseline_truth.png").is_file()


def test_gene_sets(tiny_dataset_holdout, tiny_synth_config):
    from videogene.data import load_metadata
    from videogene.data.synthetic import gene_table

    meta = load_metadata(tiny_dataset_holdout)
    genes = list(meta["genes"])
    sets = ho.gene_sets(meta, genes)
    assert sets["all"] == genes
    assert set(sets["spatial"]) <= set(genes)
    flags = dict(zip(genes, meta["spatially_variable"]))
    assert sets["spatial"] == [g for g in genes if flags[g]]
    kinds = gene_table(tiny_synth_config)["program_kind"].astype(str)
    kind_sets = {k: v for k, v in sets.items() if k not in ("all", "spatial")}
    assert sorted(g for v in kind_sets.values() for g in v) == sorted(genes)  # a partition
    for kind, members in kind_sets.items():
        assert all(kinds[g] == kind for g in members)
    # a subset of genes keeps its order; real data (no synthetic config) has no kind sets
    sub = genes[::-5]
    assert ho.gene_sets(meta, sub)["all"] == sub
    real = {k: v for k, v in meta.items() if k != "synthetic"}
    assert set(ho.gene_sets(real, genes)) == {"all", "spatial"}


def test_dataset_without_spatially_variable(evaluated, tiny_dataset_holdout, tmp_path):
    """Datasets prepared before the field: the flag is computed from the canvases by the same
    statistic as `videogene prepare` (close to what prepare records); without the canvases (no
    dataset folder) a one-line error."""
    import shutil

    from videogene.data import load_metadata

    meta = load_metadata(tiny_dataset_holdout)
    old = {k: v for k, v in meta.items() if k not in ("spatially_variable", "spatial_signal")}
    with pytest.raises(InputError, match="dataset old: .*no 'spatially_variable'.*videogene prepare"):
        ho.gene_sets(old, meta["genes"], name="dataset old")
    with pytest.raises(InputError, match="'spatially_variable' has 2 entries"):
        ho.gene_sets(dict(meta, spatially_variable=[True, False]), meta["genes"])
    ds = tmp_path / "old_dataset"
    shutil.copytree(tiny_dataset_holdout, ds)
    (ds / "videogene_meta.json").write_text(json.dumps(old))
    computed = ho.gene_sets(old, meta["genes"], dataset_dir=ds)
    recorded = ho.gene_sets(meta, meta["genes"])
    assert set(computed) == set(recorded) and computed["all"] == recorded["all"]
    # the same statistic on the tissue masks instead of the cell-holding pixels: close to the
    # recorded flag, not identical
    agree = len(set(computed["spatial"]) ^ set(recorded["spatial"]))
    assert agree <= 0.15 * len(meta["genes"]), (computed["spatial"], recorded["spatial"])
    assert 0 < len(computed["spatial"]) < len(meta["genes"])
    export, _, _ = evaluated
    res = jobs_ev.evaluate_model(export, ds, tmp_path / "o", num_samples=1, num_inference_steps=1,
                            batch_size=48, max_genes=8, train_frames=False, device="cpu",
                            progress=False)
    protocol = json.loads((tmp_path / "o" / "metrics.json").read_text())["protocol"]
    assert "computed at evaluation" in protocol["gene_sets"]["spatial"]["definition"]
    assert "train_frames" not in json.loads((tmp_path / "o" / "metrics.json").read_text())["summary"]
    assert res["gene_sets"]["all"] == 8


def _frame_set(n=6, res=8, seed=0):
    """A hand-made FrameSet: a smooth truth, a noisy real frame, baselines of known quality."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:res, 0:res]
    mask = np.ones((res, res), dtype=bool)
    frames, real, truth, linear, nearest = [], [], [], [], []
    for k in range(n):
        t = (1.0 + k) * (xx + yy) / res
        frames.append((f"g{k}", 11.5))
        truth.append(t)
        real.append(t + rng.normal(0, 0.3, t.shape))
        linear.append(t + rng.normal(0, 0.1, t.shape))  # close to the truth
        nearest.append(t[::-1] + rng.normal(0, 0.1, t.shape))  # wrong layout
    fs = ho.FrameSet(frames=frames, real=real, masks=[mask] * n, reference_slices=[0] * n,
                     methods={"nearest": nearest, "linear": linear, "truth": truth},
                     interpolated=[True] * n)
    return fs, truth, rng


def test_scoring_is_generic_in_the_methods(monkeypatch):
    fs, truth, rng = _frame_set()
    good = [np.stack([t + rng.normal(0, 0.05, t.shape) for _ in range(2)]) for t in truth]
    bad = [np.stack([rng.uniform(0, 2, t.shape) for _ in range(2)]) for t in truth]
    # adding a method of the model is one line in METHOD_LABELS
    monkeypatch.setitem(ev.METHOD_LABELS, "model_raw", "model, raw weights")
    records = ev.score_methods(fs, {"model": bad, "model_raw": good}, data_range=9.0,
                               progress=False)
    assert list(records[0]["metrics"]) == ["model", "model_per_sample", "nearest", "linear",
                                           "truth", "model_raw"]
    assert "truth" not in records[0]["vs_truth"] and "model_raw" in records[0]["vs_truth"]
    assert records[0]["vs_truth"]["linear"]["pearson"] > records[0]["metrics"]["linear"]["pearson"]
    sets = {"all": [g for g, _ in fs.frames], "spatial": ["g1", "g2", "g3"]}
    by_set = ev.summarize_gene_sets(records, sets, key="vs_truth")
    assert by_set["spatial"]["n_genes"] == 3 and by_set["all"]["n_frames"] == 6
    assert set(by_set["spatial"]["methods"]) == {"model", "model_per_sample", "nearest", "linear",
                                                 "model_raw"}
    # a set without frames lists the same methods with NaN medians and n = 0
    empty = ev.summarize_gene_sets(records, {"spatial": []})["spatial"]
    assert empty["n_frames"] == 0 and set(empty["methods"]) == set(records[0]["metrics"])
    assert empty["methods"]["model"]["pearson"]["n"] == 0
    summary = {"methods": by_set["all"]["methods"], "vs_truth": {"by_gene_set": by_set}}
    h = ev.headline(summary, records, sets)
    assert h["gene_set"] == "spatial" and h["against"] == "truth"
    assert set(h["comparisons"]) == {"model", "model_raw"}  # both compared with the baselines
    assert h["comparisons"]["model_raw"]["linear"]["pearson"]["outcome"] == "win"
    assert h["comparisons"]["model_raw"]["linear"]["rmse"]["outcome"] == "win"
    assert h["comparisons"]["model_raw"]["linear"]["rmse"]["win_rate"] == 1.0
    assert h["comparisons"]["model"]["linear"]["pearson"]["outcome"] == "loss"
    assert h["comparisons"]["model"]["nearest"]["rmse"]["outcome"] in ("win", "loss")
    lines = "\n".join(jobs_ev.headline_lines(h))
    assert "model, raw weights vs linear interpolation" in lines and "**loss**" in lines
    # against the real slice (real data): the headline falls back to `all` for an empty set
    real_summary = {"by_gene_set": ev.summarize_gene_sets(records, {"all": sets["all"],
                                                                    "spatial": []})}
    h_real = ev.headline(real_summary, records, {"all": sets["all"], "spatial": []})
    assert h_real["gene_set"] == "all" and h_real["against"] == "real slice"
    assert h_real["n_frames"] == 6


def test_evaluate_model_deterministic_and_max_genes(evaluated, tiny_dataset_holdout, tmp_path):
    export, out, summary = evaluated
    again = jobs_ev.evaluate_model(export, tiny_dataset_holdout, tmp_path / "r", num_samples=2,
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
        jobs_ev.evaluate_model(tmp_path / "missing_model", tiny_dataset_holdout, tmp_path / "o")
    with pytest.raises(InputError, match="missing_dataset"):
        jobs_ev.evaluate_model(export, tmp_path / "missing_dataset", tmp_path / "o")
    no_holdout = _export(tmp_path, tiny_dataset, "export_no_holdout")
    with pytest.raises(InputError, match="nothing is held out"):
        jobs_ev.evaluate_model(no_holdout, tiny_dataset, tmp_path / "o", device="cpu", progress=False)
    with pytest.raises(InputError, match="--num-samples: must be >= 1"):
        jobs_ev.evaluate_model(export, tiny_dataset_holdout, tmp_path / "o", num_samples=0)
    with pytest.raises(InputError, match="scheduler 'euler'"):
        jobs_ev.evaluate_model(export, tiny_dataset_holdout, tmp_path / "o", scheduler="euler")
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
