"""build_llava / num_image_tokens / build_llava_processor: token counts, feature choice, errors, generation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import LlavaForConditionalGeneration, Tipsv2VisionModel

from tipsv2_sdk.connectors import (
    FEATURE_SELECTS,
    build_llava,
    build_llava_processor,
    check_inputs,
    check_processor,
    num_image_tokens,
)
from tipsv2_sdk.connectors.hf_modeling import Tipsv2LlavaForConditionalGeneration, Tipsv2LlavaVisionModel


def _image(h=50, w=60, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("feature_select", FEATURE_SELECTS)
@pytest.mark.parametrize("size", [28, 70, (42, 70)])
def test_tower_output_equals_token_count_for_any_multiple_of_14(tiny_model, lm_config, feature_select, size):
    model = build_llava(tiny_model, lm_config, feature_select=feature_select)
    h, w = (size, size) if isinstance(size, int) else size
    pixels = torch.rand(2, 3, h, w)
    with torch.no_grad():
        feats = model.get_image_features(pixel_values=pixels).pooler_output
    expected = num_image_tokens(model, size)
    extra = {"patch": 0, "cls_patch": 1, "cls2_patch": 1, "full": 2}[feature_select]
    assert expected == (h // 14) * (w // 14) + extra
    assert [f.shape[0] for f in feats] == [expected, expected]
    ids = torch.tensor([[5, 6] + [model.config.image_token_id] * expected + [7]] * 2)
    check_inputs(model, ids, pixels)
    with torch.no_grad():
        assert model(input_ids=ids, pixel_values=pixels).logits.shape[:2] == (2, expected + 3)


@pytest.mark.parametrize("feature_select, keep", [("patch", [2, 3]), ("cls_patch", [0, 2]), ("cls2_patch", [1, 2]), ("full", [0, 1])])
def test_selected_tokens_are_the_tips_hidden_states(tiny_model, lm_config, feature_select, keep):
    model = build_llava(tiny_model, lm_config, feature_select=feature_select, feature_layer=-2, image_token_id=4)
    pixels = torch.rand(1, 3, 56, 56)
    seen = []
    model.model.multi_modal_projector.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        ref = tiny_model.hf_model.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
        model.get_image_features(pixel_values=pixels)
    out = seen[0]
    # the first two kept tokens identify the selection; the patches follow in order
    torch.testing.assert_close(out[:, :2], ref[:, keep])
    torch.testing.assert_close(out[:, -16:], ref[:, 2:])


def test_stock_classes_where_they_suffice(tiny_model, lm_config):
    native = build_llava(tiny_model, lm_config, feature_select="cls2_patch")
    assert type(native) is LlavaForConditionalGeneration and type(native.model.vision_tower) is Tipsv2VisionModel
    assert native.config.vision_config.model_type == "tipsv2_vision_model"
    assert native.config.vision_feature_select_strategy == "default"  # the stock one-token drop = cls2_patch
    custom = build_llava(tiny_model, lm_config, feature_select="patch", projector="linear")
    assert type(custom) is Tipsv2LlavaForConditionalGeneration
    assert type(custom.model.vision_tower) is Tipsv2LlavaVisionModel
    assert custom.config.vision_feature_select_strategy == "full"


def test_stock_default_strategy_leaks_cls2_but_patch_does_not(tiny_model, lm_config):
    leaky = build_llava(tiny_model, lm_config, feature_select="cls2_patch")
    clean = build_llava(tiny_model, lm_config, feature_select="patch")
    assert num_image_tokens(leaky, 56) == 17 and num_image_tokens(clean, 56) == 16


def test_layers_concatenate_and_layer_zero_works(tiny_model, lm_config):
    model = build_llava(tiny_model, lm_config, feature_layer=[0, -2])
    assert model.model.multi_modal_projector.linear_1.in_features == 2 * tiny_model.embed_dim
    zero = build_llava(tiny_model, lm_config, feature_layer=0, feature_select="full")
    pixels = torch.rand(1, 3, 56, 56)
    with torch.no_grad():
        for m in (model, zero):
            assert m.get_image_features(pixel_values=pixels).pooler_output[0].shape[0] == num_image_tokens(m)


def test_language_model_sources(tiny_model, lm_config, tmp_path):
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_config(lm_config)
    shared = build_llava(tiny_model, lm, image_token_id=4)
    assert shared.model.language_model is lm.model and shared.lm_head is lm.lm_head
    lm.save_pretrained(tmp_path / "lm")
    loaded = build_llava(tiny_model, tmp_path / "lm", image_token_id=4)
    torch.testing.assert_close(loaded.lm_head.weight, lm.lm_head.weight)
    vocab = lm_config.vocab_size
    fresh = build_llava(tiny_model, lm_config)
    assert fresh.config.image_token_id == vocab and fresh.get_input_embeddings().num_embeddings == vocab + 1
    assert lm_config.vocab_size == vocab  # the caller's config is not touched
    with pytest.raises(TypeError, match="causal LM"):
        build_llava(tiny_model, lm.model)


def test_vision_sources(tiny_model, tiny_model_dir, lm_config):
    pixels = torch.rand(1, 3, 56, 56)
    outs = []
    for vision in (tiny_model, tiny_model_dir, tiny_model.hf_model, tiny_model.hf_model.vision_model):
        model = build_llava(vision, lm_config, image_token_id=4)
        with torch.no_grad():
            outs.append(model.model.vision_tower(pixels).last_hidden_state)
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0])
    with pytest.raises(TypeError, match="vision must be"):
        build_llava(42, lm_config)


def test_bad_input_fails_at_build_time(tiny_model, lm_config):
    with pytest.raises(ValueError, match="not a positive multiple of the patch size 14"):
        build_llava(tiny_model, lm_config, image_size=50)
    with pytest.raises(ValueError, match="image_size must be an int"):
        build_llava(tiny_model, lm_config, image_size=(42, 56))
    with pytest.raises(ValueError, match="unknown feature_select 'default'"):
        build_llava(tiny_model, lm_config, feature_select="default")
    with pytest.raises(ValueError, match=r"'identity' needs the vision feature width \(32\) to equal .* \(48\)"):
        build_llava(tiny_model, lm_config.__class__(**{**lm_config.to_dict(), "hidden_size": 48}), projector="identity")
    with pytest.raises(ValueError, match="unknown projector 'mlp2x'"):
        build_llava(tiny_model, lm_config, projector="mlp2x")
    with pytest.raises(ValueError, match="keeps none"):
        build_llava(tiny_model, lm_config, projector="mlp2x_gelu+cls", feature_select="patch")
    with pytest.raises(ValueError, match="out of range"):
        build_llava(tiny_model, lm_config, feature_layer=9)
    with pytest.raises(ValueError, match="outside the language model vocabulary"):
        build_llava(tiny_model, lm_config, image_token_id=lm_config.vocab_size)
    assert build_llava(tiny_model, lm_config, projector="identity") is not None  # 32 == 32 is fine


def test_processor_expansion_matches_and_mismatches_are_caught(tiny_model, lm_config, tokenizer):
    model = build_llava(tiny_model, lm_config, image_size=42, feature_select="cls_patch")
    processor = build_llava_processor(model, tokenizer)
    inputs = processor(text=["a red <image> circle"], images=[_image()], return_tensors="pt")
    assert inputs["pixel_values"].shape == (1, 3, 42, 42)
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == num_image_tokens(model) == 10
    bigger = build_llava_processor(model, tokenizer, image_size=70)
    big = bigger(text=["<image>"], images=[_image()], return_tensors="pt")
    assert int((big["input_ids"] == model.config.image_token_id).sum()) == 26
    check_inputs(model, big["input_ids"], big["pixel_values"])
    processor.num_additional_image_tokens = 2  # e.g. a CLIP-style processor left as it was
    with pytest.raises(ValueError, match="expands <image> to 11 tokens .* the tower emits 10"):
        check_processor(model, processor)
    with pytest.raises(ValueError, match="input_ids hold 10 image tokens, but 1 image.*need 26"):
        check_inputs(model, inputs["input_ids"], big["pixel_values"])
    with pytest.raises(ValueError, match="not a positive multiple"):
        build_llava_processor(model, tokenizer, image_size=45)
    from transformers import CLIPImageProcessorPil

    processor.image_processor = CLIPImageProcessorPil(size={"shortest_edge": 42}, do_center_crop=False)
    with pytest.raises(ValueError, match="does not produce a fixed size"):
        check_processor(model, processor)


def test_tokenizer_id_mismatch_is_explained(tiny_model, lm_config, tokenizer):
    model = build_llava(tiny_model, lm_config, image_token_id=4)
    with pytest.raises(ValueError, match="tokenizer gives '<image>' id .* expects image_token_id 4"):
        build_llava_processor(model, tokenizer)


def test_generate_matches_greedy_decoding(tiny_model, lm_config, tokenizer):
    model = build_llava(tiny_model, lm_config, image_size=42)
    processor = build_llava_processor(model, tokenizer)
    inputs = processor(text=["a photo of <image> with"], images=[_image()], return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    ids = inputs["input_ids"]
    with torch.no_grad():
        for _ in range(4):
            logits = model(input_ids=ids, pixel_values=inputs["pixel_values"]).logits
            ids = torch.cat([ids, logits[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(generated, ids)
    assert processor.batch_decode(generated[:, inputs["input_ids"].shape[1]:])[0].strip()
