"""Writers never lose each other's work; readers always see one whole generation of both indexes."""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tipsv2_sdk.cli.app import cli
from tipsv2_sdk.index.builder import BuildError, BuildOptions, build_index
from tipsv2_sdk.index.snapshot import current_generation, open_snapshot

ROOT = Path(__file__).resolve().parents[2]
OPTS = dict(batch_size=2, chunk_size=2, progress=False)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_error(result, match: str):
    assert result.exit_code == 2, result.output
    assert match in result.output and "Traceback" not in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def consistent(path) -> dict:
    """Open the current generation and check that both indexes hold the same, complete images."""
    snap = open_snapshot(path)
    glob, patch = snap.global_index, snap.patch_index
    ids = sorted(glob.ids().tolist())
    assert len(set(ids)) == len(ids)
    assert ids == sorted(patch.ids().tolist())
    assert [r["path"] for r in glob.records(ids)] == [r["path"] for r in patch.records(ids)]
    assert glob.vectors(ids).shape == (len(ids), glob.dim) and all(patch.patch_vectors(i).size for i in ids)
    return {"generation": snap.generation, "ids": ids, "paths": [r["path"] for r in glob.records(ids)],
            "warnings": snap.warnings}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Two folders of sample images: ``base`` (6) and ``extra`` (4)."""
    from tipsv2_sdk.index.samples import load_samples

    root = tmp_path_factory.mktemp("integrity_images")
    samples = load_samples()
    for name, picks in (("base", samples[:6]), ("extra", samples[6:10])):
        (root / name).mkdir()
        for s in picks:
            shutil.copy(s.path, root / name / s.path.name)
    return root


@pytest.fixture(scope="module")
def built(images, tiny_model, tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("integrity_built") / "idx"
    build_index(tiny_model, images / "base", out, BuildOptions(patches=True, **OPTS), model_ref=str(tiny_model_dir))
    return out


@pytest.fixture
def idx(built, tmp_path):
    """A private copy of the built directory."""
    copy = tmp_path / "idx"
    shutil.copytree(built, copy)
    return copy


def test_remove_is_refused_while_another_writer_holds_the_lock(idx, tiny_model_dir, lock_holder):
    holder = lock_holder(idx)
    before = consistent(idx)
    one_line_error(run("index", "remove", idx, "--id", 0), f"being changed by process {holder.pid} (index add")
    extra = Path(before["paths"][0]).parent
    one_line_error(run("index", "add", idx, extra, "-q"), f"process {holder.pid}")
    assert consistent(idx) == before  # nothing was written
    holder.kill()
    holder.wait()
    result = run("index", "remove", idx, "--id", 0)
    assert result.exit_code == 0 and "removed 1 image from" in result.output  # singular
    assert 0 not in consistent(idx)["ids"]


def test_an_add_with_other_inputs_does_not_finish_an_interrupted_plan(idx, images, tiny_model, stop_after):
    options = BuildOptions(patches=True, **OPTS)
    with pytest.raises(KeyboardInterrupt):
        build_index(stop_after(tiny_model, 1), images / "extra", idx, options, mode="add")
    before = consistent(idx)
    assert len(before["ids"]) == 6 and any("interrupted" in w and "index add" in w for w in before["warnings"])
    other = idx.parent / "other"
    other.mkdir()
    shutil.copy(sorted((images / "extra").iterdir())[0], other / "new.png")
    with pytest.raises(BuildError, match=r"interrupted `tipsv2 index add` of 4 images from .*extra .*rerun that command"):
        build_index(tiny_model, other, idx, options, mode="add")
    assert consistent(idx)["ids"] == before["ids"]  # the refused run changed nothing
    report = build_index(tiny_model, images / "extra", idx, options, mode="add")  # the same command finishes it
    assert report.resumed_chunks == 1 and report.added == 4
    assert build_index(tiny_model, other, idx, options, mode="add").added == 1
    after = consistent(idx)
    assert len(after["ids"]) == 11 and after["warnings"] == []


def test_restart_discards_the_interrupted_plan(idx, images, tiny_model, stop_after):
    options = BuildOptions(patches=True, **OPTS)
    with pytest.raises(KeyboardInterrupt):
        build_index(stop_after(tiny_model, 1), images / "extra", idx, options, mode="add")
    other = idx.parent / "other"
    other.mkdir()
    shutil.copy(sorted((images / "extra").iterdir())[0], other / "new.png")
    report = build_index(tiny_model, other, idx, BuildOptions(patches=True, restart=True, **OPTS), mode="add")
    assert report.added == 1 and report.resumed_chunks == 0
    assert len(consistent(idx)["ids"]) == 7 and not (idx / ".build").exists()


KILL_BETWEEN_SAVES = textwrap.dedent("""
    import os, signal, sys
    from tipsv2_sdk import load
    from tipsv2_sdk.index import patch_index
    from tipsv2_sdk.index.builder import BuildOptions, build_index
    def killed(self, *args, **kwargs):  # the global index is written, the patch index not yet
        os.kill(os.getpid(), signal.SIGKILL)
    patch_index.PatchIndex.stage = killed
    patch_index.PatchIndex.save = killed
    build_index(load(sys.argv[1]), sys.argv[2], sys.argv[3], BuildOptions(patches=True, batch_size=2, progress=False),
                mode="add")
