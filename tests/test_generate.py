"""generate_trajectories, `videogene generate` and tools/generate_trajectory.py (tiny, CPU)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from videogene.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def export_dir(tiny_export_dir):
    return tiny_export_dir


def test_generate_trajectories_one_gene_default_timepoints(export_dir, tiny_dataset, tmp_path):
    import anndata as ad
    import imageio.v3 as iio

    from videogene.data import load_metadata
    from videogene.jobs import generate_trajectories

    meta = load_metadata(tiny_dataset)
    gene = meta["genes"][2]
    summary = generate_trajectories(export_dir, [gene], None, tmp_path / "one", num_samples=2,
                                    num_inference_steps=3, seed=3, device="cpu", progress=False)
    t = len(meta["timepoints"])
    assert summary["shape"] == [1, 2, t, 16, 16]
    assert summary["timepoints"] == meta["timepoints"]
    assert summary["model"].endswith("export-5")
    with np.load(summary["files"]["npz"]) as z:
        traj, masks = z["trajectories"], z["masks"]
        assert traj.shape == (1, 2, t, 16, 16) and traj.dtype == np.float32
        np.testing.assert_allclose(z["mean"], traj.mean(axis=1))
        assert list(z["genes"]) == [gene] and list(z["timepoints"]) == meta["timepoints"]
        assert masks.shape == (t, 16, 16) and (traj[..., ~masks] == 0).all()
    assert len(summary["mean_expression"][gene]) == t
    adata = ad.read_h5ad(summary["files"]["h5ad"])
    assert adata.shape == (2 * int(masks.sum()), 1) and list(adata.var_names) == [gene]
    assert adata.uns["videogene"]["seed"] == 3
    png = iio.imread(summary["files"]["png"])
    assert png.ndim == 3 and png.shape[0] > 200 and png.shape[1] > 400
    (gif,) = summary["files"]["gif"]
    frames = iio.imread(gif, index=None)
    assert frames.shape[0] == t and Path(gif).name == f"trajectory_{gene}.gif"


def test_cli_generate_is_deterministic(export_dir, tiny_dataset, tmp_path, capsys):
    from videogene.cli import main
    from videogene.data import load_metadata

    genes = load_metadata(tiny_dataset)["genes"][:2]
    args = ["generate", "--model", str(export_dir / "export-5"), "--gene", genes[0], "--gene", genes[1],
            "--timepoints", "9.5:10.5:0.5", "--num-samples", "2", "--steps", "2", "--seed", "1",
            "--device", "cpu", "--scheduler", "ddim"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    a = np.load(tmp_path / "a" / "trajectories.npz")["trajectories"]
    b = np.load(tmp_path / "b" / "trajectories.npz")["trajectories"]
    assert a.shape == (2, 2, 3, 16, 16)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[0], a[1])  # the gene matters
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(
        ["trajectories.npz", "trajectories.h5ad", "trajectories.png",
         f"trajectory_{genes[0]}.gif", f"trajectory_{genes[1]}.gif"])
    assert '"sampler": "ddim"' in capsys.readouterr().out


def test_generate_errors(export_dir, tmp_path, capsys):
    from videogene.cli import main
    from videogene.jobs import generate_trajectories

    with pytest.raises(InputError, match="not among the model's 48 genes"):
        generate_trajectories(export_dir, ["Gene_does_not_exist"], [10.0], tmp_path, device="cpu")
    assert main(["generate", "--model", str(tmp_path / "missing"), "--gene", "x",
                 "--out", str(tmp_path / "o")]) == 2
    assert "missing" in capsys.readouterr().err


def test_tool_help():
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "generate_trajectory.py"), "--help"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    for flag in ["--model", "--gene", "--timepoints", "--num-samples", "--steps", "--scheduler",
                 "--out"]:
        assert flag in res.stdout
