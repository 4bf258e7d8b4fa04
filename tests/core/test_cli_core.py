"""`tipsv2 info`, the lazy root group and `python cli.py` from a checkout."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from tipsv2_sdk.cli.app import COMMANDS, cli

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_every_command():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output


def test_info_json(tiny_model_dir):
    result = CliRunner().invoke(cli, ["info", str(tiny_model_dir), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["embed_dim"] == 32 and data["image_size"] == 56 and data["grid"] == 4
    assert data["vision"]["prefix_tokens"] == 2
    assert data["parameters"]["total"] > data["parameters"]["vision"] > 0
    assert data["trained"] is False


def test_info_human_readable_flags_random_weights(tiny_model_dir):
    result = CliRunner().invoke(cli, ["info", str(tiny_model_dir)])
    assert result.exit_code == 0
    assert "RANDOM WEIGHTS" in result.output and "[CLS1, CLS2]" in result.output


def test_info_list():
    result = CliRunner().invoke(cli, ["info", "--list", "--json"])
    rows = json.loads(result.stdout)
    assert {r["name"] for r in rows} >= {"tipsv2-b14", "tips-g14", "tipsv2-tiny"}


def test_unknown_model_is_exit_2_one_line():
    result = CliRunner().invoke(cli, ["info", "no-such-model"])
    assert result.exit_code == 2
    assert "no-such-model" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_checkout_launcher_runs_the_same_app():
    out = subprocess.run([sys.executable, str(ROOT / "cli.py"), "--help"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pretrain" in out.stdout and "search" in out.stdout
