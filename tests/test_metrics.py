"""Metric functions against hand-computed values, NaN-safety, and the baselines on constructed data."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from videogene.data import holdout as ho
from videogene.errors import InputError
from videogene.tl import baselines as bl
from videogene.tl import metrics as mt


def _img(values, shape=(2, 3), fill=7.0):
    """Put ``values`` in the first pixels of an image (row-major), the rest = ``fill``; mask them."""
    img = np.full(shape, fill, dtype=np.float64)
    mask = np.zeros(shape, dtype=bool)
    img.flat[: len(values)] = values
    mask.flat[: len(values)] = True
    return img, mask


# ----------------------------------------------------------------------------- metrics
def test_pearson_hand_computed_and_masked():
    x, m = _img([1, 2, 3, 4], fill=100.0)
    y, _ = _img([2, 4, 5, 9], fill=-50.0)
    # dx = [-1.5 -.5 .5 1.5], dy = [-3 -1 0 4]: sum dxdy = 11, sum dx^2 = 5, sum dy^2 = 26
    assert mt.pearson(x, y, m) == pytest.approx(11 / math.sqrt(5 * 26), abs=1e-12)
    assert mt.pearson(x, 2 * x + 1, m) == pytest.approx(1.0)
    assert mt.pearson(x, -x, m) == pytest.approx(-1.0)


def test_spearman_with_ties():
    x, m = _img([1, 2, 2, 3])
    y, _ = _img([1, 3, 2, 4])
    # average ranks x = [1, 2.5, 2.5, 4], y = [1, 3, 2, 4] -> 4.5 / sqrt(4.5 * 5)
    assert mt.spearman(x, y, m) == pytest.approx(4.5 / math.sqrt(4.5 * 5.0), abs=1e-12)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 4, size=(2, 8, 8)).astype(float)
    assert mt.spearman(a, b) == pytest.approx(stats.spearmanr(a.ravel(), b.ravel())[0])


def test_rmse_zero_fraction_wasserstein():
    x, m = _img([1, 2, 3])
    y, _ = _img([1, 1, 1], fill=-3.0)
    assert mt.rmse(x, y, m) == pytest.approx(math.sqrt(5 / 3))
    z, zm = _img([0.0, 0.01, 0.04, 0.05, 1.0], shape=(2, 3), fill=0.0)
    assert mt.zero_fraction(z, zm) == pytest.approx(3 / 5)  # < 0.05 counts as zero
    assert mt.zero_fraction(z, zm, threshold=0.02) == pytest.approx(2 / 5)
    w, _ = _img([0.0, 0.0, 0.0, 2.0, 2.0], fill=0.0)
    # w has 3/5 zeros (as z has): error 0; all-zero prediction: 1 - 3/5; z vs all-2: 3/5 - 0
    assert mt.zero_fraction_error(z, w, zm) == pytest.approx(0.0)
    assert mt.zero_fraction_error(w * 0, w, zm) == pytest.approx(1.0 - 3 / 5)
    assert mt.zero_fraction_error(z, np.full_like(z, 2.0), zm) == pytest.approx(3 / 5)
    a, am = _img([0, 0, 0, 1])
    b, _ = _img([0, 1, 1, 1])
    assert mt.wasserstein(a, b, am) == pytest.approx(0.5)  # sorted pairs differ on 2 of 4 by 1
    c, cm = _img([0, 1])
    d, _ = _img([0, 3])
    assert mt.wasserstein(c, d, cm) == pytest.approx(1.0)


def _ssim_reference(x, y, data_range, sigma=1.5, radius=5):
    """Direct SSIM: explicit normalised Gaussian window, symmetric border, windowed sums."""
    g = np.exp(-(np.arange(-radius, radius + 1) ** 2) / (2 * sigma**2))
    g /= g.sum()
    w = np.outer(g, g)
    xp = np.pad(x, radius, mode="symmetric")
    yp = np.pad(y, radius, mode="symmetric")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    h, wd = x.shape
    s = np.zeros_like(x, dtype=np.float64)
    for i in range(h):
        for j in range(wd):
            px = xp[i : i + 2 * radius + 1, j : j + 2 * radius + 1]
            py = yp[i : i + 2 * radius + 1, j : j + 2 * radius + 1]
            ux, uy = (w * px).sum(), (w * py).sum()
            vx = (w * px * px).sum() - ux**2
            vy = (w * py * py).sum() - uy**2
            cxy = (w * px * py).sum() - ux * uy
            s[i, j] = ((2 * ux * uy + c1) * (2 * cxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return s[radius:-radius, radius:-radius].mean()


def test_ssim_identical_constant_and_reference():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 9, size=(16, 16))
    assert mt.ssim(x, x, data_range=9.0) == pytest.approx(1.0, abs=1e-12)
    # constant images a, b: SSIM = (2ab + C1) / (a^2 + b^2 + C1) (the structure term is 1)
    a, b, c1 = 2.0, 3.0, (0.01 * 9.0) ** 2
    got = mt.ssim(np.full((16, 16), a), np.full((16, 16), b), data_range=9.0)
    assert got == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-9)
    y = np.clip(x + rng.normal(0, 2, size=x.shape), 0, 9)
    assert mt.ssim(x, y, data_range=9.0) == pytest.approx(_ssim_reference(x, y, 9.0), rel=1e-9)
    assert mt.ssim(x, y, data_range=9.0) < 0.9
    assert mt.ssim(np.zeros((16, 16)), np.zeros((16, 16)), data_range=9.0) == pytest.approx(1.0)


def test_constant_images_are_finite_and_warning_free():
    mask = np.ones((8, 8), dtype=bool)
    zero = np.zeros((8, 8))
    pattern = np.arange(64, dtype=float).reshape(8, 8) / 10
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = mt.score_frames(zero, zero, mask, data_range=9.0)
        one_const = mt.score_frames(pattern, zero, mask, data_range=9.0)
        other_const = mt.score_frames(zero, pattern, mask, data_range=9.0)
        diff_const = mt.score_frames(zero + 1.0, zero, mask, data_range=9.0)
    for rec in (same, one_const, other_const, diff_const):
        assert set(rec) == set(mt.METRICS)
        assert all(np.isfinite(v) for v in rec.values()), rec
    assert same["pearson"] == same["spearman"] == 1.0 and same["rmse"] == 0.0
    assert one_const["pearson"] == 0.0 and other_const["spearman"] == 0.0
    assert diff_const["pearson"] == 0.0 and diff_const["rmse"] == pytest.approx(1.0)
    assert diff_const["zero_fraction_error"] == pytest.approx(-1.0)
    # empty mask: NaN (not an exception or a warning), and summaries skip it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty = mt.score_frames(pattern, zero, np.zeros((8, 8), dtype=bool))
        summ = mt.summarize([empty, same])
    assert math.isnan(empty["pearson"]) and math.isnan(empty["rmse"])
    assert summ["pearson"] == {"median": 1.0, "mean": 1.0, "n": 1}


def test_score_frames_masks_outside_and_samples():
    rng = np.random.default_rng(2)
    mask = np.zeros((16, 16), dtype=bool)
    mask[3:13, 2:14] = True
    real = np.where(mask, rng.uniform(0, 5, size=(16, 16)), 0.0)
    # values outside the tissue must not matter
    noisy_outside = np.where(mask, real, 8.0)
    rec = mt.score_frames(noisy_outside, real, mask, data_range=9.0)
    assert rec["pearson"] == pytest.approx(1.0) and rec["rmse"] == pytest.approx(0.0)
    assert rec["ssim"] == pytest.approx(1.0) and rec["wasserstein"] == pytest.approx(0.0)
    samples = real[None] + rng.normal(0, 1.0, size=(6, 16, 16))
    of_mean, per_sample = mt.score_samples(samples, real, mask, data_range=9.0)
    manual = [mt.score_frames(s, real, mask, data_range=9.0) for s in samples]
    assert per_sample["rmse"] == pytest.approx(np.mean([m["rmse"] for m in manual]))
    assert of_mean == mt.score_frames(samples.mean(0), real, mask, data_range=9.0)
    assert of_mean["rmse"] < per_sample["rmse"]  # averaging samples cancels independent noise
    summ = mt.summarize([{"pearson": 0.1}, {"pearson": 0.5}, {"pearson": 0.6}], ["pearson"])
    assert summ["pearson"]["median"] == pytest.approx(0.5)
    assert summ["pearson"]["mean"] == pytest.approx(0.4)


# ----------------------------------------------------------------------------- baselines
def _toy(times=(9.5, 10.5, 11.5, 12.5), per_t=2, res=12):
    """Meta + masks for a toy atlas: ``per_t`` slices per time with slightly different masks."""
    slices, masks = [], []
    for t in times:
        for k in range(per_t):
            m = np.zeros((res, res), dtype=bool)
            m[2 + k : res - 2, 1 : res - 1 - k] = True
            masks.append(m)
            slices.append({"name": f"t{t}_s{k}", "timepoint": t})
    meta = {"timepoints": list(times), "slices": slices, "resolution": res, "value_max": 9.0}
    return meta, np.stack(masks)


def test_linear_interpolation_exact_for_linear_gene():
    meta, masks = _toy()
    res = meta["resolution"]
    yy, xx = np.mgrid[0:res, 0:res]
    pattern = 0.2 + (xx + 2 * yy) / (3 * res)
    times = np.array([s["timepoint"] for s in meta["slices"]])
    canvases = np.where(masks, (0.5 + 0.8 * (times - 9.5))[:, None, None] * pattern, 0.0)
    observed = ho.observed_timepoints(meta, "g", heldout_timepoints=[11.5])
    assert observed == [9.5, 10.5, 12.5]
    ref = 4  # first slice of 11.5
    base = bl.compute_baselines(canvases, masks, meta, 11.5, observed, reference_slice=ref)
    assert set(base) == {"nearest", "linear", "mean_image", "replicate"}
    rec = mt.score_frames(base["linear"], canvases[ref], masks[ref], data_range=9.0)
    assert rec["rmse"] == pytest.approx(0.0, abs=1e-12)
    assert rec["pearson"] == pytest.approx(1.0)
    near = mt.score_frames(base["nearest"], canvases[ref], masks[ref], data_range=9.0)
    assert near["rmse"] > 0.1  # nearest (10.5, the earlier on the tie) is 0.8 * pattern off
    np.testing.assert_allclose(base["nearest"][masks[2] & masks[3]],
                               canvases[2][masks[2] & masks[3]])
    np.testing.assert_array_equal(base["replicate"], canvases[5])
    # the mean image is the covered mean of the three observed time images
    full = masks.all(axis=0)
    expected = np.mean([0.5, 1.3, 2.9]) * pattern
    np.testing.assert_allclose(base["mean_image"][full], expected[full])
    # at the end of the range linear interpolation falls back to nearest
    end = bl.compute_baselines(canvases, masks, meta, 12.5, [9.5, 10.5, 11.5])
    np.testing.assert_array_equal(end["linear"], end["nearest"])
    assert "replicate" not in end
    assert not bl.linear_is_interpolating(12.5, [9.5, 10.5, 11.5])
    assert bl.linear_is_interpolating(11.5, observed)


def test_baseline_given_truth_scores_perfectly():
    meta, masks = _toy()
    res = meta["resolution"]
    rng = np.random.default_rng(3)
    pattern = rng.uniform(0, 4, size=(res, res))
    masks[:] = masks[0]  # same tissue everywhere: the observed frames *are* the truth
    canvases = np.where(masks, pattern, 0.0)
    observed = ho.observed_timepoints(meta, "g", heldout_frames=[["g", 11.5], ["h", 9.5]])
    assert observed == [9.5, 10.5, 12.5]
    base = bl.compute_baselines(canvases, masks, meta, 11.5, observed, reference_slice=4)
    for name, img in base.items():
        rec = mt.score_frames(img, canvases[4], masks[4], data_range=9.0)
        assert rec["pearson"] == pytest.approx(1.0), name
        assert rec["rmse"] == pytest.approx(0.0, abs=1e-12), name
        assert rec["ssim"] == pytest.approx(1.0), name
        assert rec["wasserstein"] == pytest.approx(0.0, abs=1e-12), name


def test_baselines_bad_input():
    meta, masks = _toy()
    canvases = np.zeros(masks.shape)
    with pytest.raises(InputError, match="no observed time point"):
        bl.compute_baselines(canvases, masks, meta, 11.5, [])
    with pytest.raises(InputError, match="differ"):
        bl.compute_baselines(canvases[:3], masks, meta, 11.5, [9.5])
    with pytest.raises(InputError, match="synthetic"):
        bl.synthetic_truth(meta, 11.5, 4, ["g"])


def test_baselines_fill_pixels_a_time_point_does_not_cover():
    meta, masks = _toy()
    masks[:] = masks[0]
    masks[2:4, 5, 5] = False  # both slices of 10.5 miss pixel (5, 5); 9.5 and 12.5 cover it
    times = np.array([s["timepoint"] for s in meta["slices"]])
    canvases = np.where(masks, times[:, None, None], 0.0)  # value = the day, inside tissue
    base = bl.compute_baselines(canvases, masks, meta, 11.5, [9.5, 10.5, 12.5], reference_slice=4)
    assert base["linear"][5, 5] == pytest.approx(12.5)  # only the later neighbour covers it
    assert base["linear"][5, 6] == pytest.approx(11.5)  # both cover: the interpolation
    assert base["nearest"][5, 5] == pytest.approx(12.5)  # 10.5 misses it; next nearest is 12.5
    assert base["nearest"][5, 6] == pytest.approx(10.5)
    assert base["mean_image"][5, 5] == pytest.approx((9.5 + 12.5) / 2)


def test_observed_frame_baselines_leave_the_frame_out():
    meta, masks = _toy()
    masks[:] = masks[0]
    times = np.array([s["timepoint"] for s in meta["slices"]])
    within = np.tile([0.0, 0.5], len(meta["timepoints"]))  # second slice of each time: +0.5
    canvases = np.where(masks, (times + within)[:, None, None], 0.0)
    observed = [9.5, 10.5, 12.5]  # 11.5 held out
    base = bl.observed_frame_baselines(canvases, masks, meta, 10.5, observed, reference_slice=2)
    assert set(base) == {"mean_image", "replicate"}
    m = masks[2]
    # the mean of the *other* observed time images (each the mean of its two slices)
    np.testing.assert_allclose(base["mean_image"][m], (9.75 + 12.75) / 2)
    np.testing.assert_array_equal(base["replicate"], canvases[3])
    # the only observed time point: its own image is all there is
    only = bl.observed_frame_baselines(canvases, masks, meta, 9.5, [9.5], reference_slice=0)
    np.testing.assert_allclose(only["mean_image"][m], 9.75)
    one_slice = {**meta, "slices": meta["slices"][::2]}
    single = bl.observed_frame_baselines(canvases[::2], masks[::2], one_slice, 10.5, observed,
                                         reference_slice=1)
    assert "replicate" not in single
    with pytest.raises(InputError, match="no observed time point"):
        bl.observed_frame_baselines(canvases, masks, meta, 10.5, [], reference_slice=2)
    with pytest.raises(InputError, match="differ"):
        bl.observed_frame_baselines(canvases[:3], masks, meta, 10.5, observed, reference_slice=2)
