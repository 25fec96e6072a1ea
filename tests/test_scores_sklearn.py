"""The scikit-learn backed scores, k-means and PCA against known values and plain references."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.special import comb

from videogene.data.features import pca
from videogene.errors import InputError
from videogene.tl import clustering as C
from videogene.tl import scores as S


# ----------------------------------------------------------------------------- references
def _ari_reference(t, p) -> float:
    """Hubert & Arabie's closed form on the contingency table (the former implementation)."""
    table = S.contingency_table(t, p)
    n = int(table.sum())
    sum_comb = comb(table, 2).sum()
    sum_a = comb(table.sum(axis=1), 2).sum()
    sum_b = comb(table.sum(axis=0), 2).sum()
    expected = sum_a * sum_b / comb(n, 2)
    max_index = (sum_a + sum_b) / 2.0
    if max_index == expected:
        return 1.0
    return float((sum_comb - expected) / (max_index - expected))


def _nmi_reference(t, p) -> float:
    table = S.contingency_table(t, p).astype(np.float64)
    pij = table / table.sum()
    pi, pj = pij.sum(axis=1), pij.sum(axis=0)

    def h(q):
        q = q[q > 0]
        return float(-(q * np.log(q)).sum())

    if h(pi) == 0.0 and h(pj) == 0.0:
        return 1.0
    nz = pij > 0
    mi = float((pij[nz] * np.log(pij[nz] / np.outer(pi, pj)[nz])).sum())
    return mi / ((h(pi) + h(pj)) / 2.0)


def _neighbors_reference(x, k):
    """Full cosine-similarity matrix, stable sort (ties in row order); rounding absorbs the
    1e-17 noise that makes mathematically equal similarities differ."""
    sim = np.round(S.cosine_similarity(x), 12)
    np.fill_diagonal(sim, -np.inf)
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


# ----------------------------------------------------------------------------- ARI / NMI
def test_identical_labelings_score_one():
    lab = [0, 0, 1, 1, 2, 2, 2]
    renamed = ["c", "c", "a", "a", "b", "b", "b"]
    for f in (S.adjusted_rand_index, S.normalized_mutual_info):
        assert f(lab, lab) == pytest.approx(1.0)
        assert f(lab, renamed) == pytest.approx(1.0)
        assert isinstance(f(lab, lab), float)


def test_ari_nmi_small_case_by_hand():
    t = [0, 0, 0, 1, 1, 1]
    p = [0, 0, 1, 1, 2, 2]
    # sum C(n_ij,2) = 2; a = 2*C(3,2) = 6; b = 3*C(2,2) = 3; expected = 6*3/C(6,2) = 1.2;
    # max = 4.5 -> (2 - 1.2) / (4.5 - 1.2) = 8/33
    assert S.adjusted_rand_index(t, p) == pytest.approx(8 / 33)
    # MI = 2 * (1/3) ln 2; H(t) = ln 2, H(p) = ln 3 -> (2/3 ln 2) / ((ln 2 + ln 3) / 2)
    assert S.normalized_mutual_info(t, p) == pytest.approx((4 / 3) * math.log(2) / math.log(6))
    # symmetric in its two arguments
    assert S.adjusted_rand_index(p, t) == pytest.approx(8 / 33)
    assert S.normalized_mutual_info(p, t) == pytest.approx(S.normalized_mutual_info(t, p))


def test_ari_nmi_trivial_partitions():
    assert S.adjusted_rand_index([], []) == 1.0
    assert S.adjusted_rand_index([3], [7]) == 1.0
    assert S.adjusted_rand_index([0, 1, 2, 3], [5, 6, 7, 8]) == 1.0  # all singletons, both
    assert S.adjusted_rand_index([0, 0, 0, 0], [0, 1, 2, 3]) == pytest.approx(0.0)
    assert S.normalized_mutual_info([], []) == 1.0
    assert S.normalized_mutual_info([1, 1, 1], [2, 2, 2]) == 1.0
    assert S.normalized_mutual_info([0, 1, 2, 3], [0, 0, 0, 0]) == pytest.approx(0.0)


def test_ari_nmi_match_closed_forms_on_random_labelings():
    rng = np.random.default_rng(0)
    for _ in range(100):
        n = int(rng.integers(2, 60))
        t = rng.integers(0, rng.integers(1, 6), n)
        p = rng.integers(0, rng.integers(1, 8), n)
        assert S.adjusted_rand_index(t, p) == pytest.approx(_ari_reference(t, p), abs=1e-12)
        assert S.normalized_mutual_info(t, p) == pytest.approx(_nmi_reference(t, p), abs=1e-12)


def test_ari_nmi_contingency_validate_input():
    for f in (S.adjusted_rand_index, S.normalized_mutual_info, S.contingency_table):
        with pytest.raises(InputError, match="labels_pred"):
            f([0, 1, 2], [0, 1])
        with pytest.raises(InputError, match="1-D"):
            f([[0, 1], [1, 0]], [[0, 1], [1, 0]])
    table = S.contingency_table(["b", "a", "a", "b"], [1, 1, 0, 0])
    np.testing.assert_array_equal(table, [[1, 1], [1, 1]])
    np.testing.assert_array_equal(S.contingency_table([0, 0, 1], [2, 2, 2]), [[2], [1]])


