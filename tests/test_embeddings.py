"""Gene embeddings: scores on hand-checked cases, k-means, neighbours, export, the analysis."""

from __future__ import annotations

import json

import numpy as np
import pytest

from videogene.errors import InputError
from videogene.jobs import embed as J
from videogene.tl import clustering as C
from videogene.tl import embeddings as E
from videogene.tl import scores as S


# ----------------------------------------------------------------------------- scores
def test_ari_hand_checked():
    # sum C(n_ij,2)=1, a: C(2,2)+C(2,2)=2, b: C(2,2)=1, expected=2*1/6, max=1.5 -> (1-1/3)/(1.5-1/3)
    assert S.adjusted_rand_index([0, 0, 1, 1], [0, 0, 1, 2]) == pytest.approx((2 / 3) / (7 / 6))
    # a and b both 2, sum C(n_ij,2) = 0, expected = 4/6 -> (0 - 2/3) / (2 - 2/3) = -0.5
    assert S.adjusted_rand_index([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(-0.5)
    # renaming clusters does not matter; strings work
    assert S.adjusted_rand_index(list("aabbcc"), [5, 5, 3, 3, 9, 9]) == pytest.approx(1.0)
    assert S.adjusted_rand_index([0, 0, 0], [1, 1, 1]) == 1.0


def test_nmi_hand_checked():
    # pred refines true: MI = H(true) = ln 2, H(pred) = 1.5 ln 2 -> ln2 / 1.25 ln2 = 0.8
    assert S.normalized_mutual_info([0, 0, 1, 1], [0, 0, 1, 2]) == pytest.approx(0.8)
    assert S.normalized_mutual_info([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0, abs=1e-12)
    assert S.normalized_mutual_info(list("aabbcc"), [2, 2, 0, 0, 1, 1]) == pytest.approx(1.0)
    assert S.normalized_mutual_info([0, 0, 1, 1], [0, 0, 0, 0]) == pytest.approx(0.0)
    with pytest.raises(InputError, match="labels_pred"):
        S.normalized_mutual_info([0, 1, 2], [0, 1])


def test_knn_precision_hand_checked():
    # Four points on the unit circle: A at 0 and 10 degrees, B at 90 and 100 degrees, plus a
    # B point at 15 degrees, nearest to the A pair.
    ang = np.deg2rad([0, 10, 90, 100, 15])
    x = np.c_[np.cos(ang), np.sin(ang)]
    labels = ["A", "A", "B", "B", "B"]
    score, per = S.knn_precision(x, labels, k=1, return_per_gene=True)
    # nearest: 0->1 (A ok), 1->4 (B, miss), 2->3 ok, 3->2 ok, 4->1 (A, miss)
    np.testing.assert_allclose(per, [1, 0, 1, 1, 0])
    assert score == pytest.approx(0.6)
    # excluding label "A" leaves the three B points, all each other's neighbours
    assert S.knn_precision(x, labels, k=2, exclude=["A"]) == pytest.approx(1.0)
    # chance: A genes (2-1)/4, B genes (3-1)/4 -> (2*0.25 + 3*0.5)/5 = 0.4
    assert S.knn_precision_chance(labels) == pytest.approx(0.4)
    # missing labels are left out, like excluded ones
    score2, per2 = S.knn_precision(x, ["A", "A", "B", "B", None], k=1, return_per_gene=True)
    assert np.isnan(per2[4]) and score2 == pytest.approx(1.0)


def _blobs(n_groups=4, per=10, dim=16, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_groups, dim))
    labels = np.repeat(np.arange(n_groups), per)
    x = centers[labels] + noise * rng.normal(size=(labels.size, dim))
    return x, labels


def test_scores_perfect_and_random():
    x, labels = _blobs()
    assert S.knn_precision(x, labels, k=5) == pytest.approx(1.0)
    assert S.adjusted_rand_index(labels, labels[::-1][::-1]) == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    aris, nmis, knns = [], [], []
    for _ in range(20):
        rand = rng.normal(size=x.shape)
        knns.append(S.knn_precision(rand, labels, k=5))
        perm = rng.permutation(labels)
        aris.append(S.adjusted_rand_index(labels, perm))
        nmis.append(S.normalized_mutual_info(labels, perm))
    chance = S.knn_precision_chance(labels)
    assert chance == pytest.approx(9 / 39)
    assert abs(np.mean(knns) - chance) < 0.06
    assert abs(np.mean(aris)) < 0.05
    assert np.mean(nmis) < 0.25  # NMI is biased upwards for small n, but far from 1


def test_silhouette_hand_checked():
    x = np.array([[0.0], [1.0], [10.0], [11.0]])
    expected = (9.5 / 10.5 + 8.5 / 9.5) / 2
    assert S.silhouette_score(x, [0, 0, 1, 1], metric="euclidean") == pytest.approx(expected)
    with pytest.raises(InputError, match="clusters"):
        S.silhouette_score(x, [0, 0, 0, 0])


def test_nearest_neighbors_excludes_self_and_validates_k():
    x, _ = _blobs(n_groups=2, per=3)
    idx, sim = S.nearest_neighbors(x, 2)
    assert idx.shape == (6, 2) and not (idx == np.arange(6)[:, None]).any()
    assert (np.diff(sim, axis=1) <= 1e-12).all()
    with pytest.raises(InputError, match="k=6"):
        S.nearest_neighbors(x, 6)


# ----------------------------------------------------------------------------- clustering
def test_kmeans_recovers_blobs_and_is_deterministic():
    x, labels = _blobs(n_groups=5, per=8, noise=0.1)
    lab1, inertia1 = C.kmeans(x, 5, seed=3)
    lab2, inertia2 = C.kmeans(x, 5, seed=3)
    np.testing.assert_array_equal(lab1, lab2)
    assert inertia1 == inertia2
    assert S.adjusted_rand_index(labels, lab1) == pytest.approx(1.0)


def test_cluster_picks_k_by_silhouette():
    x, labels = _blobs(n_groups=4, per=10, noise=0.05)
    got, desc = C._cluster(x, n_neighbors=10, seed=0, n_clusters=None)
    if desc["method"] == "kmeans":
        assert desc["n_clusters"] == 4
        assert "silhouette" in desc["k_rule"]
    assert S.adjusted_rand_index(labels, got) == pytest.approx(1.0)
    # clusters renumbered by size: "0" is (one of) the largest
    _, counts = np.unique(got, return_counts=True)
    assert (got == "0").sum() == counts.max()


# ----------------------------------------------------------------------------- model-level
GENES = [f"Gene{i}" for i in range(24)]


@pytest.fixture()
def planted_model():
    import torch

    from videogene.models import model_from_preset

    torch.manual_seed(0)
    model = model_from_preset("tiny", num_genes=len(GENES), sample_size=16, gene_names=GENES)
    with torch.no_grad():
        w = model.gene_embedding.weight
        v = torch.randn(w.shape[1]) * 3.0
        for i in (3, 7, 11):
            w[i] = v + 0.01 * torch.randn(w.shape[1])
    return model


def test_gene_embeddings_from_model(planted_model):
    emb = E.gene_embeddings(planted_model, progress=False)
    table = planted_model.gene_embeddings().numpy()
    assert list(emb.obs_names) == GENES
    np.testing.assert_array_equal(emb.X, table)
    assert emb.obsm["X_pca"].shape[0] == len(GENES) and emb.obsm["X_umap"].shape == (24, 2)
    assert emb.uns["map"]["method"] in ("umap", "pca")
    assert emb.uns["cluster"]["method"] in ("leiden", "kmeans")
    assert emb.obs["cluster"].nunique() >= 2
    # the three planted genes share a cluster
    assert emb.obs["cluster"].iloc[[3, 7, 11]].nunique() == 1


def test_neighbors_of_planted_gene(planted_model):
    emb = E.gene_embeddings(planted_model, progress=False)
    nb = E.neighbors(emb, "Gene3", k=2)
    assert set(nb["gene"]) == {"Gene7", "Gene11"}
    assert (nb["similarity"] > 0.99).all()
    assert list(nb["rank"]) == [1, 2]
    nb10 = E.neighbors(emb, "gene7", k=10)  # case-insensitive match
    assert "Gene7" not in set(nb10["gene"]) and len(nb10) == 10
    assert set(nb10["gene"][:2]) == {"Gene3", "Gene11"}


def test_unknown_gene_lists_close_matches(planted_model):
    emb = E.gene_embeddings(planted_model, progress=False)
    with pytest.raises(InputError, match=r"'Gene100'.*close matches: Gene10"):
        E.neighbors(emb, "Gene100")
    with pytest.raises(InputError, match="not in the embedding"):
        E.neighbors(emb, "Zzz")


def test_bad_model_argument():
    with pytest.raises(InputError, match="model_or_path"):
        E.gene_embeddings(42)


# ----------------------------------------------------------------------------- enrichment
def test_enriched_celltype_constructed(tmp_path):
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    x = np.array([[5, 0, 1, 0], [4, 0, 1, 0], [0, 3, 1, 0], [0, 2, 1, 0], [0, 9, 9, 0]], float)
    obs = pd.DataFrame({"celltype": ["heart", "heart", "brain", "brain", "Low quality"]},
                       index=[f"c{i}" for i in range(5)])
    a = ad.AnnData(sp.csr_matrix(x), obs=obs)
    a.var_names = ["Myh6", "Sox2", "Actb", "Off"]
    path = tmp_path / "toy.h5ad"
    a.write_h5ad(path)
    got = E.enriched_celltype(path, chunk_size=2)
    assert got["Myh6"] == "heart" and got["Sox2"] == "brain"
    assert got["Off"] is None
    # Actb is flat once "Low quality" is dropped: a tie, the first group wins (deterministic)
    assert got["Actb"] == "brain"
    with pytest.raises(InputError, match="no column 'cell_type'"):
        E.enriched_celltype(path, groupby="cell_type")


def test_enriched_celltype_seqfish_markers(seqfish_path):
    got = E.enriched_celltype(seqfish_path)
    assert got["Ttn"] == "Cardiomyocytes"
    assert got["Foxa2"] in ("Definitive endoderm", "Gut tube")
    assert "Low quality" not in set(got.values())


# ----------------------------------------------------------------------------- with a dataset
@pytest.fixture(scope="module")
def dataset_model(tiny_dataset):
    import torch

    from videogene.data import load_metadata
    from videogene.models import model_from_preset

    torch.manual_seed(0)
    genes = list(load_metadata(tiny_dataset)["genes"])
    return model_from_preset("tiny", num_genes=len(genes), sample_size=16, gene_names=genes)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, dataset_model, tiny_dataset):
    from diffusers import DDPMScheduler

    from videogene.pipelines import export_pipeline

    out = tmp_path_factory.mktemp("export") / "export-1"
    export_pipeline(out, unet=dataset_model, scheduler=DDPMScheduler(num_train_timesteps=100),
                    dataset_dir=tiny_dataset, training_config={"data": {"path": str(tiny_dataset)}})
    return out


def test_export_round_trip(export_dir, dataset_model, tiny_dataset, tmp_path):
    import anndata as ad

    emb = E.gene_embeddings(export_dir, progress=False)
    np.testing.assert_array_equal(emb.X, dataset_model.gene_embeddings().numpy())
    assert list(emb.obs_names) == list(dataset_model.config.gene_names)
    # the dataset came from training_config.yaml: statistics are there
    assert emb.uns["dataset"] == str(tiny_dataset)
    assert np.isfinite(emb.obs["nnz_fraction"]).all()
    path = tmp_path / "emb.h5ad"
    emb.write_h5ad(path)
    back = ad.read_h5ad(path)
    np.testing.assert_array_equal(back.X, emb.X)
    assert list(back.obs_names) == list(emb.obs_names)
    for key in emb.obsm:
        np.testing.assert_array_equal(back.obsm[key], emb.obsm[key])
    for col in emb.obs:
        assert back.obs[col].astype(str).tolist() == emb.obs[col].astype(str).tolist()
    assert back.uns["cluster"]["method"] == emb.uns["cluster"]["method"]
    assert back.uns["map"]["method"] == emb.uns["map"]["method"]


def test_statistics_match_canvases(export_dir, tiny_dataset):
    from videogene.data import load_masks, load_metadata, read_gene_canvases

    emb = E.gene_embeddings(export_dir, progress=False)
    meta = load_metadata(tiny_dataset)
    masks = load_masks(tiny_dataset)
    gene, canvas = next(iter(read_gene_canvases(tiny_dataset, genes=[meta["genes"][5]])))
    vals = canvas[masks]
    row = emb.obs.loc[gene]
    assert row["nnz_fraction"] == pytest.approx((vals > 0).mean(), rel=1e-6)
    assert row["mean_expression"] == pytest.approx(vals.mean(), rel=1e-5)
    times = np.array([s["timepoint"] for s in meta["slices"]], float)
    per_t = [canvas[times == t][masks[times == t]].mean() for t in meta["timepoints"]]
    np.testing.assert_allclose(emb.obsm["time_profile"][5], per_t, rtol=1e-5)
    if max(per_t) > 0:
        assert row["peak_timepoint"] == meta["timepoints"][int(np.argmax(per_t))]


def test_synthetic_programs_carried(export_dir, tiny_atlas_path):
    import anndata as ad

    emb = E.gene_embeddings(export_dir, progress=False)
    atlas = ad.read_h5ad(tiny_atlas_path, backed="r")
    var = atlas.var.loc[list(emb.obs_names)]
    atlas.file.close()
    assert emb.obs["program"].astype(int).tolist() == var["program"].astype(int).tolist()
    assert emb.obs["program_kind"].astype(str).tolist() == var["program_kind"].astype(str).tolist()


def test_baseline_embedding_beats_chance(tiny_dataset):
    base = E.baseline_embedding(tiny_dataset, n_components=8, progress=False)
    assert base.X.shape[1] <= 8 and base.uns["embedding"]["kind"] == "baseline_pca"
    assert "program" in base.obs and "cluster" in base.obs
    labels = base.obs["program"].astype(int).astype(str).to_numpy()
    kind = base.obs["program_kind"].astype(str).to_numpy()
    silent = sorted(set(labels[kind == "silent"]))
    # The tiny atlas has ~30 programs for 48 genes (mostly singletons): chance is ~0.01.
    knn = S.knn_precision(base.X, labels, k=3, exclude=silent)
    chance = S.knn_precision_chance(labels, exclude=silent)
    assert knn > 3 * chance, (knn, chance)
    # Genes of one program have correlated patterns: close in the baseline, unlike others.
    keep = kind != "silent"
    sim = S.cosine_similarity(base.X[keep])
    lab = labels[keep]
    same = (lab[:, None] == lab[None, :]) & ~np.eye(lab.size, dtype=bool)
    assert same.any()
    assert sim[same].mean() > sim[lab[:, None] != lab[None, :]].mean() + 0.5


def test_analyze_embeddings_writes_every_file(export_dir, tmp_path):
    import anndata as ad

    emb = E.gene_embeddings(export_dir, progress=False)
    queries = [emb.obs_names[0], emb.obs_names[3]]
    out = tmp_path / "embed"
    res = J.analyze_embeddings(str(export_dir), out, queries=queries, k=4, progress=False)
    for name in ("embeddings.h5ad", "embeddings.tsv", "neighbors.tsv", "gene_map.png",
                 "cluster_time_heatmap.png", "scores.json", "baseline_embeddings.h5ad",
                 "baseline_gene_map.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert set(res["files"]) >= {"embeddings_h5ad", "scores_json", "neighbors_tsv"}
    tsv = (out / "embeddings.tsv").read_text().splitlines()
    assert len(tsv) == emb.n_obs + 1 and len(tsv[1].split("\t")) == emb.n_vars + 1
    nb = (out / "neighbors.tsv").read_text().splitlines()
    assert nb[0].split("\t")[:4] == ["query", "rank", "gene", "similarity"]
    assert len(nb) == 1 + 2 * 4
    sc = json.loads((out / "scores.json").read_text())
    assert sc["labels"] == "program"
    for side in ("learned", "baseline"):
        for key in ("ari", "nmi", "knn_precision", "knn_precision_chance"):
            assert -1.0 <= sc[side][key] <= 1.0
    back = ad.read_h5ad(out / "embeddings.h5ad")
    np.testing.assert_array_equal(back.X, emb.X)
    with pytest.raises(InputError, match="not in the model's genes"):
        J.analyze_embeddings(str(export_dir), tmp_path / "bad", queries=["NoSuchGene"],
                             progress=False)
