"""Hostile names, links and files: bytes-safe names, symlinks followed once, everything read from an
index directory confined to it and checked before use, read-only directories searchable."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tipsv2_sdk.cli.app import cli
from tipsv2_sdk.index import GlobalIndex, IndexFormatError, merge_indexes
from tipsv2_sdk.index.inputs import collect_inputs
from tipsv2_sdk.index.snapshot import open_snapshot

ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534


def run(*args):
    return CliRunner().invoke(cli, [os.fsdecode(a) if isinstance(a, bytes) else str(a) for a in args])


def one_line_error(result, match: str):
    assert result.exit_code == 2, result.output
    assert match in result.output and "Traceback" not in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


@pytest.fixture
def world_readable_tmp():
    """A temporary folder an unprivileged user can reach (pytest's own is private to its user)."""
    path = Path(tempfile.mkdtemp(prefix="tipsv2-ro-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    for root, dirs, _ in os.walk(path):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
    shutil.rmtree(path, ignore_errors=True)


def run_unprivileged(script: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``script`` after dropping root to an unprivileged user (when root), so permissions count."""
    preamble = textwrap.dedent(f"""
        import ctypes, mmap, os, sys, json
        import numpy as np
        import faiss
        from tipsv2_sdk.index import GlobalIndex, PatchIndex
        from tipsv2_sdk.index import global_index, patch_index, snapshot, validation, faiss_io, store, collection
        from tipsv2_sdk.index import generation, manifest, errors, inputs, tuning, factory, gpu, maxsim
        from tipsv2_sdk.index.inputs import collect_inputs
        if os.geteuid() == 0:
            os.setgid({NOBODY})
            os.setuid({NOBODY})
    """)
    return subprocess.run([sys.executable, "-c", preamble + textwrap.dedent(script), *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


# ---------------------------------------------------------------------------------------------- inputs
def test_file_names_that_are_not_utf8_round_trip(tiny_model_dir, tmp_path):
    from tipsv2_sdk.index.samples import load_samples

    folder = tmp_path / "imgs"
    folder.mkdir()
    samples = load_samples()[:3]
    for s in samples[:2]:
        shutil.copy(s.path, folder / s.path.name)
    odd = os.fsdecode(os.path.join(os.fsencode(folder), b"x\xff.png"))
    shutil.copy(samples[2].path, odd)
    Path(os.fsdecode(os.path.join(os.fsencode(folder), b"broken\xfe.png"))).write_text("not an image")
    out = tmp_path / "idx"
    result = run("index", "build", folder, out, "-m", tiny_model_dir, "--patches", "-q")
    assert result.exit_code == 0, result.output
    assert "x\\xff.png" not in result.output and "broken\\xfe.png" in result.output  # shown escaped, not crashed
    snap = open_snapshot(out)
    assert odd in {r["path"] for r in snap.global_index.records(snap.global_index.ids())}
    assert snap.patch_index.contains(odd)
    skipped = [json.loads(line) for line in (out / "skipped.jsonl").read_text(encoding="ascii").splitlines()]
    assert [os.fsencode(r["path"]) for r in skipped] == [os.path.join(os.fsencode(folder), b"broken\xfe.png")]
    again = run("index", "build", folder, out, "-m", tiny_model_dir, "--patches", "-q", "--json")
    assert json.loads(again.stdout)["added"] == 0  # the rerun is not replaying a crash
    found = run("search", out, "--image", odd, "-k", 1, "--json")
    assert found.exit_code == 0 and json.loads(found.stdout)["queries"][0]["results"][0]["path"] == odd
    removed = run("index", "remove", out, odd, "--json")
    assert removed.exit_code == 0 and json.loads(removed.stdout)["removed"] == 1
    assert not open_snapshot(out).global_index.contains(odd)


def test_a_symlink_loop_is_followed_once(tmp_path):
    imgs = tmp_path / "imgs"
    (imgs / "sub").mkdir(parents=True)
    for name in ("a.png", "b.png", "sub/c.png"):
        (imgs / name).write_bytes(b"x")
    os.symlink("..", imgs / "up")  # imgs/up/imgs/up/imgs/... without end
    os.symlink("..", imgs / "sub" / "back")
    os.symlink("a.png", imgs / "alias.png")  # the same file under another name
    got = collect_inputs(imgs)
    assert [os.path.relpath(p, imgs) for p in got.paths] == ["a.png", "b.png", "sub/c.png"]
    reasons = {os.path.relpath(p["path"], imgs): p["reason"] for p in got.problems}
    assert "up/imgs" in reasons and "sub/back" in reasons and "not followed again" in reasons["sub/back"]
    linked = tmp_path / "linked"
    os.symlink(imgs / "sub", linked)
    both = collect_inputs([linked, imgs])  # a folder linked from outside is walked once, under its given name
    assert sum(p.endswith("c.png") for p in both.paths) == 1


def test_an_unreadable_folder_is_reported(world_readable_tmp):
    tree = world_readable_tmp / "imgs"
    (tree / "locked").mkdir(parents=True)
    (tree / "ok.png").write_bytes(b"x")
    (tree / "locked" / "hidden.png").write_bytes(b"x")
    os.chmod(tree / "locked", 0)
    proc = run_unprivileged("""
        got = collect_inputs(sys.argv[1])
        print(json.dumps({"paths": got.paths, "problems": got.problems}))
    """, str(tree))
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert [os.path.basename(p) for p in got["paths"]] == ["ok.png"]
    assert [(p["path"], "unreadable folder" in p["reason"]) for p in got["problems"]] == [(str(tree / "locked"), True)]


def test_the_decompression_bomb_reason_does_not_depend_on_the_warning_filter(tmp_path, monkeypatch):
    """The filter is process-wide, so a decoding thread can run under another thread's; the reason of
    one file must come out the same either way (a resumed build compares them byte for byte)."""
    import struct
    import zlib

    from tipsv2_sdk import images
    from tipsv2_sdk.errors import ImageLoadError

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    huge = tmp_path / "huge.png"
    huge.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 9500, 9500, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    monkeypatch.setattr(images.warnings, "simplefilter", lambda *a, **k: None)  # another thread's filter rules
    reasons = set()
    for action in ("error", "default", "ignore"):
        with warnings.catch_warnings():
            warnings.filterwarnings(action)
            with pytest.raises(ImageLoadError) as err:
                images.open_image(huge)
            reasons.add(str(err.value))
    assert len(reasons) == 1, reasons
    assert "90250000 pixels exceeds the limit of 89478485 pixels (decompression bomb guard)" in reasons.pop()


# ---------------------------------------------------------------------------------------------- trust boundaries
@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    """A bare global index (Flat) of 40 vectors, and an outside file with the same bytes as one of its files."""
    root = tmp_path_factory.mktemp("bare")
    rng = np.random.default_rng(0)
    index = GlobalIndex.create(root / "idx", dim=8)
    index.add(rng.normal(size=(40, 8)), paths=[f"img/{i}.png" for i in range(40)])
    index.save()
    return root / "idx"


@pytest.fixture
def victim(bare, tmp_path):
    copy = tmp_path / "idx"
    shutil.copytree(bare, copy)
    return copy


def edit_manifest(path: Path, change) -> None:
    data = json.loads((path / "manifest.json").read_text())
    change(data)
    (path / "manifest.json").write_text(json.dumps(data))


def test_manifest_names_must_stay_inside_the_directory(victim, tmp_path):
    segment = json.loads((victim / "manifest.json").read_text())["files"]["segments"][0]["name"]
    for change, match in (
        (lambda d: d["files"]["segments"][0].update(name="../outside"), "not a segment entry with a plain name"),
        (lambda d: d["files"].update(index="/etc/passwd"), "is not a valid file name"),
        (lambda d: d["files"].update(index="index-../../x.faiss"), "is not a valid file name"),
        (lambda d: d["files"].update(ivfdata="../lists.ivfdata"), "is not a valid file name"),
        (lambda d: d["files"].update(dead="dead-/x.npy"), "is not a valid file name"),
    ):
        copy = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
        shutil.copytree(victim, copy)
        edit_manifest(copy, change)
        one_line_error(run("index", "info", copy), match)
    # a file of the index replaced by a symlink that leads outside it is refused, not followed
    outside = tmp_path / "outside-ids.npy"
    shutil.copy(victim / f"ids-{segment}.npy", outside)
    os.unlink(victim / f"ids-{segment}.npy")
    os.symlink(outside, victim / f"ids-{segment}.npy")
    one_line_error(run("index", "info", victim), "symlink that leads outside the index directory")
    os.unlink(victim / f"ids-{segment}.npy")
    os.symlink(f"ids-{segment}.npy.real", victim / f"ids-{segment}.npy")  # inside: fine
    shutil.copy(outside, victim / f"ids-{segment}.npy.real")
    assert run("index", "info", victim).exit_code == 0


def test_malformed_files_are_one_line_errors(victim, tmp_path):
    segment = json.loads((victim / "manifest.json").read_text())["files"]["segments"][0]["name"]

    def case(name):
        copy = tmp_path / name
        shutil.copytree(victim, copy)
        return copy

    c = case("segments_not_a_list")
    edit_manifest(c, lambda d: d["files"].update(segments={"name": segment}))
    one_line_error(run("index", "info", c), "segments must be a list")
    c = case("tombstones_out_of_range")
    np.save(c / "dead-000009.npy", np.array([5, 999], np.int64))
    edit_manifest(c, lambda d: d["files"].update(dead="dead-000009.npy"))
    one_line_error(run("index", "info", c), "tombstones dead-000009.npy name rows outside 0..39")
    c = case("huge_header")
    with open(c / f"ids-{segment}.npy", "wb") as handle:  # a header claiming 10^12 rows over 40 rows of data
        np.lib.format.write_array_header_1_0(handle, {"descr": "<i8", "fortran_order": False, "shape": (10**12,)})
        handle.write(np.arange(40, dtype=np.int64).tobytes())
    one_line_error(run("index", "info", c), "does not match its recorded checksum")
    edit_manifest(c, lambda d: [d["files"][k].pop(f"ids-{segment}.npy") for k in ("sizes", "digests")])
    one_line_error(run("index", "info", c), "claims shape (1000000000000,)")  # checked without a checksum too
    c = case("vectors_truncated")
    data = (c / f"vectors-{segment}.npy").read_bytes()
    (c / f"vectors-{segment}.npy").write_bytes(data[: len(data) // 2])
    one_line_error(run("index", "info", c), "truncated or replaced")
    c = case("records_garbage")
    (c / f"records-{segment}.jsonl").write_text("[1, 2]\n" * 40)
    one_line_error(run("index", "info", c), f"records-{segment}.jsonl")
    c = case("duplicate_ids")  # ids and records agree with each other, but every row claims id 7
    np.save(c / f"ids-{segment}.npy", np.full(40, 7, np.int64))
    (c / f"records-{segment}.jsonl").write_text("".join(json.dumps({"id": 7, "path": f"p{i}"}) + "\n" for i in range(40)))
    edit_manifest(c, lambda d: d["files"].update(digests={}, sizes={}))
    one_line_error(run("index", "info", c), "id 7 is stored twice")


@pytest.fixture(scope="module")
def on_disk(tmp_path_factory):
    """An IVF index whose inverted lists live in an on-disk .ivfdata file (merged from two shards)."""
    root = tmp_path_factory.mktemp("ondisk")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 8)).astype(np.float32)
    template = GlobalIndex.create(root / "template", dim=8, factory="IVF4,Flat")
    template.train(x)
    template.save()
    shards = []
    for i, rows in enumerate(np.array_split(np.arange(400), 2)):
        shard = GlobalIndex.create(root / f"s{i}", dim=8, template=root / "template")
        shard.add(x[rows], [f"img/{r}.png" for r in rows], ids=rows)
        shard.save()
        shards.append(root / f"s{i}")
    merge_indexes(root / "merged", shards, strategy="invlists", on_disk=True)
    return root / "merged", x


SEARCH = """
    index = GlobalIndex.open(sys.argv[1])
    print(json.dumps(index.search(np.ones((1, 8), np.float32), 5, nprobe=4).ids[0].tolist()))
"""


def test_on_disk_lists_are_searched_read_only(on_disk, world_readable_tmp):
    merged, x = on_disk
    ro = world_readable_tmp / "merged"
    shutil.copytree(merged, ro)
    for f in ro.iterdir():
        os.chmod(f, 0o444)
    os.chmod(ro, 0o555)
    proc = run_unprivileged(SEARCH, str(ro))
    assert proc.returncode == 0, proc.stderr
    expected = GlobalIndex.open(merged).search(np.ones((1, 8), np.float32), 5, nprobe=4).ids[0].tolist()
    assert json.loads(proc.stdout.splitlines()[-1]) == expected


@pytest.mark.parametrize("recorded", [True, False], ids=["sizes-recorded", "older-manifest"])
def test_truncated_ivfdata_is_an_error_not_a_bus_error(on_disk, tmp_path, recorded):
    merged, _ = on_disk
    copy = tmp_path / "merged"
    shutil.copytree(merged, copy)
    if not recorded:
        edit_manifest(copy, lambda d: [d["files"].pop(k, None) for k in ("sizes", "digests")])
    lists = next(copy.glob("*.ivfdata"))
    os.truncate(lists, lists.stat().st_size // 3)
    proc = subprocess.run([sys.executable, "-c", "import sys, json, numpy as np\nfrom tipsv2_sdk.index import GlobalIndex"
                           + textwrap.dedent(SEARCH), str(copy)], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode != 0 and proc.returncode > 0, (proc.returncode, proc.stderr)  # an exception, no signal
    assert "IndexFormatError" in proc.stderr and "truncated" in proc.stderr
    one_line_error(run("index", "info", copy), "truncated")


def test_a_faiss_file_that_does_not_match_its_checksum_is_refused(victim):
    name = json.loads((victim / "manifest.json").read_text())["files"]["index"]
    data = bytearray((victim / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (victim / name).write_bytes(bytes(data))
    one_line_error(run("index", "info", victim), "does not match its recorded checksum")
    with pytest.raises(IndexFormatError, match="checksum"):
        GlobalIndex.open(victim)
