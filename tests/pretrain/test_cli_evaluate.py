"""``tipsv2 pretrain evaluate``: the synthetic protocol and the drawn shapes from the command line."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tipsv2_sdk.cli.app import cli
from tipsv2_sdk.pretrain.drawn import evaluate_drawn
from tipsv2_sdk.pretrain.evaluate import evaluate_shapes


def test_json_matches_the_python_functions(tiny_model_dir, tiny_model):
    args = ["pretrain", "evaluate", "-m", str(tiny_model_dir), "--dataset", "scenes", "--n-val", "5", "--n-train",
            "7", "--size", "56", "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    expected = evaluate_shapes(tiny_model, n_val=5, n_train=7, size=56, dataset="scenes").to_dict()
    assert data["dataset"] == "scenes" and data["n_val"] == 5
    for key, value in expected.items():
        assert data[key] == pytest.approx(value), key
    assert data["drawn"]["n_cases"] == 48
    assert data["drawn"]["color_accuracy"] == pytest.approx(evaluate_drawn(tiny_model, size=56).color_accuracy)


def test_text_table_and_no_drawn(tiny_model_dir):
    result = CliRunner().invoke(cli, ["pretrain", "evaluate", "-m", str(tiny_model_dir), "--n-val", "4",
                                      "--n-train", "4", "--size", "56", "--no-drawn"])
    assert result.exit_code == 0, result.output
    assert "on 4 held-out shapes scenes" in result.output and "(chance 25.0%)" in result.output
    assert "by colour (object pixels)" in result.output and "drawn" not in result.output


def test_user_errors_exit_2(tmp_path):
    missing = CliRunner().invoke(cli, ["pretrain", "evaluate", "-m", str(tmp_path)])
    assert missing.exit_code == 2 and str(tmp_path) in missing.output
    bad = CliRunner().invoke(cli, ["pretrain", "evaluate", "--dataset", "coco"])
    assert bad.exit_code == 2 and "coco" in bad.output
