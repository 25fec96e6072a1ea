"""The demo's results page: a verdict in plain words first, then tables and pictures."""

from __future__ import annotations

import pytest

from videogene.jobs.demo import verdict, write_index


def _summary(model_p: float, model_r: float, train_p: float, learned: float) -> dict:
    comp = {"linear": {"pearson": {"model": model_p, "baseline": 0.60,
                                   "outcome": "win" if model_p > 0.60 else "loss", "win_rate": 0.5},
                       "rmse": {"model": model_r, "baseline": 0.20,
                                "outcome": "win" if model_r < 0.20 else "loss", "win_rate": 0.5}},
            "nearest": {"pearson": {"model": model_p, "baseline": 0.50,
                                    "outcome": "win" if model_p > 0.50 else "loss",
                                    "win_rate": 0.5}}}
    return {
        "evaluate": {"heldout_timepoints": [12.5], "headline": {
            "gene_set": "spatial", "against": "truth", "n_genes": 35, "n_frames": 35,
            "methods": {}, "comparisons": {"model": comp},
            "train_frames": {"against": "truth", "n_frames": 70, "methods": {
                "model": {"pearson": train_p}, "mean_image": {"pearson": 0.75}}}}},
        "embed": {"labels": "true programs", "learned": {"knn_precision": learned,
                                                         "knn_precision_chance": 0.031},
                  "baseline": {"knn_precision": 0.37}},
    }


@pytest.mark.parametrize("model_p,model_r,word", [(0.2, 0.30, "loses to"), (0.7, 0.10, "beats"),
                                                  (0.7, 0.30, "is mixed against")])
def test_verdict_states_wins_and_losses(model_p, model_r, word):
    lines = verdict(_summary(model_p, model_r, 0.2, 0.09))
    assert f"<b>model</b> {word} linear interpolation" in lines[0]
    assert "E12.5" in lines[0] and "35 genes of set 'spatial'" in lines[0]
    assert f"median Pearson {model_p:.3f} vs 0.600" in lines[0]
    assert f"median RMSE {model_r:.3f} vs 0.200" in lines[0]
    assert "does not yet reproduce" in lines[1]
    assert "kNN precision@10" in lines[2] and "0.090 vs 0.370" in lines[2] and "worse" in lines[2]


def test_verdict_skipped_evaluation_and_index(tmp_path):
    summary = {"evaluate": {"skipped": "fewer than three time points: nothing to hold out"}}
    assert verdict(summary) == ["No held-out evaluation: fewer than three time points: nothing "
                                "to hold out."]
    (tmp_path / "embed").mkdir()
    for name in ("gene_map.png", "baseline_gene_map.png"):
        (tmp_path / "embed" / name).write_bytes(b"png")
    page = write_index(tmp_path, _summary(0.2, 0.3, 0.6, 0.5)).read_text()
    assert page.index("<h2>Verdict</h2>") < page.index("embed/gene_map.png")
    assert page.index("embed/gene_map.png") < page.index("embed/baseline_gene_map.png")
    assert "it reproduces what it was trained on" in page and "better" in page
    assert "<pre>" not in page  # JSON is linked, not dumped


@pytest.mark.parametrize("has_real", [True, False])
def test_validation_grid_is_labelled(has_real, tmp_path):
    import numpy as np

    from videogene.training.validation import grid_figure, save_grid_png, tile

    genes, times = ["Sox2", "Col3a1"], [9.5, 10.5, 11.5]
    grid = tile(np.random.default_rng(0).random((2 * (1 + has_real), 3, 8, 8)))
    fig = grid_figure(grid, genes, times, has_real=has_real, step=300)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["E9.5", "E10.5", "E11.5"]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    assert rows == (["Sox2 real", "Sox2 generated", "Col3a1 real", "Col3a1 generated"] if has_real
                    else ["Sox2 generated", "Col3a1 generated"])
    assert fig.axes[1].get_ylabel() == "expression / gene scale"
    assert "step 300" in fig._suptitle.get_text()
    assert save_grid_png(grid, tmp_path / "g.png", genes=genes, timepoints=times,
                         has_real=has_real).stat().st_size > 0
