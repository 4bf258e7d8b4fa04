"""CLI start-up: every registered command refuses a bad input (exit 2, one line) before torch is imported."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tipsv2_sdk.cli.app import COMMANDS

# Runs the CLI and, at exit, reports whether torch / transformers were ever imported in the process.
_WRAPPER = (
    "import sys, atexit\n"
    "atexit.register(lambda: sys.stderr.write('\\n@@heavy=%s\\n' % sorted(m for m in ('torch', 'transformers', 'faiss')"
    " if m in sys.modules)))\n"
    "from tipsv2_sdk.cli.app import main\n"
    "sys.argv = ['tipsv2'] + sys.argv[1:]\n"
    "main()\n"
)

BAD_INPUTS = {
    "info": ["info", "/nonexistent_model_dir"],
    "convert": ["convert", "--vision", "/nonexistent.npz", "OUT"],
    "segment": ["segment", "/nonexistent.png", "--labels", "a,b", "-o", "OUT.png"],
    "pca": ["pca", "/nonexistent.png", "-o", "OUT.png"],
    "depth": ["depth", "/nonexistent.png"],
    "normals": ["normals", "/nonexistent.png"],
    "embed": ["embed", "/nonexistent", "-o", "OUT.npz"],
    "index": ["index", "build", "/nonexistent", "OUT"],
    "search": ["search", "/nonexistent_index", "a cat"],
    "serve": ["serve", "/nonexistent_index"],
    "demo": ["demo", "--images", "/nonexistent"],
    "pretrain": ["pretrain", "train", "/nonexistent.yaml"],
    "eval": ["eval", "classification", "/nonexistent"],
}


def test_every_registered_command_has_a_bad_input_case():
    assert sorted(BAD_INPUTS) == sorted(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_bad_input_exits_2_without_heavy_imports(command, tmp_path):
    args = [a.replace("OUT", str(tmp_path / "out")) for a in BAD_INPUTS[command]]
    proc = subprocess.run([sys.executable, "-c", _WRAPPER, *args], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "@@heavy=[]" in proc.stderr, proc.stderr
