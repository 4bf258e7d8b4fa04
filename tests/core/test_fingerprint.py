"""Weights fingerprints: the same weights hash alike however they are held, different weights never."""
from __future__ import annotations

import json
import os
import re
import shutil

import pytest
import torch
from click.testing import CliRunner

import tipsv2_sdk as tips
from tipsv2_sdk.fingerprint import (FINGERPRINT_FILE, directory_fingerprint, hash_safetensors_files, hash_tensors,
                                    saved_state_dict, stored_fingerprint, weights_fingerprint, write_fingerprint)
from tipsv2_sdk.testing import tiny_model as make_tiny, transformers_tiny_model

HEX64 = re.compile(r"^[0-9a-f]{64}$")


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory):
    """Same architecture as the session's tiny model, other random weights (another seed)."""
    root = tmp_path_factory.mktemp("other")
    model = make_tiny("tipsv2-b14", width=32, image_size=56, seed=1, directory=root / "tok")
    return model.save_pretrained(root / "model")


def test_saved_directory_stores_the_fingerprint_of_its_file(tiny_model, tiny_model_dir):
    record = json.loads((tiny_model_dir / FINGERPRINT_FILE).read_text())
    assert HEX64.match(record["fingerprint"])
    assert record["fingerprint"] == hash_safetensors_files([tiny_model_dir / "model.safetensors"])
    assert stored_fingerprint(tiny_model_dir) == record["fingerprint"]
    # The in-memory model hashes to what save_pretrained wrote, and so does the reloaded one.
    assert tiny_model.weights_fingerprint == record["fingerprint"]
    assert tips.load(tiny_model_dir).weights_fingerprint == record["fingerprint"]


def test_other_weights_have_another_fingerprint(tiny_model_dir, other_model_dir):
    assert directory_fingerprint(tiny_model_dir) != directory_fingerprint(other_model_dir)


