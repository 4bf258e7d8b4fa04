"""`tipsv2 eval ...` end to end with CliRunner on miniature datasets and tiny models; bad input."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from tipsv2_sdk.cli.app import cli


def _run(*args):
    return CliRunner().invoke(cli, ["eval", *[str(a) for a in args]])


def test_segmentation_json_report(tiny_model_dir, layouts, tmp_path):
    root = layouts.voc(layouts.root("voc"))
    out = tmp_path / "reports" / "voc.json"
    result = _run("segmentation", "--dataset", "voc21", "--root", root, "-m", tiny_model_dir, "--json", "-o", out,
                  "--stride", "28")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["dataset"] == "voc21" and data["num_images"] == 2 and len(data["per_class_iou"]) == 21
    assert 0.0 <= data["miou"] <= 100.0 and data["settings"]["stride"] == 28 and data["settings"]["window"] == 56
    assert data["model"]["trained"] is False and "RANDOM WEIGHTS" in result.stderr
    assert "voc21" in result.stderr  # the progress bar
    assert json.loads(out.read_text()) == data


def test_segmentation_text_output_on_the_embedded_default_model(layouts):
    root = layouts.ade(layouts.root("ade"))
    result = _run("segmentation", "-d", "ade150", "--root", root, "--limit", "1", "--mode", "whole", "--no-progress",
                  "--templates", "simple")  # 150 prompts instead of 1350 keeps it quick
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("model tipsv2-tiny")
    assert "ade150 validation: mIoU" in result.stdout and "(1 images, 0 skipped)" in result.stdout
    assert "protocol: whole, short side 112, window 112, stride 84, value features, simple templates" in result.stdout
    assert "IoU per class:" in result.stdout and "  chest of drawers" in result.stdout


def test_segmentation_reports_skipped_files_on_stderr(tiny_model_dir, layouts):
    root = layouts.pascal_context(layouts.root("pc"))
    (root / "VOCdevkit" / "VOC2010" / "SegmentationClassContext" / "2008_000050.png").unlink()
    result = _run("segmentation", "-d", "pc59", "--root", root, "-m", tiny_model_dir, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["num_images"] == 1 and data["skipped"][0]["source"] == "2008_000050"
    assert "skipped 2008_000050: label not found" in result.stderr


def test_classification_and_retrieval(tiny_model_dir, layouts):
    root, names = layouts.image_folder(layouts.root("imagenet"))
    result = _run("classification", "--root", root, "--class-names", names, "-m", tiny_model_dir, "--json",
                  "--templates", "simple")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["num_images"] == 4 and data["num_classes"] == 2 and data["top5"] is None
    assert set(data["per_class_accuracy"]) == {"red square", "blue square"} and 0 <= data["top1"] <= 100
    root = layouts.karpathy(layouts.root("coco"))
    result = _run("retrieval", "--root", root, "-m", tiny_model_dir, "--embedding", "cls2", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["num_images"], data["num_texts"], data["settings"]["embedding"]) == (3, 7, "cls2")
    assert data["image_to_text_r10"] == 100.0 and data["text_to_image_r10"] == 100.0  # only 3 images / 7 texts
    text = _run("retrieval", "--root", root, "-m", tiny_model_dir, "--limit", "2", "--no-progress")
    assert text.exit_code == 0, text.output
    assert "coco test: 2 images, 5 captions, cls1" in text.stdout and "image->text  R@1" in text.stdout


def test_linear_seg_and_depth_commands(tiny_model_dir, layouts, tmp_path):
    root = layouts.coco_stuff(layouts.root("coco_stuff"))
    result = _run("linear-seg", "-d", "cocostuff", "--root", root, "-m", tiny_model_dir, "--epochs", "2",
                  "--cache-dir", tmp_path / "cache", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["task"] == "linear-probe segmentation" and data["num_train_images"] == 3 and data["num_images"] == 2
    assert len(data["train_loss"]) == 2 and len(data["per_class_iou"]) == 171
    root = layouts.nyu_mmseg(layouts.root("nyu"))
    result = _run("depth", "--probe", "linear", "--root", root, "-m", tiny_model_dir, "--epochs", "2",
                  "--train-limit", "2", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "nyuv2 test (linear probe, 2 training images, 2 epochs, 2 test images):" in result.stdout
    assert "RMSE" in result.stdout and "AbsRel" in result.stdout and "delta1" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["segmentation", "-d", "voc21", "--root", "{missing}"], "no such directory"),
    (["segmentation", "-d", "ade150", "--root", "{voc}"], "does not look like ADE20K"),
    (["segmentation", "-d", "voc20", "--root", "{voc}", "--background-threshold", "0.5"], "no background class"),
    (["segmentation", "-d", "voc21", "--root", "{voc}", "--class-names", "{names}"], "has 2 names; voc21 has 21"),
    (["segmentation", "-d", "voc21", "--root", "{voc}", "--templates", "nope"], "unknown set 'nope'"),
    (["segmentation", "-d", "voc21", "--root", "{voc}", "--split", "test"], "test.txt"),
    (["linear-seg", "-d", "voc21", "--root", "{voc}", "--image-size", "50"], "multiple of the patch size"),
    (["classification", "--root", "{voc}/VOCdevkit/VOC2012/JPEGImages"], "no class sub-folders"),
    (["retrieval", "--root", "{voc}"], "dataset_coco.json"),
    (["depth", "--root", "{voc}"], "NYU Depth v2"),
    (["depth", "--root", "{voc}", "--min-depth", "5", "--max-depth", "2"], "must be below"),
])
def test_bad_input_is_exit_2_with_one_line(tiny_model_dir, layouts, tmp_path, args, message):
    voc = layouts.voc(layouts.root("voc"))
    names = tmp_path / "names.txt"
    names.write_text("a\nb\n")
    args = [a.format(missing=tmp_path / "missing", voc=voc, names=names) for a in args]
    result = _run(*args, "-m", tiny_model_dir)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_roots_and_options_are_checked_before_torch_is_imported(layouts, tmp_path):
    voc = layouts.voc(layouts.root("voc"))
    names = tmp_path / "names.txt"
    names.write_text("a\n")
    script = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from tipsv2_sdk.cli.app import cli\n"
        f"cases = [['eval', 'segmentation', '-d', 'ade150', '--root', {str(voc)!r}],\n"
        f"         ['eval', 'segmentation', '-d', 'voc21', '--root', {str(voc)!r}, '--class-names', {str(names)!r}],\n"
        f"         ['eval', 'depth', '--root', {str(tmp_path / 'nowhere')!r}],\n"
        f"         ['eval', 'retrieval', '--root', {str(voc)!r}]]\n"
        "codes = [CliRunner().invoke(cli, case).exit_code for case in cases]\n"
        "print(codes, 'torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[2, 2, 2, 2] False False"
