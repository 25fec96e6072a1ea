"""The data-initialised gene table (``gene_embedding_init: data``) and the training loop's
package entry points (``videogene train``, old checkpoints, shipped resources)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from videogene.data import load_masks, load_metadata
from videogene.errors import InputError
from videogene.training.gene_init import data_gene_table, init_gene_table


@pytest.fixture(scope="module")
def programs_dataset(tmp_path_factory):
    """160 genes (about 6 per program: kNN against programs means something), 4 days, E11.5 held
    out, one slice per day at 16 x 16 (1-2 s)."""
    from videogene.data.prepare import prepare_dataset
    from videogene.data.synthetic import SynthConfig, write_atlas

    d = tmp_path_factory.mktemp("programs")
    write_atlas(SynthConfig(n_genes=160, timepoints=(9.5, 10.5, 11.5, 12.5), slices_per_timepoint=1,
                            bins_per_slice=600, seed=0), d / "atlas", preview=False, progress=False)
    prepare_dataset([d / "atlas" / "atlas.h5ad"], d / "ds", resolution=16,
                    holdout_timepoints=[11.5], progress=False)
    return d / "ds"


def _programs(meta):
    from videogene.tl.embeddings import _synthetic_programs

    return _synthetic_programs(meta, meta["genes"])["program_name"]


@pytest.mark.parametrize("dim", [4, 16])
def test_table_shape_scale_and_programs(programs_dataset, dim):
    meta = load_metadata(programs_dataset)
    table = data_gene_table(programs_dataset, dim, heldout_timepoints=[11.5], rms=0.5,
                            progress=False)
    assert table.shape == (len(meta["genes"]), dim) and table.dtype == np.float32
    assert np.sqrt((table ** 2).mean()) == pytest.approx(0.5, rel=1e-5)
    # neighbours in the table share their true program far more often than by chance
    scores = _knn(table, meta)
    assert scores["knn_precision"] > 0.3 > 10 * scores["knn_precision_chance"], scores


def test_fewer_components_than_columns_pad_with_zeros(programs_dataset):
    """``components=n`` puts the first n principal components in the first n columns (the same
    directions as a table of width n, so the same cosine neighbours) and zeros after them."""
    narrow = data_gene_table(programs_dataset, 4, heldout_timepoints=[11.5], progress=False)
    wide = data_gene_table(programs_dataset, 12, heldout_timepoints=[11.5], components=4,
                           progress=False)
    assert wide.shape == (narrow.shape[0], 12)
    assert not wide[:, 4:].any()
    assert np.sqrt((wide ** 2).mean()) == pytest.approx(1.0, rel=1e-5)
    ratio = wide[:, :4] / np.where(narrow == 0, 1, narrow)
    np.testing.assert_allclose(ratio[narrow != 0], ratio[narrow != 0].flat[0], rtol=1e-4)
    with pytest.raises(InputError, match="gene_embedding_init_components=13"):
        data_gene_table(programs_dataset, 12, components=13, progress=False)


def test_heldout_frames_do_not_reach_the_table(tiny_dataset_holdout, tmp_path):
    """The table is a function of the training frames only: changing a held-out slice's values
    (here: leaving it out versus keeping it in) must matter only when it is not held out."""
    meta = load_metadata(tiny_dataset_holdout)
    held = data_gene_table(tiny_dataset_holdout, 8, heldout_timepoints=[11.5], progress=False)
    again = data_gene_table(tiny_dataset_holdout, 8, heldout_timepoints=[11.5], progress=False)
    np.testing.assert_array_equal(held, again)  # deterministic
    kept = data_gene_table(tiny_dataset_holdout, 8, heldout_timepoints=[], progress=False)
    assert not np.allclose(held, kept)
    # one (gene, day) frame held out changes that gene's vector only before the PCA
    gene = meta["genes"][0]
    frame = data_gene_table(tiny_dataset_holdout, 8, heldout_timepoints=[11.5],
                            heldout_frames=[(gene, 10.5)], progress=False)
    assert not np.allclose(frame, held)


def _knn(table, meta, k=5):
    import anndata as ad

    from videogene.tl.embeddings import score_embedding

    emb = ad.AnnData(table)
    emb.obs_names = list(meta["genes"])
    return score_embedding(emb, _programs(meta), k=k)


def test_sketch_keeps_the_program_structure(programs_dataset, monkeypatch):
    """Above MAX_EXACT_FLOATS (genes x tissue pixels) the vectors are randomly projected first
    (MOSTA scale: 25,000 genes x ~10^5 pixels): the table's neighbours still find the programs."""
    import videogene.data.features as F

    meta, held = load_metadata(programs_dataset), [11.5]
    exact = _knn(data_gene_table(programs_dataset, 8, heldout_timepoints=held, progress=False),
                 meta)["knn_precision"]
    n_pix = int(np.asarray(load_masks(programs_dataset), dtype=bool).sum())
    monkeypatch.setattr(F, "MAX_EXACT_FLOATS", 1000)
    monkeypatch.setattr(F, "SKETCH_DIM", 128)
    assert n_pix > 128
    sketched = _knn(data_gene_table(programs_dataset, 8, heldout_timepoints=held,
                                    progress=False), meta)["knn_precision"]
    assert sketched >= 0.85 * exact > 0.25, (sketched, exact)
    vectors = F.PatternVectors(meta, load_masks(programs_dataset), meta.genes)
    assert vectors.sketched and vectors.x.shape == (len(meta.genes), 128)


