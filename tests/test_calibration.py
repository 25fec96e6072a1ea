"""videogene.tl.calibration: agreement of samples, and what a calibrated sampler scores."""

from __future__ import annotations

import numpy as np
import pytest

from videogene.tl.calibration import (
    calibrated_pearson,
    observation_agreement,
    required_posterior_pearson,
    sample_agreement,
)

N = 200_000  # pixels: sampling error of a correlation about 0.002


def _posterior_world(rho: float, draw: float, k: int, seed: int = 0):
    """A Gaussian world of the module docstring, drawn: truth of unit variance, a posterior mean
    correlating ``rho`` with it, ``k`` calibrated samples and one count draw of the truth."""
    rng = np.random.default_rng(seed)
    mean = rng.normal(0.0, rho, N)
    truth = mean + rng.normal(0.0, np.sqrt(1 - rho ** 2), N)
    noise_sd = np.sqrt(1 / draw ** 2 - 1)
    samples = mean + rng.normal(0.0, np.sqrt(1 - rho ** 2), (k, N)) + rng.normal(0, noise_sd, (k, N))
    observed = truth + rng.normal(0.0, noise_sd, N)
    return truth, mean, samples, observed


@pytest.mark.parametrize("rho, draw, k", [(0.83, 0.62, 4), (0.95, 0.62, 4), (0.6, 0.8, 1),
                                           (0.9, 0.4, 8), (1.0, 0.62, 4)])
def test_calibrated_pearson_matches_drawn_samples(rho, draw, k):
    truth, mean, samples, observed = _posterior_world(rho, draw, k)
    r_mean = np.corrcoef(mean, truth)[0, 1]
    r_draw = np.corrcoef(observed, truth)[0, 1]
    actual = np.corrcoef(samples.mean(0), truth)[0, 1]
    assert calibrated_pearson(r_mean, r_draw, k) == pytest.approx(actual, abs=0.01)


def test_calibrated_pearson_edges_and_arrays():
    # a perfect posterior (rho = 1) is the count redraw: 1 / sqrt(1 + n / k)
    assert calibrated_pearson(1.0, 0.5, 4) == pytest.approx(1 / np.sqrt(1 + 3 / 4))
    # noise-free data and a perfect posterior: exact
    assert calibrated_pearson(1.0, 1.0, 1) == pytest.approx(1.0)
    # more samples never hurt, and never beat the posterior mean itself
    vals = calibrated_pearson(0.8, 0.6, np.array([1, 2, 4, 64]))
    assert np.all(np.diff(vals) > 0) and vals[-1] < 0.8
    # every frame gets a value: a negative posterior keeps its sign, no signal in a draw is 0
    out = calibrated_pearson(np.array([0.8, -0.8, 0.0, 0.5, np.nan, 0.5]),
                             np.array([0.6, 0.6, 0.6, 0.0, 0.6, np.nan]), 4)
    assert out[0] > 0 and out[1] == pytest.approx(-out[0]) and out[2] == 0.0 and out[3] == 0.0
    assert np.isnan(out[4:]).all()
    # one sample is never further from 0 than the mean of several, whatever the sign
    for rho in (-0.7, -0.2, 0.3, 0.9):
        assert abs(calibrated_pearson(rho, 0.6, 1)) <= abs(calibrated_pearson(rho, 0.6, 4))


@pytest.mark.parametrize("target, draw, k", [(0.772, 0.62, 4), (0.3, 0.4, 1), (0.9, 0.8, 8)])
def test_required_posterior_pearson_inverts(target, draw, k):
    rho = required_posterior_pearson(target, draw, k)
    assert 0 < rho <= 1
    assert calibrated_pearson(rho, draw, k) == pytest.approx(target)


def test_required_posterior_pearson_out_of_reach():
    # above what the count redraw itself scores, no calibrated sampler gets there
    ceiling = calibrated_pearson(1.0, 0.5, 4)
    assert required_posterior_pearson(ceiling + 0.05, 0.5, 4) > 1.0


@pytest.mark.parametrize("kind", ["calibrated", "over-confident", "too diffuse"])
def test_agreement_tells_calibration(kind):
    rng = np.random.default_rng(1)
    side = 200
    mask = np.ones((side, side), dtype=bool)
    truth, mean, samples, observed = _posterior_world(0.8, 0.9, 6, seed=2)
    if kind == "over-confident":  # the samples share an error the data do not show
        samples = samples + rng.normal(0.0, 0.6, N)
    elif kind == "too diffuse":  # more noise than the data's
        samples = samples + rng.normal(0.0, 1.0, samples.shape)
    shape = (len(samples), side, side)
    s = samples[:, : side * side].reshape(shape)
    o = observed[: side * side].reshape(side, side)
    between, with_data = sample_agreement(s, mask), observation_agreement(s, o, mask)
    if kind == "calibrated":
        assert between == pytest.approx(with_data, abs=0.02)
    elif kind == "over-confident":
        assert between > with_data + 0.05
    else:
        assert between < with_data - 0.05


