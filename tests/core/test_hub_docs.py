"""docs/getting_models.md runs as written: its python blocks and its `tipsv2` command lines.

They run offline against a Hugging Face cache holding a tiny ``google/tipsv2-b14`` written by
transformers' own classes. ``tipsv2 convert`` lines are not run here: they need the official
``.npz`` files (conversion is tested in test_convert.py); the test fails if any other command
line is left out.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from tipsv2_sdk.cli.app import cli
from tipsv2_sdk.testing import fake_hub_cache, transformers_tiny_model

DOC = Path(__file__).resolve().parents[2] / "docs" / "getting_models.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(DOC.read_text()) if lang == language]


def command_lines() -> list[tuple[str, str]]:
    """``(command, comment)`` for every shell line, backslash continuations joined."""
    out = []
    for body in blocks("bash"):
        for line in body.replace("\\\n", " ").splitlines():
            command, _, comment = line.partition("#")
            if command.strip():
                out.append((" ".join(command.split()), comment.strip()))
    return out


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    return transformers_tiny_model(tmp_path_factory.mktemp("doc_model") / "model")


@pytest.fixture
def doc_env(written, tmp_path, monkeypatch):
    cache = tmp_path / "hf" / "hub"
    fake_hub_cache(cache, "google/tipsv2-b14", written)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TIPSV2_HOME", str(tmp_path / "tipsv2"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return cache


def test_the_page_has_examples():
    assert len(blocks("python")) >= 5 and len(command_lines()) >= 4


def test_python_examples_run(doc_env, capsys):
    for number, code in enumerate(blocks("python")):
        try:
            exec(compile(code, f"{DOC.name} python block {number + 1}", "exec"), {"__name__": "__doc_example__"})
        except Exception as exc:  # name the block in the failure
            raise AssertionError(f"python block {number + 1} of {DOC.name} failed: {exc!r}\n{code}") from exc
    printed = capsys.readouterr().out
    assert re.search(r"tipsv2-b14 \(weights [0-9a-f]{8}\)", printed)
    assert f"not in the Hugging Face cache ({doc_env})" in printed


def test_command_lines_run(doc_env):
    ran = skipped = 0
    for command, comment in command_lines():
        words = shlex.split(command)
        assert words[0] == "tipsv2", command
        if words[1] == "convert":
            skipped += 1
            continue
        result = CliRunner().invoke(cli, words[1:])
        expected = 2 if "exit 2" in comment else 0
        assert result.exit_code == expected, f"{command}: {result.output}"
        if expected == 2:
            assert len(result.output.strip().splitlines()) == 1 and str(doc_env) in result.output
        ran += 1
    assert ran >= 3 and skipped == 1


def test_readme_gives_the_cpu_torch_line_and_keeps_its_two_commands():
    from packaging.specifiers import SpecifierSet

    root = DOC.parents[1]
    readme = (root / "README.md").read_text()
    assert "pip install -c constraints.txt . && tipsv2 demo" in readme
    assert 'pip install -c constraints.txt -e ".[dev]" && pytest' in readme
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in readme
    pins = [line.strip() for line in (root / "constraints.txt").read_text().splitlines()
            if line.strip().startswith("torch")]
    assert pins == ["torch==2.13.0"]
    assert SpecifierSet("==2.13.0").contains("2.13.0+cpu")  # the CPU wheel satisfies the pin
