"""encode_images / encode_texts: shapes, normalisation, batching, sizes, errors, save/load."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import tipsv2_sdk as tips


def test_image_embeddings_shapes_and_norms(tiny_model, image_files):
    emb = tiny_model.encode_images(image_files, batch_size=2, progress=False)
    assert emb.cls1.shape == emb.cls2.shape == (5, 32)
    assert emb.patches.shape == (5, 4, 4, 32) and emb.grid == (4, 4)
    for arr in (emb.cls1, emb.cls2, emb.patches.reshape(-1, 32)):
        assert arr.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(arr, axis=-1), 1.0, atol=1e-5)
    assert emb.indices.tolist() == [0, 1, 2, 3, 4] and emb.skipped == []
    assert not np.allclose(emb.cls1, emb.cls2)


def test_batching_does_not_change_results(tiny_model, image_files):
    a = tiny_model.encode_images(image_files, batch_size=1, progress=False)
    b = tiny_model.encode_images(image_files, batch_size=16, progress=False)
    np.testing.assert_allclose(a.cls1, b.cls1, atol=1e-5)
    np.testing.assert_allclose(a.patches, b.patches, atol=1e-5)


def test_matches_transformers_forward(tiny_model, image_files):
    from tipsv2_sdk.images import load_pixels

    pixels = torch.from_numpy(np.stack([load_pixels(p, 56) for p in image_files]))
    with torch.no_grad():
        seq = tiny_model.hf_model.vision_model(pixel_values=pixels).last_hidden_state
    ref = torch.nn.functional.normalize(seq, dim=-1).numpy()
    emb = tiny_model.encode_images(image_files, progress=False)
    np.testing.assert_allclose(emb.cls1, ref[:, 0], atol=1e-5)
    np.testing.assert_allclose(emb.cls2, ref[:, 1], atol=1e-5)
    np.testing.assert_allclose(emb.patches.reshape(5, 16, 32), ref[:, 2:], atol=1e-5)


@pytest.mark.parametrize("size, grid", [(28, 2), (84, 6), (112, 8)])
def test_any_multiple_of_the_patch(tiny_model, image_files, size, grid):
    emb = tiny_model.encode_images(image_files[:2], image_size=size, progress=False)
    assert emb.patches.shape == (2, grid, grid, 32)


def test_bad_image_size(tiny_model, image_files):
    with pytest.raises(ValueError, match="multiple of the patch size 14"):
        tiny_model.encode_images(image_files, image_size=50, progress=False)


def test_on_error_raise_and_skip(tiny_model, image_files, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    inputs = [image_files[0], bad, image_files[1]]
    with pytest.raises(tips.ImageLoadError, match="broken.png"):
        tiny_model.encode_images(inputs, progress=False)
    emb = tiny_model.encode_images(inputs, on_error="skip", progress=False)
    assert len(emb) == 2 and emb.indices.tolist() == [0, 2]
    assert [s.source for s in emb.skipped] == [str(bad)] and emb.skipped[0].index == 1
    assert emb.sources == [str(image_files[0]), str(image_files[1])]


def test_mixed_input_kinds(tiny_model):
    arr = np.random.default_rng(0).integers(0, 256, (56, 56, 3), dtype=np.uint8)
    pil = Image.fromarray(arr)
    tensor = torch.from_numpy(arr.transpose(2, 0, 1).astype(np.float32) / 255)
    emb = tiny_model.encode_images([arr, pil, tensor], progress=False)
    np.testing.assert_allclose(emb.cls1[0], emb.cls1[1], atol=1e-6)
    np.testing.assert_allclose(emb.cls1[0], emb.cls1[2], atol=1e-5)


def test_empty_inputs(tiny_model):
    emb = tiny_model.encode_images([], progress=False)
    assert emb.cls1.shape == (0, 32) and emb.patches.shape == (0, 4, 4, 32)
    assert tiny_model.encode_texts([]).shape == (0, 32)
    assert tiny_model.encode_images([], with_patches=False, progress=False).patches.shape == (0, 0, 0, 32)


def test_texts(tiny_model):
    out = tiny_model.encode_texts(["A red circle", "a red circle", "two blue squares"], batch_size=2)
    assert out.shape == (3, 32) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)  # lowercased
    assert not np.allclose(out[0], out[2])
    single = tiny_model.encode_texts("two blue squares")
    np.testing.assert_allclose(single[0], out[2], atol=1e-5)


def test_text_padding_does_not_leak(tiny_model):
    ids, mask = tiny_model.tokenizer.encode(["red circle"])
    assert ids[0, mask[0].sum():].tolist() == [0] * (ids.shape[1] - mask[0].sum())
    with torch.no_grad():
        full = tiny_model.text_features(torch.from_numpy(ids), torch.from_numpy(mask))
        n = int(mask[0].sum())
        short = tiny_model.text_features(torch.from_numpy(ids[:, :n]), torch.from_numpy(mask[:, :n]))
    torch.testing.assert_close(full, short, atol=1e-5, rtol=1e-5)


def test_bf16_autocast_close_to_fp32(tiny_model, image_files):
    a = tiny_model.encode_images(image_files[:2], progress=False)
    b = tiny_model.encode_images(image_files[:2], autocast=True, progress=False)
    assert b.cls1.dtype == np.float32
    assert np.abs(a.cls1 - b.cls1).max() < 0.1


def test_save_load_same_outputs(tiny_model, tiny_model_dir, image_files):
    loaded = tips.load(tiny_model_dir)
    a = tiny_model.encode_images(image_files, progress=False)
    b = loaded.encode_images(image_files, progress=False)
    np.testing.assert_array_equal(a.cls1, b.cls1)
    np.testing.assert_array_equal(a.patches, b.patches)
    np.testing.assert_array_equal(tiny_model.encode_texts(["x y"]), loaded.encode_texts(["x y"]))
    assert loaded.source.startswith("directory:")


def test_transformers_auto_classes_load_our_directory(tiny_model_dir):
    from transformers import AutoImageProcessor, AutoModel

    assert type(AutoModel.from_pretrained(tiny_model_dir)).__name__ == "Tipsv2Model"
    processor = AutoImageProcessor.from_pretrained(tiny_model_dir)
    assert processor.size["height"] == 56 and not processor.do_normalize


def test_load_dtype_and_errors(tiny_model_dir, tmp_path):
    m = tips.load(tiny_model_dir, dtype="bf16")
    assert m.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        tips.load(tiny_model_dir, dtype="int3")
    (tmp_path / "empty").mkdir()
    with pytest.raises(tips.UnknownModelError, match="config.json is missing"):
        tips.load(tmp_path / "empty")


def test_registry_name_without_local_copy_is_clear_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("TIPSV2_HOME", str(tmp_path))
    with pytest.raises(tips.UnknownModelError, match="tipsv2 convert"):
        tips.load("tipsv2-b14")


def test_registry_name_found_in_cache(monkeypatch, tiny_model_dir, tmp_path):
    import shutil

    shutil.copytree(tiny_model_dir, tmp_path / "tipsv2-l14")
    monkeypatch.setenv("TIPSV2_HOME", str(tmp_path))
    model = tips.load("tipsv2-l14")
    assert model.name == "tipsv2-l14" and model.source.startswith("cache:")


def test_length_sorted_batches_equal_full_padding(tiny_model):
    texts = ["a", "two blue squares next to a large red circle on a striped background", "red circle", "x y z"]
    fast = tiny_model.encode_texts(texts, batch_size=2)
    tokens = tiny_model.tokenize(texts)  # padded to the full 64 tokens
    with torch.no_grad():
        full = torch.nn.functional.normalize(tiny_model.text_features(**tokens), dim=-1).numpy()
    np.testing.assert_allclose(fast, full, atol=1e-5)