def test_agreement_small_cases():
    mask = np.zeros((4, 4), dtype=bool)
    mask[1:3, 1:3] = True
    img = np.arange(16, dtype=np.float32).reshape(4, 4)
    same = np.stack([img, img, img])
    assert sample_agreement(same, mask) == pytest.approx(1.0)
    assert observation_agreement(same, img, mask) == pytest.approx(1.0)
    assert observation_agreement(same, -img, mask) == pytest.approx(-1.0)
    assert np.isnan(sample_agreement(same[:1], mask))  # one sample: no pair


def _bench_smoothers():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_smoothers.py"
    spec = importlib.util.spec_from_file_location("bench_smoothers", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_smoothers_blur_and_run(tiny_dataset_holdout, tiny_dataset, capsys):
    bench = _bench_smoothers()
    cover = np.zeros((8, 8), dtype=bool)
    cover[2:6, 1:7] = True
    flat = bench.blur(np.full((8, 8), 3.0), cover, 1.0)
    np.testing.assert_allclose(flat[cover], 3.0)  # a constant stays constant inside the tissue
    assert np.isfinite(flat).all() and flat.min() >= 0  # outside: the nearby tissue's value, or 0
    assert bench.main([str(tiny_dataset_holdout), "--gene-set", "all", "--bandwidths", "1,100",
                       "--sigmas", "0,1", "--no-append"]) == 0
    out = capsys.readouterr().out
    assert "| day means | 100 |" in out and "| held-out real slice | - |" in out
    # the observed days' noise-free truth, smoothed the same way: the ceiling row
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): [float(x) for x in line.split("|")[3:5]]
            for line in out.splitlines() if line.startswith("| ") and "|---" not in line
            and "days' images" not in line}
    clean = rows[(bench.CLEAN, "1")]
    noisy = rows[("reference slices", "1")]
    assert clean[0] > noisy[0]  # unblurred: no count noise beats count noise
    assert "noise-free truth: 0." in out
    # a dataset without a held-out time point is a one-line error, not a traceback
    assert bench.main([str(tiny_dataset), "--no-append"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


@pytest.mark.parametrize("with_truth", [False, True])
def test_sample_calibration_keys(with_truth):
    from videogene.tl.calibration import sample_calibration
    from videogene.tl.heldout import FrameSet

    rng = np.random.default_rng(3)
    mask = np.ones((6, 6), dtype=bool)
    real = [rng.random((6, 6)) for _ in range(3)]
    fs = FrameSet(frames=[("a", 1.0), ("b", 1.0), ("c", 1.0)], real=real, masks=[mask] * 3,
                  reference_slices=[0, 0, 0])
    samples = [r + 0.1 * rng.random((4, 6, 6)) for r in real]
    records = [{"gene": g} for g, _ in fs.frames]
    if with_truth:
        for k, r in enumerate(records):
            r["vs_truth"] = {"model_infill": {"pearson": 0.5 + 0.1 * k},
                             "model_infill_per_sample": {"pearson": 0.3},
                             "model_infill_expected": {"pearson": 0.8},
                             "redraw_per_sample": {"pearson": 0.6}}
    out = sample_calibration(fs, samples, records, ["a", "b"], method="model_infill",
                             expected="model_infill_expected")
    assert out["n_frames"] == 2 and out["n_samples"] == 4  # only the genes asked for
    assert out["sample_agreement"] > 0.9 and out["observation_agreement"] > 0.9
    if not with_truth:  # real data: the agreement only
        assert set(out) == {"n_frames", "n_samples", "sample_agreement", "observation_agreement"}
    else:
        assert out["pearson"] == pytest.approx(0.55)  # median of 0.5, 0.6
        assert out["posterior_mean_pearson"] == pytest.approx(0.8)
        assert out["calibrated_pearson"] == pytest.approx(calibrated_pearson(0.8, 0.6, 4))
        assert out["calibrated_pearson_per_sample"] == pytest.approx(calibrated_pearson(0.8, 0.6, 1))
        assert out["prediction_correlation"] is None  # two frames: no correlation reported
