"""Projector types, the LLaVA <-> HF key mapping, and loading weights trained in the other layout."""
from __future__ import annotations

import pytest
import torch

from tipsv2_sdk.connectors import build_llava, load_projector
from tipsv2_sdk.connectors.keymap import hf_to_llava, llava_to_hf, to_hf_projector_state
from tipsv2_sdk.connectors.projectors import MultiModalProjector, build_llava_projector, parse_projector


def test_parse_projector_names():
    assert parse_projector("mlp2x_gelu").depth == 2 and parse_projector("linear").kind == "linear"
    spec = parse_projector("mlp3x_gelu+cls")
    assert (spec.kind, spec.depth, spec.separate_cls, spec.base) == ("mlp", 3, True, "mlp3x_gelu")
    for bad in ("mlp", "mlp0x_gelu", "mlp2x_relu", "conv", "identity+cls", "", None):
        with pytest.raises(ValueError):
            parse_projector(bad)


@pytest.mark.parametrize(
    "name, keys",
    [
        ("linear", {"weight", "bias"}),
        ("mlp2x_gelu", {"0.weight", "0.bias", "2.weight", "2.bias"}),
        ("mlp3x_gelu", {"0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"}),
        ("identity", set()),
    ],
)
def test_llava_layout_matches_llavas_builder(name, keys):
    projector = build_llava_projector(name, 16, 16)
    assert set(projector.state_dict()) == keys
    hf = MultiModalProjector(name, 16, 16)
    assert set(llava_to_hf(projector.state_dict(), prefix="")) == set(hf.state_dict())


def test_cls_projector_projects_prefix_tokens_separately():
    torch.manual_seed(0)
    llava = build_llava_projector("mlp2x_gelu+cls", 8, 12, num_prefix_tokens=2)
    x = torch.randn(3, 2 + 5, 8)
    out = llava(x)
    assert out.shape == (3, 7, 12)
    torch.testing.assert_close(out[:, :2], llava.cls(x[:, :2]))
    torch.testing.assert_close(out[:, 2:], llava[2](llava[1](llava[0](x[:, 2:]))))
    hf = MultiModalProjector("mlp2x_gelu+cls", 8, 12, num_prefix_tokens=2)
    hf.load_state_dict(llava_to_hf(llava.state_dict(), prefix=""))
    torch.testing.assert_close(hf(x), out)
    assert set(hf_to_llava(hf.state_dict(), "mlp2x_gelu+cls", prefix="")) == set(llava.state_dict())


def test_key_mapping_round_trip_and_prefixes():
    state = {"model.mm_projector.0.weight": torch.ones(2, 2), "model.mm_projector.2.bias": torch.zeros(2),
             "model.layers.0.self_attn.q_proj.weight": torch.ones(1)}
    hf = llava_to_hf(state)
    assert set(hf) == {"multi_modal_projector.linear_1.weight", "multi_modal_projector.linear_2.bias"}
    assert set(hf_to_llava(hf)) == {"model.mm_projector.0.weight", "model.mm_projector.2.bias"}
    assert set(hf_to_llava({"linear_1.weight": torch.ones(1)})) == {"model.mm_projector.weight"}
    assert set(hf_to_llava({"linear_1.weight": torch.ones(1)}, "mlp1x_gelu")) == {"model.mm_projector.0.weight"}
    assert set(to_hf_projector_state({"0.weight": torch.ones(1)})) == {"linear_1.weight"}
    with pytest.raises(ValueError, match="unexpected LLaVA projector key"):
        llava_to_hf({"mm_projector.1.weight": torch.ones(1)})
    with pytest.raises(ValueError, match="unexpected HF projector key"):
        hf_to_llava({"multi_modal_projector.act.weight": torch.ones(1)})


def _features(model, n=5):
    torch.manual_seed(1)
    in_dim = model.model.multi_modal_projector.linear_1.in_features
    return torch.randn(2, n, in_dim)


@pytest.mark.parametrize("projector", ["mlp2x_gelu", "linear", "mlp3x_gelu"])
def test_projector_trained_in_llava_loads_into_hf_and_back(tiny_model, lm_config, projector, tmp_path):
    model = build_llava(tiny_model, lm_config, projector=projector)
    llava = build_llava_projector(projector, tiny_model.embed_dim, lm_config.hidden_size)
    with torch.no_grad():  # "trained": weights far from any init
        for p in llava.parameters():
            p.normal_()
    x = _features(model)
    load_projector(model, {f"model.mm_projector.{k}": v for k, v in llava.state_dict().items()})
    with torch.no_grad():
        torch.testing.assert_close(model.model.multi_modal_projector(x), llava(x))
    # and back: HF weights -> a fresh LLaVA-layout projector
    fresh = build_llava_projector(projector, tiny_model.embed_dim, lm_config.hidden_size)
    back = hf_to_llava(model.state_dict(), projector, prefix="")
    fresh.load_state_dict(back)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), llava(x))
    # a file in LLaVA's mm_projector.bin format loads too (tensors only, weights_only)
    path = tmp_path / "mm_projector.bin"
    torch.save(hf_to_llava(model.state_dict(), projector), path)
    other = build_llava(tiny_model, lm_config, projector=projector, projector_weights=path)
    with torch.no_grad():
        torch.testing.assert_close(other.model.multi_modal_projector(x), llava(x))


def test_projector_weights_for_another_lm_fail_with_the_sizes(tiny_model, lm_config, llama_factory):
    model = build_llava(tiny_model, lm_config)
    wrong = build_llava_projector("mlp2x_gelu", tiny_model.embed_dim, 48).state_dict()
    with pytest.raises(ValueError, match=r"has shape \(48, 32\) but this model needs \(32, 32\).*hidden size 32"):
        load_projector(model, wrong)
    with pytest.raises(ValueError, match="do not fit this model's 'mlp2x_gelu' projector"):
        load_projector(model, build_llava_projector("linear", tiny_model.embed_dim, 32).state_dict())
