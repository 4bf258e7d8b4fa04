"""Seeded fuzzing of index directories: damaged manifests, segments, ids, FAISS files and links.

A pristine build directory (global + patch) is copied once per case and damaged in one of many
ways; a worker process then runs ``tipsv2 index info``, the reader API and searches on every copy.
Asserted for every case: no crash signal (the worker runs in its own process, so a SIGBUS or
SIGSEGV fails the test), no traceback, exit 2 with one line for every damage that must be
refused, and no file opened outside the index directory (an audit hook watches every ``open``).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tipsv2_sdk.index.builder import BuildOptions, build_index

ROOT = Path(__file__).resolve().parents[2]
CASES = 80  # enough to hit every kind of damage several times (seeded), small enough for shared cores
SEED = 20240612

HOSTILE = [None, -1, 0, 10**12, 2**63, 1.5, True, "", "../outside/secret.npy", "/etc/passwd", "x" * 300, [], {},
           [1, 2], {"name": "../x"}, "manifest.json", "index-000001.faiss", [[[[[]]]]]]

WORKER = textwrap.dedent("""
    import json, os, sys, traceback
    OUTSIDE = sys.argv[1]
    seen_outside = []
    def audit(event, args):
        if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            path = os.fsdecode(args[0])
            if OUTSIDE in os.path.realpath(path) or OUTSIDE in path:
                seen_outside.append(path)
    sys.addaudithook(audit)
    import numpy as np
    from click.testing import CliRunner
    from tipsv2_sdk.cli.app import cli
    from tipsv2_sdk.errors import TipsV2Error
    from tipsv2_sdk.index.snapshot import open_snapshot
    model_dir = sys.argv[2]
    for line in sys.stdin:
        case = json.loads(line)
        seen_outside.clear()
        out = {"case": case["id"], "outputs": [], "codes": [], "tracebacks": []}
        commands = [["index", "info", case["path"], "--json"], ["index", "info", case["path"]]]
        if case["cli_search"]:
            commands.append(["search", case["path"], "a red ring", "--regions", "-k", "3", "-m", model_dir])
        for args in commands:
            result = CliRunner().invoke(cli, args)
            out["codes"].append(result.exit_code)
            out["outputs"].append(result.output[-2000:])
            if result.exception is not None and not isinstance(result.exception, SystemExit):
                out["tracebacks"].append("".join(traceback.format_exception(*result.exc_info))[-3000:])
        try:
            snap = open_snapshot(case["path"])
            q = np.ones((1, 32), np.float32)
            if snap.global_index is not None:
                snap.global_index.search(q, 3)
            if snap.patch_index is not None:
                snap.patch_index.search_regions(q, 3)
                snap.patch_index.search_images(q, 3)
                snap.patch_index.search_maxsim(np.ones((4, 32), np.float32), 3)
            out["api"] = "ok"
        except TipsV2Error as exc:
            out["api"] = "error: " + str(exc)
        except Exception:
            out["tracebacks"].append(traceback.format_exc()[-3000:])
            out["api"] = "traceback"
        out["outside"] = list(seen_outside)
        print(json.dumps(out), flush=True)
