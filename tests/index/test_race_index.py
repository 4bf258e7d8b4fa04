"""Real processes racing on one index: adds, removes and readers at the same time, then an integrity check.

Two processes add images (``tipsv2 index add --wait``), one removes images (``tipsv2 index remove
--wait``), one reads without pause (the reader API, the way a server would). Afterwards: every
reported success is visible, ids are unique, every id has a record and vectors, the global and
the patch index hold the same images, and no reader ever saw anything else.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tipsv2_sdk.index.builder import BuildOptions, build_index
from tipsv2_sdk.index.generation import read_generation, referenced_files
from tipsv2_sdk.index.manifest import read_manifest
from tipsv2_sdk.index.snapshot import open_snapshot

ROOT = Path(__file__).resolve().parents[2]
# Small on purpose: every writer process imports torch and loads the model, on few shared cores.
NEW, REMOVED = 3, 2  # images added (one folder each, by two writers) and removed (by a third)

WRITER = textwrap.dedent("""
    import json, random, sys, time
    import click
    from tipsv2_sdk.cli.app import cli
    log, idx, op, *targets = sys.argv[1:]
    rng = random.Random(len(targets) + len(op))
    with open(log, "w") as out:
        for target in targets:
            time.sleep(rng.random() * 0.3)
            args = (["index", "add", idx, target, "-q"] if op == "add" else ["index", "remove", idx, target])
            try:
                cli.main(args + ["--wait", "600", "--json"], standalone_mode=False)
                out.write(json.dumps({"op": op, "target": target, "ok": True}) + "\\n")
            except click.ClickException as exc:
                out.write(json.dumps({"op": op, "target": target, "ok": False, "error": exc.format_message()}) + "\\n")
            out.flush()
""")

READER = textwrap.dedent("""
    import json, os, sys, time
    import numpy as np
    from tipsv2_sdk.index.snapshot import open_snapshot
    idx, stop, log = sys.argv[1:]
    checks, problems, generations = 0, [], []
    while not os.path.exists(stop) or checks == 0:
        try:
            snap = open_snapshot(idx)
            g, p = snap.global_index, snap.patch_index
            gi, pi = sorted(g.ids().tolist()), sorted(p.ids().tolist())
            if gi != pi:
                problems.append(f"generation {snap.generation}: global {gi} but patch {pi}")
            if len(set(gi)) != len(gi):
                problems.append(f"generation {snap.generation}: duplicate ids {gi}")
            records = g.records(gi)
            if any(r is None or not r["path"] for r in records) or [r["path"] for r in p.records(pi)] != [r["path"] for r in records]:
                problems.append(f"generation {snap.generation}: records differ")
            g.vectors(gi)
            for i in pi:
                p.patch_vectors(i)
            g.search(np.ones((1, g.dim), np.float32), 3)
            p.search_regions(np.ones((1, p.dim), np.float32), 3)
            generations.append(snap.generation)
            checks += 1
            time.sleep(0.02)  # leave the (shared) cores to the writers
        except Exception as exc:  # any failure to read a published generation is a finding
            problems.append(f"{type(exc).__name__}: {exc}")
    json.dump({"checks": checks, "problems": problems[:20], "generations": generations}, open(log, "w"))
""")


def test_adds_removes_and_readers_racing(tiny_model, tiny_model_dir, tmp_path):
    from tipsv2_sdk.index.samples import load_samples

    samples = load_samples()
    base = tmp_path / "base"
    base.mkdir()
    for s in samples[:6]:
        shutil.copy(s.path, base / s.path.name)
    new_folders = []
    for k, s in enumerate(samples[6:6 + NEW]):
        folder = tmp_path / f"new{k}"
        folder.mkdir()
        shutil.copy(s.path, folder / s.path.name)
        new_folders.append(folder)
    idx = tmp_path / "idx"
    build_index(tiny_model, base, idx, BuildOptions(patches=True, batch_size=2, progress=False),
                model_ref=str(tiny_model_dir))
    initial = sorted(str(p) for p in base.iterdir())
    to_remove = initial[:REMOVED]

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    stop = tmp_path / "stop"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(idx), str(stop), str(tmp_path / "reader.json")],
                              env=env, cwd=ROOT)
    writers = []
    jobs = [("add", [str(f) for f in new_folders[0::2]]), ("add", [str(f) for f in new_folders[1::2]]),
            ("remove", to_remove)]
    for k, (op, targets) in enumerate(jobs):
        log = tmp_path / f"writer{k}.jsonl"
        writers.append((log, subprocess.Popen([sys.executable, "-c", WRITER, str(log), str(idx), op, *targets],
                                              env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)))
    for _, proc in writers:
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-2000:]
    time.sleep(0.5)  # let the reader see the final generation too
    stop.write_text("")
    reader.wait(timeout=300)
    assert reader.returncode == 0

    events = [json.loads(line) for log, _ in writers for line in log.read_text().splitlines()]
    assert len(events) == NEW + REMOVED and all(e["ok"] for e in events), [e for e in events if not e["ok"]]
    seen = json.loads((tmp_path / "reader.json").read_text())
    assert seen["problems"] == [] and seen["checks"] > 0
    assert seen["generations"] == sorted(seen["generations"])  # never went back to an older generation

    snap = open_snapshot(idx)
    glob, patch = snap.global_index, snap.patch_index
    ids = sorted(glob.ids().tolist())
    assert len(ids) == len(set(ids)) == 6 - REMOVED + NEW and ids == sorted(patch.ids().tolist())
    paths = {r["path"] for r in glob.records(ids)}
    assert paths == {r["path"] for r in patch.records(ids)}
    added = {str(next(Path(e["target"]).iterdir())) for e in events if e["op"] == "add"}
    assert added <= paths and not (set(to_remove) & paths)  # every reported success is visible
    assert glob.vectors(ids).shape == (len(ids), glob.dim) and all(patch.patch_vectors(i).shape[-1] for i in ids)
    final = 6 - REMOVED + NEW
    assert snap.generation == 1 + NEW + REMOVED and snap.build["counts"] == {"global": final, "patch": final}
    assert not (idx / ".build").exists() and not list(idx.rglob("*.tmp"))
    # only the files of the last two generations are left
    gen = read_generation(idx)
    for sub in ("global", "patch"):
        keep = {"manifest.json"}
        for table in (gen.indexes, gen.previous):
            name = table[sub].split("/", 1)[1]
            keep |= {name} | referenced_files(read_manifest(idx / sub, name).files)
        # pooled-*.npy: a derived search cache the patch index writes and collects itself (index/pooled.py)
        left = {p.name for p in (idx / sub).iterdir() if p.is_file() and not p.name.startswith("pooled-")}
        assert left == keep
