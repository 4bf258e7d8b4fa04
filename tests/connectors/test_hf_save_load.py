"""save_pretrained -> from_pretrained in a fresh process (only `import tipsv2_sdk.connectors`) -> same logits."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file

from tipsv2_sdk.connectors import build_llava, build_llava_processor, num_image_tokens

VARIANTS = {
    "patch_mlp2x": dict(feature_select="patch", projector="mlp2x_gelu"),  # stock Llava + registered tower
    "cls_patch_mlp3x_cls": dict(feature_select="cls_patch", projector="mlp3x_gelu+cls", feature_layer=[1, -1]),
    "full_linear": dict(feature_select="full", projector="linear"),  # registered Llava + stock tower
    "cls2_patch_mlp2x": dict(feature_select="cls2_patch", projector="mlp2x_gelu"),  # all stock
}

LOADER = textwrap.dedent(
    """
    import json, sys
    import torch
    from safetensors.torch import load_file, save_file
    import tipsv2_sdk.connectors  # registers the model types; nothing else is needed
    from transformers import AutoModelForImageTextToText, AutoProcessor

    results = {}
    for name in json.loads(sys.argv[1]):
        model = AutoModelForImageTextToText.from_pretrained(sys.argv[2] + "/" + name)
        inputs = load_file(sys.argv[2] + "/" + name + "/inputs.safetensors")
        with torch.no_grad():
            results[name] = model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"]).logits
        processor = AutoProcessor.from_pretrained(sys.argv[2] + "/" + name)
        count = processor(text=["<image>"], images=[inputs["pixel_values"][0]], return_tensors="pt",
                          do_rescale=False)["input_ids"].eq(model.config.image_token_id).sum()
        results[name + ":tokens"] = count.reshape(1)
        results[name + ":class"] = torch.tensor([len(type(model).__name__)])
    save_file(results, sys.argv[2] + "/logits.safetensors")
    """
)


def test_fresh_process_reload_gives_same_logits(tiny_model, lm_config, tokenizer, tmp_path):
    expected, counts = {}, {}
    for name, options in VARIANTS.items():
        model = build_llava(tiny_model, lm_config, image_size=42, **options)
        processor = build_llava_processor(model, tokenizer)
        n = num_image_tokens(model)
        torch.manual_seed(0)
        pixels = torch.rand(2, 3, 42, 42)
        ids = torch.tensor([[5, 6] + [model.config.image_token_id] * n + [7, 8]] * 2)
        with torch.no_grad():
            expected[name] = model(input_ids=ids, pixel_values=pixels).logits
        counts[name] = n
        model.save_pretrained(tmp_path / name)
        processor.save_pretrained(tmp_path / name)
        save_file({"input_ids": ids, "pixel_values": pixels}, str(tmp_path / name / "inputs.safetensors"))
        config = json.loads((tmp_path / name / "config.json").read_text())
        assert config["tipsv2_image_size"] == 42
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-c", LOADER, json.dumps(list(VARIANTS)), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    got = load_file(str(tmp_path / "logits.safetensors"))
    for name in VARIANTS:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-5)
        assert int(got[name + ":tokens"]) == counts[name]


@pytest.mark.parametrize("options", [VARIANTS["patch_mlp2x"], VARIANTS["full_linear"]])
def test_vision_tower_of_saved_model_keeps_tips_weights(tiny_model, lm_config, tmp_path, options):
    from transformers import AutoModelForImageTextToText

    model = build_llava(tiny_model, lm_config, **options)
    model.save_pretrained(tmp_path / "m")
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "m")
    source = tiny_model.hf_model.vision_model.state_dict()
    for key, value in reloaded.model.vision_tower.state_dict().items():
        torch.testing.assert_close(value, source[key])
