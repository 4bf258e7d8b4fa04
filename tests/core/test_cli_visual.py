"""`tipsv2 segment` and `tipsv2 pca` with click's CliRunner, including bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tipsv2_sdk.cli.app import cli


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(4).integers(0, 255, size=(70, 98, 3), dtype=np.uint8)).save(path)
    return path


def _run(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_segment_writes_an_overlay_and_flags_random_weights(tiny_model_dir, photo, tmp_path):
    out = tmp_path / "out" / "seg.png"
    result = _run("segment", photo, "--labels", "sky, tree,road", "-o", out, "--model", tiny_model_dir)
    assert result.exit_code == 0, result.output
    assert "RANDOM WEIGHTS" in result.output
    assert "2 window(s)" in result.output and "tree" in result.output and f"wrote {out}" in result.output
    img = Image.open(out)
    assert img.format == "PNG" and img.height >= 70 and img.width > 98  # picture + legend


def test_segment_json(tiny_model_dir, photo, tmp_path):
    out = tmp_path / "seg.png"
    result = _run("segment", photo, "-l", "sky,tree", "-o", out, "-m", tiny_model_dir, "--mode", "whole", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["trained"] is False and data["mode"] == "whole" and data["windows"] == 1
    assert (data["height"], data["width"]) == (70, 98) and data["image_size"] == 56
    assert [row["label"] for row in data["labels"]] == ["sky", "tree"]
    assert sum(row["fraction"] for row in data["labels"]) == pytest.approx(1.0)
    assert "RANDOM WEIGHTS" in result.stderr
    assert out.is_file()


def test_segment_on_the_embedded_default_model(photo, tmp_path):
    from tipsv2_sdk import load

    out = tmp_path / "seg.png"
    result = _run("segment", photo, "--labels", "circle,square", "-o", out, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"] == "tipsv2-tiny"
    assert data["trained"] is bool(load("tipsv2-tiny").meta.get("trained", True))
    assert out.is_file()


def test_pca_writes_the_image_size(tiny_model_dir, photo, tmp_path):
    out = tmp_path / "pca.png"
    result = _run("pca", photo, "-o", out, "--model", tiny_model_dir, "--image-size", "112")
    assert result.exit_code == 0, result.output
    assert "RANDOM WEIGHTS" in result.output and "8x8 patch features" in result.output
    assert Image.open(out).size == (98, 70)
    both = tmp_path / "both.png"
    result = _run("pca", photo, "-o", both, "--model", tiny_model_dir, "--side-by-side", "--json")
    data = json.loads(result.stdout)
    assert data["grid"] == [4, 4] and (data["width"], data["height"]) == (98 * 2 + 4, 70)
    assert Image.open(both).size == (98 * 2 + 4, 70)


@pytest.mark.parametrize("command", ["segment", "pca"])
def test_bad_input_is_exit_2_with_one_line(tiny_model_dir, photo, tmp_path, command):
    labels = ["--labels", "a,b"] if command == "segment" else []
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png at all")
    cases = [
        ([tmp_path / "missing.png", *labels], "missing.png"),
        ([photo, *labels, "--image-size", "50"], "--image-size"),
        ([broken, *labels], "broken.png"),
        ([tmp_path, *labels], "directory"),
    ]
    if command == "segment":
        cases += [([photo, "--labels", " , ,"], "--labels"), ([photo, "--labels", "a,b,a"], "a given more than once"),
                  ([photo, "--labels", "a", "--templates", "fancy"], "fancy")]
    for args, needle in cases:
        result = _run(command, *args, "-o", tmp_path / "o.png", "--model", tiny_model_dir)
        assert result.exit_code == 2, (args, result.output)
        assert needle in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "o.png").exists()
