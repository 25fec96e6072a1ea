"""Moran's I (videogene.pp.morans_i / morans_i_sparse) and the spatially variable flag."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from videogene.errors import InputError
from videogene.pp import SPATIAL_THRESHOLD, morans_i, morans_i_sparse
from videogene.pp._spatial import mean_defined

RES = 32


def _patterns(rng) -> dict[str, np.ndarray]:
    yy, xx = np.mgrid[:RES, :RES].astype(float)
    return {
        "checkerboard": (yy + xx) % 2,
        "gradient": xx + 0.5 * yy,
        "blob": np.exp(-((yy - 10) ** 2 + (xx - 20) ** 2) / 40.0),
        "random": rng.random((RES, RES)),
    }


def _disc_mask() -> np.ndarray:
    yy, xx = np.mgrid[:RES, :RES]
    return (yy - RES / 2) ** 2 + (xx - RES / 2) ** 2 < (RES / 2.2) ** 2


@pytest.mark.parametrize("masked", [False, True])
def test_known_patterns(masked):
    pats = _patterns(np.random.default_rng(0))
    mask = _disc_mask() if masked else None
    i = {k: float(morans_i(v, mask)) for k, v in pats.items()}
    assert i["checkerboard"] == pytest.approx(-1.0, abs=1e-9)
    assert i["gradient"] > 0.9 and i["blob"] > 0.8
    assert abs(i["random"]) < 0.08  # expectation -1/(N-1), sd ~ 1/sqrt(2N)


def test_random_fields_centre_on_null_expectation():
    rng = np.random.default_rng(1)
    vals = morans_i(rng.random((200, RES, RES)))  # (200,)
    n = RES * RES
    assert vals.shape == (200,)
    assert abs(vals.mean() - (-1 / (n - 1))) < 0.005
    assert 0.01 < vals.std() < 0.04


def test_undefined_where_constant_and_off_tissue_ignored():
    mask = _disc_mask()
    const = np.where(mask, 3.0, 0.0)
    zero = np.zeros((RES, RES))
    out = morans_i(np.stack([const, zero, np.ones((RES, RES))]), mask)
    assert np.isnan(out).all()
    # values outside the mask change nothing
    g = _patterns(np.random.default_rng(0))["gradient"]
    noisy_outside = np.where(mask, g, np.random.default_rng(2).random((RES, RES)) * 100)
    assert morans_i(noisy_outside, mask) == pytest.approx(morans_i(g, mask))


def test_shapes_broadcast_and_bad_mask():
    rng = np.random.default_rng(0)
    x = rng.random((3, 4, RES, RES))  # (genes, frames, h, w)
    masks = np.stack([_disc_mask()] * 4)  # (frames, h, w)
    out = morans_i(x, masks)
    assert out.shape == (3, 4)
    assert out[1, 2] == pytest.approx(morans_i(x[1, 2], masks[2]))
    with pytest.raises(InputError, match="mask"):
        morans_i(x, np.ones((5, 5), bool))


@pytest.mark.parametrize("density", [0.02, 0.3, 1.0])
def test_sparse_matches_dense(density):
    rng = np.random.default_rng(3)
    mask = _disc_mask()
    pats = _patterns(rng)
    dense = np.stack([pats["gradient"], pats["blob"], pats["checkerboard"], pats["random"],
                      np.zeros((RES, RES)), np.where(mask, 2.0, 0.0)])
    keep = rng.random(dense.shape) < density
    keep[4:] = True
    dense = np.where(keep, dense, 0.0)
    dense[:, ~mask] *= rng.random() < 0.5  # sometimes leave values outside the tissue
    stack = sp.csc_matrix(dense.reshape(len(dense), -1).T)  # (H*W, genes)
    a, b = morans_i(dense, mask), morans_i_sparse(stack, mask)
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True)
    assert np.isnan(b[4:]).all()


def test_mean_defined():
    v = np.array([[0.2, np.nan, np.nan], [0.4, 0.1, np.nan]])
    np.testing.assert_allclose(mean_defined(v), [0.3, 0.1, 0.0])


def _occupied(atlas, meta, keep):
    """Pixels holding cells of each kept slice, from the recorded transform (closing off)."""
    from videogene.pp import rasterize

    return np.stack([
        rasterize(atlas[atlas.obs["slice"] == s["name"]], resolution=meta["resolution"],
                  transform=s["transform"], closing=0, copy=True)["mask"]
        for s, k in zip(meta["slices"], keep) if k])  # (kept slices, h, w)


def test_prepare_writes_spatial_signal_from_training_slices(tiny_atlas_path,
                                                            tiny_dataset_holdout):
    """meta["spatial_signal"] / ["spatial_amplitude"]: Moran's I and amplitude over the pixels
    holding cells (not those filled in by the mask closing), averaged over the training slices
    (the hold-out time point left out); the flag combines them with the dataset's threshold."""
    import anndata as ad

    from videogene.data import load_metadata, read_gene_canvases
    from videogene.pp import spatially_variable
    from videogene.pp._spatial import null_variance, spatial_threshold

    meta = load_metadata(tiny_dataset_holdout)
    atlas = ad.read_h5ad(tiny_atlas_path)
    hold = set(meta["holdout"]["timepoints"])
    train = np.array([s["timepoint"] not in hold for s in meta["slices"]])
    assert 0 < train.sum() < len(train)
    occupied = _occupied(atlas, meta, train)
    sig, amp = zip(*(morans_i(c[train], occupied, amplitude=True)
                     for _, c in read_gene_canvases(tiny_dataset_holdout)))
    np.testing.assert_allclose(meta["spatial_signal"], mean_defined(np.array(sig).T), atol=1e-5)
    np.testing.assert_allclose(meta["spatial_amplitude"], mean_defined(np.array(amp).T), atol=1e-5)
    t = spatial_threshold([null_variance(m) for m in occupied])
    assert meta["spatial_threshold"] == pytest.approx(t) and t >= SPATIAL_THRESHOLD
    want = spatially_variable(meta["spatial_signal"], meta["spatial_amplitude"], threshold=t)
    assert meta["spatially_variable"] == want.tolist()


