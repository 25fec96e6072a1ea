"""Bad input ends with one line naming the file or option, exit status 2, and no partial output.

Each case runs the real entry point (``videogene.cli.main`` or ``train.py``) before any compute.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from videogene.cli import main
from videogene.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def _fails(argv, capsys, expected: str, *, absent: Path | None = None) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert expected in lines[0], lines[0]
    if absent is not None:
        assert not absent.exists(), f"{absent} was left behind"
    return lines[0]


@pytest.fixture
def a_file(tmp_path) -> Path:
    f = tmp_path / "not_a_folder"
    f.write_text("x")
    return f


def _zero_cell_h5ad(path: Path) -> Path:
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    a = ad.AnnData(X=sp.csr_matrix((0, 3), dtype=np.float32),
                   obs=pd.DataFrame({"timepoint": np.zeros(0)}, index=pd.Index([], dtype=str)),
                   var=pd.DataFrame(index=["a", "b", "c"]))
    a.obsm["spatial"] = np.zeros((0, 2))
    a.write_h5ad(path)
    return path


def test_prepare_zero_cells(tmp_path, capsys):
    src = _zero_cell_h5ad(tmp_path / "empty.h5ad")
    out = tmp_path / "ds"
    _fails(["prepare", str(src), "--out", str(out)], capsys, "empty.h5ad: has no cells",
           absent=out)


@pytest.mark.parametrize("command", ["prepare", "generate", "evaluate", "embed", "demo"])
def test_output_path_is_a_file(command, a_file, tiny_atlas_path, tiny_export_dir, tiny_dataset,
                               capsys):
    argv = {
        "prepare": ["prepare", str(tiny_atlas_path), "--out", str(a_file)],
        "evaluate": ["evaluate", "--model", str(tiny_export_dir), "--dataset", str(tiny_dataset),
                     "--out", str(a_file)],
        "generate": ["generate", "--model", str(tiny_export_dir), "--gene", "g0", "--out",
                     str(a_file)],
        "embed": ["embed", "--model", str(tiny_export_dir), "--out", str(a_file)],
        "demo": ["demo", "--out", str(a_file)],
    }[command]
    _fails(argv, capsys, f"{a_file}: exists and is not a folder")


def test_output_below_a_file(a_file, tiny_export_dir, capsys):
    _fails(["embed", "--model", str(tiny_export_dir), "--out", str(a_file / "sub")], capsys,
           f"{a_file} is a file, not a folder")


def test_output_not_writable(tmp_path, tiny_export_dir, capsys, monkeypatch):
    import tempfile

    def deny(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", deny)
    out = tmp_path / "gen"
    _fails(["generate", "--model", str(tiny_export_dir), "--gene", "x", "--out", str(out)],
           capsys, "cannot write in", absent=out)


@pytest.mark.parametrize("flag,value,expected", [
    ("--guidance", "-1", "--guidance: must be >= 0"),
    ("--steps", "0", "--steps: must be >= 1"),
    ("--num-samples", "0", "--num-samples: must be >= 1"),
])
def test_generate_bad_sampler_settings(flag, value, expected, tiny_export_dir, tmp_path, capsys):
    out = tmp_path / "gen"
    _fails(["generate", "--model", str(tiny_export_dir), "--gene", "x", flag, value, "--out",
            str(out)], capsys, expected, absent=out)


@pytest.mark.parametrize("flag", ["--guidance", "--infill-guidance"])
def test_evaluate_bad_guidance_names_its_option(flag, tiny_export_dir, tiny_dataset, tmp_path,
                                                 capsys):
    out = tmp_path / "ev"
    _fails(["evaluate", "--model", str(tiny_export_dir), "--dataset", str(tiny_dataset), flag,
            "-1", "--out", str(out)], capsys, f"{flag}: must be >= 0", absent=out)


def test_generate_unknown_gene_leaves_nothing(tiny_export_dir, tmp_path, capsys):
    out = tmp_path / "gen"
    _fails(["generate", "--model", str(tiny_export_dir), "--gene", "NoSuchGene", "--out",
            str(out), "--steps", "2", "--num-samples", "1"], capsys, "NoSuchGene", absent=out)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_generate_cuda_without_cuda(tiny_export_dir, tmp_path, capsys):
    out = tmp_path / "gen"
    _fails(["generate", "--model", str(tiny_export_dir), "--gene", "x", "--device", "cuda",
            "--out", str(out)], capsys, "--device cuda: CUDA is not available", absent=out)


def test_generate_warns_outside_trained_range(tiny_export_dir, tiny_dataset, tmp_path, caplog):
    from videogene.data import load_metadata
    from videogene.jobs import generate_trajectories

    gene = load_metadata(tiny_dataset)["genes"][0]
    with caplog.at_level(logging.WARNING, logger="videogene"):
        generate_trajectories(tiny_export_dir, [gene], [2.0, 10.5, 40.0], tmp_path / "g",
                              num_samples=1, num_inference_steps=1, device="cpu", progress=False)
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert "E2, E40 lie outside the trained range E9.5-E12.5" in msg, msg


@pytest.mark.parametrize("k,expected", [("0", "--k: must be >= 1"),
                                        ("100000", "--k 100000: the model has 48 genes")])
def test_embed_bad_k(k, expected, tiny_export_dir, tmp_path, capsys):
    out = tmp_path / "emb"
    _fails(["embed", "--model", str(tiny_export_dir), "--out", str(out), "--k", k], capsys,
           expected, absent=out)


def test_config_reports_every_unknown_key():
    from videogene.training.config import load_config

    with pytest.raises(InputError) as exc:
        load_config(ROOT / "configs" / "tiny.yaml", ["lerning_rate=1e-4", "max_step=3",
                                                     "model.chanels=4"])
    msg = str(exc.value)
    assert "\n" not in msg
    for key, hint in (("lerning_rate", "learning_rate"), ("max_step", "max_steps"),
                      ("model.chanels", "model.")):
        assert f"'{key}'" in msg and hint in msg, msg
    assert msg.startswith("config: 3 unknown keys")


@pytest.mark.parametrize("override,expected", [
    ("learning_rate=-1", "config learning_rate=-1.0: must be a number > 0"),
    ("adam_beta2=1.5", "config adam_beta2=1.5: must be in [0, 1)"),
    ("max_grad_norm=-0.5", "config max_grad_norm=-0.5: must be >= 0"),
])
def test_train_bad_values_one_line(override, expected, tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config",
                          str(ROOT / "configs" / "tiny.yaml"), "data.path=unused",
                          f"output_dir={tmp_path / 'run'}", override],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == f"train.py: error: {expected}", res.stderr
    assert not (tmp_path / "run").exists()


def test_train_output_dir_is_a_file(a_file, tiny_dataset):
    res = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config",
                          str(ROOT / "configs" / "tiny.yaml"), f"data.path={tiny_dataset}",
                          f"output_dir={a_file}"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert f"config output_dir {a_file}: exists and is not a folder" in res.stderr.strip()
    assert "Traceback" not in res.stderr


def test_unused_slice_column_is_named(tmp_path, caplog):
    import anndata as ad
    import pandas as pd

    from videogene.pp._io import open_input

    rng = np.random.default_rng(0)
    n = 400
    obs = pd.DataFrame({"sample": np.repeat(["embryo1", "embryo2"], n // 2)},
                       index=[f"c{i}" for i in range(n)])
    a = ad.AnnData(X=rng.poisson(1.0, (n, 5)).astype(np.float32), obs=obs,
                   var=pd.DataFrame(index=list("abcde")))
    a.obsm["spatial"] = rng.uniform(0, 100, (n, 2))  # both embryos on the same coordinates
    a.write_h5ad(tmp_path / "two.h5ad")
    with caplog.at_level(logging.WARNING, logger="videogene"):
        f = open_input(tmp_path / "two.h5ad", timepoint=8.5)
    assert len(f.slices) == 1
    assert "pass --slice-key sample" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="videogene"):
        f = open_input(tmp_path / "two.h5ad", timepoint=8.5, slice_key="sample")
    assert len(f.slices) == 2 and "--slice-key" not in caplog.text


def _xyz_h5ad(path: Path) -> Path:
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(1)
    n = 300
    a = ad.AnnData(X=rng.poisson(2.0, (n, 4)).astype(np.float32),
                   obs=pd.DataFrame({"timepoint": 9.5}, index=[f"c{i}" for i in range(n)]),
                   var=pd.DataFrame(index=list("abcd")))
    a.obsm["spatial"] = np.c_[rng.uniform(0, 100, n), rng.uniform(0, 50, n), rng.uniform(0, 9, n)]
    a.write_h5ad(path)
    return path


def test_three_column_coordinates(tmp_path, caplog):
    from videogene.pp._io import open_input

    src = _xyz_h5ad(tmp_path / "xyz.h5ad")
    with caplog.at_level(logging.WARNING, logger="videogene"):
        f = open_input(src)
    assert "has 3 columns; the section plane is columns 0 and 1" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="videogene"):
        g = open_input(src, spatial_axes=(0, 2))
    assert "columns" not in caplog.text
    import anndata as ad

    xyz = ad.read_h5ad(src).obsm["spatial"]
    np.testing.assert_array_equal(f.coords, xyz[:, :2])
    np.testing.assert_array_equal(g.coords, xyz[:, [0, 2]])


@pytest.mark.parametrize("axes,expected", [("0,3", "--spatial-axes 0,3: obsm['spatial'] has 3 columns"),
                                           ("1,1", "--spatial-axes 1,1: obsm['spatial'] has 3 columns"),
                                           ("x", "--spatial-axes 'x': expected two column numbers")])
def test_bad_spatial_axes(axes, expected, tmp_path, capsys):
    src = _xyz_h5ad(tmp_path / "xyz.h5ad")
    out = tmp_path / "ds"
    _fails(["prepare", str(src), "--out", str(out), "--spatial-axes", axes], capsys, expected,
           absent=out)


def test_mixed_precision_no_on_the_command_line():
    from videogene.training.config import load_config

    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["mixed_precision=no", "report_to=none"])
    assert cfg.mixed_precision == "no"
    with pytest.raises(InputError, match="mixed_precision"):
        load_config(ROOT / "configs" / "tiny.yaml", ["mixed_precision=yes"])