def test_init_gene_table_copies_rows_and_zeroes_the_null_gene(tiny_dataset_holdout):
    from videogene.models import model_from_preset

    meta = load_metadata(tiny_dataset_holdout)
    model = model_from_preset("tiny", num_genes=len(meta["genes"]), sample_size=16)
    init_gene_table(model, tiny_dataset_holdout, heldout_timepoints=[11.5], progress=False)
    table = data_gene_table(tiny_dataset_holdout, model.config.gene_embed_dim,
                            heldout_timepoints=[11.5], progress=False)
    np.testing.assert_allclose(model.gene_embeddings().numpy(), table, rtol=1e-6)
    assert torch.count_nonzero(model.gene_embedding.weight[model.null_gene_id]) == 0


def test_config_rejects_unknown_init():
    from videogene.training.config import load_config

    with pytest.raises(InputError, match="gene_embedding_init='pca'"):
        load_config(None, ["gene_embedding_init=pca"])
    with pytest.raises(InputError, match="gene_embedding_init_rms"):
        load_config(None, ["gene_embedding_init_rms=0"])
    with pytest.raises(InputError, match="gene_embedding_init_components=0"):
        load_config(None, ["gene_embedding_init_components=0"])


def test_old_layout_checkpoint_is_refused(tmp_path):
    from safetensors.torch import save_file

    from videogene.training.checkpointing import check_resumable

    ckpt = tmp_path / "checkpoint-10"
    ckpt.mkdir()
    save_file({"down_layers.0.resnet.conv1.weight": torch.zeros(1)}, str(ckpt / "model.safetensors"))
    with pytest.raises(InputError, match=r"checkpoint-10: written by an older videogene"):
        check_resumable(ckpt)
    save_file({"down_blocks.0.layers.0.resnet.conv1.weight": torch.zeros(1)},
              str(ckpt / "model.safetensors"))
    check_resumable(ckpt)  # the current layout resumes


def test_resources_ship_with_the_package():
    from videogene.training.hub import DEFAULT_TEMPLATE
    from videogene.utils import resource_path

    assert resource_path("configs", "tiny.yaml").is_file()
    assert resource_path("configs", "accelerate", "cpu_2proc.yaml").is_file()
    assert DEFAULT_TEMPLATE.is_file()
    with pytest.raises(InputError, match="not found in the installed videogene"):
        resource_path("configs", "nope.yaml")


@pytest.mark.parametrize("entry", [["-m", "videogene.cli", "train"], ["train.py"]])
def test_train_entry_points_share_the_parser(entry):
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, *(str(root / e) if e.endswith(".py") else e for e in entry)]
    res = subprocess.run([*cmd, "max_stepz=1"], capture_output=True, text=True, cwd=root)
    assert res.returncode == 2
    assert res.stderr.strip().endswith("error: config: unknown key 'max_stepz'; did you mean "
                                       "max_steps, lr_warmup_steps?"), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_baseline_sees_what_the_model_saw(tiny_export_dir, tiny_dataset, tmp_path):
    """Hold-out rules agree: the baseline's pattern vectors leave out the time points that the
    model's training config held out, not only the dataset's recorded hold-out."""
    import shutil

    import yaml

    from videogene.data import load_masks
    from videogene.tl.embeddings import _learned_embeddings

    run = tmp_path / "run"
    shutil.copytree(tiny_export_dir, run)
    (run / "export-5" / "training_config.yaml").write_text(
        yaml.safe_dump({"data": {"holdout_timepoints": [10.5]}}))
    meta, masks = load_metadata(tiny_dataset), load_masks(tiny_dataset)
    _, feats = _learned_embeddings(str(run / "export-5"), dataset=str(tiny_dataset), use_ema=True,
                                   n_neighbors=5, seed=0, n_clusters=2, keep_vectors=True,
                                   progress=False)
    assert feats.holdout["timepoints"] == [10.5]
    kept = [float(s["timepoint"]) != 10.5 for s in meta["slices"]]
    assert feats.vectors.n_pixels == int(masks[np.array(kept)].sum()) < int(masks.sum())
