"""Resumable, robust builds: corrupt inputs, interruption (exception and SIGKILL), updates, shards."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tipsv2_sdk.index import GlobalIndex, PatchIndex
from tipsv2_sdk.index.builder import BuildError, BuildOptions, build_index, plan_build
from tipsv2_sdk.index.collection import locate, read_build, read_skipped
from tipsv2_sdk.index.combine import ShardSetError, merge_builds
from tipsv2_sdk.index.inputs import InputError, collect_inputs
from tipsv2_sdk.index.journal import WorkArea
from tipsv2_sdk.index.lock import WriterLock
from tipsv2_sdk.index.shard import Shard

ROOT = Path(__file__).resolve().parents[2]
CORRUPT = {"empty.png": "empty", "truncated.jpg": "truncated", "text_renamed.png": "cannot identify",
           "huge.png": "decompression bomb"}


def huge_png(width: int = 9500, height: int = 9500) -> bytes:
    """A PNG header announcing more pixels than the decompression-bomb limit (never decoded that far)."""
    import struct
    import zlib

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture
def samples():
    from tipsv2_sdk.index.samples import load_samples

    return [s.path for s in load_samples()]


@pytest.fixture
def image_dir(tmp_path, samples):
    """8 good images (one in a sub-folder), the 4 kinds of broken file, and 2 non-image files."""
    from PIL import Image

    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for i, src in enumerate(samples[:8]):
        shutil.copy(src, folder / ("sub" if i == 5 else "") / src.name)
    (folder / "empty.png").write_bytes(b"")
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(tmp_path / "whole.jpg", quality=90)
    data = (tmp_path / "whole.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "text_renamed.png").write_text("this is not an image\n")
    (folder / "huge.png").write_bytes(huge_png())
    (folder / "notes.txt").write_text("not an image")
    (folder / "meta.json").write_text("{}")
    return folder


@pytest.fixture
def clean_dir(tmp_path, samples):
    folder = tmp_path / "clean"
    folder.mkdir()
    for src in samples[:12]:
        shutil.copy(src, folder / src.name)
    return folder


OPTS = dict(batch_size=2, chunk_size=3, progress=False)


def snapshot(out: Path) -> dict:
    """Everything a build decides: ids, paths, stored vectors, and the FAISS/vector files byte for byte."""
    col = locate(out)
    data = {}
    for name, path, cls in (("global", col.global_path, GlobalIndex), ("patch", col.patch_path, PatchIndex)):
        if path is None:
            continue
        index = cls.open(path)
        ids = np.sort(index.ids())
        data[name + "_ids"] = ids.tolist()
        data[name + "_paths"] = [r["path"] for r in index.records(ids)]
        if name == "global":
            data["global_vectors"] = index.vectors(ids)
        else:
            data["patch_vectors"] = np.stack([index.patch_vectors(int(i)) for i in ids])
        # manifests carry timestamps; every other file must be identical byte for byte
        data[name + "_files"] = {f.name: f.read_bytes() for f in sorted(path.iterdir()) if not f.name.startswith("manifest")}
    data["skipped"] = read_skipped(out)
    return data


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], np.ndarray):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        else:
            assert a[key] == b[key], key


def test_corrupt_files_are_skipped_and_each_reported(tiny_model, image_dir, tmp_path):
    out = tmp_path / "out"
    report = build_index(tiny_model, image_dir, out, BuildOptions(patches=True, **OPTS))
    paths = collect_inputs(image_dir).paths
    assert report.inputs == 12 and report.ignored == 2 and report.added == 8
    reasons = {Path(r["path"]).name: r["reason"] for r in report.skipped}
    assert reasons.keys() == CORRUPT.keys()
    for name, word in CORRUPT.items():
        assert word in reasons[name].lower(), (name, reasons[name])
    # ids are positions in the sorted input list; skipped files keep their position unused
    assert all(paths[r["id"]].endswith(Path(r["path"]).name) for r in report.skipped)
    lines = [json.loads(x) for x in (out / "skipped.jsonl").read_text().splitlines()]
    assert sorted(lines, key=lambda r: r["id"]) == report.skipped
    glob = GlobalIndex.open(out / "global")
    good = [i for i, p in enumerate(paths) if Path(p).name not in CORRUPT]
    assert sorted(glob.ids().tolist()) == good
    assert [r["path"] for r in glob.records(good)] == [paths[i] for i in good]
    assert PatchIndex.open(out / "patch").grid == (4, 4)
    assert not (out / ".build").exists()
    record = read_build(out)
    assert record["counts"] == {"global": 8, "patch": 8} and record["next_id"] == 12


def test_vectors_match_a_direct_encode(tiny_model, clean_dir, tmp_path):
    out = tmp_path / "out"
    build_index(tiny_model, clean_dir, out, BuildOptions(kind="cls2", dtype="float32", batch_size=4, progress=False))
    paths = collect_inputs(clean_dir).paths
    direct = tiny_model.encode_images(paths, batch_size=4, progress=False, with_patches=False).cls2
    glob = GlobalIndex.open(out / "global")
    np.testing.assert_allclose(glob.vectors(list(range(12))), direct, atol=1e-5)
    res = glob.search(direct[:3], k=1)
    assert res.ids[:, 0].tolist() == [0, 1, 2]


class Interrupted(KeyboardInterrupt):
    pass


class InterruptAfter:
    """The model, except that encoding stops the process after ``calls`` successful chunks."""

    def __init__(self, model, calls: int, exc: type[BaseException] = Interrupted):
        self._model, self.left, self.exc = model, calls, exc

    def __getattr__(self, name):
        return getattr(self._model, name)

    def encode_images(self, *args, **kwargs):
        if self.left <= 0:
            raise self.exc("simulated interruption")
        self.left -= 1
        return self._model.encode_images(*args, **kwargs)


@pytest.mark.parametrize("exc", [Interrupted, RuntimeError])
def test_interrupted_build_resumes_to_the_identical_index(tiny_model, image_dir, tmp_path, exc):
    straight = tmp_path / "straight"
    build_index(tiny_model, image_dir, straight, BuildOptions(patches=True, **OPTS))
    out = tmp_path / "resumed"
    with pytest.raises(exc, match="simulated"):
        build_index(InterruptAfter(tiny_model, 2, exc), image_dir, out, BuildOptions(patches=True, **OPTS))
    journal = WorkArea(out / ".build").read_journal()
    assert journal["done"] == 2 and journal["chunks"] == 4
    with pytest.raises(Exception, match="not an index.*unfinished build"):
        locate(out)
    report = build_index(tiny_model, image_dir, out, BuildOptions(patches=True, **OPTS))
    assert report.resumed_chunks == 2 and report.added == 8 and len(report.skipped) == 4
    assert_same(snapshot(straight), snapshot(out))


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from tipsv2_sdk import load
    from tipsv2_sdk.index.builder import BuildOptions, build_index
    model = load(sys.argv[1])
    calls = {"n": 0}
    original = model.encode_images
    def encode(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)
    model.encode_images = encode
    build_index(model, sys.argv[2], sys.argv[3], BuildOptions(patches=True, batch_size=2, chunk_size=3, progress=False))
""")


