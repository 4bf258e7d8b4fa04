"""TipsV2Module: outputs equal the SDK encoders, inputs, late interaction, save/load (fresh process)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("sentence_transformers")

from sentence_transformers import SentenceTransformer, util  # noqa: E402

from tipsv2_sdk.errors import ImageLoadError  # noqa: E402
from tipsv2_sdk.sentence_transformers_module import (  # noqa: E402
    EMBEDDINGS,
    TipsV2Module,
    classify_inputs,
    load_sentence_transformer,
)

TEXTS = ["a red circle", "Two BLUE squares below a green star", "héllo wörld naïve", "dog " * 80, "x"]
TOL = 1e-5


def pil_images(n: int = 4, seed: int = 0) -> list[Image.Image]:
    gen = np.random.default_rng(seed)
    return [Image.fromarray(gen.integers(0, 255, (30 + 9 * i, 44 + 5 * i, 3), dtype=np.uint8)) for i in range(n)]


def reference(emb, kind: str) -> np.ndarray:
    """What each embedding kind must equal, computed from TipsV2.encode_images outputs."""
    if kind == "cls1":
        return emb.cls1
    if kind == "cls2":
        return emb.cls2
    if kind == "concat":
        return np.concatenate([emb.cls1, emb.cls2], axis=1) / np.sqrt(2.0)
    mean = emb.patches.mean(axis=(1, 2))
    return mean / np.linalg.norm(mean, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    """The tiny model with random final layer norms.

    At initialisation every output token has norm sqrt(D), which would hide normalisation mistakes
    (e.g. averaging raw instead of unit patch tokens); random norm weights make token norms differ.
    """
    from tipsv2_sdk import load

    loaded = load(tiny_model_dir)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for norm in (loaded.hf_model.vision_model.layernorm, loaded.hf_model.text_model.final_layer_norm):
            norm.weight.copy_(torch.rand(norm.weight.shape, generator=gen) * 1.5 + 0.25)
            norm.bias.copy_(torch.randn(norm.bias.shape, generator=gen) * 0.5)
    return loaded


@pytest.fixture(scope="module")
def st_cls1(model):
    return model.to_sentence_transformer()


@pytest.mark.parametrize("kind", EMBEDDINGS)
def test_embeddings_equal_sdk_encoders(model, kind):
    images = pil_images()
    st = model.to_sentence_transformer(embedding=kind)
    ref = model.encode_images(images, progress=False)
    got = st.encode(images, batch_size=3)
    assert got.shape == (4, st.get_embedding_dimension())
    assert np.abs(got - reference(ref, kind)).max() <= TOL
    text = st.encode(TEXTS, batch_size=2)
    want = model.encode_texts(TEXTS)
    if kind == "concat":
        want = np.concatenate([want, want], axis=1) / np.sqrt(2.0)
    assert np.abs(text - want).max() <= TOL
    assert st.similarity_fn_name == "cosine"


def test_token_embeddings_are_unit_patch_tokens(model, st_cls1):
    images = pil_images(3)
    ref = model.encode_images(images, progress=False)
    tokens = st_cls1.encode(images, output_value="token_embeddings")
    n, h, w, d = ref.patches.shape
    assert [tuple(t.shape) for t in tokens] == [(h * w, d)] * n  # both CLS tokens are dropped
    assert np.abs(torch.stack(tokens).numpy() - ref.patches.reshape(n, h * w, d)).max() <= TOL
    text_tokens = st_cls1.encode(["a red circle", "two blue squares below a green star"], output_value="token_embeddings")
    lengths = model.tokenize(["a red circle", "two blue squares below a green star"])["attention_mask"].sum(1)
    assert [len(t) for t in text_tokens] == lengths.tolist()
    assert torch.allclose(text_tokens[0].norm(dim=-1), torch.ones(len(text_tokens[0])), atol=1e-5)


def test_maxsim_over_token_embeddings_matches_sdk_patches(model, st_cls1):
    """Late interaction: the index's MaxSim over ST token embeddings equals MaxSim computed
    directly (mean over query patches of the best document patch) from encode_images patches."""
    from tipsv2_sdk.index.maxsim import maxsim_scores

    corpus, queries = pil_images(4, seed=1), pil_images(2, seed=2)
    ref_docs = model.encode_images(corpus, progress=False).patches
    ref_query = model.encode_images(queries, progress=False).patches
    d = ref_docs.shape[-1]
    ref_docs = ref_docs.reshape(len(corpus), -1, d)
    docs = torch.stack(st_cls1.encode(corpus, output_value="token_embeddings")).numpy()
    query_tokens = st_cls1.encode(queries, output_value="token_embeddings")
    for q, ref_q in zip(query_tokens, ref_query.reshape(len(queries), -1, d)):
        want = np.einsum("md,npd->nmp", ref_q, ref_docs).max(axis=2).mean(axis=1)
        assert np.abs(maxsim_scores(q.numpy(), docs) - want).max() <= TOL


def test_semantic_search_answers_known_by_construction(model, st_cls1):
    corpus_images = pil_images(5, seed=3)
    corpus = st_cls1.encode(corpus_images, convert_to_tensor=True)
    # Image queries identical to corpus items: each finds itself first, at cosine 1.
    hits = util.semantic_search(st_cls1.encode(corpus_images[::-1], convert_to_tensor=True), corpus, top_k=2)
    assert [h[0]["corpus_id"] for h in hits] == [4, 3, 2, 1, 0]
    assert all(abs(h[0]["score"] - 1.0) < 1e-5 for h in hits)
    # Text queries: the ranking the SDK's own embeddings give.
    queries = ["a red circle", "a blue square", "striped background"]
    hits = util.semantic_search(st_cls1.encode(queries, convert_to_tensor=True), corpus, top_k=5)
    scores = model.encode_texts(queries) @ model.encode_images(corpus_images, progress=False).cls1.T
    for row, hit in zip(scores, hits):
        assert [h["corpus_id"] for h in hit] == np.argsort(-row, kind="stable").tolist()
        assert np.allclose([h["score"] for h in hit], np.sort(row)[::-1], atol=TOL)


def test_image_input_kinds(model, st_cls1, image_files):
    paths = [str(p) for p in image_files[:2]]
    arrays = [np.array(img) for img in pil_images(2)]
    tensors = [torch.from_numpy(a).permute(2, 0, 1).float() / 255 for a in arrays]
    for inputs in (paths, [Path(p) for p in paths], arrays, tensors, [{"image": p} for p in paths]):
        expected = model.encode_images([x["image"] if isinstance(x, dict) else x for x in inputs], progress=False)
        assert np.abs(st_cls1.encode(inputs) - expected.cls1).max() <= TOL
    # A string is an image only if it names an existing file with an image suffix.
    missing = str(Path(paths[0]).with_name("missing.png"))
    assert classify_inputs([missing, "photo.jpg"]) == ("text", [missing, "photo.jpg"])
    assert np.abs(st_cls1.encode(["photo.jpg"]) - model.encode_texts(["photo.jpg"])).max() <= TOL
    assert classify_inputs([{"text": paths[0]}])[0] == "text"


def test_prompt_applies_to_texts_only(model, st_cls1):
    got = st_cls1.encode(["red circle"], prompt="a photo of a ")
    assert np.abs(got - model.encode_texts(["a photo of a red circle"])).max() <= TOL
    images = pil_images(2)
    assert np.abs(st_cls1.encode(images, prompt="ignored ") - st_cls1.encode(images)).max() == 0


def test_bad_inputs_give_clear_errors(model, st_cls1, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.raises(ImageLoadError, match="broken.png"):
        st_cls1.encode([str(broken)])
    with pytest.raises(ValueError, match="mixes multiple modalities"):
        st_cls1.encode(["a dog", pil_images(1)[0]], batch_size=4)
    module = st_cls1[0]
    with pytest.raises(ValueError, match=r"mixes texts \(e.g. input #0\) and images \(e.g. input #1\)"):
        module.preprocess(["a dog", pil_images(1)[0]])
    with pytest.raises(ValueError, match="input #1 is a int"):
        module.preprocess(["a dog", 3])
    with pytest.raises(ValueError, match="never downloaded"):
        module.preprocess(["https://example.com/cat.jpg"])
    with pytest.raises(ImageLoadError, match="shape"):
        module.preprocess([np.zeros((5, 5, 7), np.uint8)])
    with pytest.raises(ValueError, match="embedding='cls3'"):
        TipsV2Module(model, embedding="cls3")
    with pytest.raises(ValueError, match="multiple of the patch size"):
        TipsV2Module(model, image_size=50)
    with pytest.raises(ValueError, match="max_seq_length=65"):
        TipsV2Module(model, max_seq_length=65)


RELOAD_SCRIPT = textwrap.dedent(
    """
    import sys, numpy as np, torch
    from sentence_transformers import SentenceTransformer
    model_dir, out, *images = sys.argv[1:]
    st = SentenceTransformer(model_dir, trust_remote_code=True)
    texts = ["a red circle", "Two BLUE squares below a green star"]
    np.save(out + "/images.npy", st.encode(images), allow_pickle=False)
    np.save(out + "/texts.npy", st.encode(texts), allow_pickle=False)
    np.save(out + "/tokens.npy", torch.stack(st.encode(images, output_value="token_embeddings")).numpy(), allow_pickle=False)
    print(type(st[0]).__name__, st[0].embedding, st.similarity_fn_name)
    """
)


def test_save_reload_in_fresh_process(model, image_files, tmp_path):
    out_dir = tmp_path / "st"
    st = model.to_sentence_transformer(out_dir, embedding="concat")
    files = sorted(p.name for p in out_dir.rglob("*") if p.is_file())
    assert all(name.endswith((".json", ".safetensors", ".md")) or name == "tokenizer.model" for name in files), files
    modules = json.loads((out_dir / "modules.json").read_text())
    assert modules[0]["type"] == "tipsv2_sdk.sentence_transformers_module.TipsV2Module" and modules[0]["path"] == ""
    images = [str(p) for p in image_files[:3]]
    proc = subprocess.run(
        [sys.executable, "-c", RELOAD_SCRIPT, str(out_dir), str(tmp_path), *images],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-3:] == ["TipsV2Module", "concat", "cosine"]
    texts = ["a red circle", "Two BLUE squares below a green star"]
    assert np.array_equal(np.load(tmp_path / "images.npy"), st.encode(images))
    assert np.array_equal(np.load(tmp_path / "texts.npy"), st.encode(texts))
    tokens = torch.stack(st.encode(images, output_value="token_embeddings")).numpy()
    assert np.array_equal(np.load(tmp_path / "tokens.npy"), tokens)


def test_trust_remote_code_is_required_and_guarded_loader(model, tmp_path):
    out_dir = tmp_path / "st"
    model.to_sentence_transformer(out_dir, embedding="cls2")
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        SentenceTransformer(str(out_dir))
    images = pil_images(2)
    reloaded = load_sentence_transformer(out_dir)
    assert reloaded[0].get_config_dict() == {"embedding": "cls2", "image_size": 56, "max_seq_length": 64}
    assert np.abs(reloaded.encode(images) - model.encode_images(images, progress=False).cls2).max() <= TOL
    # The saved folder is also a plain TIPSv2 directory for the SDK.
    from tipsv2_sdk import load

    again = load(out_dir)
    assert np.abs(again.encode_images(images, progress=False).cls2 - reloaded.encode(images)).max() <= TOL
    modules = json.loads((out_dir / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Evil", "type": "evil_package.Evil"})
    (out_dir / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError, match="evil_package.Evil"):
        load_sentence_transformer(out_dir)
    with pytest.raises(FileNotFoundError, match="modules.json"):
        load_sentence_transformer(tmp_path)


def test_config_round_trip_and_unsafe_save_refused(model, tmp_path):
    module = TipsV2Module(model, embedding="mean_patch", image_size=112, max_seq_length=16)
    st = SentenceTransformer(modules=[module], device="cpu")
    st.save(str(tmp_path / "m"))
    back = SentenceTransformer(str(tmp_path / "m"), trust_remote_code=True)
    assert back[0].get_config_dict() == {"embedding": "mean_patch", "image_size": 112, "max_seq_length": 16}
    assert back.max_seq_length == 16
    long_text = ["red " * 40]
    assert back[0].preprocess(long_text)["input_ids"].shape == (1, 16)
    images = pil_images(2)
    assert np.array_equal(back.encode(images), st.encode(images))
    assert back.encode(images, output_value="token_embeddings")[0].shape == (64, 32)  # 112 px → 8x8 patches
    with pytest.raises(ValueError, match="safetensors"):
        module.save(str(tmp_path / "unsafe"), safe_serialization=False)
