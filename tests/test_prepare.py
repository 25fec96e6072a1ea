"""videogene.data.prepare: whole ingest on real and synthetic data, bad input, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from videogene.data import load_masks, load_metadata, prepare_dataset, read_gene_canvases
from videogene.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
META_KEYS = {"format_version", "resolution", "genes", "timepoints", "slices",
             "slices_per_timepoint", "normalization", "value_max", "value_range", "holdout",
             "counts"}


def _check_layout(out: Path, meta: dict) -> None:
    assert META_KEYS <= set(meta)
    assert json.loads((out / "videogene_meta.json").read_text()) == meta
    masks = load_masks(out)
    res = meta["resolution"]
    assert masks.dtype == bool and masks.shape == (len(meta["slices"]), res, res)
    for s, m in zip(meta["slices"], masks, strict=True):
        assert s["n_tissue_pixels"] == m.sum() > 0
        assert set(s["transform"]) == {"center", "rotation", "scale", "flip", "orientation"}
        assert s["transform"]["orientation"]["method"] == "expression"
    shards = sorted((out / "data").glob("train-*-of-*.parquet"))
    assert shards
    table = pq.read_table(shards)
    assert table.column_names == ["gene", "gene_id", "slice_idx", "indices", "values",
                                  "nnz_fraction", "mean"]
    assert table.column("gene").to_pylist() == meta["genes"]
    assert table.column("gene_id").to_pylist() == list(range(len(meta["genes"])))
    card = (out / "README.md").read_text()
    assert card.startswith("---\nconfigs:") and "data/train-*.parquet" in card
    assert str(meta["counts"]["genes"]) in card


def _canvas_consistency(out: Path, meta: dict, n_genes: int = 5) -> None:
    masks = load_masks(out)
    lo, hi = meta["value_range"]
    for _, (_, canv) in zip(range(n_genes), read_gene_canvases(out), strict=False):
        assert canv.dtype == np.float32 and canv.shape == masks.shape
        assert np.all(canv[~masks] == 0)  # nothing outside tissue
        nz = canv[canv > 0]
        assert nz.size == 0 or (nz.min() >= lo - 1e-6 and nz.max() <= hi + 1e-6)


def test_prepare_seqfish(tmp_path, seqfish_path):
    out = tmp_path / "seq"
    meta = prepare_dataset([seqfish_path], out, slice_key="sample", timepoint=8.5, resolution=32,
                           progress=False)
    _check_layout(out, meta)
    assert [s["name"] for s in meta["slices"]] == ["embryo1", "embryo2"]
    assert meta["timepoints"] == [8.5] and meta["slices_per_timepoint"] == {"8.5": 2}
    assert meta["normalization"] == "log1p"  # already log-normalized, left as is
    assert len(meta["genes"]) == 351 and meta["counts"]["cells"] == 6834
    assert meta["counts"]["cells_outside_canvas"] == 0
    assert 0 < meta["value_range"][1] <= 6.2
    # one time point: one shared scale, per-slice rotations
    assert meta["scale_mode"] == "timepoint"
    assert meta["slices"][0]["transform"]["scale"] == meta["slices"][1]["transform"]["scale"]
    assert "synthetic" not in meta
    _canvas_consistency(out, meta)
    (name, sox2), = read_gene_canvases(out, genes=["Sox2"])
    assert name == "Sox2" and sox2.shape == (2, 32, 32) and (sox2 > 0).sum() > 50


def test_prepare_stahl_raw_counts(tmp_path, stahl_path, caplog):
    out = tmp_path / "stahl"
    with caplog.at_level("INFO", logger="videogene"):
        meta = prepare_dataset(stahl_path, out, timepoint=1.0, resolution=24, min_cells=20,
                               shard_genes=2000, progress=False)
    _check_layout(out, meta)
    assert meta["normalization"] == "normalize_total+log1p"
    assert "normalize_total+log1p" in caplog.text
    assert [s["name"] for s in meta["slices"]] == ["1", "2", "3", "4"]
    c = meta["counts"]
    assert c["genes_dropped_min_cells"] > 0
    assert c["genes"] + c["genes_dropped_min_cells"] == 13360 == c["genes_input"]
    assert len(list((out / "data").glob("*.parquet"))) == -(-c["genes"] // 2000)
    assert 0 < meta["value_range"][0] and meta["value_range"][1] <= 9.0
    _canvas_consistency(out, meta)


def test_prepare_synthetic(tiny_dataset, tiny_atlas_path):
    meta = load_metadata(tiny_dataset)
    _check_layout(tiny_dataset, meta)
    atlas = ad.read_h5ad(tiny_atlas_path)
    assert meta["genes"] == list(atlas.var_names)
    assert meta["timepoints"] == [9.5, 10.5, 11.5, 12.5]
    assert meta["slices_per_timepoint"] == {"9.5": 2, "10.5": 2, "11.5": 2, "12.5": 2}
    assert [s["timepoint"] for s in meta["slices"]] == sorted(s["timepoint"] for s in meta["slices"])
    assert meta["synthetic"]["n_genes"] == 48
    assert meta["holdout"] == {"timepoints": [], "frames": []}
    assert sum(s["n_cells"] for s in meta["slices"]) == atlas.n_obs
    _canvas_consistency(tiny_dataset, meta, n_genes=48)
    # the recorded transform puts a slice back on exactly its canvas
    from videogene.pp import densify, rasterize

    s0 = meta["slices"][3]
    sl = atlas[atlas.obs["slice"] == s0["name"]].to_memory()
    r = rasterize(sl, resolution=meta["resolution"], transform=s0["transform"], copy=True)
    gene = meta["genes"][5]
    (_, canv), = read_gene_canvases(tiny_dataset, genes=[gene])
    expect = densify(r["stack"][:, [5]], meta["resolution"])[0]
    np.testing.assert_allclose(canv[3], expect, rtol=1e-6)
    # default scale per time point: early and late frames both use the canvas, and the
    # physical scale (canvas units per micron) shrinks as the embryo grows
    px = [s["n_tissue_pixels"] for s in meta["slices"]]
    assert min(px) > 0.5 * max(px)
    scales = [s["transform"]["scale"] for s in meta["slices"]]
    assert scales[0] > scales[-1]


def test_prepare_scale_modes(tmp_path, tiny_atlas_path):
    """``scale="dataset"`` keeps growth visible; ``"slice"`` fits each slice."""
    grown = prepare_dataset([tiny_atlas_path], tmp_path / "d", resolution=16, scale="dataset",
                            progress=False)
    assert len({s["transform"]["scale"] for s in grown["slices"]}) == 1
    px = [s["n_tissue_pixels"] for s in grown["slices"]]
    assert np.mean(px[-2:]) > 1.3 * np.mean(px[:2])
    per_slice = prepare_dataset([tiny_atlas_path], tmp_path / "s", resolution=16, scale="slice",
                                progress=False)
    assert len({s["transform"]["scale"] for s in per_slice["slices"]}) == len(per_slice["slices"])
    with pytest.raises(InputError, match="--scale"):
        prepare_dataset([tiny_atlas_path], tmp_path / "x", scale="organ", progress=False)


def test_prepare_holdout(tiny_dataset_holdout):
    meta = load_metadata(tiny_dataset_holdout)
    assert meta["holdout"]["timepoints"] == [11.5]
    assert meta["holdout"]["frames"] == []  # whole time points only
    assert meta["counts"]["holdout_frames"] == len(meta["genes"])
    # held-out frames are stored (evaluation needs the truth)
    assert 11.5 in meta["timepoints"]


def test_load_dataset_streaming_and_not(tiny_dataset):
    from datasets import load_dataset

    meta = load_metadata(tiny_dataset)
    full = load_dataset(str(tiny_dataset), split="train")
    assert full.num_rows == len(meta["genes"])
    assert full[0]["gene"] == meta["genes"][0]
    streamed = list(load_dataset(str(tiny_dataset), split="train", streaming=True))
    assert [r["gene"] for r in streamed] == meta["genes"]
    row = streamed[7]
    assert len(row["slice_idx"]) == len(row["indices"]) == len(row["values"]) == 8
    for ix, vals in zip(row["indices"], row["values"], strict=True):
        assert len(ix) == len(vals) and all(v > 0 for v in vals)
        assert all(0 <= i < meta["resolution"] ** 2 for i in ix)


def _write(path: Path, adata: ad.AnnData) -> Path:
    adata.write_h5ad(path)
    return path


def _small(n=60, g=8, *, seed=0, genes=None, time="E9.5", slice_names=("a", "b")) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    x = sp.random(n, g, density=0.4, format="csr", random_state=seed, dtype=np.float32) * 3
    a = ad.AnnData(x, var=pd.DataFrame(index=genes or [f"G{i}" for i in range(g)]))
    a.obs_names = [f"c{i}" for i in range(n)]
    a.obs["slice"] = [slice_names[i % len(slice_names)] for i in range(n)]
    if time is not None:
        a.obs["timepoint"] = time
    a.obsm["spatial"] = rng.normal(size=(n, 2)) * [3, 1]
    return a


def test_string_times_layers_and_gene_lists(tmp_path):
    a = _small()
    a.obs["timepoint"] = ["E9.5 " if s == "a" else "E10.5" for s in a.obs["slice"]]
    counts = sp.csr_matrix(np.random.default_rng(1).poisson(2, size=a.shape).astype(np.float32))
    a.layers["counts"] = counts
    f = _write(tmp_path / "a.h5ad", a)
    meta = prepare_dataset(f, tmp_path / "o1", resolution=8, layer="counts", progress=False)
    assert meta["timepoints"] == [9.5, 10.5] and meta["normalization"] == "normalize_total+log1p"
    gene_file = tmp_path / "genes.txt"
    gene_file.write_text("G3\nG1\nNOPE\n")
    meta = prepare_dataset(f, tmp_path / "o2", resolution=8, genes=gene_file, progress=False)
    assert meta["genes"] == ["G1", "G3"] and meta["normalization"] == "log1p"
    assert meta["counts"]["genes_not_found"] == 1 and meta["counts"]["genes_dropped_not_listed"] == 6
    meta = prepare_dataset(f, tmp_path / "o3", resolution=8, genes=["G0"], progress=False)
    assert meta["genes"] == ["G0"]
    with pytest.raises(InputError, match="none of the listed genes"):
        prepare_dataset(f, tmp_path / "o4", resolution=8, genes=["XX"], progress=False)


def test_several_files_gene_sets(tmp_path):
    f1 = _write(tmp_path / "one.h5ad", _small(genes=[f"G{i}" for i in range(8)], time=9.5))
    f2 = _write(tmp_path / "two.h5ad", _small(seed=1, genes=[f"G{i}" for i in range(4, 12)],
                                              time=10.5))
    with pytest.raises(InputError, match=r"two\.h5ad.*--gene-set union.*intersection"):
        prepare_dataset([f1, f2], tmp_path / "same", resolution=8, progress=False)
    meta = prepare_dataset([f1, f2], tmp_path / "inter", resolution=8, gene_set="intersection",
                           progress=False)
    assert meta["genes"] == [f"G{i}" for i in range(4, 8)]
    assert meta["counts"]["genes_dropped_intersection"] == 8
    # slice names "a"/"b" repeat across files: made unique with the file stem
    assert [s["name"] for s in meta["slices"]] == ["one/a", "one/b", "two/a", "two/b"]
    out = tmp_path / "union"
    meta = prepare_dataset([f1, f2], out, resolution=8, gene_set="union", progress=False)
    assert meta["genes"] == [f"G{i}" for i in range(12)]
    assert meta["counts"]["gene_slices_absent"] == 2 * 4 + 2 * 4
    assert meta["counts"]["frames_missing"] == 8  # G0-3 at 10.5, G8-11 at 9.5
    table = pq.read_table(sorted((out / "data").glob("*.parquet")))
    sidx = dict(zip(table.column("gene").to_pylist(), table.column("slice_idx").to_pylist(),
                    strict=True))
    assert sidx["G0"] == [0, 1] and sidx["G11"] == [2, 3] and sidx["G5"] == [0, 1, 2, 3]


def _bad_cases(tmp_path: Path):
    base = _small()
    cases = {}
    cases["missing file"] = (tmp_path / "nope.h5ad", "not found", {})
    txt = tmp_path / "notes.h5ad"
    txt.write_text("this is not hdf5\n")
    cases["not h5ad"] = (txt, "not a readable .h5ad", {})
    a = base.copy()
    del a.obsm["spatial"]
    cases["no spatial"] = (_write(tmp_path / "nospatial.h5ad", a), "obsm", {})
    a = base.copy()
    del a.obs["timepoint"]
    cases["no time"] = (_write(tmp_path / "notime.h5ad", a), "--timepoint", {})
    a = base.copy()
    a.X.data[0] = np.nan
    cases["nan"] = (_write(tmp_path / "nan.h5ad", a), "NaN", {})
    a = base.copy()
    a.X.data[0] = -2.0
    cases["negative"] = (_write(tmp_path / "neg.h5ad", a), "negative", {})
    a = base.copy()
    a.var_names = ["G0", "G1", "G1", "G3", "G4", "G5", "G6", "G7"]
    cases["duplicate genes"] = (_write(tmp_path / "dup.h5ad", a), "duplicate gene", {})
    a = base.copy()
    a.obsm["spatial"][3, 0] = np.inf
    cases["bad coords"] = (_write(tmp_path / "coords.h5ad", a), "coordinates", {})
    a = base.copy()
    a.obs["timepoint"] = "day?"
    cases["bad time"] = (_write(tmp_path / "badtime.h5ad", a), "time", {})
    ok = _write(tmp_path / "ok.h5ad", base)
    cases["no layer"] = (ok, "layer 'counts'", {"layer": "counts"})
    return cases


BAD = ["missing file", "not h5ad", "no spatial", "no time", "nan", "negative", "duplicate genes",
       "bad coords", "bad time", "no layer"]


@pytest.mark.filterwarnings("ignore:Variable names are not unique")
@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_naming_the_file(tmp_path, case):
    path, words, kw = _bad_cases(tmp_path)[case]
    with pytest.raises(InputError) as err:
        prepare_dataset(path, tmp_path / "out", resolution=8, progress=False, **kw)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and words in msg


def test_bad_arguments(tmp_path):
    f = _write(tmp_path / "ok.h5ad", _small())
    for kw, words in [({"resolution": 2}, "--resolution"), ({"shard_genes": 0}, "--shard-genes"),
                      ({"gene_set": "all"}, "--gene-set"), ({"min_cells": 10**6}, "--min-cells"),
                      ({"genes": tmp_path / "missing.txt"}, "--genes")]:
        with pytest.raises(InputError, match=words):
            prepare_dataset(f, tmp_path / "o", progress=False, **kw)
    with pytest.raises(InputError, match="not found"):
        load_metadata(tmp_path / "nothing-here")
    with pytest.raises(InputError, match="videogene_meta.json"):
        load_metadata(tmp_path)


def test_timepoint_counts(tmp_path):
    a = _small(n=90, slice_names=("a", "b", "c"))
    a.obs["timepoint"] = a.obs["slice"].map({"a": 9.5, "b": 10.5, "c": 12.5}).astype(float)
    f = _write(tmp_path / "gap.h5ad", a)
    meta = prepare_dataset(f, tmp_path / "o", resolution=8, holdout_timepoints=[10.5, 20.0],
                           progress=False)
    c = meta["counts"]
    assert c["timepoints_without_slice"] == 1  # 11.5 missing from the 1-day grid
    assert c["holdout_timepoints_without_slice"] == 1
    assert meta["holdout"]["timepoints"] == [10.5] and c["holdout_frames"] == 8


def test_cli_prepare(tmp_path, tiny_atlas_path, capsys):
    from videogene.cli import main

    out = tmp_path / "cli"
    rc = main(["-q", "prepare", str(tiny_atlas_path), "--out", str(out), "--resolution", "12",
               "--holdout-timepoints", "10.5", "--shard-genes", "20"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["genes"] == 48 and printed["slices"] == 8
    meta = load_metadata(out)
    assert meta["resolution"] == 12 and meta["holdout"]["timepoints"] == [10.5]
    assert len(list((out / "data").glob("*.parquet"))) == 3
    rc = main(["prepare", str(tmp_path / "missing.h5ad"), "--out", str(tmp_path / "x")])
    assert rc == 2
    assert "missing.h5ad: file not found" in capsys.readouterr().err


def test_tool_script(tmp_path, tiny_atlas_path):
    out = tmp_path / "tool"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "prepare_dataset.py"),
                           str(tiny_atlas_path), "--out", str(out), "--resolution", "8"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert load_metadata(out)["resolution"] == 8
