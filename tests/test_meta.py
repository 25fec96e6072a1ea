"""videogene.data.meta: the dataset contract (DatasetMeta) and where a dataset lives."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from videogene.data import load_metadata
from videogene.data.meta import DatasetMeta, is_hub_id, resolve_dataset
from videogene.data.units import gene_scales, model_units, to_expression, to_model_units
from videogene.errors import InputError


def test_load_gives_a_typed_dict(tiny_dataset_holdout):
    meta = load_metadata(tiny_dataset_holdout)
    assert isinstance(meta, DatasetMeta) and isinstance(meta, dict)
    assert json.loads(json.dumps(meta)) == dict(meta)  # still the JSON as written
    assert meta.genes == meta["genes"] and meta.gene_index[meta.genes[3]] == 3
    assert meta.timepoints == [float(t) for t in meta["timepoints"]]
    assert meta.resolution == int(meta["resolution"]) and meta.value_max == meta["value_max"]
    assert len(meta.slices) == len(meta["slices"])
    by_t = meta.slices_by_timepoint()
    assert sorted(by_t) == meta.timepoints
    assert all(meta.reference_slice(t) == idx[0] for t, idx in by_t.items())
    spec = meta.holdout_spec({"data": {"holdout_timepoints": [10.5]}})
    assert spec["timepoints"] == [10.5, 11.5]
    assert 11.5 not in meta.observed_timepoints(meta.genes[0], [11.5])


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_units_round_trip_match_the_units_module(tiny_dataset_holdout, kind):
    meta = load_metadata(tiny_dataset_holdout)
    ids = [0, 5, 7]
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 3, size=(3, 4, 16, 16)).astype(np.float32)  # (genes, f, h, w)
    scale = gene_scales(meta)[ids][:, None, None, None]
    want = to_model_units(x, scale, model_units(meta))
    xin = torch.from_numpy(x) if kind == "torch" else x
    got = meta.to_model_units(xin, ids)
    assert type(got) is type(xin)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)
    back = meta.to_expression(got, ids)
    np.testing.assert_allclose(np.asarray(back), to_expression(want, scale, model_units(meta)),
                               rtol=1e-6)


def test_missing_fields_and_bad_files_are_one_line(tmp_path):
    meta = DatasetMeta({"format_version": 1}, source="my_dataset")
    with pytest.raises(InputError, match=r"^my_dataset: the dataset metadata has no 'genes'"):
        _ = meta.genes
    (tmp_path / "videogene_meta.json").write_text('{"format_version": 7}')
    with pytest.raises(InputError, match="format_version 7, expected 1"):
        DatasetMeta.load(tmp_path)
    (tmp_path / "videogene_meta.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="format_version 'list', expected 1"):
        DatasetMeta.load(tmp_path)


@pytest.mark.parametrize("ref, hub", [("user/name", True), ("./user/name", False),
                                      ("/abs/name", False), ("a/b/c", False), ("name", False),
                                      ("user/", False)])
def test_is_hub_id(ref, hub):
    assert is_hub_id(ref) is hub


def test_resolve_dataset_errors(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(InputError, match=r"^config data.path: not set"):
        resolve_dataset("", name="config data.path")
    with pytest.raises(InputError, match="not a folder"):
        resolve_dataset(f)
    with pytest.raises(InputError, match="no such folder$"):
        resolve_dataset(tmp_path / "missing")
    assert resolve_dataset(tmp_path) == tmp_path
