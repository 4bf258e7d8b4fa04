"""TIPSv2 inside the real original LLaVA code (llava-torch), installed only by the llava CI step.

llava-torch pins torch 2.0.1 / transformers 4.36.2, so it is installed with --no-deps next to
this project's own versions; the tests below show that the tower, projectors and generation work
with LLaVA's own LlavaLlamaForCausalLM there.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

pytestmark = pytest.mark.llava
llava = pytest.importorskip("llava", reason="llava-torch not installed: run the llava CI step")

from llava.constants import IMAGE_TOKEN_INDEX  # noqa: E402
from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM  # noqa: E402

from tipsv2_sdk.connectors import build_llava, load_projector  # noqa: E402
from tipsv2_sdk.connectors.llava_original import (  # noqa: E402
    TipsV2VisionTower,
    register_with_llava,
    unregister_from_llava,
)


@pytest.fixture
def registered():
    unregister = register_with_llava()
    yield
    unregister()


def _model_args(tower: str, **kw):
    return SimpleNamespace(**{
        "vision_tower": tower, "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
        "pretrain_mm_mlp_adapter": None, "mm_patch_merge_type": "flat", "mm_projector_type": "mlp2x_gelu", **kw,
    })


def _llava_lm(hidden: int = 32):
    torch.manual_seed(0)
    config = LlavaConfig(
        hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, vocab_size=64, max_position_embeddings=128,
    )
    return LlavaLlamaForCausalLM(config).eval()


def test_register_patches_and_restores_llavas_builders(tiny_model_dir):
    import llava.model.llava_arch as arch
    import llava.model.multimodal_encoder.builder as encoder_builder

    original = arch.build_vision_tower
    register_with_llava()
    register_with_llava()  # idempotent: wrapped once
    try:
        assert arch.build_vision_tower._tipsv2_original is original
        assert encoder_builder.build_vision_tower is not encoder_builder.build_vision_tower._tipsv2_original
        cfg = SimpleNamespace(mm_vision_tower=f"tipsv2:{tiny_model_dir}", mm_vision_select_layer=-2)
        assert isinstance(arch.build_vision_tower(cfg, delay_load=True), TipsV2VisionTower)
        with pytest.raises(ValueError, match="Unknown vision tower"):  # other names still go to LLaVA
            arch.build_vision_tower(SimpleNamespace(mm_vision_tower="someone/else", mm_vision_select_layer=-2))
        import transformers.trainer

        from llava.train.llava_trainer import LLaVATrainer

        assert hasattr(transformers.trainer, "ALL_LAYERNORM_LAYERS")
        assert LLaVATrainer.__init__._tipsv2_inherited and not LLaVATrainer._save_checkpoint._tipsv2_inherited
    finally:
        unregister_from_llava()
    assert arch.build_vision_tower is original
    assert not hasattr(LlavaLlamaForCausalLM.forward, "_tipsv2_original")
    assert "__init__" not in vars(LLaVATrainer) and not hasattr(LLaVATrainer._save_checkpoint, "_tipsv2_original")
    assert not hasattr(transformers.trainer, "_tipsv2_added_aliases")


def test_llava_llama_forward_generate_and_reload(registered, tiny_model_dir, tmp_path):
    model = _llava_lm()
    model.get_model().initialize_vision_modules(_model_args(f"tipsv2:{tiny_model_dir}@42"))
    tower = model.get_vision_tower()
    assert isinstance(tower, TipsV2VisionTower) and model.config.mm_hidden_size == 32
    assert set(model.get_model().mm_projector.state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    from PIL import Image

    images = tower.image_processor.preprocess([Image.new("RGB", (60, 40), (200, 30, 30))], return_tensors="pt")[
        "pixel_values"
    ]
    ids = torch.tensor([[1, 5, IMAGE_TOKEN_INDEX, 6, 7]])
    with torch.no_grad():
        out = model(input_ids=ids, images=images, labels=ids)
    assert out.logits.shape[1] == 4 + tower.num_patches == 13  # 3x3 patches, no CLS leaked
    assert torch.isfinite(out.loss)

    generated = model.generate(ids, images=images, max_new_tokens=3, do_sample=False)
    greedy = ids
    with torch.no_grad():
        for _ in range(3):
            logits = model(input_ids=greedy, images=images).logits
            greedy = torch.cat([greedy, logits[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(generated, greedy[:, ids.shape[1]:])

    model.save_pretrained(tmp_path / "llava")
    reloaded = LlavaLlamaForCausalLM.from_pretrained(tmp_path / "llava").eval()
    assert reloaded.config.mm_vision_tower == f"tipsv2:{tiny_model_dir}@42"
    again = reloaded.get_vision_tower()
    assert isinstance(again, TipsV2VisionTower) and not again.is_loaded
    again.load_model()  # what llava.model.builder.load_pretrained_model does
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids, images=images).logits, out.logits, atol=1e-5, rtol=1e-4)


def test_llava_projector_loads_into_hf_llava_with_identical_outputs(registered, tiny_model, tiny_model_dir, lm_config):
    from llava.model.multimodal_projector.builder import build_vision_projector

    model = _llava_lm()
    model.get_model().initialize_vision_modules(_model_args(str(tiny_model_dir), mm_projector_type="mlp3x_gelu"))
    llava_projector = model.get_model().mm_projector
    with torch.no_grad():
        for p in llava_projector.parameters():
            p.normal_()
    hf = build_llava(tiny_model, lm_config, projector="mlp3x_gelu")
    load_projector(hf, {f"model.mm_projector.{k}": v for k, v in llava_projector.state_dict().items()})
    x = torch.randn(2, 16, 32)
    with torch.no_grad():
        torch.testing.assert_close(hf.model.multi_modal_projector(x), llava_projector(x))
    # LLaVA's own builder and ours agree on the layout of every standard type
    from tipsv2_sdk.connectors.projectors import build_llava_projector

    for name in ("linear", "mlp2x_gelu", "mlp4x_gelu"):
        theirs = build_vision_projector(SimpleNamespace(mm_projector_type=name, mm_hidden_size=32, hidden_size=48))
        ours = build_llava_projector(name, 32, 48)
        assert {k: v.shape for k, v in theirs.state_dict().items()} == {k: v.shape for k, v in ours.state_dict().items()}


def test_cls_projector_and_identity_check_inside_llava(registered, tiny_model_dir):
    model = _llava_lm()
    args = _model_args(str(tiny_model_dir), mm_vision_select_feature="cls_patch", mm_projector_type="mlp2x_gelu+cls")
    model.get_model().initialize_vision_modules(args)
    ids = torch.tensor([[1, IMAGE_TOKEN_INDEX, 6]])
    with torch.no_grad():
        logits = model(input_ids=ids, images=torch.rand(1, 3, 56, 56)).logits
    assert logits.shape[1] == 2 + 16 + 1
    wide = _llava_lm(hidden=48)
    with pytest.raises(ValueError, match="'identity' needs the vision feature width"):
        wide.get_model().initialize_vision_modules(_model_args(str(tiny_model_dir), mm_projector_type="identity"))


# --------------------------------------------------------------------------- LLaVA's own train()


@pytest.fixture
def llava_workspace(tmp_path, tiny_model_dir):
    """A tiny Llama + SentencePiece tokenizer, and LLaVA-format image-caption data."""
    import io
    import json

    import sentencepiece as spm
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizer

    from tipsv2_sdk.pretrain.data.shapes import render_scene
    from tipsv2_sdk.testing import tiny_corpus

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(tiny_corpus()), model_writer=buffer, vocab_size=300, model_type="bpe", unk_id=0,
        bos_id=1, eos_id=2, pad_id=-1, byte_fallback=True, character_coverage=1.0, minloglevel=2, num_threads=1,
    )
    (tmp_path / "spm").mkdir()
    (tmp_path / "spm" / "tokenizer.model").write_bytes(buffer.getvalue())
    tokenizer = LlamaTokenizer.from_pretrained(tmp_path / "spm", add_bos_token=True)
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=256)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    (tmp_path / "images").mkdir()
    data = []
    for i in range(8):
        scene = render_scene(0, "train", i, size=56)
        scene["image"].save(tmp_path / "images" / f"{i}.png")
        data.append({"id": str(i), "image": f"{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nDescribe the image."},
            {"from": "gpt", "value": scene["captions"]["short"]},
        ]})
    (tmp_path / "data.json").write_text(json.dumps(data))
    return tmp_path


def _train(monkeypatch, workspace, tower, *extra):
    import sys

    import llava.train.train as llava_train

    from tipsv2_sdk.connectors.llava_train import main

    try:
        import deepspeed  # noqa: F401
    except ImportError:  # LLaVA's training extra; without ZeRO-3 its gather is a plain copy
        def copy_param(param, ignore_status=False, name=None):
            return param.detach().cpu().clone()

        import llava.train.llava_trainer as llava_trainer

        monkeypatch.setattr(llava_train, "maybe_zero_3", copy_param)
        monkeypatch.setattr(llava_trainer, "maybe_zero_3", copy_param)
    argv = [
        "--model_name_or_path", str(workspace / "lm"), "--data_path", str(workspace / "data.json"),
        "--image_folder", str(workspace / "images"), "--vision_tower", tower, "--mm_projector_type", "mlp2x_gelu",
        "--mm_vision_select_layer", "-2", "--mm_use_im_start_end", "False", "--mm_use_im_patch_token", "False",
        "--per_device_train_batch_size", "4", "--num_train_epochs", "3", "--logging_steps", "1",
        "--save_strategy", "no", "--report_to", "none", "--model_max_length", "256", "--use_cpu", "True",
        "--dataloader_num_workers", "0", *extra,
    ]
    monkeypatch.setattr(sys, "argv", ["llava_train"])  # main() rewrites sys.argv for LLaVA's parser
    main([*argv, "--attn_implementation", "sdpa"])


def _losses(output_dir):
    import json

    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry]


def test_llava_train_stage1_stage2_then_load_and_generate(registered, monkeypatch, llava_workspace, tiny_model_dir):
    from llava.constants import DEFAULT_IMAGE_TOKEN
    from llava.conversation import conv_templates
    from llava.mm_utils import process_images, tokenizer_image_token
    from llava.model.builder import load_pretrained_model
    from PIL import Image

    ws, tower = llava_workspace, f"tipsv2:{tiny_model_dir}"
    # stage 1: projector only (LLaVA-1.5 pretrain.sh flags)
    _train(monkeypatch, ws, tower, "--version", "plain", "--tune_mm_mlp_adapter", "True",
           "--learning_rate", "1e-2", "--output_dir", str(ws / "stage1"))
    stage1 = torch.load(ws / "stage1" / "mm_projector.bin", weights_only=True)
    assert sorted(stage1) == ["model.mm_projector.0.bias", "model.mm_projector.0.weight",
                              "model.mm_projector.2.bias", "model.mm_projector.2.weight"]
    assert _losses(ws / "stage1")[-1] < _losses(ws / "stage1")[0]
    # stage 2: LoRA on the LM + projector from stage 1, conversation template, "pad" aspect ratio
    _train(monkeypatch, ws, tower, "--version", "v1", "--pretrain_mm_mlp_adapter", str(ws / "stage1" / "mm_projector.bin"),
           "--lora_enable", "True", "--lora_r", "4", "--lora_alpha", "8", "--learning_rate", "2e-2",
           "--image_aspect_ratio", "pad", "--group_by_modality_length", "True", "--output_dir", str(ws / "stage2"))
    losses = _losses(ws / "stage2")
    assert losses[0] > 0 and losses[-1] < losses[0]

    # LLaVA's loader: merges LoRA, rebuilds the tower from the name in config.json, returns our processor
    tokenizer, model, processor, _ = load_pretrained_model(str(ws / "stage2"), str(ws / "lm"), "llava-tiny-lora", device="cpu")
    assert isinstance(model.get_vision_tower(), TipsV2VisionTower) and model.config.mm_vision_tower == tower
    model.float()
    conv = conv_templates["vicuna_v1"].copy()
    conv.append_message(conv.roles[0], DEFAULT_IMAGE_TOKEN + "\nDescribe the image.")
    conv.append_message(conv.roles[1], None)
    ids = tokenizer_image_token(conv.get_prompt(), tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt").unsqueeze(0)
    images = process_images([Image.open(ws / "images" / "0.png")], processor, model.config)
    assert images.shape == (1, 3, 56, 56)
    out = model.generate(ids, images=images, max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 4)
