"""``convert_official`` and ``tipsv2 convert``: checks, refusals, partial conversions, the CLI."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import tipsv2_sdk as tips
from tipsv2_sdk.cli.app import cli
from tipsv2_sdk.convert import detect_version, read_text_layout, read_vision_layout
from tipsv2_sdk.convert.keys import text_rules, vision_rules
from tipsv2_sdk.convert.npz import NpzCheckpoint
from tipsv2_sdk.errors import CheckpointError, TipsV2Error
from tipsv2_sdk.registry import get_spec, make_config

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "parity"
INDEX = json.loads((FIXTURES / "layouts.json").read_text())
SIZES = INDEX["image_sizes"]
TOKENIZER = FIXTURES / INDEX["tokenizer"]


def parity_spec(name: str, **changes):
    """The ModelSpec a fixture was generated with (see tests/fixtures/parity/README.md)."""
    overrides = {**INDEX["layouts"][name]["overrides"], **changes}
    return dataclasses.replace(get_spec(name), name=f"{name}-parity", hub_id=None, **overrides)


def pixels(size: int) -> np.ndarray:
    return np.random.default_rng(INDEX["image_seed"] + size).random((INDEX["batch"], 3, size, size), dtype=np.float32)


def expected(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / f"{name}_expected.npz", allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def vision(name: str = "tipsv2-b14") -> Path:
    return FIXTURES / f"{name}_vision.npz"


def text(name: str = "tipsv2-b14") -> Path:
    return FIXTURES / f"{name}_text.npz"


def rewrite(src: Path, dst: Path, drop=(), add=None, replace=None) -> Path:
    """A copy of an npz with keys dropped, added or replaced."""
    with np.load(src, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files if k not in drop}
    arrays.update(add or {})
    arrays.update(replace or {})
    np.savez(dst, **arrays)
    return dst


def convert(tmp_path, v=None, t=None, tok=None, variant=None, out="out"):
    return tips.convert_official(v, t, tok, tmp_path / out, variant=variant or parity_spec("tipsv2-b14"))


# ---------------------------------------------------------------------- key and shape checks
def test_missing_key_is_named(tmp_path):
    bad = rewrite(vision(), tmp_path / "v.npz", drop=["blocks.1.ls2.gamma", "norm.bias"])
    with pytest.raises(CheckpointError, match=r"missing keys: .*norm\.bias") as info:
        convert(tmp_path, v=bad)
    assert "blocks.1.ls2.gamma" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_unexpected_key_is_named(tmp_path):
    bad = rewrite(text(), tmp_path / "t.npz", add={"transformer.extra_proj.weight": np.zeros((2, 2), np.float32)})
    with pytest.raises(CheckpointError, match=r"unexpected keys: transformer\.extra_proj\.weight"):
        convert(tmp_path, t=bad, tok=TOKENIZER)


def test_wrong_shape_is_named_with_both_shapes(tmp_path):
    bad = rewrite(vision(), tmp_path / "v.npz", replace={"blocks.0.attn.qkv.weight": np.zeros((96, 31), np.float32)})
    with pytest.raises(CheckpointError, match=r"wrong shapes: blocks\.0\.attn\.qkv\.weight \(96, 31\) "
                                              r"\(expected \(96, 32\)\)"):
        convert(tmp_path, v=bad)


def test_text_scalar_temperature_is_required_shape(tmp_path):
    bad = rewrite(text(), tmp_path / "t.npz", replace={"temperature_contrastive": np.ones(3, np.float32)})
    with pytest.raises(CheckpointError, match="temperature_contrastive"):
        convert(tmp_path, t=bad, tok=TOKENIZER)
    negative = rewrite(text(), tmp_path / "n.npz", replace={"temperature_contrastive": np.float32(-1.0)})
    with pytest.raises(CheckpointError, match="positive"):
        convert(tmp_path, t=negative, tok=TOKENIZER)


def test_missing_temperature_keeps_the_config_default(tmp_path):
    no_temp = rewrite(text(), tmp_path / "t.npz", drop=["temperature_contrastive"])
    model = tips.load(convert(tmp_path, v=vision(), t=no_temp, tok=TOKENIZER))
    assert model.temperature == pytest.approx(make_config("tipsv2-b14").temperature_init_value)
    assert model.meta["temperature"] is None


# ---------------------------------------------------------------------- layout and variant checks
def test_v1_and_v2_are_told_apart_by_the_position_grid():
    # 8x8 here stands for 32x32 (TIPSv2, or a TIPS v1 high-res export), 4x4 for 16x16 (TIPS v1 only).
    for name, versions, grid in (("tipsv2-b14", {1, 2}, 8), ("tips-b14", {1}, 4)):
        with NpzCheckpoint(vision(name), "vision") as ckpt:
            layout = read_vision_layout(ckpt)
        assert layout.grid == grid and layout.width == 32 and layout.depth == 2 and not layout.swiglu
        for spec_name in ("tipsv2-b14", "tips-b14"):  # whichever version the variant names
            assert detect_version(layout, parity_spec(spec_name)) == versions


def test_real_registry_grids_are_32_and_16():
    from tipsv2_sdk.convert.layout import version_grids

    assert version_grids(get_spec("tipsv2-l14")) == {"full": 32, "low": 16}
    assert version_grids(get_spec("tips-l14")) == {"full": 32, "low": 16}


def test_real_size_layouts_get_the_registry_name_suggested():
    from tipsv2_sdk.convert.layout import VisionLayout, check_vision_variant

    l14 = VisionLayout(width=1024, depth=24, grid=32, swiglu=False, mlp_hidden=4096)
    with pytest.raises(CheckpointError, match=r"width 1024 \(variant: 768\).*it matches tipsv2-l14$"):
        check_vision_variant(l14, get_spec("tipsv2-b14"), 3072, "x.npz")
    assert check_vision_variant(l14, get_spec("tips-l14"), 4096, "x.npz") == 1  # v1 high-res export
    assert check_vision_variant(l14, get_spec("tipsv2-l14"), 4096, "x.npz") == 2
    g14_low = VisionLayout(width=1536, depth=40, grid=16, swiglu=True, mlp_hidden=4096)
    assert check_vision_variant(g14_low, get_spec("tips-g14"), 4096, "x.npz") == 1
    with pytest.raises(CheckpointError, match=r"16x16 position grid\) but --variant tipsv2-g14.*tips-g14"):
        check_vision_variant(g14_low, get_spec("tipsv2-g14"), 4096, "x.npz")


def test_v1_low_res_checkpoint_with_v2_variant_names_the_right_variant(tmp_path):
    with pytest.raises(CheckpointError, match=r"TIPS v1 checkpoint \(4x4 position grid\).*tips-b14-parity"):
        convert(tmp_path, v=vision("tips-b14"), variant=parity_spec("tipsv2-b14"))


def test_v1_high_res_export_takes_its_image_size_from_the_grid(tmp_path):
    """A full-size grid under a v1 name: a TIPS v1 high-res export, converted at that grid."""
    model = tips.load(convert(tmp_path, v=vision("tipsv2-b14"), variant=parity_spec("tips-b14")))
    assert model.image_size == 112 and model.meta["version"] == 1 and model.meta["image_size"] == 112
    with torch.inference_mode():
        tokens = model.vision_tokens(torch.from_numpy(pixels(112)))
    np.testing.assert_allclose(tokens.patches.reshape(2, 64, -1).numpy(), expected("tipsv2-b14")["s112_patches"],
                               atol=1e-4, rtol=0)
    low = tips.load(convert(tmp_path, v=vision("tips-b14"), variant=parity_spec("tips-b14"), out="low"))
    assert low.image_size == 56 and low.meta["version"] == 1


def test_odd_position_grid_is_refused(tmp_path):
    bad = rewrite(vision(), tmp_path / "v.npz", replace={"pos_embed": np.zeros((1, 1 + 36, 32), np.float32)})
    with pytest.raises(CheckpointError, match=r"6x6 position grid \(variant: 8x8, or 4x4 for TIPS v1\)"):
        convert(tmp_path, v=bad)
    not_square = rewrite(vision(), tmp_path / "w.npz", replace={"pos_embed": np.zeros((1, 1 + 30, 32), np.float32)})
    with pytest.raises(CheckpointError, match="not a square grid"):
        convert(tmp_path, v=not_square)


def test_wrong_width_names_the_sizes(tmp_path):
    with pytest.raises(CheckpointError, match=r"does not match --variant tipsv2-b14: it has width 32 \(variant: 768\)"):
        convert(tmp_path, v=vision(), variant="tipsv2-b14")


def test_wrong_depth_and_ffn_are_named(tmp_path):
    with pytest.raises(CheckpointError, match=r"3 blocks \(variant: 2\)"):
        convert(tmp_path, v=vision("tipsv2-l14"))
    with pytest.raises(CheckpointError, match=r"SwiGLU FFN \(mlp\.w12/w3\) \(variant: a GELU MLP"):
        convert(tmp_path, v=vision("tipsv2-g14"))
    with pytest.raises(CheckpointError, match=r"MLP hidden size 134 \(variant: 144\)"):
        convert(tmp_path, v=vision("tipsv2-so400m14"), variant=parity_spec("tipsv2-b14", width=36))


def test_wrong_text_layout_is_named(tmp_path):
    with pytest.raises(CheckpointError, match=r"text checkpoint tipsv2-so400m14_text\.npz does not match.*width 36"):
        convert(tmp_path, t=text("tipsv2-so400m14"), tok=TOKENIZER)


def test_text_file_given_as_vision_and_vice_versa(tmp_path):
    with pytest.raises(CheckpointError, match="is a text checkpoint"):
        convert(tmp_path, v=text())
    with pytest.raises(CheckpointError, match="is a vision checkpoint"):
        convert(tmp_path, t=vision(), tok=TOKENIZER)


def test_unreadable_and_pickled_files_are_refused(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip archive")
    with pytest.raises(CheckpointError, match="not a readable .npz"):
        convert(tmp_path, v=junk)
    pickled = tmp_path / "pickled.npz"
    with np.load(vision(), allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["norm.weight"] = np.array([{"x": 1}], dtype=object)
    np.savez(pickled, **arrays)  # object arrays are pickled inside the archive
    with pytest.raises(CheckpointError, match="norm.weight"):
        convert(tmp_path, v=pickled)


def test_text_needs_a_tokenizer_and_a_fitting_one(tmp_path):
    with pytest.raises(CheckpointError, match="tokenizer.model"):
        convert(tmp_path, t=text())
    small = parity_spec("tipsv2-b14", vocab_size=300)
    with pytest.raises(CheckpointError, match="384 pieces"):
        convert(tmp_path, v=vision(), tok=TOKENIZER, variant=small)
    not_spm = tmp_path / "tokenizer.model"
    not_spm.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="not a SentencePiece model"):
        convert(tmp_path, t=text(), tok=not_spm)


def test_nothing_to_convert_and_unknown_variant(tmp_path):
    with pytest.raises(CheckpointError, match="nothing to convert"):
        convert(tmp_path)
    with pytest.raises(tips.UnknownModelError, match="no-such-variant"):
        convert(tmp_path, v=vision(), variant="no-such-variant")


def test_output_directory_guard(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(TipsV2Error, match="refusing to replace"):
        convert(tmp_path, v=vision(), out="precious")
    assert (precious / "notes.txt").read_text() == "keep me"
    first = convert(tmp_path, v=vision())
    (first / "stale.txt").write_text("old")
    second = convert(tmp_path, v=vision())  # a model directory is replaced atomically
    assert second == first and not (second / "stale.txt").exists()
    inside = rewrite(vision(), second / "v.npz")
    with pytest.raises(TipsV2Error, match="contains the input"):
        convert(tmp_path, v=inside)


# ---------------------------------------------------------------------- partial conversions
def test_vision_only_conversion(tmp_path):
    out = convert(tmp_path, v=vision())
    model = tips.load(out)
    assert model.tokenizer is None and model.meta["random_towers"] == ["text"]
    assert model.meta["converted_from"] == {"vision": "tipsv2-b14_vision.npz", "text": None, "tokenizer": None}
    with torch.inference_mode():
        tokens = model.vision_tokens(torch.from_numpy(pixels(SIZES[1])))
    np.testing.assert_allclose(tokens.cls1.numpy(), expected("tipsv2-b14")[f"s{SIZES[1]}_cls1"], atol=1e-4, rtol=0)
    with pytest.raises(RuntimeError, match="without a tokenizer"):
        model.encode_texts(["a cat"])


def test_text_only_conversion_is_deterministic(tmp_path):
    first = tips.load(convert(tmp_path, t=text(), tok=TOKENIZER, out="a"))
    second = tips.load(convert(tmp_path, t=text(), tok=TOKENIZER, out="b"))
    assert first.meta["random_towers"] == ["vision"]
    assert "vision tower randomly initialised" in first.meta["description"]
    np.testing.assert_allclose(first.encode_texts(INDEX["texts"][:2]),
                               second.encode_texts(INDEX["texts"][:2]), atol=0, rtol=0)
    ids = torch.tensor(INDEX["text_ids"])
    with torch.inference_mode():
        raw = first.text_features(ids, (ids != 0).long()).numpy()
    np.testing.assert_allclose(raw, expected("tipsv2-b14")["text"], atol=1e-4, rtol=0)
    for a, b in zip(first.hf_model.vision_model.parameters(), second.hf_model.vision_model.parameters()):
        assert torch.equal(a, b)


def test_conversion_leaves_the_global_rng_alone(tmp_path):
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    convert(tmp_path, t=text(), tok=TOKENIZER)
    assert torch.equal(torch.rand(3), before)


# ---------------------------------------------------------------------- the CLI
def export_official(spec_name: str, directory: Path) -> tuple[Path, Path, dict[str, torch.Tensor]]:
    """A random registered-variant model written in the official layout (inverse of the converter)."""
    from transformers import Tipsv2Model

    spec = get_spec(spec_name)
    torch.manual_seed(7)
    model = Tipsv2Model(make_config(spec))
    state = model.state_dict()

    def gather(rules):
        return {r.source: torch.cat([state[t] for t in r.targets]).numpy() for r in rules}

    v, t = directory / "v.npz", directory / "t.npz"
    np.savez(v, **gather(vision_rules(spec.depth, spec.swiglu)))
    np.savez(t, **gather(text_rules(spec.text_depth)), temperature=np.float32(0.02))
    return v, t, state


def test_cli_converts_a_registered_variant(tmp_path):
    v, t, state = export_official("tipsv2-tiny", tmp_path)
    out = tmp_path / "converted"
    result = CliRunner().invoke(cli, ["convert", "--vision", str(v), "--text", str(t), "--tokenizer", str(TOKENIZER),
                                      "--variant", "tipsv2-tiny", str(out)])
    assert result.exit_code == 0, result.output
    assert "tipsv2-tiny, TIPS v2: vision + text" in result.output
    model = tips.load(out)
    assert model.name == "tipsv2-tiny" and model.temperature == pytest.approx(0.02)
    for key, value in model.hf_model.state_dict().items():
        if key in state and key != "temperature":
            assert torch.equal(value, state[key]), key
    with NpzCheckpoint(v, "vision") as ckpt:
        assert read_vision_layout(ckpt).depth == 4
    with NpzCheckpoint(t, "text") as ckpt:
        assert read_text_layout(ckpt).depth == 2


def test_cli_json_output(tmp_path):
    result = CliRunner().invoke(cli, ["convert", "--text", str(text()), "--tokenizer", str(TOKENIZER),
                                      "--variant", "tipsv2-b14", "--json", str(tmp_path / "o")])
    assert result.exit_code == 2  # the tiny fixture is not a real b14: refused before writing
    assert "width 32 (variant: 768)" in result.output and len(result.output.strip().splitlines()) == 1
    v, _, _ = export_official("tipsv2-tiny", tmp_path)
    result = CliRunner().invoke(cli, ["convert", "--vision", str(v), "--variant", "tipsv2-tiny", "--json",
                                      str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["random_towers"] == ["text"] and data["out_dir"] == str(tmp_path / "o")
    assert "random text tower" not in result.output  # JSON only on stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--vision", "missing.npz"], "--vision: no such file: missing.npz"),
        (["--text", "missing.npz", "--tokenizer", "x.model"], "--text: no such file"),
        ([], "give at least one of --vision and --text"),
        (["--variant", "no-such-variant", "--vision", str(FIXTURES / "tipsv2-b14_vision.npz")], "no-such-variant"),
    ],
)
def test_cli_user_errors_exit_2_with_one_line(tmp_path, args, message):
    if "--variant" not in args:
        args = [*args, "--variant", "tipsv2-b14"]
    result = CliRunner().invoke(cli, ["convert", *args, str(tmp_path / "o")])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_cli_names_missing_keys(tmp_path):
    v, _, _ = export_official("tipsv2-tiny", tmp_path)
    bad = rewrite(v, tmp_path / "bad.npz", drop=["blocks.2.ls1.gamma"])
    result = CliRunner().invoke(cli, ["convert", "--vision", str(bad), "--variant", "tipsv2-tiny", str(tmp_path / "o")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "missing keys: blocks.2.ls1.gamma" in result.output
    assert len(result.output.strip().splitlines()) == 1