def test_replacing_the_weights_file_is_noticed(tiny_model_dir, other_model_dir, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    original = directory_fingerprint(tiny_model_dir)
    assert directory_fingerprint(copy) == original  # same bytes, same value (hashed again: new inode)
    write_fingerprint(copy)
    assert stored_fingerprint(copy) == original
    # Overwritten in place (same inode, same size: same architecture) ...
    shutil.copyfile(other_model_dir / "model.safetensors", copy / "model.safetensors")
    assert stored_fingerprint(copy) is None
    assert directory_fingerprint(copy) == directory_fingerprint(other_model_dir)
    assert tips.load(copy).weights_fingerprint == directory_fingerprint(other_model_dir)
    # ... or renamed over it, keeping the old record file.
    write_fingerprint(copy)
    shutil.copyfile(tiny_model_dir / "model.safetensors", tmp_path / "new.safetensors")
    os.replace(tmp_path / "new.safetensors", copy / "model.safetensors")
    assert stored_fingerprint(copy) is None
    assert tips.load(copy).weights_fingerprint == original


def test_dtype_and_device_do_not_change_it(tiny_model_dir):
    fp32 = tips.load(tiny_model_dir)
    bf16 = tips.load(tiny_model_dir, dtype="bf16")
    assert bf16.weights_fingerprint == fp32.weights_fingerprint
    fp32.to(dtype=torch.float16)
    assert fp32.weights_fingerprint == bf16.weights_fingerprint


def test_changing_weights_in_memory_changes_it(tiny_model_dir, tmp_path):
    model = tips.load(tiny_model_dir)
    before = model.weights_fingerprint
    with torch.no_grad():
        model.hf_model.text_model.final_layer_norm.bias.add_(0.5)
    after = model.weights_fingerprint
    assert after != before and HEX64.match(after)
    # ... to exactly what saving the changed model writes.
    assert directory_fingerprint(model.save_pretrained(tmp_path / "changed")) == after
    assert tips.load(tmp_path / "changed").weights_fingerprint == after


def test_file_replaced_after_loading(tiny_model_dir, other_model_dir, tmp_path):
    """The loaded model's fingerprint describes the weights it holds, not the file now on disk."""
    original, other = directory_fingerprint(tiny_model_dir), directory_fingerprint(other_model_dir)
    renamed, overwritten = tmp_path / "renamed", tmp_path / "overwritten"
    shutil.copytree(tiny_model_dir, renamed)
    shutil.copytree(tiny_model_dir, overwritten)
    model_a, model_b = tips.load(renamed), tips.load(overwritten)
    # A new file renamed over the old one: the loaded tensors keep the old weights.
    shutil.copyfile(other_model_dir / "model.safetensors", tmp_path / "new.safetensors")
    os.replace(tmp_path / "new.safetensors", renamed / "model.safetensors")
    assert model_a.weights_fingerprint == original
    # Overwritten in place: transformers memory-maps safetensors on CPU, so the loaded float32
    # tensors themselves now hold the other weights; the fingerprint says so.
    shutil.copyfile(other_model_dir / "model.safetensors", overwritten / "model.safetensors")
    held = hash_tensors(saved_state_dict(model_b.hf_model))
    assert model_b.weights_fingerprint == held
    assert held in (original, other)


def test_cheap_after_the_first_call(tiny_model_dir, monkeypatch):
    import tipsv2_sdk.fingerprint as fp

    model = tips.load(tiny_model_dir)
    first = model.weights_fingerprint
    calls = []
    monkeypatch.setattr(fp, "directory_fingerprint", lambda *a: calls.append(a))
    monkeypatch.setattr(fp, "hash_tensors", lambda *a: calls.append(a))
    assert model.weights_fingerprint == first and calls == []


def test_display_name(tiny_model):
    assert re.fullmatch(rf"{re.escape(tiny_model.name)} \(weights [0-9a-f]{{8}}\)", tiny_model.display_name)
    assert tiny_model.display_name.endswith(f"(weights {tiny_model.weights_fingerprint[:8]})")


def test_transformers_written_files_and_models(tmp_path):
    """A checkpoint written by transformers (original key layout, fused qkv) matches its in-memory model."""
    from transformers import Tipsv2Model

    directory = transformers_tiny_model(tmp_path / "hf")
    assert not (directory / FINGERPRINT_FILE).exists()
    from_file = weights_fingerprint(directory)
    hf_model = Tipsv2Model.from_pretrained(directory)
    assert weights_fingerprint(hf_model) == from_file
    assert tips.load(directory).weights_fingerprint == from_file


@pytest.mark.parametrize("variant", ["tipsv2-g14", "tips-so400m14"])
def test_memory_equals_file_for_other_layouts(variant, tmp_path):
    model = make_tiny(variant, width=32, directory=tmp_path / "tok")
    assert directory_fingerprint(model.save_pretrained(tmp_path / "m")) == model.weights_fingerprint


def test_sharded_checkpoint_has_the_same_fingerprint(tiny_model, tiny_model_dir, tmp_path):
    out = tmp_path / "sharded"
    shutil.copytree(tiny_model_dir, out)
    (out / "model.safetensors").unlink()
    (out / FINGERPRINT_FILE).unlink()
    tiny_model.hf_model.save_pretrained(out, max_shard_size="100KB")
    assert (out / "model.safetensors.index.json").is_file()
    assert directory_fingerprint(out) == directory_fingerprint(tiny_model_dir)
    assert tips.load(out).weights_fingerprint == directory_fingerprint(tiny_model_dir)


def test_mapping_and_bad_input():
    tensors = {"b": torch.arange(3, dtype=torch.bfloat16), "a": torch.zeros(2, 2), "s": torch.tensor(1.5)}
    value = weights_fingerprint(tensors)
    assert value == hash_tensors(dict(reversed(list(tensors.items()))))  # order-free
    tensors["a"] = torch.zeros(4)  # same bytes, other shape
    assert weights_fingerprint(tensors) != value
    with pytest.raises(TypeError, match="int"):
        weights_fingerprint(3)
    with pytest.raises(ValueError, match="no tensors"):
        hash_tensors({})


def test_not_a_safetensors_file(tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\xff" * 32)
    with pytest.raises(ValueError, match="not a safetensors file"):
        weights_fingerprint(bad)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        directory_fingerprint(tmp_path / "empty")


def test_info_shows_it(tiny_model_dir):
    from tipsv2_sdk.cli.app import cli

    result = CliRunner().invoke(cli, ["info", str(tiny_model_dir), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["weights_fingerprint"] == directory_fingerprint(tiny_model_dir)
    text = CliRunner().invoke(cli, ["info", str(tiny_model_dir)]).output
    assert f"weights      {directory_fingerprint(tiny_model_dir)}" in text


def test_sentence_transformers_export_records_it(tiny_model, tmp_path):
    out = tmp_path / "st"
    tiny_model.to_sentence_transformer(out)
    record = json.loads((out / FINGERPRINT_FILE).read_text())
    assert record["fingerprint"] == tiny_model.weights_fingerprint == stored_fingerprint(out)
    assert tips.load(out).weights_fingerprint == tiny_model.weights_fingerprint