def test_sigkilled_build_resumes_to_the_identical_index(tiny_model_dir, image_dir, tmp_path):
    from tipsv2_sdk import load

    model = load(tiny_model_dir)
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(tiny_model_dir), str(image_dir), str(out)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == -9, proc.stderr
    assert WorkArea(out / ".build").read_journal()["done"] == 2
    assert (out / ".lock").exists()  # the dead process's lock file: the kernel released its lock
    report = build_index(model, image_dir, out, BuildOptions(patches=True, **OPTS))
    assert report.resumed_chunks == 2
    straight = tmp_path / "straight"
    build_index(model, image_dir, straight, BuildOptions(patches=True, **OPTS))
    assert_same(snapshot(straight), snapshot(out))


def test_resume_refuses_other_settings_unless_restarted(tiny_model, clean_dir, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(Interrupted):
        build_index(InterruptAfter(tiny_model, 1), clean_dir, out, BuildOptions(**OPTS))
    with pytest.raises(BuildError, match="interrupted build with other settings.*--restart"):
        build_index(tiny_model, clean_dir, out, BuildOptions(kind="cls2", **OPTS))
    report = build_index(tiny_model, clean_dir, out, BuildOptions(kind="cls2", restart=True, **OPTS))
    assert report.resumed_chunks == 0 and report.counts == {"global": 12}
    assert GlobalIndex.open(out / "global").kind == "cls2"


def test_resume_keeps_the_batch_size_it_started_with(tiny_model, clean_dir, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(Interrupted):
        build_index(InterruptAfter(tiny_model, 1), clean_dir, out, BuildOptions(**OPTS))
    build_index(tiny_model, clean_dir, out, BuildOptions(batch_size=5, progress=False))
    straight = tmp_path / "straight"
    build_index(tiny_model, clean_dir, straight, BuildOptions(**OPTS))
    assert_same(snapshot(straight), snapshot(out))


def test_rerun_updates_with_new_and_removed_files(tiny_model, clean_dir, samples, tmp_path):
    out = tmp_path / "out"
    build_index(tiny_model, clean_dir, out, BuildOptions(**OPTS))
    again = build_index(tiny_model, clean_dir, out, BuildOptions(**OPTS))
    assert (again.added, again.removed, again.unchanged) == (0, 0, 12)
    paths = collect_inputs(clean_dir).paths
    os.unlink(paths[3])
    shutil.copy(samples[20], clean_dir / "000_first.png")  # sorts first: positions shift, ids must not
    report = build_index(tiny_model, clean_dir, out, BuildOptions(**OPTS))
    assert (report.added, report.removed, report.unchanged) == (1, 1, 11)
    glob = GlobalIndex.open(out / "global")
    kept = [i for i in range(12) if i != 3]
    assert [r["path"] for r in glob.records(kept)] == [paths[i] for i in kept]
    assert glob.id_of([str(clean_dir / "000_first.png")]).tolist() == [12]
    assert read_build(out)["next_id"] == 13 and len(glob) == 12


def test_refuses_to_empty_an_index_when_its_inputs_vanish(tiny_model, clean_dir, tmp_path, samples):
    out = tmp_path / "out"
    build_index(tiny_model, clean_dir, out, BuildOptions(**OPTS))
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(samples[0], other / "x.png")
    with pytest.raises(BuildError, match="refusing to empty"):
        build_index(tiny_model, other, out, BuildOptions(**OPTS))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="found no image files"):
        build_index(tiny_model, tmp_path / "empty", out, BuildOptions(**OPTS))


def test_refuses_to_write_into_a_foreign_directory(tiny_model, clean_dir, tmp_path):
    with pytest.raises(BuildError, match="already holds other files"):
        build_index(tiny_model, clean_dir, clean_dir, BuildOptions(**OPTS))
    (tmp_path / "empty_out").mkdir()
    assert build_index(tiny_model, clean_dir, tmp_path / "empty_out", BuildOptions(**OPTS)).added == 12


def test_kinds_of_an_existing_directory_cannot_change(tiny_model, clean_dir, tmp_path):
    out = tmp_path / "out"
    build_index(tiny_model, clean_dir, out, BuildOptions(**OPTS))
    with pytest.raises(BuildError, match="holds a cls1 index but this build asks for cls1 \\+ patches"):
        build_index(tiny_model, clean_dir, out, BuildOptions(patches=True, **OPTS))


def test_add_mode_only_adds(tiny_model, clean_dir, samples, tmp_path):
    out = tmp_path / "out"
    build_index(tiny_model, clean_dir, out, BuildOptions(**OPTS))
    extra = tmp_path / "extra"
    extra.mkdir()
    for src in samples[12:14]:
        shutil.copy(src, extra / src.name)
    report = build_index(tiny_model, extra, out, BuildOptions(**OPTS), mode="add")
    assert (report.added, report.removed) == (2, 0)
    assert sorted(GlobalIndex.open(out / "global").ids().tolist()) == list(range(14))


def test_shards_merge_into_the_single_build(tiny_model, image_dir, tmp_path):
    single = tmp_path / "single"
    build_index(tiny_model, image_dir, single, BuildOptions(patches=True, **OPTS))
    shards = []
    for i in range(3):
        shards.append(tmp_path / f"shard{i}")
        report = build_index(tiny_model, image_dir, shards[-1], BuildOptions(patches=True, **OPTS), shard=Shard(i, 3))
        assert report.selected == 4 and report.shard == f"{i}/3"
    with pytest.raises(ShardSetError, match="shard 1/3 is missing"):
        merge_builds(tmp_path / "partial", [shards[0], shards[2]])
    merged = tmp_path / "merged"
    record = merge_builds(merged, shards)
    assert record["counts"] == {"global": 8, "patch": 8} and record["shard"] is None
    a, b = snapshot(single), snapshot(merged)
    for key in ("global_ids", "global_paths", "patch_ids", "patch_paths", "skipped"):
        assert a[key] == b[key], key
    np.testing.assert_array_equal(a["global_vectors"], b["global_vectors"])
    np.testing.assert_array_equal(a["patch_vectors"], b["patch_vectors"])
    queries = a["global_vectors"][:4]
    r1 = GlobalIndex.open(single / "global").search(queries, k=5)
    r2 = GlobalIndex.open(merged / "global").search(queries, k=5)
    np.testing.assert_array_equal(r1.ids, r2.ids)
    np.testing.assert_array_equal(r1.scores, r2.scores)
    # the merged directory is a complete build over the same inputs: rerunning it is a no-op
    again = build_index(tiny_model, image_dir, merged, BuildOptions(patches=True, **OPTS))
    assert (again.added, again.removed) == (0, 0)


def test_merge_refuses_mismatched_shards(tiny_model, clean_dir, image_dir, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    build_index(tiny_model, clean_dir, a, BuildOptions(**OPTS), shard=Shard(0, 2))
    build_index(tiny_model, image_dir, b, BuildOptions(**OPTS), shard=Shard(1, 2))
    with pytest.raises(ShardSetError, match="input list"):
        merge_builds(tmp_path / "m", [a, b])
    with pytest.raises(ShardSetError, match="more than once"):
        merge_builds(tmp_path / "m", [a, a])


def test_sharded_rebuild_with_changed_inputs_is_refused(tiny_model, clean_dir, samples, tmp_path):
    out = tmp_path / "s0"
    build_index(tiny_model, clean_dir, out, BuildOptions(**OPTS), shard=Shard(0, 2))
    shutil.copy(samples[20], clean_dir / "new.png")
    with pytest.raises(BuildError, match="inputs changed since shard 0/2"):
        build_index(tiny_model, clean_dir, out, BuildOptions(**OPTS), shard=Shard(0, 2))


def test_plan_uses_positions_for_fresh_builds():
    paths = [f"/p/{i}.png" for i in range(10)]
    plan = plan_build(paths, Shard(1, 3), {}, {})
    assert plan.add_ids == [3, 4, 5] and plan.add_paths == paths[3:6] and plan.next_id == 10
    assert plan.inputs["ids_are_positions"] is True


def test_encoder_crash_on_one_file_skips_only_that_file(tiny_model, clean_dir, tmp_path):
    bad = collect_inputs(clean_dir).paths[4]

    class CrashOnOne:
        def __getattr__(self, name):
            return getattr(tiny_model, name)

        def encode_images(self, paths, **kwargs):
            if bad in paths:
                raise struct_error("unpack requires a buffer of 4 bytes")
            return tiny_model.encode_images(paths, **kwargs)

    report = build_index(CrashOnOne(), clean_dir, tmp_path / "out", BuildOptions(**OPTS))
    assert report.added == 11
    assert report.skipped == [{"id": 4, "path": bad, "reason": "error: unpack requires a buffer of 4 bytes"}]


def struct_error(message: str) -> Exception:
    import struct

    return struct.error(message)


def test_a_live_build_lock_is_respected(tiny_model, clean_dir, tmp_path, lock_holder):
    from tipsv2_sdk.index.errors import IndexLockedError

    out = tmp_path / "out"
    out.mkdir()
    holder = lock_holder(out)
    with pytest.raises(IndexLockedError, match=f"being changed by process {holder.pid} \\(index add"):
        build_index(tiny_model, clean_dir, out, BuildOptions(**OPTS))
    holder.kill()
    holder.wait()
    (out / ".lock").write_text('{"pid": 999999999, "host": "x"}')  # what a dead holder left: no lock
    assert build_index(tiny_model, clean_dir, out, BuildOptions(**OPTS)).added == 12
    with WriterLock(out):
        assert f'"pid": {os.getpid()}' in (out / ".lock").read_text()
    assert (out / ".lock").read_text() == ""  # released: names no holder


def test_options_are_validated():
    with pytest.raises(BuildError, match="unknown embedding kind"):
        BuildOptions(kind="cls3")
    with pytest.raises(BuildError, match="nothing to build"):
        BuildOptions(kind=None, patches=False)
