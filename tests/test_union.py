"""A ``--gene-set union`` dataset: a slice that does not store a gene is no observation of it
(not zero expression) in the stream's day images, in-filling context, baselines and the
evaluated frames."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from videogene.errors import InputError

# slices in meta order: one/a one/b (9.5), two/a two/b c (10.5), four/a four/b (11.5)
STORES_G0 = [True, True, False, False, True, False, False]


def _adata(genes, time, slice_names, seed):
    rng = np.random.default_rng(seed)
    n = 40 * len(slice_names)
    x = sp.random(n, len(genes), density=0.6, format="csr", random_state=seed,
                  dtype=np.float32) * 3
    a = ad.AnnData(x, var=pd.DataFrame(index=genes))
    a.obs_names = [f"c{i}" for i in range(n)]
    a.obs["slice"] = [slice_names[i % len(slice_names)] for i in range(n)]
    a.obs["timepoint"] = time
    a.obsm["spatial"] = rng.normal(size=(n, 2)) * [3, 1]
    return a


@pytest.fixture(scope="module")
def union_dataset(tmp_path_factory):
    from videogene.data import prepare_dataset

    d = tmp_path_factory.mktemp("union")
    low, high, every = ([f"G{i}" for i in r] for r in (range(8), range(4, 12), range(12)))
    files = []
    for name, genes, time, slices, seed in (("one", low, "E9.5", ("a", "b"), 0),
                                            ("two", high, "E10.5", ("a", "b"), 1),
                                            ("three", every, "E10.5", ("c",), 2),
                                            ("four", high, "E11.5", ("a", "b"), 3)):
        path = d / f"{name}.h5ad"
        _adata(genes, time, slices, seed).write_h5ad(path)
        files.append(path)
    out = d / "ds"
    prepare_dataset(files, out, resolution=8, gene_set="union", progress=False)
    return out


def test_stored_slices(union_dataset):
    from videogene.data import load_metadata, stored_slices

    meta = load_metadata(union_dataset)
    assert [s["name"] for s in meta["slices"]] == ["one/a", "one/b", "two/a", "two/b", "c",
                                                   "four/a", "four/b"]
    every = stored_slices(union_dataset)
    assert list(every) == meta["genes"]
    assert every["G0"].tolist() == STORES_G0 and every["G5"].all()
    assert every["G11"].tolist() == [False, False, True, True, True, True, True]
    assert list(stored_slices(union_dataset, genes=["G5", "G0"])) == ["G5", "G0"]
    with pytest.raises(InputError, match="genes not in the dataset: NOPE"):
        stored_slices(union_dataset, genes=["NOPE"])


def test_observed_timepoints_and_gene_masks(union_dataset):
    from videogene.data import load_masks, load_metadata
    from videogene.data.holdout import gene_masks, observed_timepoints

    meta = load_metadata(union_dataset)
    stored = np.array(STORES_G0)
    assert observed_timepoints(meta, "G0") == [9.5, 10.5, 11.5]
    assert observed_timepoints(meta, "G0", stored=stored) == [9.5, 10.5]
    assert observed_timepoints(meta, "G0", [9.5], stored=stored) == [10.5]
    masks = load_masks(union_dataset)
    gm = gene_masks(masks, stored)
    assert np.array_equal(gm[stored], masks[stored]) and not gm[~stored].any()


@pytest.mark.parametrize("gene", ["G0", "G5"])
def test_stream_day_image_counts_only_stored_slices(union_dataset, gene):
    from videogene.data import (
        GeneVideoDataset,
        load_masks,
        load_metadata,
        read_gene_canvases,
        stored_slices,
    )
    from videogene.data.holdout import gene_masks, slices_by_timepoint, timepoint_image
    from videogene.data.units import to_model_units

    meta = load_metadata(union_dataset)
    masks = load_masks(union_dataset)
    stored = stored_slices(union_dataset, genes=[gene])[gene]
    canv = dict(read_gene_canvases(union_dataset, genes=[gene]))[gene]
    ds = GeneVideoDataset(union_dataset, shuffle=False, infinite=False, context_video=True,
                          rank=0, world_size=1)
    ex = next(e for e in ds if meta["genes"][int(e["gene_id"])] == gene)
    present = ex["frame_present"].numpy()
    assert present.tolist() == ([True, True, False] if gene == "G0" else [True] * 3)
    scale = ds.gene_scale[meta.gene_index[gene]]
    day = timepoint_image(canv, gene_masks(masks, stored), slices_by_timepoint(meta)[10.5])[0]
    mask = ex["tissue_mask"][1, 0].numpy().ravel()
    want = to_model_units((day.ravel() * mask).astype(np.float32), scale, ds.units)
    np.testing.assert_allclose(ex["context_video"][1, 0].numpy().ravel(), want, rtol=1e-5,
                               atol=1e-6)
    if gene == "G0":  # the only slice of 10.5 that stores G0 is c: its image, on its mask
        assert np.array_equal(mask.astype(bool), masks[4].ravel())
        np.testing.assert_allclose(ex["video"][1, 0].numpy().ravel(), want, rtol=1e-5, atol=1e-6)


def test_observed_context_skips_slices_without_the_gene(union_dataset):
    from diffusers import DDPMScheduler

    from videogene.data import load_masks, load_metadata, read_gene_canvases
    from videogene.models import model_from_preset
    from videogene.pipelines import VideoGenePipeline
    from videogene.pipelines.context import observed_context

    meta = load_metadata(union_dataset)
    masks = load_masks(union_dataset).astype(bool)
    canv = dict(read_gene_canvases(union_dataset, genes=["G0", "G5"]))
    unet = model_from_preset("tiny", num_genes=len(meta["genes"]), sample_size=8,
                             gene_names=meta["genes"])
    pipe = VideoGenePipeline(unet, DDPMScheduler(num_train_timesteps=100))
    pipe.set_metadata(dict(meta), masks)
    cv = observed_context(pipe, ["G0", "G5"], [11.0], union_dataset)
    assert cv.times == [9.5, 10.5, 11.0, 11.5]
    assert cv.given.tolist() == [[True, True, False, False], [True, True, False, True]]
    ref = 2  # two/a, the reference slice of 10.5, does not store G0
    covered = masks[ref] & masks[4]
    np.testing.assert_allclose(cv.frames[0, 1][covered], canv["G0"][4][covered], rtol=1e-6)
    assert not cv.frames[0, 1][masks[ref] & ~masks[4]].any()  # no stored slice covers these
    np.testing.assert_allclose(cv.frames[1, 1], np.where(masks[ref], canv["G5"][ref], 0),
                               rtol=1e-6)


def test_baselines_and_heldout_frames_skip_slices_without_the_gene(union_dataset):
    from videogene.data import load_masks, load_metadata, read_gene_canvases, stored_slices
    from videogene.tl.baselines import compute_baselines
    from videogene.tl.heldout import collect_reference_frames, heldout_frames

    meta = load_metadata(union_dataset)
    masks = load_masks(union_dataset).astype(bool)
    stored = stored_slices(union_dataset)
    canv = dict(read_gene_canvases(union_dataset, genes=["G0"]))["G0"]
    base = compute_baselines(canv, masks, meta, 11.5, [9.5, 10.5], stored=stored["G0"])
    only_c = masks[4] & ~masks[0] & ~masks[1]  # 10.5 is the nearest day, c its only slice
    np.testing.assert_allclose(base["nearest"][only_c], canv[4][only_c])
    zeros = compute_baselines(canv, masks, meta, 11.5, [9.5, 10.5])  # the old reading
    assert not np.allclose(base["nearest"][masks[4]], zeros["nearest"][masks[4]])

    spec = {"timepoints": [10.5], "frames": [], "sources": []}
    every = heldout_frames(meta, spec=spec)
    measured = heldout_frames(meta, spec=spec, stored=stored)
    assert len(every) == 12 and [g for g, _ in measured] == [f"G{i}" for i in range(4, 12)]
    with pytest.raises(InputError, match="gene G0 is not stored in slice 2"):
        collect_reference_frames(union_dataset, meta, masks, every, spec, progress=False)
    fs = collect_reference_frames(union_dataset, meta, masks, measured, spec, progress=False)
    assert len(fs.real) == 8 and "replicate" in fs.methods


def test_evaluate_leaves_out_frames_without_data(union_dataset, tmp_path):
    import json

    from diffusers import DDPMScheduler

    from videogene.data import load_masks, load_metadata
    from videogene.jobs.evaluate import evaluate_model
    from videogene.models import model_from_preset
    from videogene.pipelines import VideoGenePipeline

    meta = load_metadata(union_dataset)
    unet = model_from_preset("tiny", num_genes=len(meta["genes"]), sample_size=8,
                             gene_names=meta["genes"])
    pipe = VideoGenePipeline(unet, DDPMScheduler(num_train_timesteps=100))
    pipe.set_metadata(dict(meta, holdout={"timepoints": [10.5], "frames": []}),
                      load_masks(union_dataset))
    pipe.save_pretrained(tmp_path / "model")
    evaluate_model(tmp_path / "model", union_dataset, tmp_path / "eval", num_samples=1,
                   num_inference_steps=1, batch_size=16, device="cpu", progress=False)
    protocol = json.loads((tmp_path / "eval" / "metrics.json").read_text())["protocol"]
    assert protocol["n_frames_not_stored"] == 4 and protocol["n_frames"] == 8
    assert "not stored in the reference slice: 4" in (tmp_path / "eval" / "report.md").read_text()


def test_pattern_vectors_and_gene_statistics_skip_slices_without_the_gene(union_dataset):
    from videogene.data import load_masks, load_metadata, read_gene_canvases, stored_slices
    from videogene.data.features import PatternVectors
    from videogene.tl.embeddings import _DatasetFeatures

    meta = load_metadata(union_dataset)
    masks = load_masks(union_dataset).astype(bool)
    stored = stored_slices(union_dataset)["G0"]
    canv = dict(read_gene_canvases(union_dataset, genes=["G0"]))["G0"]
    vec = PatternVectors(meta, masks, ["G0", "G0 as if stored everywhere"])
    vec.add("G0", canv, stored)
    vec.add("G0 as if stored everywhere", canv)
    seen = np.broadcast_to(stored[:, None, None], masks.shape)[masks]  # (n_pixels,)
    v, zeros = vec.x
    assert not v[~seen].any() and v[~seen].size > 0  # not observed: the gene's mean
    assert abs(float(v[seen].mean())) < 1e-5 and float(v[seen].std()) == pytest.approx(1, rel=1e-4)
    assert (zeros[~seen] < 0).all()  # the old reading: unmeasured pixels look silent

    feats = _DatasetFeatures(union_dataset, ["G0", "G5"])
    on = masks & stored[:, None, None]
    assert feats.nnz_fraction[0] == pytest.approx((canv[on] > 0).sum() / on.sum())
    assert feats.mean[0] == pytest.approx(canv[on].sum() / on.sum(), rel=1e-5)
    assert np.isnan(feats.time_profile[0, 2]) and np.isfinite(feats.time_profile[1]).all()
    day = on & (np.array([s["timepoint"] for s in meta["slices"]]) == 10.5)[:, None, None]
    assert feats.time_profile[0, 1] == pytest.approx(canv[day].sum() / day.sum(), rel=1e-5)
