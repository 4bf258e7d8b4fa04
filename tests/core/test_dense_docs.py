"""docs/dense.md runs as written: every python block and every `tipsv2` command line.

They run offline in a temporary working directory holding the files the examples name: photos
(`room.jpg`, `street.jpg`, `photos/*.jpg`), a tiny DPT model written by transformers at
`$TIPSV2_HOME/tipsv2-b14-dpt`, and tiny random official checkpoints under the official file names.
Two substitutions stand in for full-size checkpoints: `--variant tipsv2-b14` / `variant="tipsv2-b14"`
become a test-size spec of the same layout; `~` and globs are expanded as a shell would.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

import dense_fixtures as fx  # tests/core is on pytest's pythonpath

from tipsv2_sdk.cli.app import cli

DOC = Path(__file__).resolve().parents[2] / "docs" / "dense.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
DOC_SPEC_NAME = "tipsv2-b14-doc-test"


def blocks(language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(DOC.read_text()) if lang == language]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return fx.transformers_dpt(tmp_path_factory.mktemp("doc") / "tipsv2-b14-dpt")


@pytest.fixture
def doc_env(model_dir, tmp_path, monkeypatch):
    import shutil

    home = tmp_path / "home"
    shutil.copytree(model_dir, home / ".cache" / "tipsv2_sdk" / "tipsv2-b14-dpt")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TIPSV2_HOME", str(home / ".cache" / "tipsv2_sdk"))
    work = tmp_path / "work"
    (work / "photos").mkdir(parents=True)
    monkeypatch.chdir(work)
    for i, name in enumerate(["room.jpg", "street.jpg", "photos/a.jpg", "photos/b.jpg"]):
        fx.photo(work / name, (60 + 10 * i, 45), seed=i)
    official = fx.write_official(work)
    for key, name in [("vision", "tips_v2_oss_b14_vision.npz"), ("depth", "tips_v2_b14_depth_dpt.zip"),
                      ("normals", "tips_v2_b14_normals_dpt.zip"), ("segmentation", "tips_v2_b14_segmentation_dpt.zip")]:
        official[key].rename(work / name)
    spec = dataclasses.replace(fx.tiny_spec(), name=DOC_SPEC_NAME)
    from tipsv2_sdk import registry

    monkeypatch.setitem(registry._REGISTRY, DOC_SPEC_NAME, spec)  # the CLI takes registry names
    return spec


def test_the_page_has_examples():
    assert len(blocks("python")) >= 4 and len(blocks("bash")) >= 2


def test_python_examples_run(doc_env, capsys):
    namespace = {"__name__": "__doc_example__", "DOC_SPEC": doc_env}
    for number, code in enumerate(blocks("python")):
        code = code.replace('variant="tipsv2-b14"', "variant=DOC_SPEC")
        try:
            exec(compile(code, f"{DOC.name} python block {number + 1}", "exec"), namespace)
        except Exception as exc:  # name the block in the failure
            raise AssertionError(f"python block {number + 1} of {DOC.name} failed: {exc!r}\n{code}") from exc
    printed = capsys.readouterr().out
    assert "(45, 60) (45, 60, 3) class" in printed  # block 1: shapes at the image's size, a label name
    assert "street.jpg (45, 70)" in printed and "None" in printed
    assert "('depth', 'normals', 'segmentation')" in printed  # the converted model
    assert Path("depth.png").is_file() and Path("normals.png").is_file()


def test_command_lines_run(doc_env):
    ran = 0
    for body in blocks("bash"):
        for line in body.replace("\\\n", " ").splitlines():
            command = line.partition("#")[0].strip()
            if not command:
                continue
            words = [w.replace("tipsv2-b14", DOC_SPEC_NAME) if w == "tipsv2-b14" else w for w in shlex.split(command)]
            words = [os.path.expanduser(w) for w in words]
            words = [match for w in words for match in (sorted(glob.glob(w)) if "*" in w else [w])]
            assert words[0] == "tipsv2", command
            result = CliRunner().invoke(cli, words[1:])
            assert result.exit_code == 0, f"{command}: {result.output}"
            ran += 1
    assert ran == 4
    assert Path("depth.png").is_file() and Path("depth.npy").is_file() and Path("seg.png").is_file()
    assert sorted(p.name for p in Path("normals").iterdir()) == ["a_normals.png", "b_normals.png"]
    assert (Path.home() / ".cache" / "tipsv2_sdk" / "tipsv2-b14-dpt" / "tipsv2_sdk.json").is_file()
