"""Shared fixtures: a tiny synthetic atlas, its prepared dataset, and the real data in ../shared."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
SEQFISH = SHARED_DATA / "lohoff2022_seqfish_e8.5_embryo1-2.h5ad"
STAHL = SHARED_DATA / "stahl2016_breast_cancer_st_4layers.h5ad"

# Tiny everywhere: 4 time points x 2 slices, 48 genes, a 16x16 canvas.
TINY_SYNTH = dict(n_genes=48, timepoints=(9.5, 10.5, 11.5, 12.5), slices_per_timepoint=2,
                  bins_per_slice=600, seed=0)
TINY_RESOLUTION = 16


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (expected ../shared/data beside the repo)")
    return path


@pytest.fixture(scope="session")
def seqfish_path() -> Path:
    return _need(SEQFISH)


@pytest.fixture(scope="session")
def stahl_path() -> Path:
    return _need(STAHL)


@pytest.fixture(scope="session")
def tiny_synth_config():
    from videogene.data.synthetic import SynthConfig

    return SynthConfig(**TINY_SYNTH)


@pytest.fixture(scope="session")
def tiny_atlas_path(tmp_path_factory, tiny_synth_config) -> Path:
    from videogene.data.synthetic import write_atlas

    out = tmp_path_factory.mktemp("tiny_atlas")
    write_atlas(tiny_synth_config, out, preview=False, progress=False)
    return out / "atlas.h5ad"


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory, tiny_atlas_path) -> Path:
    """The tiny atlas prepared at 16x16, no hold-out."""
    from videogene.data.prepare import prepare_dataset

    out = tmp_path_factory.mktemp("tiny_dataset")
    prepare_dataset([tiny_atlas_path], out, resolution=TINY_RESOLUTION, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_dataset_holdout(tmp_path_factory, tiny_atlas_path) -> Path:
    """The tiny atlas prepared at 16x16 with the interior time point 11.5 held out."""
    from videogene.data.prepare import prepare_dataset

    out = tmp_path_factory.mktemp("tiny_dataset_holdout")
    prepare_dataset([tiny_atlas_path], out, resolution=TINY_RESOLUTION,
                    holdout_timepoints=[11.5], progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_export_dir(tmp_path_factory, tiny_dataset) -> Path:
    """A training output_dir holding one export of a tiny random model (no training)."""
    import torch
    from diffusers import DDPMScheduler

    from videogene.data import load_metadata
    from videogene.models import model_from_preset
    from videogene.pipelines import export_pipeline

    genes = load_metadata(tiny_dataset)["genes"]
    torch.manual_seed(0)
    unet = model_from_preset("tiny", num_genes=len(genes), sample_size=TINY_RESOLUTION,
                             gene_names=genes)
    for p in unet.parameters():  # zero-initialised projections -> random, so genes differ
        if p.ndim > 1 and not p.detach().any():
            torch.nn.init.normal_(p, std=0.1)
    out = tmp_path_factory.mktemp("run")
    export_pipeline(out / "export-5", unet=unet, dataset_dir=tiny_dataset,
                    scheduler=DDPMScheduler(num_train_timesteps=100, prediction_type="sample",
                                            beta_schedule="squaredcos_cap_v2"))
    return out


@pytest.fixture
def one_thread():
    """The test machine's 2 cores are shared; one intra-op thread avoids oversubscription."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