""")


def test_killed_between_the_global_and_the_patch_save(idx, images, tiny_model, tiny_model_dir):
    before = consistent(idx)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", KILL_BETWEEN_SAVES, str(tiny_model_dir), str(images / "extra"), str(idx)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    now = consistent(idx)  # the half-written generation is not served: the previous one is, whole
    assert now["ids"] == before["ids"] and now["generation"] == before["generation"]
    assert any("interrupted `tipsv2 index add` of 4 images" in w for w in now["warnings"])
    result = run("search", idx, "a red ring", "-k", 3, "--json")
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stderr and "interrupted `tipsv2 index add`" in result.stderr
    assert {h["id"] for h in json.loads(result.stdout)["queries"][0]["results"]} <= set(before["ids"])
    info = json.loads(run("index", "info", idx, "--json").stdout)
    assert info["pending"]["command"] == "index add" and info["pending"]["add"] == 4 and not info["pending"]["running"]
    assert "pending" in run("index", "info", idx).stdout
    report = build_index(tiny_model, images / "extra", idx, BuildOptions(patches=True, **OPTS), mode="add")
    assert report.added == 4
    done = consistent(idx)
    assert len(done["ids"]) == 10 and done["generation"] == before["generation"] + 1 and done["warnings"] == []


def test_a_full_disk_changes_nothing_and_is_one_line(idx, images, monkeypatch):
    from tipsv2_sdk.index import store as store_mod

    before = consistent(idx)
    real = store_mod.save_npy

    def full(path, array):
        if "patch" in Path(path).parts:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, array)

    monkeypatch.setattr(store_mod, "save_npy", full)
    one_line_error(run("index", "add", idx, images / "extra", "-q"), "no space left on device")
    one_line_error(run("index", "remove", idx, "--id", 1), "no space left on device")
    now = consistent(idx)
    assert (now["generation"], now["ids"]) == (before["generation"], before["ids"])
    leftovers = [p.name for p in idx.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    monkeypatch.undo()
    result = run("index", "add", idx, images / "extra", "-q")  # space again: the embedded chunks are reused
    assert result.exit_code == 0 and "finished an interrupted build after" in result.output, result.output
    assert len(consistent(idx)["ids"]) == 10


def test_a_real_file_size_limit_fails_cleanly(idx, images, tiny_model_dir):
    """A write past RLIMIT_FSIZE fails like a full disk (EFBIG): exit 2, one line, nothing published."""
    before = consistent(idx)

    def limit():
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the writer
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), "index", "add", str(idx), str(images / "extra"), "-q"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600, preexec_fn=limit)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "file too large" in errors[0] and "Traceback" not in proc.stderr, proc.stderr
    now = consistent(idx)
    assert (now["generation"], now["ids"]) == (before["generation"], before["ids"])
    assert not [p for p in idx.rglob("*") if p.name.endswith(".tmp")]  # no half-written file left


def test_readers_see_whole_generations_and_keep_theirs(idx, images, tiny_model):
    first = open_snapshot(idx)
    gen = current_generation(idx)
    assert gen == first.generation >= 1 and first.is_current()
    query = first.global_index.vectors([0])
    expected = first.global_index.search(query, 3).ids
    patches = first.patch_index.patch_vectors(0)
    build_index(tiny_model, images / "extra", idx, BuildOptions(patches=True, **OPTS), mode="add")
    assert current_generation(idx) == gen + 1 and not first.is_current()
    assert run("index", "remove", idx, "--id", 0, "--id", 1, "--id", 2).exit_code == 0  # compacts the segments
    assert run("index", "remove", idx, "--id", 3).exit_code == 0
    assert current_generation(idx) == gen + 3
    # the first generation's files are deleted, yet the snapshot opened on it still answers from them
    segment = first.global_index.store._segments[0].name
    assert not (idx / "global" / first.collection.manifest_name("global")).exists()
    assert not (idx / "global" / f"vectors-{segment}.npy").exists()
    np.testing.assert_array_equal(first.global_index.search(query, 3).ids, expected)
    np.testing.assert_array_equal(first.global_index.vectors([0]), query)
    np.testing.assert_array_equal(first.patch_index.patch_vectors(0), patches)
    latest = consistent(idx)
    assert len(latest["ids"]) == 6 and latest["generation"] == gen + 3


def test_info_counts_follow_add_and_remove(idx, images):
    assert run("index", "add", idx, images / "extra", "-q").exit_code == 0
    assert run("index", "remove", idx, "--id", 2).exit_code == 0
    data = json.loads(run("index", "info", idx, "--json").stdout)
    assert data["images"] == 9 and data["global"]["count"] == data["patch"]["count"] == 9
    assert data["build"]["counts"] == {"global": 9, "patch": 9}
    assert len(data["build"]["manual"]["added"]) == 4 and len(data["build"]["manual"]["removed"]) == 1
    text = run("index", "info", idx).stdout
    assert "images       9 (global 9, patch 9)" in text
    assert "4 images added by hand; 1 image removed by hand" in text and "last change  index remove" in text


def test_a_rebuild_keeps_changes_made_by_hand(idx, images, tiny_model):
    options = BuildOptions(patches=True, **OPTS)
    build_index(tiny_model, images / "extra", idx, options, mode="add")
    run("index", "remove", idx, str(sorted((images / "base").iterdir())[0]))
    report = build_index(tiny_model, images / "base", idx, options)
    assert (report.added, report.removed) == (0, 0) and report.manual == {"kept": 4, "left_out": 1}
    assert len(consistent(idx)["ids"]) == 9


def test_a_no_op_add_with_another_model_keeps_the_model_reference(idx, images, tiny_model_dir, tmp_path):
    ref = json.loads((idx / "generation.json").read_text())["build"]["model"]["ref"]
    other = tmp_path / "same-model-elsewhere"
    shutil.copytree(tiny_model_dir, other)
    already = sorted((images / "base").iterdir())[0]
    result = run("index", "add", idx, already, "-m", other, "-q", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["added"] == 0
    assert json.loads((idx / "build.json").read_text())["model"]["ref"] == ref
    assert json.loads(run("index", "info", idx, "--json").stdout)["build"]["model"]["ref"] == ref


def test_a_moved_model_folder_is_not_replaced_by_a_registered_model(tmp_path):
    from tipsv2_sdk.index.collection import Collection
    from tipsv2_sdk.index.errors import IndexMismatchError
    from tipsv2_sdk.index.search import resolve_model_ref

    gone = tmp_path / "moved-away"
    collection = Collection(tmp_path, build={"model": {"name": "tipsv2-tiny", "ref": str(gone)}})
    with pytest.raises(IndexMismatchError, match="moved-away, which no longer exists.*pass --model"):
        resolve_model_ref(collection, None)
    assert resolve_model_ref(collection, "elsewhere") == "elsewhere"


def test_a_deleted_model_folder_is_reported_by_search(idx, tiny_model_dir, tmp_path):
    moved = tmp_path / "model"
    shutil.copytree(tiny_model_dir, moved)
    record = json.loads((idx / "generation.json").read_text())
    record["build"]["model"]["ref"] = str(moved)
    (idx / "generation.json").write_text(json.dumps(record))
    shutil.rmtree(moved)
    one_line_error(run("search", idx, "a red ring"), "which no longer exists (moved or deleted?)")
    assert run("search", idx, "a red ring", "-m", tiny_model_dir).exit_code == 0


def test_same_config_other_weights_is_refused_naming_both_fingerprints(idx, images, tiny_model, tmp_path):
    from tipsv2_sdk.testing import tiny_model as make

    other = make("tipsv2-b14", width=32, image_size=56, seed=1, directory=tmp_path / "tok")
    other.save_pretrained(tmp_path / "other")
    assert other.weights_fingerprint != tiny_model.weights_fingerprint
    result = run("search", idx, "a red ring", "-m", tmp_path / "other")
    one_line_error(result, "same architecture, different weights")
    assert tiny_model.weights_fingerprint in result.output and other.weights_fingerprint in result.output
    one_line_error(run("index", "add", idx, images / "extra", "-m", tmp_path / "other"), "different weights")


def test_user_mistakes_are_one_line(idx, images, tiny_model_dir, tmp_path):
    for query in ("", "   ", "\t"):
        one_line_error(run("search", idx, query), "empty text query")
    one_line_error(run("search", idx, "a red ring", " "), "empty text query")
    for size in ("100", "0", "-14"):
        one_line_error(run("index", "build", images / "base", tmp_path / f"o{size}", "-m", tiny_model_dir,
                           "--image-size", size), f"--image-size {size}")
        one_line_error(run("embed", images / "base", "-o", tmp_path / "v.npy", "-m", tiny_model_dir,
                           "--image-size", size), f"--image-size {size}")
    (tmp_path / "vecs").mkdir()
    for target in (tmp_path / "vecs", f"{tmp_path / 'newdir'}/"):
        one_line_error(run("embed", images / "base", "-o", target, "-m", tiny_model_dir), "is a folder")
    assert not (tmp_path / "newdir").exists()
    ok = run("embed", "--text", "a red ring", "-o", tmp_path / "vecs" / "t.npy", "-m", tiny_model_dir)
    assert ok.exit_code == 0 and "wrote 1 text vector " in ok.output


def test_directories_of_the_older_layout_are_read_and_upgraded(idx, images, tiny_model):
    # the layout before generations: manifest.json per index, build.json, no generation.json
    for sub in ("global", "patch"):
        for f in (idx / sub).glob("manifest-*.json"):
            f.unlink()
        data = json.loads((idx / sub / "manifest.json").read_text())
        for key in ("sizes", "digests"):
            data["files"].pop(key, None)
        data.pop("weights_fingerprint", None)
        (idx / sub / "manifest.json").write_text(json.dumps(data))
    (idx / "generation.json").unlink()
    old = consistent(idx)
    assert old["generation"] == 0 and len(old["ids"]) == 6
    assert run("search", idx, "a red ring", "--json").exit_code == 0
    build_index(tiny_model, images / "extra", idx, BuildOptions(patches=True, **OPTS), mode="add")
    new = consistent(idx)
    assert new["generation"] == 1 and len(new["ids"]) == 10
