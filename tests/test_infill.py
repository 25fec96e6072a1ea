"""Frame-conditioned in-filling through the pipeline: context="observed", arrays, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from videogene.errors import InputError


@pytest.fixture(scope="module")
def pipe(tiny_export_dir):
    from videogene.pipelines import load_pipeline

    return load_pipeline(tiny_export_dir, device="cpu")


def _sample(pipe, genes, times, **kw):
    gen = torch.Generator("cpu").manual_seed(0)
    return pipe(genes, times, num_samples=2, num_inference_steps=2, generator=gen,
                progress=False, guidance_scale=1.0, **kw)


def test_observed_context_returns_observations_and_fills_between(pipe, tiny_dataset):
    from videogene.data import load_masks, load_metadata, read_gene_canvases
    from videogene.data.holdout import reference_slice

    meta = load_metadata(tiny_dataset)
    genes = meta["genes"][:2]
    out = _sample(pipe, genes, [10.5, 11.0], context="observed", dataset=tiny_dataset)
    assert out.trajectories.shape == (2, 2, 2, 16, 16)
    assert out.timepoints == [10.5, 11.0]
    masks = load_masks(tiny_dataset)
    ref = reference_slice(meta, 10.5)
    for g, canv in read_gene_canvases(tiny_dataset, genes=genes):
        gi = genes.index(g)
        want = np.where(masks[ref], canv[ref], 0.0)
        for s in range(2):  # an observed frame is the observation, in every sample
            np.testing.assert_allclose(out.trajectories[gi, s, 0], want, rtol=1e-6)
    # the in-between day is generated: samples differ, and it stays inside its mask
    assert not np.allclose(out.trajectories[:, 0, 1], out.trajectories[:, 1, 1])
    assert (out.trajectories[:, :, 1][:, :, ~out.masks[1]] == 0).all()


def test_context_differs_from_gene_only(pipe, tiny_dataset):
    from videogene.data import load_metadata

    gene = load_metadata(tiny_dataset)["genes"][3]
    with_ctx = _sample(pipe, [gene], [11.0], context="observed", dataset=tiny_dataset)
    alone = _sample(pipe, [gene], [11.0], context="none")
    assert with_ctx.trajectories.shape == alone.trajectories.shape == (1, 2, 1, 16, 16)
    assert not np.allclose(with_ctx.trajectories, alone.trajectories)


def test_array_context_with_nan_frames(pipe):
    times = [9.5, 10.0, 10.5]
    gene = pipe.gene_names[0]
    masks = pipe.masks_for(times)
    ctx = np.full((1, 3, 16, 16), np.nan, dtype=np.float32)
    ctx[0, 0] = np.where(masks[0], 1.5, 0.0)
    out = _sample(pipe, [gene], times, context=ctx, output_type="anndata").trajectories
    info = out.uns["videogene"]
    assert info["context"] == "array" and info["context_frames"] == 1
    first = out[out.obs["timepoint"] == 9.5].X
    first = first.toarray() if hasattr(first, "toarray") else np.asarray(first)
    np.testing.assert_allclose(first.ravel(), 1.5)


@pytest.mark.parametrize("kwargs,expected", [
    ({"context": "everything"}, "context 'everything': expected 'none', 'observed' or an array"),
    ({"context": np.zeros((1, 5, 16, 16))}, "context: expected an array of shape (1, 1, 16, 16)"),
    ({"context": np.full((1, 1, 16, 16), -1.0)}, "context: expression values must be >= 0"),
])
def test_bad_context(pipe, kwargs, expected):
    with pytest.raises(InputError) as exc:
        _sample(pipe, [pipe.gene_names[0]], [10.0], **kwargs)
    assert expected in str(exc.value)


def test_model_without_context_channels(tiny_dataset, tmp_path):
    from diffusers import DDPMScheduler

    from videogene.data import load_metadata
    from videogene.models import model_from_preset
    from videogene.pipelines import VideoGenePipeline

    genes = load_metadata(tiny_dataset)["genes"]
    unet = model_from_preset("tiny", num_genes=len(genes), sample_size=16, gene_names=genes,
                             context_channels=False)
    pipe = VideoGenePipeline(unet, DDPMScheduler(num_train_timesteps=100))
    with pytest.raises(InputError, match="trained without in-filling context"):
        _sample(pipe, [genes[0]], [10.0], context="observed", dataset=tiny_dataset)


def test_observed_context_of_a_day_mean_model(tiny_dataset):
    from diffusers import DDPMScheduler

    from videogene.data import load_masks, load_metadata, read_gene_canvases
    from videogene.data.holdout import reference_slice, slices_by_timepoint, timepoint_image
    from videogene.models import model_from_preset
    from videogene.pipelines import VideoGenePipeline
    from videogene.pipelines.context import observed_context

    meta, masks = load_metadata(tiny_dataset), load_masks(tiny_dataset).astype(bool)
    genes = meta["genes"][:2]
    canv = dict(read_gene_canvases(tiny_dataset, genes=genes))
    by_t = slices_by_timepoint(meta)
    got = {}
    for source in ("slice", "timepoint_mean"):
        unet = model_from_preset("tiny", num_genes=len(meta["genes"]), sample_size=16,
                                 gene_names=meta["genes"], context_source=source)
        pipe = VideoGenePipeline(unet, DDPMScheduler(num_train_timesteps=100))
        cv = got[source] = observed_context(pipe, genes, [10.5], tiny_dataset)
        for gi, g in enumerate(genes):
            for k, t in enumerate(cv.times):
                ref = reference_slice(meta, t)
                img = (canv[g][ref] if source == "slice"
                       else timepoint_image(canv[g], masks, by_t[t])[0])
                assert cv.given[gi, k]
                np.testing.assert_allclose(cv.frames[gi, k], np.where(masks[ref], img, 0),
                                           rtol=1e-6)
    assert not np.allclose(got["slice"].frames, got["timepoint_mean"].frames)
    with pytest.raises(InputError, match="context_source"):
        model_from_preset("tiny", num_genes=4, sample_size=16, context_source="mean")
    with pytest.raises(InputError, match="needs context_channels"):
        model_from_preset("tiny", num_genes=4, sample_size=16, context_channels=False,
                          context_source="timepoint_mean")


def test_observed_context_needs_a_dataset(pipe):
    pipe_source = pipe.source_dir
    try:
        pipe.source_dir = None
        with pytest.raises(InputError, match="pass dataset=DATASET_DIR"):
            _sample(pipe, [pipe.gene_names[0]], [10.0], context="observed")
    finally:
        pipe.source_dir = pipe_source


def test_cli_generate_context_observed(tiny_export_dir, tiny_dataset, tmp_path, capsys):
    import json

    from videogene.cli import main

    out = tmp_path / "gen"
    gene = __import__("videogene.data", fromlist=["load_metadata"]).load_metadata(
        tiny_dataset)["genes"][0]
    assert main(["generate", "--model", str(tiny_export_dir), "--gene", gene, "--timepoints",
                 "10,11", "--num-samples", "1", "--steps", "2", "--context", "observed",
                 "--dataset", str(tiny_dataset), "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["context"] == "observed" and summary["shape"] == [1, 1, 2, 16, 16]
    assert (out / "trajectories.npz").exists()


def test_evaluate_scores_model_infill(tiny_export_dir, tiny_dataset_holdout, tmp_path):
    import json

    from videogene.jobs.evaluate import evaluate_model

    res = evaluate_model(tiny_export_dir, tiny_dataset_holdout, tmp_path / "ev", num_samples=1,
                         num_inference_steps=2, max_genes=4, device="cpu", progress=False,
                         train_frames=False)
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    by_set = metrics["summary"]["by_gene_set"]["all"]["methods"]
    assert {"model", "model_infill", "model_infill_per_sample", "linear"} <= set(by_set)
    assert np.isfinite(by_set["model_infill"]["rmse"]["median"])
    assert "model_infill" in res["headline"]["comparisons"]
    assert metrics["settings"]["infill"] is True
    # the expected expression (one step) of both passes, scored beside the samples
    assert {"model_expected", "model_infill_expected", "model_infill_expected_per_sample"} <= set(by_set)
    assert np.isfinite(by_set["model_infill_expected"]["pearson"]["median"])
    assert metrics["settings"]["expected"] is True
    res2 = evaluate_model(tiny_export_dir, tiny_dataset_holdout, tmp_path / "ev2", num_samples=1,
                          num_inference_steps=2, max_genes=4, device="cpu", progress=False,
                          train_frames=False, infill=False, expected=False)
    assert "model_infill" not in res2["summary"]
    assert "model_expected" not in res2["summary"]


@pytest.mark.parametrize("context, want", [("observed", 1.0), ("none", 2.0)])
def test_guidance_default_depends_on_context(pipe, tiny_dataset, context, want):
    from videogene.data import load_metadata

    gene = load_metadata(tiny_dataset)["genes"][0]
    gen = torch.Generator("cpu").manual_seed(0)
    out = pipe([gene], [11.0], num_samples=1, num_inference_steps=2, generator=gen,
               progress=False, output_type="anndata", context=context, dataset=tiny_dataset)
    assert out.trajectories.uns["videogene"]["guidance_scale"] == want


def test_generate_videos_reads_the_context_once_with_the_same_result(pipe, tiny_dataset_holdout,
                                                                      monkeypatch):
    """The evaluation's in-filled pass reads every gene's observed frames once and passes them
    as arrays: the videos are those of calling the pipeline with context="observed" per chunk."""
    import videogene.pipelines.context as ctx
    from videogene.data import load_masks, load_metadata
    from videogene.data.holdout import reference_slice
    from videogene.tl.heldout import generate_videos

    meta = load_metadata(tiny_dataset_holdout)
    masks = load_masks(tiny_dataset_holdout)
    # requested: an observed day and the held-out one (generated); the context video also spans
    # the other observed days (cv.requested picks the requested frames out of it)
    held = float(meta["holdout"]["timepoints"][0])
    before = max(float(t) for t in meta["timepoints"] if float(t) < held)
    genes, times = list(meta["genes"][:3]), [before, held]
    reads = []
    real = ctx.observed_context
    monkeypatch.setattr(ctx, "observed_context", lambda *a, **k: reads.append(a[1]) or real(*a, **k))
    kw = dict(num_samples=2, num_inference_steps=2, guidance_scale=1.0, batch_size=4, seed=5,
              progress=False)
    videos = generate_videos(pipe, genes, times, masks, meta, context="observed",
                             dataset=tiny_dataset_holdout, **kw)
    assert reads == [genes]  # one read for all genes, not one per chunk of 2
    monkeypatch.setattr(ctx, "observed_context", real)
    video_masks = np.stack([masks[reference_slice(meta, t)] for t in times])
    for c, chunk in enumerate([genes[:2], genes[2:]]):
        out = pipe(chunk, times, num_samples=2, num_inference_steps=2, guidance_scale=1.0,
                   generator=torch.Generator("cpu").manual_seed(5 + c), output_type="np",
                   masks=video_masks, batch_size=4, progress=False, context="observed",
                   dataset=tiny_dataset_holdout)
        for j, g in enumerate(chunk):
            assert videos[g].shape == (2, 2, 16, 16)
            np.testing.assert_allclose(videos[g], out.trajectories[j], rtol=1e-5, atol=1e-6)
            assert not np.allclose(videos[g][0, 1], videos[g][1, 1])  # held-out day: sampled
    with pytest.raises(InputError, match="context 'frames'"):
        generate_videos(pipe, genes, times, masks, meta, context="frames", **kw)
    alone = generate_videos(pipe, genes[:1], times, masks, meta, context=None, **kw)
    none = generate_videos(pipe, genes[:1], times, masks, meta, context="none", **kw)
    np.testing.assert_array_equal(alone[genes[0]], none[genes[0]])  # None means gene only
