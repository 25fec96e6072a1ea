"""videogene.data.units: expression <-> model units; per-gene scales in prepare, stream, pipeline."""

from __future__ import annotations

import itertools
import json
import logging
import shutil

import numpy as np
import pytest
import torch

from videogene.data import units
from videogene.errors import InputError

GENES = ["a", "b", "c"]
NEW_META = {"genes": GENES, "value_max": 9.0, "gene_scale": [0.5, 2.0, 6.5],
            "model_units": {"mapping": "minus_one_one"}}
CENTERED = {"mapping": "centered", "center": 0.12, "std": 0.23, "sigma_data": 0.5}
OLD_META = {"genes": GENES, "value_max": 9.0}


def _meta(kind: str) -> dict:
    if kind == "old":
        return dict(OLD_META)
    meta = json.loads(json.dumps(NEW_META))
    if kind == "centered":
        meta["model_units"] = dict(CENTERED)
    return meta


@pytest.mark.parametrize("kind", ["old", "minus_one_one", "centered"])
@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_round_trip(kind, lib):
    meta = _meta(kind)
    scale = units.gene_scales(meta)  # (3,)
    rng = np.random.default_rng(0)
    x = rng.random((3, 4, 5, 5)) * scale[:, None, None, None]  # inside [0, scale]
    x[:, :, 0] = 0.0
    s = scale[:, None, None, None]
    if lib == "torch":
        x, s = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(s)
    y = units.to_model_units(x, s, meta)
    assert type(y) is type(x) and y.shape == x.shape
    back = units.to_expression(y, s, meta)
    np.testing.assert_allclose(np.asarray(back), np.asarray(x), atol=1e-5)
    lo, hi = units.model_range(meta)
    yn = np.asarray(y)
    assert yn.min() >= lo - 1e-6 and yn.max() <= hi + 1e-6
    assert np.allclose(yn[:, :, 0], units.zero_level(meta))
    # the same with the mapping parameters instead of the whole metadata
    np.testing.assert_allclose(np.asarray(units.to_model_units(x, s, units.model_units(meta))), yn)


@pytest.mark.parametrize("kind", ["old", "minus_one_one", "centered"])
def test_values_above_scale_saturate(kind):
    meta = _meta(kind)
    s = units.gene_scales(meta, ["b"])[0]
    y = units.to_model_units(np.array([0.0, s, 3 * s]), s, meta)
    assert y[1] == pytest.approx(y[2]) and y[0] == pytest.approx(units.zero_level(meta))
    assert units.to_expression(np.array([y[2] + 5.0]), s, meta)[0] == pytest.approx(s)
    assert units.to_expression(np.array([y[0] - 5.0]), s, meta)[0] == pytest.approx(0.0)


def test_mapping_values():
    assert units.to_model_units(np.float32(4.5), 9.0, OLD_META) == pytest.approx(0.0)  # old rule
    assert units.zero_level(_meta("minus_one_one")) == -1.0
    assert units.zero_level(CENTERED) == pytest.approx(-0.12 / 0.23 * 0.5)
    assert units.clip_bound(CENTERED) == pytest.approx((1 - 0.12) / 0.23 * 0.5)
    assert units.clip_bound(OLD_META) == 1.0
    with pytest.raises(InputError, match="mapping"):
        units.to_model_units(np.ones(2), 1.0, {"mapping": "tanh"})
    with pytest.raises(InputError, match="std"):
        units.model_units({**NEW_META, "model_units": {"mapping": "centered", "center": 0.1}})


def test_gene_scales_and_required_fields():
    np.testing.assert_array_equal(units.gene_scales(OLD_META, ["c", "a"]), [9.0, 9.0])
    np.testing.assert_array_equal(units.gene_scales(NEW_META, ["c", 0]), [6.5, 0.5])
    with pytest.raises(InputError, match="'zz'"):
        units.gene_scales(NEW_META, ["zz"])
    assert units.require_meta_field(NEW_META, "gene_scale", "D") == NEW_META["gene_scale"]
    with pytest.raises(InputError, match=r"^runs/old: .*'spatially_variable'.*prepare"):
        units.require_meta_field(OLD_META, "spatially_variable", "runs/old")


def test_old_metadata_logs_once(caplog):
    meta = {**OLD_META, "genes": ["only", "for", "this", "test"]}
    with caplog.at_level(logging.WARNING, logger="videogene"):
        for _ in range(3):
            assert units.model_units(meta, dataset="D_old") == {"mapping": "minus_one_one",
                                                                 "legacy": True}
    lines = [r for r in caplog.records if "per-gene scales" in r.getMessage()]
    assert len(lines) == 1 and "D_old" in lines[0].getMessage()


def test_grouped_quantile_matches_numpy():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 7, 500)
    groups[groups == 3] = 4  # an empty group
    vals = rng.gamma(2.0, size=500)
    q, n = units.grouped_quantile(vals, groups, 7, 0.99)
    for g in range(7):
        want = np.quantile(vals[groups == g], 0.99) if (groups == g).any() else 0.0
        assert q[g] == pytest.approx(want) and n[g] == (groups == g).sum()


