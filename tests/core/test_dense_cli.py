"""``tipsv2 depth``, ``tipsv2 normals``, ``tipsv2 segment --dpt`` and ``tipsv2 convert --dpt`` with CliRunner."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import dense_fixtures as fx  # tests/core is on pytest's pythonpath

from tipsv2_sdk.cli.app import cli

NAMES = ["wall", "floor", "sky", "tree", "road"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return fx.transformers_dpt(tmp_path_factory.mktemp("m") / "dpt", labels=NAMES)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    (root / "other").mkdir()
    sizes = [(50, 40), (90, 61)]
    paths = [fx.photo(root / f"room{i}.png", size, seed=i) for i, size in enumerate(sizes)]
    return [*paths, fx.photo(root / "other" / "room0.png", (33, 70), seed=5)]  # same name, other folder


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_error(result, text):
    assert result.exit_code == 2, result.output
    assert text in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_depth_of_one_image(model_dir, photos, tmp_path):
    out = tmp_path / "depth.png"
    result = run("depth", photos[1], "-o", out, "-m", model_dir, "--npy")
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (90, 61)
    depth = np.load(tmp_path / "depth.npy", allow_pickle=False)
    assert depth.shape == (61, 90) and depth.dtype == np.float32
    assert f"wrote {out} + {tmp_path / 'depth.npy'} ({photos[1]}, 90x61, depth" in result.stdout
    assert "images" in result.stderr  # the progress bar


def test_normals_of_several_images_into_a_directory(model_dir, photos, tmp_path):
    out = tmp_path / "normals"
    result = run("normals", *photos, "-o", out, "-m", model_dir, "--npy", "--batch-size", "2", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["task"] == "normals" and data["image_size"] == 56 and data["skipped"] == []
    names = [Path(row["png"]).name for row in data["outputs"]]
    assert names == ["room0_normals.png", "room1_normals.png", "room0-2_normals.png"]
    for row, size in zip(data["outputs"], [(50, 40), (90, 61), (33, 70)]):
        assert Image.open(row["png"]).size == size
        normals = np.load(row["npy"], allow_pickle=False)
        assert normals.shape == (size[1], size[0], 3)
        np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=1e-5)


def test_segment_with_the_dpt_head(model_dir, photos, tmp_path):
    out = tmp_path / "seg.png"
    result = run("segment", "--dpt", photos[0], "-o", out, "-m", model_dir, "--npy", "--json", "--image-size", "28")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    row = data["outputs"][0]
    labels = np.load(tmp_path / "seg.npy", allow_pickle=False)
    assert labels.shape == (40, 50) and labels.dtype == np.int32 and data["image_size"] == 28
    assert {c["label"] for c in row["classes"]} <= set(NAMES)
    assert sum(c["fraction"] for c in row["classes"]) == pytest.approx(1.0)
    assert Image.open(out).height >= 40 and Image.open(out).width > 50  # overlay + legend (may be taller)
    renamed = run("segment", "--dpt", *photos[:2], "-o", tmp_path / "dir", "-m", model_dir,
                  "--labels", "a,b,c,d,e")
    assert renamed.exit_code == 0, renamed.output
    assert (tmp_path / "dir" / "room1_segmentation.png").is_file()
    assert "wrote" in renamed.stdout and any(f"{n} " in renamed.stdout for n in "abcde")


def test_an_unreadable_image_is_skipped_and_reported(model_dir, photos, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 truncated")
    result = run("depth", photos[0], broken, "-o", tmp_path / "out", "-m", model_dir)
    assert result.exit_code == 1
    assert f"skipped {broken}" in result.stderr and "1 of 2 images could not be read" in result.stderr
    assert (tmp_path / "out" / "room0_depth.png").is_file() and not (tmp_path / "out" / "broken_depth.png").exists()


@pytest.mark.parametrize("args, message", [
    (["depth", "missing.png", "-o", "d.png"], "no such image file: missing.png"),
    (["depth", "{photo}", "-o", "d.jpg"], "use a name ending in .png"),
    (["depth", "{photo}", "{photo2}", "-o", "d.png"], "2 images need an output directory, not a .png name"),
    (["normals", "{photo}", "-o", "n.png", "--image-size", "50"], "--image-size: image_size=50 is not a positive"),
    (["segment", "--dpt", "{photo}", "-o", "s.png"], "--dpt needs -m/--model"),
    (["segment", "--dpt", "{photo}", "-o", "s.png", "-m", "{model}", "--mode", "whole"], "--mode applies to zero-shot"),
    (["segment", "--dpt", "{photo}", "-o", "s.png", "-m", "{model}", "--labels", "a,b"],
     "--labels: 2 names given but the segmentation head has 5 classes"),
    (["segment", "{photo}", "{photo2}", "-o", "s.png", "--labels", "a,b"], "zero-shot segmentation takes one IMAGE"),
    (["segment", "{photo}", "-o", "s.png"], "--labels is required"),
])
def test_user_errors_exit_2_with_one_line(model_dir, photos, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    fill = {"{photo}": str(photos[0]), "{photo2}": str(photos[1]), "{model}": str(model_dir)}
    args = [fill.get(a, a) for a in args]
    if "-m" not in args and args[0] != "segment":
        args += ["-m", str(model_dir)]
    one_line_error(run(*args), message)


def test_models_that_cannot_do_the_task(photos, tmp_path, tiny_model_dir):
    normals_only = fx.transformers_dpt(tmp_path / "normals_only", "Tipsv2DptForNormalEstimation")
    one_line_error(run("depth", photos[0], "-o", tmp_path / "d.png", "-m", normals_only),
                   "has no trained depth head (it has: normals)")
    one_line_error(run("depth", photos[0], "-o", tmp_path / "d.png", "-m", tiny_model_dir),
                   "not a TIPSv2 DPT model")
    one_line_error(run("depth", photos[0], "-o", tmp_path / "d.png", "-m", "no-such-dpt"),
                   "unknown DPT model 'no-such-dpt'")


def test_hub_ids_with_a_revision(model_dir, photos, tmp_path, monkeypatch):
    from tipsv2_sdk.testing import fake_hub_cache

    cache = tmp_path / "hf"
    fake_hub_cache(cache, "google/tipsv2-b14-dpt", model_dir)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TIPSV2_HOME", str(tmp_path / "none"))
    result = run("depth", photos[0], "-o", tmp_path / "d.png", "-m", "google/tipsv2-b14-dpt@main")
    assert result.exit_code == 0, result.output
    one_line_error(run("depth", photos[0], "-o", tmp_path / "d.png", "-m", "tipsv2-g14-dpt"),
                   "model google/tipsv2-g14-dpt is not a local directory and not in the Hugging Face cache")


def test_arguments_are_checked_before_torch_is_imported(tmp_path):
    code = (
        "import sys\n"
        "from tipsv2_sdk.cli.app import cli\n"
        "try:\n"
        f"    cli(['depth', {str(tmp_path / 'missing.png')!r}, '-o', 'x.png', '-m', 'some-dir'])\n"
        "except SystemExit as exc:\n"
        "    print(exc.code, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["2", "False"], out.stdout + out.stderr
    assert "no such image file" in out.stderr


def test_convert_dpt_from_the_command_line(tmp_path):
    official = fx.write_official(tmp_path / "official")
    spec = fx.tiny_spec()
    from tipsv2_sdk import registry

    out = tmp_path / "converted"
    # The CLI takes registry names; register the test-size spec under its name for this test only.
    registry._REGISTRY[spec.name] = spec
    try:
        result = run("convert", "--vision", official["vision"], "--dpt", official["depth"], "--dpt",
                     official["segmentation"], "--variant", spec.name, out)
        assert result.exit_code == 0, result.output
        assert f"wrote {out} ({spec.name} DPT: depth, segmentation; random normals head)" in result.stdout
        as_json = run("convert", "--vision", official["vision"], "--dpt", official["normals"], "--variant", spec.name,
                      "--json", tmp_path / "n")
        assert as_json.exit_code == 0, as_json.output
        assert json.loads(as_json.stdout)["tasks"] == ["normals"]
        broken = fx.rewrite(official["depth"], tmp_path / "b.zip", drop=["decoder/dpt/project/kernel"])
        one_line_error(run("convert", "--vision", official["vision"], "--dpt", broken, "--variant", spec.name,
                           tmp_path / "b"), "missing keys: project/kernel")
    finally:
        del registry._REGISTRY[spec.name]
    one_line_error(run("convert", "--dpt", official["depth"], "--variant", "tipsv2-b14", tmp_path / "x"),
                   "--dpt needs --vision")
    one_line_error(run("convert", "--vision", official["vision"], "--text", official["vision"], "--dpt",
                       official["depth"], "--variant", "tipsv2-b14", tmp_path / "x"), "convert --text/--tokenizer")
    one_line_error(run("convert", "--vision", official["vision"], "--dpt", tmp_path / "nope.zip", "--variant",
                       "tipsv2-b14", tmp_path / "x"), "--dpt: no such file")
