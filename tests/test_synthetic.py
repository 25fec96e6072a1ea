"""The synthetic atlas: layout, sparsity, programs, determinism, ground truth, CLI errors."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from videogene.cli import main
from videogene.data.synthetic import (
    SynthConfig,
    expected_expression,
    make_atlas,
    redraw_expression,
    write_atlas,
)
from videogene.errors import InputError

SMALL = dict(n_genes=120, timepoints=(9.5, 10.5, 11.5, 12.5), slices_per_timepoint=2,
             bins_per_slice=600, seed=3)


@pytest.fixture(scope="module")
def small_cfg() -> SynthConfig:
    return SynthConfig(**SMALL)


@pytest.fixture(scope="module")
def small_atlas(small_cfg):
    return make_atlas(small_cfg)


@pytest.fixture(scope="module")
def written(tmp_path_factory, small_cfg):
    out = tmp_path_factory.mktemp("synth")
    summary = write_atlas(small_cfg, out, preview=True, progress=False)
    return out, summary


def test_layout_dtype_and_range(small_atlas, small_cfg):
    a = small_atlas
    assert sp.issparse(a.X) and a.X.format == "csr" and a.X.dtype == np.float32
    assert a.X.data.min() > 0 and a.X.data.max() <= 9.0
    assert a.shape[1] == small_cfg.n_genes and a.var_names.is_unique and a.obs_names.is_unique
    assert a.obs["timepoint"].dtype == np.float64
    assert set(a.obs["timepoint"].unique()) == set(small_cfg.timepoints)
    assert a.obsm["spatial"].shape == (a.n_obs, 2) and np.isfinite(a.obsm["spatial"]).all()
    assert set(a.var["program_kind"].astype(str)) <= {
        "domain", "temporal", "gradient", "scattered", "housekeeping", "silent"}
    assert {"domain", "temporal", "gradient", "scattered", "silent"} <= set(
        a.var["program_kind"].astype(str))
    assert (a.var["scale"] > 0).all()
    assert a.var["scale"].max() / a.var["scale"].min() > 100  # orders of magnitude
    assert SynthConfig.from_dict(a.uns["synthetic"]) == small_cfg
    for marker in ("Sox2", "Hba-x", "Col3a1", "Myh6"):
        assert marker in a.var_names
    assert a.var.loc["Hba-x", "program_kind"] == "temporal"
    assert a.obs["annotation"].dtype == "category"
    assert a.obs["annotation"].nunique() >= 4  # several tissue domains visible


def test_zero_fraction_and_normalization(small_atlas, small_cfg):
    a = small_atlas
    zero_fraction = 1.0 - a.X.nnz / (a.n_obs * a.n_vars)
    assert zero_fraction >= 0.85
    # normalize_total + log1p: expm1 of each row sums to target_sum (up to clipping at 9)
    sums = np.asarray(a.X.expm1().sum(axis=1)).ravel()
    clipped = np.asarray((a.X >= 9.0).sum(axis=1)).ravel() > 0
    assert clipped.mean() < 0.01
    assert np.allclose(sums[~clipped], small_cfg.target_sum, rtol=1e-3)


def test_every_timepoint_has_the_slices(small_atlas, small_cfg):
    obs = small_atlas.obs
    per_t = obs.groupby("timepoint")["slice"].nunique()
    assert (per_t == small_cfg.slices_per_timepoint).all()
    names = obs["slice"].astype(str).unique()
    assert len(names) == small_cfg.n_slices and "E12.5_s1" in names
    n_bins = obs.groupby("slice", observed=True).size()
    assert n_bins.min() > 150 and n_bins.nunique() > 1  # different cell counts per slice
    # each slice sits in the same time point only
    assert (obs.groupby("slice", observed=True)["timepoint"].nunique() == 1).all()


def test_programs_covary(small_atlas):
    a = small_atlas
    x = a.X.toarray()
    kind = a.var["program_kind"].astype(str).to_numpy()
    prog = a.var["program"].to_numpy()
    keep = np.isin(kind, ["domain", "temporal", "gradient", "scattered"]) & (x.std(axis=0) > 0)
    c = np.corrcoef(x[:, keep].T)
    p = prog[keep]
    same = p[:, None] == p[None, :]
    off = ~np.eye(len(p), dtype=bool)
    within, between = c[same & off].mean(), c[~same].mean()
    assert (same & off).sum() >= 20
    assert within > between + 0.05 and within > 5 * abs(between)


def _program_mean(a, name: str) -> np.ndarray:
    cols = np.flatnonzero(a.var["program_name"].to_numpy() == name)
    assert len(cols) >= 1
    x = a[:, cols].X.toarray().mean(axis=1)
    t = a.obs["timepoint"].to_numpy()
    return np.array([x[t == tp].mean() for tp in sorted(set(t))])


def test_temporal_programs_change_over_time(small_atlas):
    blood = _program_mean(small_atlas, "embryonic_blood")  # Hba-x: declines after ~E11
    assert blood[0] > 3 * blood[-1]
    mesench = _program_mean(small_atlas, "mesenchyme_rise")  # Col3a1: rises
    assert mesench[-1] > 1.5 * mesench[0]
    hk = _program_mean(small_atlas, "housekeeping")
    assert hk.max() / hk.min() < 1.3


def test_deterministic_from_seed(small_cfg, small_atlas, written):
    again = make_atlas(small_cfg)
    assert (again.X != small_atlas.X).nnz == 0
    assert np.array_equal(again.X.data, small_atlas.X.data)
    assert np.array_equal(again.obsm["spatial"], small_atlas.obsm["spatial"])
    other = make_atlas(SynthConfig(**{**SMALL, "seed": 4}))
    assert other.shape != small_atlas.shape or (other.X != small_atlas.X).nnz > 0
    # the streamed on-disk writer gives the very same matrix as the in-memory builder
    out, _ = written
    disk = ad.read_h5ad(out / "atlas.h5ad")
    assert np.array_equal(disk.X.indptr, small_atlas.X.indptr)
    assert np.array_equal(disk.X.data, small_atlas.X.data)
    assert list(disk.obs_names) == list(small_atlas.obs_names)


def test_write_atlas_outputs(written, small_cfg):
    out, summary = written
    assert (out / "atlas.h5ad").exists() and (out / "atlas_preview.png").stat().st_size > 10_000
    json.dumps(summary)
    disk = ad.read_h5ad(out / "atlas.h5ad", backed="r")
    assert summary["n_cells"] == disk.n_obs and summary["n_genes"] == small_cfg.n_genes
    assert summary["slices"] == small_cfg.n_slices
    assert 0.85 <= summary["zero_fraction"] < 1
    assert disk.obs["annotation"].dtype == "category"
    assert SynthConfig.from_dict(disk.uns["synthetic"]) == small_cfg


def test_expected_expression_matches_atlas_slice(small_atlas, small_cfg, written):
    a = small_atlas
    mask = (a.obs["slice"] == "E11.5_s2").to_numpy()
    obs_x = a.X[mask].toarray()
    for config in (small_cfg, small_cfg.to_dict(), written[0] / "atlas.h5ad"):
        e = expected_expression(config, 11.5, slice_index=1)
        assert e.shape == obs_x.shape and e.X.dtype == np.float32
        assert np.allclose(e.obsm["spatial"], a.obsm["spatial"][mask])
        assert list(e.obs["annotation"]) == list(a.obs["annotation"][mask])
    assert np.corrcoef(obs_x.ravel(), e.X.ravel())[0, 1] > 0.7
    # the default mode is the mean of the observed value: gene means agree closely
    assert np.abs(obs_x.mean(axis=0) - e.X.mean(axis=0)).mean() < 0.1
    rate = expected_expression(small_cfg, 11.5, slice_index=1, mode="rate")
    assert np.corrcoef(rate.X.ravel(), e.X.ravel())[0, 1] > 0.8
    sub = expected_expression(small_cfg, 11.5, slice_index=1, genes=["Hba-x", "Sox2"])
    assert list(sub.var_names) == ["Hba-x", "Sox2"]
    assert np.allclose(sub.X, e[:, ["Hba-x", "Sox2"]].X)


def test_expected_expression_unsampled_time(small_cfg):
    early = expected_expression(small_cfg, 10.0, genes=["Hba-x", "Col3a1"])
    mid = expected_expression(small_cfg, 12.0, genes=["Hba-x", "Col3a1"])
    assert early.n_obs > 100 and early.obs["timepoint"].iloc[0] == 10.0
    assert np.isfinite(mid.X).all() and mid.X.min() >= 0 and mid.X.max() <= 9
    # continuous in time: the blood gene fades and the mesenchyme gene rises between them
    assert early[:, "Hba-x"].X.mean() > 2 * mid[:, "Hba-x"].X.mean()
    assert mid[:, "Col3a1"].X.mean() > early[:, "Col3a1"].X.mean()
    with pytest.raises(InputError, match="unknown gene"):
        expected_expression(small_cfg, 12.0, genes=["NotAGene"])
    with pytest.raises(InputError, match="timepoint"):
        expected_expression(small_cfg, -1.0)


def test_redraw_expression_is_the_atlas_slice_with_new_count_noise(small_atlas, small_cfg):
    a = small_atlas
    mask = (a.obs["slice"] == "E11.5_s2").to_numpy()
    obs_x = a.X[mask].toarray()
    draws = redraw_expression(small_cfg, 11.5, slice_index=1, n_draws=24, seed=5)
    assert len(draws) == 24 and draws[0].shape == obs_x.shape and draws[0].X.dtype == np.float32
    assert np.allclose(draws[0].obsm["spatial"], a.obsm["spatial"][mask])
    x = np.stack([d.X for d in draws])  # (draws, bins, genes)
    assert not np.array_equal(x[0], x[1]) and not np.array_equal(x[0], obs_x)
    # same noise model as the atlas: per-gene means and zero fractions agree with the atlas slice
    assert np.abs(obs_x.mean(axis=0) - x.mean(axis=(0, 1))).mean() < 0.1
    assert np.abs((obs_x == 0).mean() - (x == 0).mean()) < 0.03
    # the mean over draws converges to the noise-free expected expression
    truth = expected_expression(small_cfg, 11.5, slice_index=1).X
    one = np.corrcoef(x[0].ravel(), truth.ravel())[0, 1]
    many = np.corrcoef(x.mean(axis=0).ravel(), truth.ravel())[0, 1]
    assert many > 0.95 and many > one + 0.05
    # reproducible per (seed, draw), and a gene subset is the same draw's columns
    again = redraw_expression(small_cfg, 11.5, slice_index=1, n_draws=2, seed=5,
                              genes=["Sox2", "Hba-x"])
    assert np.array_equal(again[1].X, draws[1][:, ["Sox2", "Hba-x"]].X)
    assert np.array_equal(again[1].obs["total_counts"], draws[1].obs["total_counts"])
    other = redraw_expression(small_cfg, 11.5, slice_index=1, n_draws=1, seed=6)
    assert not np.array_equal(other[0].X, draws[0].X)
    with pytest.raises(InputError, match="n_draws"):
        redraw_expression(small_cfg, 11.5, n_draws=0)
    with pytest.raises(InputError, match="seed must be"):
        redraw_expression(small_cfg, 11.5, seed=-1)
    with pytest.raises(InputError, match="redraw_expression: unknown gene"):
        redraw_expression(small_cfg, 11.5, genes=["NotAGene"])


def test_redraw_on_the_atlas_stream_is_the_atlas_slice(small_atlas, small_cfg, monkeypatch):
    """Pins the redraw's column mapping and normalization: drawn from the atlas's own count
    stream it reproduces the atlas slice exactly (every gene, and an unsorted subset)."""
    import videogene.data.synthetic as synth
    from videogene.data._synth_anatomy import STREAM_COUNTS, STREAM_REDRAW, slice_rng

    def atlas_stream(seed, stream, t, k, *extra):
        if stream == STREAM_REDRAW:  # extras (seed, draw, block): the atlas keys by block only
            return slice_rng(seed, STREAM_COUNTS, t, k, extra[-1])
        return slice_rng(seed, stream, t, k, *extra)

    monkeypatch.setattr(synth, "slice_rng", atlas_stream)
    a = small_atlas
    mask = (a.obs["slice"] == "E11.5_s2").to_numpy()
    same = redraw_expression(small_cfg, 11.5, slice_index=1)[0]
    np.testing.assert_array_equal(same.X, a.X[mask].toarray())
    np.testing.assert_array_equal(same.obs["total_counts"], a.obs["total_counts"][mask])
    sub = redraw_expression(small_cfg, 11.5, slice_index=1, genes=["Sox2", "Hba-x"])[0]
    np.testing.assert_array_equal(sub.X, a[mask][:, ["Sox2", "Hba-x"]].X.toarray())


@pytest.mark.parametrize("kw, match", [
    (dict(n_genes=0), "n_genes"),
    (dict(timepoints=(-1.0, 10.5)), "positive"),
    (dict(timepoints=(10.5, 9.5)), "increasing"),
    (dict(slices_per_timepoint=0), "slices_per_timepoint"),
    (dict(bins_per_slice=10), "bins_per_slice"),
])
def test_config_validation(kw, match):
    with pytest.raises(InputError, match=match):
        SynthConfig(**{**SMALL, **kw})
    with pytest.raises(InputError, match="unknown option"):
        SynthConfig.from_dict({**SynthConfig().to_dict(), "colour": "red"})


@pytest.mark.parametrize("argv, message", [
    (["--genes", "0"], "n_genes"),
    (["--timepoints=-1,10.5"], "positive"),
    (["--slices", "0"], "slices_per_timepoint"),
])
def test_cli_bad_arguments(tmp_path, capsys, argv, message):
    rc = main(["synth", "--out", str(tmp_path / "o"), "--no-preview", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and "error" in err and message in err
    assert not (tmp_path / "o" / "atlas.h5ad").exists()


def test_cli_unknown_option(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["synth", "--out", str(tmp_path), "--frobnicate", "3"])
    assert exc.value.code == 2
    assert "--frobnicate" in capsys.readouterr().err


def test_cli_writes_tiny_atlas(tmp_path, capsys):
    rc = main(["-q", "synth", "--out", str(tmp_path), "--genes", "30", "--timepoints", "9.5,11",
               "--slices", "1", "--bins", "200", "--no-preview"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_genes"] == 30 and summary["timepoints"] == [9.5, 11.0]
    a = ad.read_h5ad(tmp_path / "atlas.h5ad")
    assert a.n_vars == 30 and sorted(a.obs["slice"].astype(str).unique()) == ["E11_s1", "E9.5_s1"]
