"""The memorisation canary (videogene/training/canary.py): the model must learn *which gene asks
for which layout*, through the real path (prepare_dataset -> training.loop.main -> load_pipeline).

Eight genes at the same level, each a blob at its own place, five days with the middle one held
out; the tiny preset with configs/tiny.yaml trains for a few hundred steps on CPU. It guards every
later change to the model, the loss and the data path (docs/training.md, "Results log: the model
learns genes"). About 1-2 minutes on 2 shared cores.
"""

from __future__ import annotations

import pytest
import torch

STEPS = 600


@pytest.fixture(scope="module")
def canary(tmp_path_factory):
    from videogene.training.canary import run_canary

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the 2 cores are shared: one intra-op thread is faster
    try:
        return run_canary(tmp_path_factory.mktemp("canary"), steps=STEPS, num_samples=4,
                          num_inference_steps=20, seed=0)
    finally:
        torch.set_num_threads(threads)


def test_canary_data_is_level_free_and_spatial(tmp_path):
    import numpy as np

    from videogene.training.canary import canary_atlas

    adata = canary_atlas()
    x = adata.X.toarray()
    peaks = x.max(axis=0)
    assert adata.n_vars == 8 and peaks.max() / peaks.min() < 1.05  # the level cannot tell genes apart
    corr = np.corrcoef(x.T)
    assert corr[~np.eye(8, dtype=bool)].max() < 0.65  # neighbouring places overlap, no more
    assert sorted(set(adata.obs["timepoint"])) == [10.0, 11.0, 12.0, 13.0, 14.0]


def test_generated_mean_video_picks_its_own_gene(canary):
    assert canary["n_genes"] == 8
    assert canary["top1"] >= 7, canary
    assert canary["own_pearson_mean"] >= 0.7, canary


def test_held_out_day_lands_between_its_neighbours(canary):
    # the generated E12 (never trained) correlates more with the mean of the generated E11 and
    # E13 than those two with each other, and its level lies between theirs for most genes
    assert canary["smooth_gain"] > 0, canary
    assert canary["level_between"] >= 0.75, canary


def test_in_filling_from_the_observed_days(canary):
    # E12 generated with the four observed days as clean context matches the true E12
    assert canary["infill_pearson"] >= 0.8, canary