# ----------------------------------------------------------------------------- prepared data
def test_prepare_records_scales_and_units(tiny_dataset_holdout):
    from videogene.data import load_metadata, read_gene_canvases

    meta = load_metadata(tiny_dataset_holdout)
    for key in units.NEW_KEYS:
        assert key in meta, key
    n = len(meta["genes"])
    assert len(meta["gene_scale"]) == len(meta["spatial_signal"]) == len(meta["spatially_variable"]) == n
    assert meta["model_units"]["mapping"] in units.MAPPINGS
    hold = set(meta["holdout"]["timepoints"])
    train = np.array([s["timepoint"] not in hold for s in meta["slices"]])
    for gene, c in itertools.islice(read_gene_canvases(tiny_dataset_holdout), 12):
        nz = c[train][c[train] > 0]  # non-zero tissue values of the training slices only
        want = max(np.quantile(nz, units.GENE_SCALE_QUANTILE) if nz.size else 0.0,
                   meta["gene_scale_floor"])
        assert meta["gene_scale"][meta["genes"].index(gene)] == pytest.approx(want, rel=1e-5)


def test_stream_carries_per_gene_scaled_values(tiny_dataset):
    from videogene.data import GeneVideoDataset, load_metadata, read_gene_canvases

    meta = load_metadata(tiny_dataset)
    canv = dict(read_gene_canvases(tiny_dataset))
    scale = np.asarray(meta["gene_scale"])
    assert scale.std() > 0  # genes really get different scales
    lo, hi = units.model_range(meta)
    for ex in itertools.islice(GeneVideoDataset(tiny_dataset, infinite=False, shuffle=False), 12):
        gid = int(ex["gene_id"])
        gene = meta["genes"][gid]
        v = ex["video"][:, 0]  # (f, h, w) model units
        assert v.min() >= lo - 1e-6 and v.max() <= hi + 1e-6
        assert torch.all(v[ex["tissue_mask"][:, 0] == 0] == lo)
        x = units.to_expression(v, float(scale[gid]), meta).numpy()
        for fi, t in enumerate(meta["timepoints"]):
            cands = [np.minimum(canv[gene][i], scale[gid]) for i, s in enumerate(meta["slices"])
                     if s["timepoint"] == t]
            assert any(np.allclose(x[fi], c, atol=1e-4) for c in cands)


def _old_copy(src, dst):
    shutil.copytree(src, dst)
    meta = json.loads((dst / "videogene_meta.json").read_text())
    for key in units.NEW_KEYS:
        meta.pop(key, None)
    (dst / "videogene_meta.json").write_text(json.dumps(meta))
    return dst


def test_old_dataset_still_streams(tiny_dataset, tmp_path, caplog):
    from videogene.data import GeneVideoDataset, load_metadata, read_gene_canvases

    old = _old_copy(tiny_dataset, tmp_path / "old")
    meta = load_metadata(old)
    canv = dict(read_gene_canvases(old))
    with caplog.at_level(logging.WARNING, logger="videogene"):
        ds = GeneVideoDataset(old, infinite=False, shuffle=False)
        examples = list(itertools.islice(ds, 6))
    assert sum("per-gene scales" in r.getMessage() for r in caplog.records) == 1
    for ex in examples:
        gene = meta["genes"][int(ex["gene_id"])]
        x = (ex["video"][:, 0].numpy() + 1) / 2 * meta["value_max"]  # today's mapping
        for fi, t in enumerate(meta["timepoints"]):
            cands = [canv[gene][i] for i, s in enumerate(meta["slices"]) if s["timepoint"] == t]
            assert any(np.allclose(x[fi], c, atol=1e-4) for c in cands)


# ----------------------------------------------------------------------------- pipeline
def _zero_pipe(meta, masks):
    """A pipeline whose fresh UNet predicts exactly 0 (zero-initialised output) as the clean
    sample, so every output is the expression of model value 0 for that gene."""
    from diffusers import DDPMScheduler

    from videogene.models import model_from_preset
    from videogene.pipelines import VideoGenePipeline

    torch.manual_seed(0)
    unet = model_from_preset("tiny", num_genes=len(meta["genes"]), sample_size=meta["resolution"],
                             gene_names=list(meta["genes"])).eval()
    sched = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2",
                          prediction_type="sample")
    pipe = VideoGenePipeline(unet=unet, scheduler=sched)
    pipe.set_metadata(meta, masks)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("kind", ["old", "minus_one_one", "centered"])
def test_pipeline_maps_back_with_each_genes_scale(tiny_dataset, kind):
    from videogene.data import load_masks, load_metadata

    meta = load_metadata(tiny_dataset)
    if kind == "old":
        meta = {k: v for k, v in meta.items() if k not in units.NEW_KEYS}
    elif kind == "centered":
        meta["model_units"] = dict(CENTERED)
    pipe = _zero_pipe(meta, load_masks(tiny_dataset))
    genes = list(meta["genes"][:3])
    out = pipe(genes, num_inference_steps=2, sampler="ddim", guidance_scale=1.0, progress=False,
               generator=torch.Generator().manual_seed(0))
    x = np.asarray(out.trajectories)  # (g, s, t, h, w)
    assert x.min() >= 0 and x.max() <= pipe.value_max
    for k, g in enumerate(genes):
        want = float(units.to_expression(np.float32(0.0), units.gene_scales(meta, [g])[0], meta))
        tissue = out.masks[None]  # (1, t, h, w)
        np.testing.assert_allclose(x[k][np.broadcast_to(tissue, x[k].shape)], want, rtol=1e-4)
        assert np.all(x[k][~np.broadcast_to(tissue, x[k].shape)] == 0)
    if kind != "old":
        assert len({round(float(v), 4) for v in x[:, :, out.masks].max(axis=(1, 2))}) > 1
