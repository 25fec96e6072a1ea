"""Orientation of slices from expression (issue 9 §1): canvas symmetries folded into transforms,
the chained choice on the synthetic atlas and on seqFISH, and the prepare options."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from scipy import ndimage

from videogene.cli import main
from videogene.data import load_masks, read_gene_canvases
from videogene.data.prepare import prepare_dataset
from videogene.data.synthetic import SynthConfig, write_atlas
from videogene.errors import InputError
from videogene.pp import densify, rasterize, rasterize_matrix
from videogene.pp._align import (
    AXIS_OPS,
    DIHEDRAL_OPS,
    apply_alignment,
    fit_alignment,
    fold_op,
    op_image,
)
from videogene.pp._orient import _order

SPATIAL_KINDS = ("domain", "gradient", "scattered")
# the pairs of the issue: neighbouring days' first slices, and every slice of E12.5-E14.5
# against the first slice of its day
ISSUE_PAIRS = [("E11.5_s1", "E12.5_s1"), ("E14.5_s1", "E15.5_s1")] + [
    (f"E{t:g}_s1", f"E{t:g}_s{k}") for t in (12.5, 13.5, 14.5) for k in (2, 3)]


def _cloud(n=2500, seed=0):
    rng = np.random.default_rng(seed)
    xy = np.c_[rng.gamma(2.0, 1.0, n) * 3, rng.gamma(3.0, 1.0, n)]
    x = sp.random(n, 6, density=0.3, random_state=seed, format="csr", dtype=np.float32)
    return xy, x


# ----------------------------------------------------------------------------- symmetries
@pytest.mark.parametrize("op", list(DIHEDRAL_OPS))
@pytest.mark.parametrize("resolution", [16, 17])
def test_folded_op_reproduces_the_permuted_raster(op, resolution):
    xy, x = _cloud()
    t = fit_alignment(xy)
    folded = fold_op(t, op)
    rot = np.asarray(folded["rotation"])
    assert np.linalg.det(rot) == pytest.approx(1.0) and set(folded["flip"]) <= {-1.0, 1.0}
    # canvas units: exactly M @ u (entries are only permuted and negated)
    m = np.asarray(DIHEDRAL_OPS[op], dtype=float)
    np.testing.assert_array_equal(apply_alignment(xy, folded), apply_alignment(xy, t) @ m.T)
    for closing in (0, 1):
        base = rasterize_matrix(x, xy, resolution=resolution, transform=t, closing=closing)
        turned = rasterize_matrix(x, xy, resolution=resolution, transform=folded, closing=closing)
        np.testing.assert_array_equal(turned["mask"], op_image(base["mask"], op))
        np.testing.assert_array_equal(turned["counts"], op_image(base["counts"], op))
        want = op_image(densify(base["stack"], resolution), op)
        got = densify(turned["stack"], resolution)
        np.testing.assert_array_equal(got, want)


def test_op_image_directions():
    img = np.zeros((4, 4))
    img[1, 3] = 1.0  # right of the centre, slightly up
    assert op_image(img, "flip_x")[1, 0] == 1  # mirrored left-right
    assert op_image(img, "flip_y")[2, 3] == 1  # mirrored top-bottom
    assert op_image(img, "rot90")[0, 1] == 1  # counter-clockwise: right -> top
    assert op_image(img, "rot270")[3, 2] == 1  # clockwise: right -> bottom
    assert op_image(img, "transpose")[0, 2] == 1  # (x, y) -> (y, x)
    for op in DIHEDRAL_OPS:  # every op is a permutation, and the group closes
        assert sorted(op_image(np.arange(16.0).reshape(4, 4), op).ravel()) == list(range(16))
    np.testing.assert_array_equal(op_image(op_image(img, "rot90"), "rot90"), op_image(img, "rot180"))
    with pytest.raises(InputError, match="orientation op"):
        op_image(img, "spin")


def test_chain_order():
    # time 2 has the most slices: it is the anchor; others chain outward from it
    anchor, steps = _order([1, 1, 2, 2, 2, 3], [9, 9, 1, 1, 1, 9], None)
    assert anchor == 2
    assert steps == [(2, []), (3, [2]), (4, [2, 3]), (5, [2, 3, 4]), (0, [2, 3, 4]), (1, [0])]
    # equal slice counts: most cells wins; a given reference decides the anchor
    assert _order([1, 2], [5, 7], None)[0] == 2
    assert _order([1, 1, 2, 2], [5, 5, 1, 1], 3)[1][:2] == [(3, []), (2, [3])]


# ----------------------------------------------------------------------------- synthetic atlas
def _issue_figure(dataset, atlas_path, pairs) -> dict:
    """Mean Pearson over spatial genes (>= 10% non-zero in both slices) on shared tissue."""
    var = ad.read_h5ad(atlas_path, backed="r").var
    genes = [g for g, k in zip(var.index, var["program_kind"].astype(str), strict=True)
             if k in SPATIAL_KINDS]
    masks = load_masks(dataset)
    from videogene.data import load_metadata

    index = {s["name"]: i for i, s in enumerate(load_metadata(dataset)["slices"])}
    canvases = dict(read_gene_canvases(dataset, genes=genes))
    out = {}
    for a, b in pairs:
        i, j = index[a], index[b]
        shared = masks[i] & masks[j]
        rs = []
        for g in genes:
            x = canvases[g]
            if (x[i][masks[i]] > 0).mean() < 0.1 or (x[j][masks[j]] > 0).mean() < 0.1:
                continue
            u, v = x[i][shared], x[j][shared]
            if u.std() > 0 and v.std() > 0:
                rs.append(np.corrcoef(u, v)[0, 1])
        out[(a, b)] = float(np.mean(rs))
    return out


@pytest.fixture(scope="module")
def atlas11(tmp_path_factory):
    """``videogene synth --genes 200 --seed 11``."""
    out = tmp_path_factory.mktemp("atlas11")
    write_atlas(SynthConfig(n_genes=200, seed=11), out, preview=False, progress=False)
    return out / "atlas.h5ad"


def test_synthetic_slices_land_alike(tmp_path, atlas11):
    figures = {}
    for mode in ("moments", "expression"):
        meta = prepare_dataset(atlas11, tmp_path / mode, resolution=32, orientation=mode,
                               progress=False)
        figures[mode] = _issue_figure(tmp_path / mode, atlas11, ISSUE_PAIRS)
    for pair in ISSUE_PAIRS:
        print(f"{pair[0]} vs {pair[1]}: moments {figures['moments'][pair]:+.3f}, "
              f"expression {figures['expression'][pair]:+.3f}")
    assert min(figures["expression"].values()) >= 0.18

    recs = [s["transform"]["orientation"] for s in meta["slices"]]
    assert all(r["method"] == "expression" and r["op"] in AXIS_OPS for r in recs)
    # every day has three slices: the anchor is the day with the most cells
    cells: dict = {}
    for s in meta["slices"]:
        cells[s["timepoint"]] = cells.get(s["timepoint"], 0) + s["n_cells"]
    anchor = max(cells, key=cells.get)
    ref = [s for s, r in zip(meta["slices"], recs, strict=True) if r["reference"] is None]
    assert [s["name"] for s in ref] == [f"E{anchor:g}_s1"] and ref[0]["transform"]["orientation"][
        "op"] == "identity"
    for r in recs:
        if r["reference"] is not None:
            assert r["score"] == max(v for v in r["scores"].values() if v is not None)
    # the recorded transform of a turned slice puts its cells back on exactly its canvas
    turned = next(i for i, r in enumerate(recs) if r["op"] != "identity")
    s = meta["slices"][turned]
    atlas = ad.read_h5ad(atlas11)
    sl = atlas[atlas.obs["slice"] == s["name"]].to_memory()
    r = rasterize(sl, resolution=32, transform=s["transform"], copy=True)
    g = 7
    (_, canvas), = read_gene_canvases(tmp_path / "expression", genes=[meta["genes"][g]])
    np.testing.assert_allclose(canvas[turned], densify(r["stack"][:, [g]], 32)[0], rtol=1e-6)
    np.testing.assert_array_equal(load_masks(tmp_path / "expression")[turned], r["mask"])


# ----------------------------------------------------------------------------- options
def test_reference_slice_anchors_the_chain(tmp_path, tiny_atlas_path):
    meta = prepare_dataset(tiny_atlas_path, tmp_path / "d", resolution=16,
                           reference_slice="E11.5_s2", progress=False)
    recs = {s["name"]: s["transform"]["orientation"] for s in meta["slices"]}
    assert recs["E11.5_s2"]["reference"] is None and recs["E11.5_s2"]["op"] == "identity"
    assert recs["E11.5_s1"]["reference"] == "E11.5_s2"
    assert recs["E12.5_s1"]["reference"] in ("E11.5_s1", "E11.5_s2")
    assert recs["E10.5_s1"]["reference"] in ("E11.5_s1", "E11.5_s2")
    assert recs["E9.5_s1"]["reference"] in ("E10.5_s1", "E10.5_s2")
    assert recs["E9.5_s2"]["reference"] == "E9.5_s1"


def test_bad_reference_slice(tmp_path, tiny_atlas_path, capsys):
    with pytest.raises(InputError, match=r"--reference-slice 'E99_s1': no such slice \(have E9\.5_s1"):
        prepare_dataset(tiny_atlas_path, tmp_path / "d", reference_slice="E99_s1", progress=False)
    rc = main(["prepare", str(tiny_atlas_path), "--out", str(tmp_path / "c"), "--resolution", "16",
               "--reference-slice", "nope"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "'nope'" in err and "E9.5_s1" in err
    assert not (tmp_path / "c" / "videogene_meta.json").exists()
    with pytest.raises(InputError, match="--orientation"):
        prepare_dataset(tiny_atlas_path, tmp_path / "d", orientation="skew", progress=False)
    with pytest.raises(InputError, match="only used with --orientation expression"):
        prepare_dataset(tiny_atlas_path, tmp_path / "d", orientation="moments",
                        reference_slice="E9.5_s1", progress=False)


@pytest.mark.parametrize("mode", ["moments", "none"])
def test_orientation_moments_and_none(tmp_path, tiny_atlas_path, mode):
    rc = main(["-q", "prepare", str(tiny_atlas_path), "--out", str(tmp_path / mode),
               "--resolution", "16", "--orientation", mode])
    assert rc == 0
    from videogene.data import load_metadata

    meta = load_metadata(tmp_path / mode)
    atlas = ad.read_h5ad(tiny_atlas_path)
    for s in meta["slices"]:
        tf = s["transform"]
        assert tf["orientation"] == {"method": mode, "op": "identity", "score": None,
                                     "reference": None}
        xy = np.asarray(atlas.obsm["spatial"])[(atlas.obs["slice"] == s["name"]).to_numpy()]
        fit = fit_alignment(xy, axes="principal" if mode == "moments" else "input")
        np.testing.assert_allclose(tf["rotation"], fit["rotation"])  # the old rule / input axes
        assert tf["flip"] == fit["flip"]
    if mode == "none":
        assert all(s["transform"]["rotation"] == [[1.0, 0.0], [0.0, 1.0]] for s in meta["slices"])


def test_single_slice_has_nothing_to_orient(tmp_path, tiny_atlas_path):
    atlas = ad.read_h5ad(tiny_atlas_path)
    one = atlas[atlas.obs["slice"] == "E10.5_s1"].copy()
    one.write_h5ad(tmp_path / "one.h5ad")
    meta = prepare_dataset(tmp_path / "one.h5ad", tmp_path / "d", resolution=16, progress=False)
    rec = meta["slices"][0]["transform"]["orientation"]
    assert rec["op"] == "identity" and rec["score"] is None and "single slice" in rec["note"]


# ----------------------------------------------------------------------------- seqFISH
def _smoothed_figure(a: np.ndarray, b: np.ndarray, ma: np.ndarray, mb: np.ndarray) -> float:
    """Mean Pearson over genes (>= 10% non-zero in both) of lightly smoothed canvases."""
    shared = ma & mb
    rs = []
    for x, y in zip(a, b, strict=True):
        if (x[ma] > 0).mean() < 0.1 or (y[mb] > 0).mean() < 0.1:
            continue
        u = ndimage.gaussian_filter(x, 1.0)[shared]
        v = ndimage.gaussian_filter(y, 1.0)[shared]
        if u.std() > 0 and v.std() > 0:
            rs.append(np.corrcoef(u, v)[0, 1])
    return float(np.mean(rs))


def test_seqfish_mirrored_turned_embryo_lands_like_embryo1(tmp_path, seqfish_path):
    full = ad.read_h5ad(seqfish_path)
    moved = full.copy()
    xy = np.asarray(moved.obsm["spatial"], dtype=np.float64).copy()
    e2 = (moved.obs["sample"] == "embryo2").to_numpy()
    th = np.deg2rad(140)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    xy[e2] = (xy[e2] * [-1.0, 1.0]) @ rot.T + [3.0, -1.0]  # mirror, turn by 140 degrees, shift
    moved.obsm["spatial"] = xy
    moved.write_h5ad(tmp_path / "moved.h5ad")
    canv, masks, recs = {}, {}, {}
    for name, path in (("orig", seqfish_path), ("moved", tmp_path / "moved.h5ad")):
        meta = prepare_dataset(path, tmp_path / name, slice_key="sample", timepoint=8.5,
                               resolution=32, progress=False)
        assert [s["name"] for s in meta["slices"]] == ["embryo1", "embryo2"]
        recs[name] = meta["slices"][1]["transform"]["orientation"]
        canv[name] = np.stack([c for _, c in read_gene_canvases(tmp_path / name)])  # (g, 2, h, w)
        masks[name] = load_masks(tmp_path / name)
    rec = recs["moved"]
    assert rec["reference"] == "embryo1"
    others = [v for op, v in rec["scores"].items() if op != rec["op"]]
    assert rec["score"] > max(others) + 0.05
    # on the stored canvases too: embryo2 as stored matches embryo1 better than turned any other way
    e1, e2c, m1, m2 = canv["moved"][:, 0], canv["moved"][:, 1], *masks["moved"]
    stored = _smoothed_figure(e1, e2c, m1, m2)
    for op in rec["scores"]:
        if op != "identity":  # identity here = the stored (already turned) canvas
            assert stored > _smoothed_figure(e1, op_image(e2c, op), m1, op_image(m2, op)) + 0.03
    # mirrored and turned input lands where the untouched embryo2 lands
    a, b = canv["orig"][:, 1], canv["moved"][:, 1]
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95
    np.testing.assert_array_equal(masks["orig"][1], masks["moved"][1])