""")


@pytest.fixture(scope="module")
def pristine(tiny_model, tiny_model_dir, tmp_path_factory):
    from tipsv2_sdk.index.samples import load_samples

    root = tmp_path_factory.mktemp("fuzz")
    images = root / "images"
    images.mkdir()
    for s in load_samples()[:6]:
        shutil.copy(s.path, images / s.path.name)
    out = root / "pristine"
    options = BuildOptions(patches=True, batch_size=3, progress=False)
    build_index(tiny_model, images, out, options, model_ref=str(tiny_model_dir))
    # a second generation with tombstones, so that dead-*.npy files exist too
    from tipsv2_sdk.index.maintenance import remove_images

    remove_images(out, ids=[1])
    outside = root / "outside"
    outside.mkdir()
    for f in (out / "global").iterdir():
        shutil.copy(f, outside / f.name)
    np.save(outside / "secret.npy", np.arange(10))
    return out, outside


def _files(case: Path) -> dict[str, list[Path]]:
    """The files the published generation uses (damaging an older generation's leftovers is harmless)."""
    from tipsv2_sdk.index.generation import referenced_files

    gen = json.loads((case / "generation.json").read_text())
    manifests = [case / ref for ref in gen["indexes"].values()]
    data = [m.parent / name for m in manifests for name in referenced_files(json.loads(m.read_text())["files"])]
    return {"json": manifests + [case / "generation.json"], "data": data}


def _damage_json(rng: random.Random, path: Path, outside: Path) -> tuple[str, bool]:
    data = json.loads(path.read_text())
    kind = rng.choice(["field", "delete", "files", "segment", "garbage", "not-object", "truncate"])
    if kind == "garbage":
        path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))))
        return f"{path.name}: garbage", True
    if kind == "not-object":
        path.write_text(json.dumps(rng.choice([[], 3, "text", None])))
        return f"{path.name}: not an object", True
    if kind == "truncate":
        text = path.read_bytes()
        path.write_bytes(text[: rng.randrange(len(text) // 2)])
        return f"{path.name}: truncated", True
    if path.name == "generation.json":
        key = rng.choice(["generation", "indexes", "format", "build", "previous", "plan"])
        if key == "indexes":
            sub = rng.choice(["global", "patch"])
            value = rng.choice(["../outside/x.json", f"{sub}/../../outside/manifest-000001.json",
                                f"{sub}/manifest-999999.json", "/etc/passwd", None, 7])
            data["indexes"][sub] = value
            path.write_text(json.dumps(data))
            return f"generation.json: indexes.{sub} = {value!r}", True
        data[key] = rng.choice(HOSTILE)
        path.write_text(json.dumps(data))
        return f"generation.json: {key} = {data[key]!r}"[:200], key in ("generation", "format")
    if kind == "delete":
        key = rng.choice(["dim", "type", "kind", "files", "count", "format_version"])
        data.pop(key, None)
        path.write_text(json.dumps(data))
        return f"{path.name}: without {key}", key in ("dim", "type", "kind", "format_version")
    if kind == "files":
        key = rng.choice(["index", "dead", "trained", "ivfdata", "segments", "sizes", "digests", "gen"])
        value = rng.choice(HOSTILE + [os.fspath(outside / "secret.npy")])
        data["files"][key] = value
        path.write_text(json.dumps(data))
        # no trained state or no FAISS file (rebuilt in memory from the stored vectors), no checksums,
        # another generation counter: all still a readable index
        harmless = ((key in ("trained", "ivfdata", "index") and value is None) or (key in ("sizes", "digests") and value == {})
                    or (key == "gen" and type(value) is int and 0 <= value < 2**62))
        return f"{path.name}: files.{key} = {value!r}"[:200], not harmless
    if kind == "segment" and data["files"].get("segments"):
        seg = rng.choice(data["files"]["segments"])
        key = rng.choice(["name", "rows"])
        seg[key] = rng.choice(HOSTILE)
        path.write_text(json.dumps(data))
        return f"{path.name}: segment {key} = {seg[key]!r}"[:200], True
    key = rng.choice(["dim", "count", "num_vectors", "next_id", "kind", "type", "dtype", "search_params", "patch",
                      "model_name", "config_hash"])
    value = rng.choice(HOSTILE)
    data[key] = value
    path.write_text(json.dumps(data))
    # none of the hostile values is valid for these (a wrong dim or vector count contradicts the files)
    must = key in ("dim", "kind", "type", "dtype", "num_vectors") or (key == "patch" and "patch" in path.parts)
    return f"{path.name}: {key} = {value!r}"[:200], must


def _damage_data(rng: random.Random, path: Path, outside: Path) -> tuple[str, bool]:
    kind = rng.choice(["truncate", "flip", "zero", "append", "delete", "outside-link", "directory", "huge-header"])
    raw = path.read_bytes()
    if kind == "truncate":
        path.write_bytes(raw[: rng.randrange(max(1, len(raw)))])
    elif kind == "flip":
        data = bytearray(raw)
        for _ in range(rng.randrange(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
        # vector payloads are not checksummed (they are mapped, not parsed): a flipped float is data
        return f"{path.name}: bits flipped", not path.name.startswith("vectors-")
    elif kind == "zero":
        path.write_bytes(b"")
    elif kind == "append":
        path.write_bytes(raw + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))))
    elif kind == "delete":
        path.unlink()
    elif kind == "outside-link":
        target = outside / path.name if (outside / path.name).exists() else outside / "secret.npy"
        path.unlink()
        os.symlink(target, path)
    elif kind == "directory":
        path.unlink()
        path.mkdir()
    elif kind == "huge-header" and path.suffix == ".npy":
        with open(path, "wb") as handle:
            np.lib.format.write_array_header_1_0(handle, {"descr": "<i8", "fortran_order": False, "shape": (10**12,)})
            handle.write(raw[128:])
    else:
        path.write_bytes(raw[: len(raw) // 2])
        kind = "truncate"
    return f"{path.name}: {kind}", True


def make_cases(pristine: Path, outside: Path, root: Path) -> list[dict]:
    rng = random.Random(SEED)
    cases = []
    for k in range(CASES):
        case = root / f"case{k:03d}"
        shutil.copytree(pristine, case, symlinks=True)
        files = _files(case)
        if rng.random() < 0.45:
            what, must = _damage_json(rng, rng.choice(files["json"]), outside)
        else:
            what, must = _damage_data(rng, rng.choice(sorted(files["data"])), outside)
        cases.append({"id": k, "path": str(case), "what": what, "must_fail": must, "cli_search": k % 10 == 0})
    return cases


def test_damaged_index_directories_never_crash_or_leak(pristine, tiny_model_dir, tmp_path):
    pristine_dir, outside = pristine
    cases = make_cases(pristine_dir, outside, tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", WORKER, str(outside), str(tiny_model_dir)],
                          input="".join(json.dumps(c) + "\n" for c in cases), capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=900)
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    done = {r["case"] for r in results}
    crashed = next((c for c in cases if c["id"] not in done), None)
    assert proc.returncode == 0, f"worker died ({proc.returncode}) on {crashed}: {proc.stderr[-2000:]}"
    assert len(results) == len(cases)
    refused = 0
    for case, result in zip(cases, results):
        label = f"case {case['id']} ({case['what']})"
        assert not result["tracebacks"], f"{label}: {result['tracebacks'][0]}"
        assert not result["outside"], f"{label} opened {result['outside']}"
        assert set(result["codes"]) <= {0, 2}, f"{label}: {result['codes']} {result['outputs']}"
        for code, output in zip(result["codes"], result["outputs"]):
            if code == 2:
                errors = [line for line in output.splitlines() if line.startswith("Error:")]
                assert len(errors) == 1 and errors[0] == output.strip().splitlines()[-1], f"{label}: {output}"
        if case["must_fail"]:
            assert result["codes"][0] == 2, f"{label} was accepted: {result['outputs'][0][:500]}"
            refused += 1
    assert refused > CASES // 2  # most damage is of the kind that must be refused
    # the pristine directory itself is fine (the harness does not refuse everything)
    sane = subprocess.run([sys.executable, "-c", WORKER, str(outside), str(tiny_model_dir)],
                          input=json.dumps({"id": -1, "path": str(pristine_dir), "cli_search": True}) + "\n",
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    clean = json.loads(sane.stdout.splitlines()[-1])
    assert clean["codes"] == [0, 0, 0] and clean["api"] == "ok" and not clean["tracebacks"], clean
