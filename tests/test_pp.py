"""videogene.pp: rasterization, alignment, time parsing, normalization."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from scipy import ndimage

from videogene.errors import InputError
from videogene.pp import (
    UNS_KEY,
    apply_alignment,
    densify,
    fit_alignment,
    looks_like_counts,
    normalize_log1p,
    parse_time,
    rasterize,
    rasterize_matrix,
)

SPARSITY = ["dense", "sparse"]


def _fmt(x, kind):
    return sp.csr_matrix(x) if kind == "sparse" else np.asarray(x)


@pytest.mark.parametrize(("value", "expected"), [
    (9.5, 9.5), ("9.5", 9.5), ("E9.5", 9.5), ("E12.5 ", 12.5), (" e10", 10.0), ("P0", 0.0),
    (np.float32(11.5), 11.5), (13, 13.0),
])
def test_parse_time(value, expected):
    assert parse_time(value) == pytest.approx(expected)


@pytest.mark.parametrize("bad", ["abc", "", "E", "nan", "9.5.1"])
def test_parse_time_rejects(bad):
    with pytest.raises(InputError, match="time"):
        parse_time(bad)


@pytest.mark.parametrize("kind", SPARSITY)
def test_normalize_log1p_and_count_detection(kind):
    rng = np.random.default_rng(0)
    counts = rng.poisson(3.0, size=(20, 30)).astype(np.float32)
    counts[3] = 0  # an empty cell stays empty, no division by zero
    x = _fmt(counts, kind)
    assert looks_like_counts(x)
    y = normalize_log1p(x)
    y_dense = y.toarray() if sp.issparse(y) else y
    assert sp.issparse(y) == (kind == "sparse")
    totals = np.expm1(y_dense).sum(axis=1)
    assert np.allclose(totals[np.arange(20) != 3], 1e4, rtol=1e-4)
    assert np.all(y_dense[3] == 0)
    assert not looks_like_counts(_fmt(y_dense, kind))
    assert not looks_like_counts(_fmt((counts > 0).astype(np.float32), kind))  # indicators


def _grid_adata(kind):
    """Four cells: two share the top-left pixel of a 2x2 canvas, two sit alone."""
    coords = np.array([[-0.9, 0.9], [-0.6, 0.6], [0.9, 0.9], [0.9, -0.9]])
    x = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 5.0], [2.0, 2.0]], dtype=np.float32)
    a = ad.AnnData(_fmt(x, kind))
    a.obsm["spatial"] = coords
    ident = {"center": [0.0, 0.0], "rotation": [[1, 0], [0, 1]], "scale": 1.0, "flip": [1, 1]}
    return a, ident


@pytest.mark.parametrize("kind", SPARSITY)
def test_rasterize_mean_per_pixel(kind):
    a, ident = _grid_adata(kind)
    out = rasterize(a, resolution=2, transform=ident, closing=0, copy=True)
    assert UNS_KEY not in a.uns  # copy=True leaves adata alone
    stack = out["stack"]
    assert sp.isspmatrix_csr(stack) and stack.shape == (4, 2) and stack.dtype == np.float32
    img = densify(stack, 2)  # (genes, H, W); row 0 = top
    np.testing.assert_allclose(img[0], [[2.0, 0.0], [0.0, 2.0]])  # mean of 1 and 3 top-left
    np.testing.assert_allclose(img[1], [[0.0, 5.0], [0.0, 2.0]])
    np.testing.assert_array_equal(out["counts"], [[2, 1], [0, 1]])
    np.testing.assert_array_equal(out["mask"], [[True, True], [False, True]])
    assert out["n_cells"] == 4 and out["n_cells_outside"] == 0 and out["n_tissue_pixels"] == 3

    assert rasterize(a, resolution=2, transform=ident, closing=0) is None
    written = a.uns[UNS_KEY]
    assert set(written) >= {"stack", "mask", "transform", "counts", "resolution",
                            "n_cells_outside", "n_tissue_pixels", "n_filled_pixels"}
    assert (written["stack"] != stack).nnz == 0


@pytest.mark.parametrize("kind", SPARSITY)
def test_rasterize_counts_cells_off_canvas(kind):
    a, ident = _grid_adata(kind)
    small = dict(ident, scale=0.5)
    shifted = dict(ident, center=[0.5, 0.0])  # the two left cells move to x < -1
    out = rasterize(a, resolution=2, transform=shifted, closing=0, copy=True)
    assert out["n_cells_outside"] == 2
    assert out["counts"].sum() == 2
    out = rasterize(a, resolution=2, transform=small, closing=0, copy=True)
    assert out["n_cells_outside"] == 0


@pytest.mark.parametrize("kind", SPARSITY)
def test_closing_fills_holes_with_neighbour_mean(kind):
    # a 5x5 block of cells with the centre pixel empty
    res = 5
    pix = [(r, c) for r in range(res) for c in range(res) if (r, c) != (2, 2)]
    coords = np.array([[(c + 0.5) / res * 2 - 1, 1 - (r + 0.5) / res * 2] for r, c in pix])
    vals = np.array([[1.0 + r] for r, _ in pix], dtype=np.float32)
    ident = {"center": [0, 0], "rotation": [[1, 0], [0, 1]], "scale": 1.0, "flip": [1, 1]}
    open_ = rasterize_matrix(_fmt(vals, kind), coords, resolution=res, transform=ident, closing=0)
    closed = rasterize_matrix(_fmt(vals, kind), coords, resolution=res, transform=ident, closing=1)
    assert not open_["mask"][2, 2] and closed["mask"][2, 2]
    assert closed["n_filled_pixels"] == 1 and closed["mask"].sum() == res * res
    img = densify(closed["stack"], res)[0]
    assert img[2, 2] == pytest.approx(3.0)  # mean of rows 1..3 around it: (2*3+3*2+4*3)/8
    np.testing.assert_allclose(img[0], 1.0)


@pytest.mark.parametrize("kind", SPARSITY)
def test_recorded_transform_reapplies(kind, seqfish_path):
    full = ad.read_h5ad(seqfish_path)
    emb = full[full.obs["sample"] == "embryo1"].to_memory()
    emb.X = _fmt(emb.X.toarray(), kind)
    fitted = rasterize(emb, resolution=24, copy=True)
    again = rasterize(emb, resolution=24, transform=fitted["transform"], copy=True)
    assert abs(fitted["stack"] - again["stack"]).max() == 0
    np.testing.assert_array_equal(fitted["mask"], again["mask"])


def _rigid(coords, deg, mirror, shift, scale):
    th = np.deg2rad(deg)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    xy = coords.copy()
    if mirror:
        xy[:, 0] = -xy[:, 0]
    return (xy @ rot.T) * scale + np.asarray(shift)


def test_alignment_is_equivariant():
    rng = np.random.default_rng(1)
    # a skewed, elongated cloud so that axes and flips are well defined
    xy = np.c_[rng.gamma(2.0, 1.0, 3000) * 3, rng.gamma(3.0, 1.0, 3000)]
    base = apply_alignment(xy, fit_alignment(xy))
    for deg, mirror in [(37, False), (180, False), (250, True)]:
        moved = _rigid(xy, deg, mirror, shift=(40, -7), scale=2.5)
        np.testing.assert_allclose(apply_alignment(moved, fit_alignment(moved)), base, atol=1e-6)
    assert np.abs(base).max() == pytest.approx(1 / 1.05)


def _canvas(adata, gene, res, transform=None):
    out = rasterize(adata, resolution=res, transform=transform, copy=True)
    j = adata.var_names.get_loc(gene)
    return ndimage.gaussian_filter(densify(out["stack"][:, [j]], res)[0], 1.0)


@pytest.mark.parametrize("gene", ["Sox2", "Ttn"])
def test_seqfish_embryos_correlate_better_after_alignment(seqfish_path, gene):
    """Embryo 2 turned and mirrored as it could come off another microscope run: the raw
    canvases disagree, the aligned ones agree as well as the original sections do."""
    full = ad.read_h5ad(seqfish_path)
    e1 = full[full.obs["sample"] == "embryo1"].to_memory()
    e2 = full[full.obs["sample"] == "embryo2"].to_memory()
    e2.obsm["spatial"] = _rigid(np.asarray(e2.obsm["spatial"]), 140, True, (3.0, -1.0), 1.0)
    res = 32
    ext = max(np.abs(e1.obsm["spatial"]).max(), np.abs(e2.obsm["spatial"]).max())
    raw = {"center": [0, 0], "rotation": [[1, 0], [0, 1]], "scale": 1 / (1.05 * ext),
           "flip": [1, 1]}
    before = np.corrcoef(_canvas(e1, gene, res, raw).ravel(), _canvas(e2, gene, res, raw).ravel())
    after = np.corrcoef(_canvas(e1, gene, res).ravel(), _canvas(e2, gene, res).ravel())
    assert after[0, 1] > 0.4
    assert after[0, 1] > before[0, 1] + 0.2


@pytest.mark.parametrize("kind", SPARSITY)
def test_synthetic_domain_marker_lands_in_its_domain(kind, tiny_atlas_path):
    atlas = ad.read_h5ad(tiny_atlas_path)
    domain_genes = atlas.var[atlas.var["program_kind"] == "domain"]
    assert len(domain_genes) > 0
    ratios = []
    for name in atlas.obs["slice"].unique()[:4]:
        sl = atlas[atlas.obs["slice"] == name].to_memory()
        sl.X = _fmt(sl.X.toarray(), kind)
        r = rasterize(sl, resolution=16, copy=True)
        tissue = r["mask"].ravel()
        for gene, row in domain_genes.iterrows():
            member = (sl.obs["annotation"] == row["program_name"]).to_numpy(np.float32)
            if member.sum() < 10:
                continue
            dom = rasterize_matrix(member[:, None], sl.obsm["spatial"], resolution=16,
                                   transform=r["transform"])["stack"].toarray().ravel()
            expr = r["stack"][:, sl.var_names.get_loc(gene)].toarray().ravel()
            if expr.sum() == 0:
                continue
            # share of the gene's expression inside its domain vs the domain's share of tissue
            ratios.append((expr * dom).sum() / expr.sum() / dom[tissue].mean())
    assert len(ratios) >= 4
    assert min(ratios) > 1.3
    assert np.median(ratios) > 2.0


def test_rasterize_bad_input():
    a = ad.AnnData(np.ones((3, 2), dtype=np.float32))
    with pytest.raises(InputError, match="obsm"):
        rasterize(a)
    a.obsm["spatial"] = np.array([[0, 0], [1, 1], [np.nan, 0]])
    with pytest.raises(InputError, match="NaN"):
        rasterize(a, copy=True)
    a.obsm["spatial"] = np.array([[0, 0], [1, 1], [2, 0]])
    a.X[0, 0] = -1
    with pytest.raises(InputError, match="negative"):
        rasterize(a, copy=True)
    a.X[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        rasterize(a, copy=True)
    with pytest.raises(InputError, match="layer"):
        rasterize(a, layer="counts", copy=True)