# ----------------------------------------------------------------------------- neighbours
def test_nearest_neighbors_breaks_ties_by_row_order():
    # rows 1, 2, 5 are zero (similar to nothing), rows 0, 3, 6 point the same way
    x = np.array([[1, 0], [0, 0], [0, 0], [1, 0], [0, 1], [0, 0], [2, 0]], dtype=float)
    idx, sim = S.nearest_neighbors(x, 3)
    np.testing.assert_array_equal(idx[0], [3, 6, 1])
    np.testing.assert_array_equal(idx[1], [0, 2, 3])
    np.testing.assert_allclose(sim[0], [1.0, 1.0, 0.0], atol=1e-12)
    for k in range(1, 7):
        np.testing.assert_array_equal(S.nearest_neighbors(x, k)[0], _neighbors_reference(x, k))


def test_nearest_neighbors_match_full_sort():
    rng = np.random.default_rng(1)
    for _ in range(60):
        n = int(rng.integers(3, 40))
        # small integer coordinates: many exact ties and zero rows
        x = rng.integers(-1, 2, size=(n, int(rng.integers(1, 4)))).astype(float)
        k = int(rng.integers(1, n))
        idx, sim = S.nearest_neighbors(x, k)
        np.testing.assert_array_equal(idx, _neighbors_reference(x, k))
        full = S.cosine_similarity(x)
        np.testing.assert_allclose(sim, np.take_along_axis(full, idx, axis=1), atol=1e-12)
    x = rng.normal(size=(50, 6))
    idx, _ = S.nearest_neighbors(x, 49)
    assert all(sorted(row) == sorted(set(range(50)) - {i}) for i, row in enumerate(idx))


def test_knn_precision_matches_brute_force():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 5))
    labels = rng.integers(0, 4, 40)
    for k in (1, 3, 10):
        nn = _neighbors_reference(x, k)
        expected = (labels[nn] == labels[:, None]).mean()
        assert S.knn_precision(x, labels, k=k) == pytest.approx(expected)


# ----------------------------------------------------------------------------- k-means, PCA
def test_kmeans_labels_inertia_and_validation():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 4))
    lab, inertia = C.kmeans(x, 3, seed=0)
    assert lab.shape == (30,) and lab.dtype.kind == "i" and set(lab) <= {0, 1, 2}
    centres = np.stack([x[lab == c].mean(axis=0) for c in np.unique(lab)])
    own = centres[np.searchsorted(np.unique(lab), lab)]
    assert inertia == pytest.approx(float(((x - own) ** 2).sum()), rel=1e-9)
    # every point is its own cluster when k == n
    lab_n, inertia_n = C.kmeans(x[:5], 5, seed=0)
    assert len(set(lab_n)) == 5 and inertia_n == pytest.approx(0.0, abs=1e-12)
    for bad in (0, 31):
        with pytest.raises(InputError, match="k="):
            C.kmeans(x, bad)
    # fewer distinct points than k: no warning escapes
    dup = np.repeat(x[:2], 5, axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        C.kmeans(dup, 3, seed=0)


def _pca_reference(x, c):
    xc = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    pcs = u[:, :c] * s[:c]
    signs = np.sign(pcs[np.abs(pcs).argmax(axis=0), np.arange(c)])
    return pcs * signs, s[:c] ** 2 / (xc * xc).sum()


@pytest.mark.parametrize("shape", [(40, 6), (12, 200)])  # tall, and wide (d > 4n)
def test_pca_matches_svd_with_fixed_signs(shape):
    rng = np.random.default_rng(4)
    x = rng.normal(size=shape) @ np.diag(np.linspace(3, 0.5, shape[1]))
    pcs, ratio = pca(x, 5)
    ref, ref_ratio = _pca_reference(x, 5)
    assert pcs.shape == (shape[0], 5) and pcs.dtype == np.float32
    np.testing.assert_allclose(pcs, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ratio, ref_ratio, rtol=1e-9)
    # the sign convention: the largest |score| of every component is positive
    assert (pcs[np.abs(pcs).argmax(axis=0), np.arange(5)] > 0).all()
    # flipping the input's sign does not flip the result
    np.testing.assert_allclose(pca(-x, 5)[0], pcs, rtol=1e-4, atol=1e-4)


def test_pca_caps_components_and_handles_degenerate_input():
    rng = np.random.default_rng(5)
    pcs, ratio = pca(rng.normal(size=(6, 3)), 50)
    assert pcs.shape == (6, 3) and ratio.sum() == pytest.approx(1.0)
    pcs, ratio = pca(rng.normal(size=(4, 10)), 50)
    assert pcs.shape == (4, 3) and ratio.sum() == pytest.approx(1.0)
    pcs, ratio = pca(np.ones((5, 3)), 2)  # no variance at all
    assert pcs.shape == (5, 2) and not pcs.any() and not ratio.any()
    pcs, ratio = pca(np.ones((1, 3)), 2)
    assert pcs.shape == (1, 1) and not pcs.any()
