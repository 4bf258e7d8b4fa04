"""Fast encoding modes (``precision=``, ``compile=``, ``threads=``): accuracy to fp32, refusals, batching."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import tipsv2_sdk as tips
from tipsv2_sdk import attention, fast
from tipsv2_sdk.fast import FastPathError

TEXTS = ["a photo of a cat", "two red circles and a blue square", "a star", "a dog on a striped sofa near a lamp"]


@pytest.fixture(scope="module")
def s14(tmp_path_factory):
    """A random model with the full S/14 layout (12 blocks, width 384, 6 heads) at 112 px, saved and loaded."""
    from transformers import Tipsv2Model

    from tipsv2_sdk.model import TipsV2
    from tipsv2_sdk.registry import get_spec, make_config
    from tipsv2_sdk.testing import tiny_tokenizer

    work = tmp_path_factory.mktemp("s14")
    spec = dataclasses.replace(get_spec("tipsv2-s14"), name="tipsv2-s14-random", image_size=112, hub_id=None,
                               vocab_size=384)
    torch.manual_seed(0)
    model = TipsV2(Tipsv2Model(make_config(spec)).eval(), tiny_tokenizer(work / "tok", vocab_size=384), name=spec.name)
    model.save_pretrained(work / "model")
    return tips.load(work / "model")


@pytest.fixture(scope="module")
def embedded():
    return tips.load("tipsv2-tiny")


def _pixels(model, count=3, seed=7):
    return [torch.from_numpy(p) for p in fast.probe_pixels(model.image_size, count, seed=seed)]


def _min_cos(a, b):
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    return float((a * b).sum(-1).min())  # both L2-normalised


@pytest.mark.parametrize("precision", ["bf16", "int8"])
@pytest.mark.parametrize("which", ["s14", "embedded"])
def test_fast_modes_keep_cosine_to_fp32(which, precision, request):
    model = request.getfixturevalue(which)
    pixels = _pixels(model)
    ref = model.encode_images(pixels, progress=False)
    with pytest.warns(RuntimeWarning) if precision == "bf16" and not fast.bf16_is_native() else _nothing():
        got = model.encode_images(pixels, progress=False, precision=precision)
    assert got.cls1.dtype == np.float32 and got.patches.shape == ref.patches.shape
    for name in ("cls1", "cls2", "patches"):
        assert _min_cos(getattr(got, name), getattr(ref, name)) >= 0.99, name
    assert not np.array_equal(got.cls1, ref.cls1)  # it really ran another path
    texts_ref = model.encode_texts(TEXTS)
    texts_got = model.encode_texts(TEXTS, precision=precision)
    assert _min_cos(texts_got, texts_ref) >= 0.99
    assert fast.measured_accuracy(model)[("vision", precision)]["patches"] >= 0.99


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_default_is_the_exact_path_and_leaves_the_model_untouched(tiny_model):
    pixels = _pixels(tiny_model)
    before = {k: v.clone() for k, v in tiny_model.hf_model.state_dict().items()}
    a = tiny_model.encode_images(pixels, progress=False)
    b = tiny_model.encode_images(pixels, progress=False, precision="fp32", compile=False)
    np.testing.assert_array_equal(a.patches, b.patches)
    tiny_model.encode_images(pixels, progress=False, precision="int8")
    after = tiny_model.hf_model.state_dict()
    assert all(torch.equal(before[k], after[k]) and after[k].dtype == before[k].dtype for k in before)


def test_a_mode_below_the_bar_is_refused(tiny_model, monkeypatch):
    monkeypatch.setattr(fast, "COSINE_BAR", 1.01)  # nothing reaches it, so the check must refuse
    fast.clear(tiny_model)
    with pytest.raises(FastPathError, match=r"precision='int8' is not accurate enough.*minimum cosine"):
        tiny_model.encode_images(_pixels(tiny_model), progress=False, precision="int8")
    fast.clear(tiny_model)


def test_bad_modes_are_refused_naming_the_choice(tiny_model):
    with pytest.raises(FastPathError, match=r"precision='fp16' is not one of fp32, bf16, int8, auto"):
        tiny_model.encode_images(_pixels(tiny_model), progress=False, precision="fp16")
    with pytest.raises(FastPathError, match=r"int8' runs on CPU only"):
        fast.make_mode("int8", device="cuda")
    with pytest.raises(FastPathError, match="threads=0"):
        tiny_model.set_encoding(threads=0)


def test_auto_and_device_selection():
    assert fast.fastest_precision("cpu") == ("bf16" if fast.bf16_is_native("cpu") else "int8")
    assert fast.make_mode("auto", device="cpu").precision == fast.fastest_precision("cpu")
    assert fast.make_mode("bf16", True, device="cuda") == fast.Mode("bf16", True)
    # xFormers only for the vision tower, only on CUDA, only when installed.
    assert attention.choose_attention("cpu", vision=True, xformers=True) == "sdpa"
    assert attention.choose_attention("cuda", vision=False, xformers=True) == "sdpa"
    assert attention.choose_attention("cuda", vision=True, xformers=False) == "sdpa"
    assert attention.choose_attention("cuda", vision=True, xformers=True) == attention.XFORMERS
    assert isinstance(attention.sdpa_kernels("cpu"), type(attention.sdpa_kernels("cpu")))


def test_set_encoding_is_the_default_of_later_calls(tiny_model):
    pixels = _pixels(tiny_model)
    want = tiny_model.encode_images(pixels, progress=False, precision="int8")
    try:
        tiny_model.set_encoding("int8")
        np.testing.assert_array_equal(tiny_model.encode_images(pixels, progress=False).cls1, want.cls1)
    finally:
        tiny_model.set_encoding("fp32")


def test_threads_are_used_for_the_forward_and_restored(tiny_model, monkeypatch):
    seen = []
    real = tiny_model.vision_tokens
    monkeypatch.setattr(tiny_model, "vision_tokens", lambda px: (seen.append(torch.get_num_threads()), real(px))[1])
    before = torch.get_num_threads()
    tiny_model.encode_images(_pixels(tiny_model), progress=False, threads=1)
    assert seen == [1] and torch.get_num_threads() == before
    seen.clear()
    torch.set_num_threads(1)
    try:
        tiny_model.encode_images(_pixels(tiny_model), progress=False)
        assert seen == [1]  # the caller's own setting is respected when threads is not given
    finally:
        torch.set_num_threads(before)


def test_decoding_ahead_keeps_order_and_skips(tiny_model, image_files, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    files = [image_files[3], bad, *image_files[:3], image_files[4]]
    ahead = tiny_model.encode_images(files, batch_size=2, on_error="skip", progress=False, workers=2)
    inline = tiny_model.encode_images(files, batch_size=2, on_error="skip", progress=False, workers=0)
    np.testing.assert_array_equal(ahead.cls1, inline.cls1)
    assert [s.index for s in ahead.skipped] == [1] == [s.index for s in inline.skipped]
    single = tiny_model.encode_images([image_files[0]], progress=False)
    np.testing.assert_allclose(ahead.cls1[1], single.cls1[0], atol=1e-5)  # rows of the kept images, in input order


def test_text_width_rounds_only_when_compiled():
    assert fast.text_width(5, fast.Mode("fp32", False), 64) == 5
    assert fast.text_width(5, fast.Mode("int8", True), 64) == 8
    assert fast.text_width(63, fast.Mode("int8", True), 64) == 64


# ------------------------------------------------------------------------------------------- the CLI
def _cli(*args):
    from click.testing import CliRunner

    from tipsv2_sdk.cli.app import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def test_cli_precision_on_embed_build_and_search(tiny_model_dir, image_files, tmp_path):
    folder = image_files[0].parent
    for precision in ("fp32", "int8"):
        res = _cli("embed", folder, "-o", tmp_path / f"{precision}.npy", "--model", tiny_model_dir,
                   "--precision", precision, "--threads", 1, "--json")
        assert res.exit_code == 0, res.output
    a, b = np.load(tmp_path / "fp32.npy"), np.load(tmp_path / "int8.npy")
    assert a.shape == b.shape and (a * b).sum(-1).min() >= 0.99 and not np.array_equal(a, b)
    res = _cli("index", "build", folder, tmp_path / "idx", "--model", tiny_model_dir, "--precision", "int8", "-q")
    assert res.exit_code == 0, res.output
    res = _cli("search", tmp_path / "idx", "a red ring", "--precision", "int8", "-k", 2, "--json")
    assert res.exit_code == 0, res.output
    bad = _cli("embed", folder, "-o", tmp_path / "x.npy", "--model", tiny_model_dir, "--precision", "fp16")
    assert bad.exit_code == 2 and "fp16" in bad.output
