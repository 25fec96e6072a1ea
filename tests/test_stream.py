"""videogene.data.GeneVideoDataset: the training stream of docs/design.md section 3."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from videogene.data import GeneVideoDataset, load_masks, load_metadata, read_gene_canvases, units
from videogene.data.prepare import prepare_dataset
from videogene.errors import InputError

KEYS = {"video", "tissue_mask", "frame_times", "frame_present", "gene_id", "nnz_fraction",
        "sample_weight"}


def _epoch(ds) -> list[dict]:
    return list(ds)


@pytest.fixture(scope="module")
def sharded_dataset(tmp_path_factory, tiny_atlas_path):
    """The tiny atlas in 4 shards of 12 genes (so ranks split by shard)."""
    out = tmp_path_factory.mktemp("sharded")
    prepare_dataset(tiny_atlas_path, out, resolution=16, shard_genes=12, progress=False)
    return out


def test_example_shapes_dtypes_ranges(tiny_dataset):
    meta = load_metadata(tiny_dataset)
    masks = load_masks(tiny_dataset)
    ds = GeneVideoDataset(tiny_dataset, infinite=False)
    examples = _epoch(ds)
    assert len(examples) == len(meta["genes"])
    lo, hi = units.model_range(meta)
    f, res = len(meta["timepoints"]), meta["resolution"]
    for ex in examples:
        assert set(ex) == KEYS
        assert ex["video"].shape == (f, 1, res, res) and ex["video"].dtype == torch.float32
        assert ex["tissue_mask"].shape == (f, 1, res, res) and ex["tissue_mask"].dtype == torch.float32
        assert ex["frame_times"].dtype == torch.float32
        assert ex["frame_times"].tolist() == meta["timepoints"]
        assert ex["frame_present"].dtype == torch.bool and ex["frame_present"].all()
        assert ex["gene_id"].dtype == torch.int64 and ex["gene_id"].ndim == 0
        assert ex["nnz_fraction"].dtype == torch.float32 and 0 <= ex["nnz_fraction"] <= 1
        assert ex["sample_weight"].item() == 1.0
        v = ex["video"]  # model units (videogene.data.units)
        assert v.min() >= lo - 1e-6 and v.max() <= hi + 1e-6
        assert set(ex["tissue_mask"].unique().tolist()) <= {0.0, 1.0}
        assert torch.all(v[ex["tissue_mask"] == 0] == lo)  # nothing outside tissue
        # each frame's mask is the mask of one of the slices of that time point
        for fi in range(f):
            m = ex["tissue_mask"][fi, 0].numpy().astype(bool)
            sl = [i for i, s in enumerate(meta["slices"])
                  if s["timepoint"] == meta["timepoints"][fi]]
            assert any((masks[i] == m).all() for i in sl)
    assert sorted(int(e["gene_id"]) for e in examples) == list(range(len(meta["genes"])))


def test_video_matches_canvases(tiny_dataset):
    meta = load_metadata(tiny_dataset)
    canv = dict(read_gene_canvases(tiny_dataset))
    ds = GeneVideoDataset(tiny_dataset, infinite=False, shuffle=False)
    for ex in itertools.islice(ds, 10):
        gene = meta["genes"][int(ex["gene_id"])]
        scale = units.gene_scales(meta, [gene])[0]
        x = units.to_expression(ex["video"][:, 0].numpy(), scale, meta)
        for fi, t in enumerate(meta["timepoints"]):
            # values above the gene's scale saturate at it
            cands = [np.minimum(canv[gene][i], scale) for i, s in enumerate(meta["slices"])
                     if s["timepoint"] == t]
            assert any(np.allclose(x[fi][c > 0], c[c > 0], atol=1e-4) for c in cands)


@pytest.mark.parametrize("slice_draw", ["random", "context_aligned"])
def test_context_video_is_the_day_mean_on_the_drawn_slice(tiny_dataset, slice_draw):
    from videogene.data.holdout import slices_by_timepoint, timepoint_image

    meta, masks = load_metadata(tiny_dataset), load_masks(tiny_dataset).astype(bool)
    canv = dict(read_gene_canvases(tiny_dataset))
    by_t = slices_by_timepoint(meta)
    plain = GeneVideoDataset(tiny_dataset, infinite=False, seed=3, slice_draw=slice_draw)
    day = GeneVideoDataset(tiny_dataset, infinite=False, seed=3, context_video=True,
                           slice_draw=slice_draw)
    assert "context_video" not in next(iter(plain))
    # with "context_aligned" the aligned twin has its own day images, on the twin's masks
    views = [("video", "tissue_mask", "context_video")]
    if slice_draw == "context_aligned":
        views.append(("video_aligned", "tissue_mask_aligned", "context_video_aligned"))
    else:
        assert "context_video_aligned" not in next(iter(day))
    for a, ex in itertools.islice(zip(plain, day, strict=True), 8):
        gene = meta["genes"][int(ex["gene_id"])]
        scale = units.gene_scales(meta, [gene])[0]
        for video, tissue, context in views:
            torch.testing.assert_close(a[video], ex[video])  # the same draws
            got = units.to_expression(ex[context][:, 0].numpy(), scale, meta)
            for fi, t in enumerate(meta["timepoints"]):
                drawn = ex[tissue][fi, 0].numpy() > 0
                assert len(by_t[t]) > 1 and drawn.any()
                want = np.minimum(np.where(drawn, timepoint_image(canv[gene], masks, by_t[t])[0],
                                           0), scale)
                np.testing.assert_allclose(got[fi], want, atol=1e-4)


def _drawn_ranks(ex, meta, masks) -> list[int]:
    """Per present frame, the drawn slice's position among its day's slices (dataset order)."""
    ranks = []
    for fi, t in enumerate(meta["timepoints"]):
        if not ex["frame_present"][fi]:
            continue
        day = [i for i, s in enumerate(meta["slices"]) if s["timepoint"] == t]
        m = ex["tissue_mask"][fi, 0].numpy().astype(bool)
        hits = [r for r, i in enumerate(day) if (masks[i] == m).all()]
        assert len(hits) == 1
        ranks.append(hits[0])
    return ranks


@pytest.mark.parametrize("slice_draw", ["random", "aligned", "context_aligned"])
def test_slice_draw(tiny_dataset, slice_draw):
    from videogene.data.stream import SLICE_DRAW
    from videogene.training.config import SLICE_DRAW as CONFIG_CHOICES
    from videogene.training.config import load_config
    from videogene.training.stream import build_dataset

    assert CONFIG_CHOICES is SLICE_DRAW  # one list, the stream's
    meta, masks = load_metadata(tiny_dataset), load_masks(tiny_dataset).astype(bool)
    ds = GeneVideoDataset(tiny_dataset, infinite=False, seed=5, slice_draw=slice_draw)
    assert ds.slice_draw == slice_draw
    examples = _epoch(ds)
    ranks = [_drawn_ranks(ex, meta, masks) for ex in examples]
    one_position = [len(set(r)) == 1 for r in ranks]
    if slice_draw == "aligned":  # one position per video, and every position drawn
        assert all(one_position)
        assert {r[0] for r in ranks} == {0, 1}
    else:  # 4 days x 2 slices: a video of one position is 1 in 8
        assert sum(one_position) < len(ranks) / 2
    if slice_draw == "context_aligned":  # video as with "random", plus an aligned twin
        assert _signature(examples) == _signature(
            _epoch(GeneVideoDataset(tiny_dataset, infinite=False, seed=5, slice_draw="random")))
        twins = [{"video": ex["video_aligned"], "tissue_mask": ex["tissue_mask_aligned"],
                  "frame_present": ex["frame_present"]} for ex in examples]
        assert all(len(set(_drawn_ranks(t, meta, masks))) == 1 for t in twins)
        assert {_drawn_ranks(t, meta, masks)[0] for t in twins} == {0, 1}
    else:
        assert "video_aligned" not in examples[0]
    again = _epoch(GeneVideoDataset(tiny_dataset, infinite=False, seed=5, slice_draw=slice_draw))
    assert _signature(again) == _signature(examples)
    # the training config's data.slice_draw reaches the stream
    cfg = load_config(None, [f"data.path={tiny_dataset}", f"data.slice_draw={slice_draw}"])
    assert build_dataset(cfg, tiny_dataset).slice_draw == slice_draw


def test_context_video_leaves_held_out_days_out(tiny_dataset_holdout, tmp_path):
    from videogene.training.config import load_config
    from videogene.training.stream import build_dataset

    meta = load_metadata(tiny_dataset_holdout)
    hold = meta["timepoints"].index(11.5)
    ds = GeneVideoDataset(tiny_dataset_holdout, infinite=False, context_video=True)
    zero = ds.zero_level
    for ex in itertools.islice(ds, 6):
        assert not ex["frame_present"][hold]
        assert (ex["context_video"][hold] == zero).all()
        assert not (ex["context_video"][~ex["frame_present"]] != zero).any()
    # the training config turns it on through the model's context_source, and only then
    for extra, want in (([], False), (["model.context_source=timepoint_mean"], True)):
        cfg = load_config(None, [f"data.path={tiny_dataset_holdout}", *extra])
        assert build_dataset(cfg, tiny_dataset_holdout).context_video is want


def test_holdout_frames_absent(tiny_dataset_holdout):
    meta = load_metadata(tiny_dataset_holdout)
    hold = meta["timepoints"].index(11.5)
    for ex in GeneVideoDataset(tiny_dataset_holdout, infinite=False):
        assert not ex["frame_present"][hold]
        assert torch.all(ex["video"][hold] == units.zero_level(meta))  # zero expression
        assert torch.all(ex["tissue_mask"][hold] == 0)
        assert ex["frame_present"].sum() == len(meta["timepoints"]) - 1
    ex = next(iter(GeneVideoDataset(tiny_dataset_holdout, include_holdout=True)))
    assert ex["frame_present"].all()
    # a config's hold-out adds to the dataset's recorded one, never replaces it
    ex = next(iter(GeneVideoDataset(tiny_dataset_holdout, holdout_timepoints=[9.5, 12.5])))
    assert ex["frame_present"].tolist() == [False, True, False, False]


def test_single_holdout_frames_absent(tiny_dataset, tmp_path):
    import json
    import shutil

    ds_dir = tmp_path / "copy"
    shutil.copytree(tiny_dataset, ds_dir)
    meta = load_metadata(ds_dir)
    gene = meta["genes"][3]
    meta["holdout"] = {"timepoints": [], "frames": [[gene, 10.5]]}
    (ds_dir / "videogene_meta.json").write_text(json.dumps(meta))
    for ex in GeneVideoDataset(ds_dir, infinite=False):
        expect = [True, int(ex["gene_id"]) != 3, True, True]
        assert ex["frame_present"].tolist() == expect


def _signature(examples):
    return [(int(e["gene_id"]), float(e["video"].sum()), float(e["sample_weight"]))
            for e in examples]


def test_reproducible_given_seed_and_epoch(tiny_dataset):
    a = _signature(_epoch(GeneVideoDataset(tiny_dataset, seed=3, infinite=False)))
    b = _signature(_epoch(GeneVideoDataset(tiny_dataset, seed=3, infinite=False)))
    c = _signature(_epoch(GeneVideoDataset(tiny_dataset, seed=4, infinite=False)))
    assert a == b
    assert a != c and sorted(g for g, *_ in a) == sorted(g for g, *_ in c)
    ds = GeneVideoDataset(tiny_dataset, seed=3, infinite=False)
    ds.set_epoch(1)
    assert _signature(_epoch(ds)) != a
    # infinite streams continue with the next epoch: the 2nd lap equals epoch 1
    inf = GeneVideoDataset(tiny_dataset, seed=3)
    n = len(a)
    laps = _signature(itertools.islice(inf, 2 * n))
    assert laps[:n] == a and laps[n:] == _signature(_epoch(ds))


@pytest.mark.parametrize("which", ["one_shard", "four_shards"])
def test_ranks_see_disjoint_genes_covering_all(which, tiny_dataset, sharded_dataset):
    path = tiny_dataset if which == "one_shard" else sharded_dataset
    n = len(load_metadata(path)["genes"])
    seen = []
    for rank in range(2):
        ds = GeneVideoDataset(path, rank=rank, world_size=2, infinite=False, seed=1)
        seen.append({int(e["gene_id"]) for e in ds})
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(range(n))


def test_dataloader_workers_split_genes(sharded_dataset):
    n = len(load_metadata(sharded_dataset)["genes"])
    ds = GeneVideoDataset(sharded_dataset, infinite=False, seed=2)
    loader = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=2)
    ids = [int(g) for batch in loader for g in batch["gene_id"]]
    assert len(ids) == n and set(ids) == set(range(n))  # each gene exactly once
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["video"].shape[:3] == (4, 4, 1)


def test_nnz_sampling_is_unbiased(tiny_dataset):
    meta = load_metadata(tiny_dataset)
    n = len(meta["genes"])
    emitted = np.zeros(n)
    weighted = np.zeros(n)
    nnz = np.zeros(n)
    epochs = 12
    ds = GeneVideoDataset(tiny_dataset, gene_sampling="nnz", sampling_alpha=1.0, infinite=False)
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        for ex in ds:
            g = int(ex["gene_id"])
            emitted[g] += 1
            weighted[g] += float(ex["sample_weight"])
            nnz[g] = float(ex["nnz_fraction"])
    rate = np.clip(nnz / meta["nnz_fraction_mean"], 0.25, 4.0)
    # weights are 1/rate, so each gene's weighted count estimates the number of epochs
    seen = emitted > 0
    assert np.allclose(weighted[seen] / emitted[seen], 1 / rate[seen], rtol=1e-5)
    assert abs(weighted.sum() / (n * epochs) - 1) < 0.15
    dense, sparse = nnz >= np.quantile(nnz, 0.75), nnz <= np.quantile(nnz, 0.25)
    assert emitted[dense].mean() > 2 * emitted[sparse].mean()
    uniform = _epoch(GeneVideoDataset(tiny_dataset, infinite=False))
    assert all(float(e["sample_weight"]) == 1.0 for e in uniform)


def test_spatial_sampling_visits_the_spatially_variable_genes(tiny_dataset, tmp_path):
    import json
    import shutil

    from videogene.data.stream import GENE_SAMPLING
    from videogene.training.config import GENE_SAMPLING as CONFIG_CHOICES

    assert CONFIG_CHOICES is GENE_SAMPLING  # one list, the stream's
    meta = load_metadata(tiny_dataset)
    flags = np.asarray(meta["spatially_variable"], dtype=bool)
    assert flags.any() and not flags.all()  # the tiny atlas has both kinds
    n, epochs = len(flags), 16
    emitted = np.zeros(n)
    ds = GeneVideoDataset(tiny_dataset, gene_sampling="spatial", nonspatial_rate=0.25,
                          infinite=False, seed=3)
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        for ex in ds:
            emitted[int(ex["gene_id"])] += 1
            assert float(ex["sample_weight"]) == 1.0
    assert (emitted[flags] == epochs).all()  # every spatial gene once per epoch
    share = emitted[~flags].sum() / (epochs * (~flags).sum())
    assert 0.1 < share < 0.45  # the others at about nonspatial_rate
    ds1 = GeneVideoDataset(tiny_dataset, gene_sampling="spatial", nonspatial_rate=1.0,
                           infinite=False, seed=3)
    assert sorted(int(e["gene_id"]) for e in _epoch(ds1)) == list(range(n))

    old = tmp_path / "old"
    shutil.copytree(tiny_dataset, old)
    meta_path = old / "videogene_meta.json"
    raw = json.loads(meta_path.read_text())
    raw.pop("spatially_variable")
    meta_path.write_text(json.dumps(raw))
    with pytest.raises(InputError, match="old: gene_sampling 'spatial' needs .*videogene prepare"):
        GeneVideoDataset(old, gene_sampling="spatial")
    meta_path.write_text(json.dumps(dict(raw, spatially_variable=[True, False])))
    with pytest.raises(InputError, match="old: 'spatially_variable' has 2 entries"):
        GeneVideoDataset(old, gene_sampling="spatial")
    with pytest.raises(InputError, match="nonspatial_rate"):
        GeneVideoDataset(tiny_dataset, gene_sampling="spatial", nonspatial_rate=0)


def test_bad_arguments(tiny_dataset, tmp_path):
    with pytest.raises(InputError, match="gene_sampling"):
        GeneVideoDataset(tiny_dataset, gene_sampling="often")
    with pytest.raises(InputError, match="slice_draw"):
        GeneVideoDataset(tiny_dataset, slice_draw="first")
    with pytest.raises(InputError, match="not found"):
        GeneVideoDataset(tmp_path / "missing")
    with pytest.raises(InputError, match="genes not in the dataset"):
        list(read_gene_canvases(tiny_dataset, genes=["NotAGene"]))


@pytest.mark.parametrize("pick", ["one", "across_shards", "reversed", "all"])
def test_reading_some_genes_reads_only_their_row_groups(sharded_dataset, pick, monkeypatch):
    """``read_gene_canvases(genes=...)`` and ``stored_slices`` prune row groups by the
    ``gene_id`` statistics; the canvases equal those of a full pass, in the order asked."""
    import pyarrow.parquet as pq

    from videogene.data import read_gene_canvases, stored_slices

    genes = load_metadata(sharded_dataset)["genes"]
    full = dict(read_gene_canvases(sharded_dataset))
    want = {"one": [genes[13]], "across_shards": [genes[0], genes[25], genes[47]],
            "reversed": genes[::-1][:20], "all": genes}[pick]
    reads: list[int] = []
    real = pq.ParquetFile.read_row_groups

    def counted(self, groups, *args, **kwargs):
        reads.extend(groups)
        return real(self, groups, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_groups", counted)
    got = list(read_gene_canvases(sharded_dataset, genes=want))
    assert [g for g, _ in got] == want
    for g, canv in got:
        np.testing.assert_array_equal(canv, full[g])
    shards = {genes.index(g) // 12 for g in want}
    assert len(reads) == len(shards)  # one row group (12 genes) per shard that holds a wanted gene
    assert list(stored_slices(sharded_dataset, genes=want)) == want


def test_streams_outlive_an_epoch_that_emits_nothing(tiny_dataset):
    """Under `spatial` sampling a shard of genes without spatial signal can draw no visit in an
    epoch; the infinite stream and training's batch stream go on to the next epoch instead of
    ending (or failing) training. A rank whose shard has no gene still fails in one line."""
    import itertools

    from videogene.data import load_metadata
    from videogene.training.stream import batch_stream, build_loader

    flags = np.asarray(load_metadata(tiny_dataset)["spatially_variable"], dtype=bool)
    n = len(flags)
    kw = dict(world_size=n, gene_sampling="spatial", nonspatial_rate=0.2)
    # one gene per rank: a rank whose gene has no spatial signal, a seed whose first epoch is empty
    rank = next(r for r in range(n) if not flags[int(_epoch(GeneVideoDataset(
        tiny_dataset, rank=r, world_size=n, infinite=False))[0]["gene_id"])])
    seed = next(s for s in range(50)
                if not _epoch(GeneVideoDataset(tiny_dataset, rank=rank, infinite=False, seed=s, **kw)))
    ds = GeneVideoDataset(tiny_dataset, rank=rank, seed=seed, **kw)
    assert ds.has_genes(0)
    got = list(itertools.islice(iter(ds), 3))
    assert len(got) == 3
    finite = GeneVideoDataset(tiny_dataset, rank=rank, seed=seed, infinite=False, **kw)
    epochs = [e for e, _ in itertools.islice(batch_stream(build_loader(finite, 1)), 3)]
    assert len(epochs) == 3 and epochs[0] > 0  # epoch 0 emitted nothing
    nobody = GeneVideoDataset(tiny_dataset, rank=n, world_size=n + 1, infinite=False)
    assert not nobody.has_genes(0)
    with pytest.raises(InputError, match="shard yields no batch"):
        next(batch_stream(build_loader(nobody, 1)))