def test_null_variance_matches_random_fields():
    from videogene.pp._spatial import null_variance, spatial_threshold

    mask = _disc_mask()
    vals = morans_i(np.random.default_rng(4).normal(size=(400, RES, RES)), mask)
    assert null_variance(mask) == pytest.approx(vals.var(), rel=0.2)
    # few small slices raise the bar above the floor, many large ones do not
    assert spatial_threshold([null_variance(mask)] * 2) > SPATIAL_THRESHOLD
    big = np.ones((64, 64), bool)
    assert spatial_threshold([null_variance(big)] * 20) == SPATIAL_THRESHOLD


def test_flag_selects_spatial_not_silent_genes(tiny_atlas_path, tiny_dataset, tiny_synth_config):
    """On the tiny synthetic atlas the flag selects >= 90% of the domain/gradient/scattered genes
    whose layout is visible in the data (noise-free truth: mean Moran's I >= 0.3 and >= 20% of
    the frame variance) and <= 10% of the silent/housekeeping genes."""
    import anndata as ad

    from videogene.data import load_masks, load_metadata, read_gene_canvases
    from videogene.data.synthetic import expected_expression
    from videogene.pp import rasterize
    from videogene.pp._rasterize import densify

    meta = load_metadata(tiny_dataset)
    masks = load_masks(tiny_dataset)
    genes = meta["genes"]
    kinds = ad.read_h5ad(tiny_atlas_path, backed="r").var["program_kind"].astype(str)
    kinds = kinds.reindex(genes).to_numpy()
    data = np.stack([c for _, c in read_gene_canvases(tiny_dataset)])  # (g, slices, h, w)
    truth = np.zeros_like(data)
    seen: dict[float, int] = {}
    for i, s in enumerate(meta["slices"]):
        k = seen.setdefault(s["timepoint"], 0)
        seen[s["timepoint"]] = k + 1
        exp = expected_expression(tiny_synth_config, s["timepoint"], slice_index=k, genes=genes)
        r = rasterize(exp, resolution=meta["resolution"], transform=s["transform"], copy=True)
        truth[:, i] = densify(r["stack"], meta["resolution"]) * masks[i]
    truth_i = mean_defined(morans_i(truth, masks).T)  # (g,)
    tv = np.stack([truth[:, i][:, masks[i]].var(axis=1) for i in range(len(masks))], axis=1)
    dv = np.stack([data[:, i][:, masks[i]].var(axis=1) for i in range(len(masks))], axis=1)
    share = np.median(np.divide(tv, dv, out=np.zeros_like(tv), where=dv > 0), axis=1)
    visible = np.isin(kinds, ["domain", "gradient", "scattered"]) & (truth_i >= 0.3) & (share >= 0.2)
    off = np.isin(kinds, ["silent", "housekeeping"])
    flag = np.array(meta["spatially_variable"])
    assert visible.sum() >= 8 and off.sum() >= 8
    assert flag[visible].mean() >= 0.9
    assert flag[off].mean() <= 0.1
