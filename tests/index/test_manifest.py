"""manifest.json contents, config hashing and model/kind/dim checks on open."""
from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import numpy as np
import pytest

from tipsv2_sdk.errors import TipsV2Error
from tipsv2_sdk.index import (
    GlobalIndex,
    IndexFormatError,
    IndexMismatchError,
    IndexNotFoundError,
    PatchIndex,
    config_hash,
    read_manifest,
)
from tipsv2_sdk.index.manifest import FORMAT_VERSION, check_model, model_identity


def _other_model(model, **changes):
    """A stand-in model whose config differs from ``model`` in ``changes`` (vision config)."""
    config = copy.deepcopy(model.config)
    for key, value in changes.items():
        setattr(config.vision_config, key, value)
    return SimpleNamespace(name=model.name, embed_dim=model.embed_dim, config=config)


def test_config_hash_survives_save_and_reload(tiny_model, tiny_model_dir):
    from tipsv2_sdk import load

    reloaded = load(tiny_model_dir)
    assert config_hash(reloaded) == config_hash(tiny_model)
    assert len(config_hash(tiny_model)) == 16


def test_config_hash_changes_with_architecture(tiny_model):
    assert config_hash(_other_model(tiny_model, num_hidden_layers=7)) != config_hash(tiny_model)
    # the HF model and the wrapper hash alike
    assert config_hash(tiny_model.hf_model) == config_hash(tiny_model)


def test_manifest_records_model_and_build(tmp_path, tiny_model, rng):
    index = GlobalIndex.create(tmp_path / "idx", model=tiny_model, kind="cls2")
    index.add(rng.normal(size=(20, tiny_model.embed_dim)), paths=[f"{i}.png" for i in range(20)])
    index.save()
    data = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert data["format_version"] == FORMAT_VERSION
    assert data["type"] == "global" and data["kind"] == "cls2"
    assert data["model_name"] == tiny_model.name and data["config_hash"] == config_hash(tiny_model)
    assert data["dim"] == tiny_model.embed_dim and data["normalization"] == "l2" and data["metric"] == "ip"
    assert data["count"] == 20 and data["num_vectors"] == 20 and data["next_id"] == 20
    assert data["factory"] == "Flat" and data["factory_auto"] is True
    assert data["choice"]["expected_recall"] == 1.0 and "reason" in data["choice"]
    assert data["choice"]["memory_bytes"] > 0
    assert data["created"] and data["updated"] and data["dtype"] == "float16"


def test_concat_kind_doubles_the_width(tmp_path, tiny_model):
    index = GlobalIndex.create(tmp_path / "idx", model=tiny_model, kind="concat")
    assert index.dim == 2 * tiny_model.embed_dim
    assert model_identity(tiny_model, "concat")["dim"] == 2 * tiny_model.embed_dim


def test_open_with_matching_model_works(tmp_path, tiny_model, rng):
    index = GlobalIndex.create(tmp_path / "idx", model=tiny_model)
    index.add(rng.normal(size=(5, tiny_model.embed_dim)))
    index.save()
    assert len(GlobalIndex.open(tmp_path / "idx", model=tiny_model, kind="cls1")) == 5


def test_open_with_other_model_names_both_sides(tmp_path, tiny_model, rng):
    index = GlobalIndex.create(tmp_path / "idx", model=tiny_model)
    index.add(rng.normal(size=(5, tiny_model.embed_dim)))
    index.save()
    other = _other_model(tiny_model, num_hidden_layers=9)
    with pytest.raises(IndexMismatchError) as err:
        GlobalIndex.open(tmp_path / "idx", model=other)
    message = str(err.value)
    assert config_hash(tiny_model) in message and config_hash(other) in message and "config hash" in message
    assert isinstance(err.value, TipsV2Error)

    renamed = SimpleNamespace(name="someone-else", embed_dim=tiny_model.embed_dim, config=tiny_model.config)
    with pytest.raises(IndexMismatchError, match="someone-else"):
        GlobalIndex.open(tmp_path / "idx", model=renamed)


def test_open_checks_kind_dim_and_type(tmp_path, rng):
    index = GlobalIndex.create(tmp_path / "idx", dim=8, kind="cls1")
    index.add(rng.normal(size=(3, 8)))
    index.save()
    with pytest.raises(IndexMismatchError, match="'cls1'.*'cls2'"):
        GlobalIndex.open(tmp_path / "idx", kind="cls2")
    with pytest.raises(IndexMismatchError, match="8-d.*16-d"):
        GlobalIndex.open(tmp_path / "idx", dim=16)
    with pytest.raises(IndexMismatchError, match="global index, not a patch index"):
        PatchIndex.open(tmp_path / "idx")
    assert GlobalIndex.exists(tmp_path / "idx") and not PatchIndex.exists(tmp_path / "idx")


def test_missing_and_unknown_versions(tmp_path, rng):
    with pytest.raises(IndexNotFoundError, match="no index at"):
        GlobalIndex.open(tmp_path / "nothing")
    index = GlobalIndex.create(tmp_path / "idx", dim=4)
    index.add(rng.normal(size=(2, 4)))
    index.save()
    path = tmp_path / "idx" / "manifest.json"
    data = json.loads(path.read_text())
    data["format_version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(IndexFormatError, match="format_version 99"):
        read_manifest(tmp_path / "idx")
    path.write_text("{not json")
    with pytest.raises(IndexFormatError, match="cannot read"):
        read_manifest(tmp_path / "idx")


def test_check_model_without_model_only_checks_kind_and_dim(tmp_path):
    manifest = GlobalIndex.create(tmp_path / "x", dim=4, model_name="m", config_hash="abc").manifest
    check_model(manifest)  # nothing to compare
    check_model(manifest, kind="cls1", dim=4)
    with pytest.raises(IndexMismatchError):
        check_model(manifest, dim=5)


def test_patch_manifest_records_grid_pooling_and_pq(tmp_path, rng):
    index = PatchIndex.create(tmp_path / "p", dim=8, grid=(4, 4), pooling=2, pq=4, model_name="m", config_hash="h")
    index.add(rng.normal(size=(3, 4, 4, 8)))
    index.save()
    patch = read_manifest(tmp_path / "p").patch
    pooled = patch.pop("pooled")  # the per-image pooled vectors file (candidate source for MaxSim)
    assert pooled is None or set(pooled) == {"digest", "file", "size", "vectors_per_image"}
    assert patch == {"grid": [2, 2], "source_grid": [4, 4], "pooling": [2, 2], "pq": 4, "id_shift": 16}
    assert read_manifest(tmp_path / "p").num_vectors == 12
    assert np.array_equal(PatchIndex.open(tmp_path / "p").ids(), [0, 1, 2])
