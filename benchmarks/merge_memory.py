"""Peak memory of merging index shards, against the shards' total size (docs/scale.md).

Builds ``--shards`` IVF shards that share one trained template (as a sharded or Ray build with
``--template`` makes them), then merges them three ways, each in a fresh process so its peak is
its own: inverted lists into one on-disk ``.ivfdata`` file (``--on-disk``), inverted lists in
RAM, and a rebuild from the stored vectors. Reported per merge: wall time, peak RSS (``VmHWM``,
which counts memory-mapped file pages the kernel can drop), and peak anonymous memory (sampled
``RssAnon``: what the merge really holds), each also as a fraction of the shards' size on disk.

    OMP_NUM_THREADS=1 python benchmarks/merge_memory.py --shards 8 --per-shard 100000 --dim 256
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# name: (strategy, on_disk, label in the table)
MODES = {"ondisk": ("invlists", True, "inverted lists, on disk"), "inram": ("invlists", False, "inverted lists, in RAM"),
         "rebuild": ("rebuild", False, "rebuild from stored vectors")}


def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
    return out


def child(mode: str, shards: list[str], out: str) -> None:
    """Run one merge and print its measurements as JSON (runs in its own process)."""
    import faiss

    from tipsv2_sdk.index import merge_indexes

    faiss.omp_set_num_threads(1)
    base = _status()
    peak = {"anon": base["RssAnon"]}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak["anon"] = max(peak["anon"], _status()["RssAnon"])

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    strategy, on_disk, _ = MODES[mode]
    start = time.perf_counter()
    merged = merge_indexes(out, shards, strategy=strategy, on_disk=on_disk)
    seconds = time.perf_counter() - start
    done.set()
    thread.join()
    end = _status()
    print(json.dumps({"mode": mode, "seconds": seconds, "count": len(merged), "hwm": end["VmHWM"],
                      "peak_anon": max(peak["anon"], end["RssAnon"]), "base_anon": base["RssAnon"],
                      "base_rss": base["VmRSS"]}))


def make_shards(work: Path, shards: int, per_shard: int, dim: int, factory: str) -> list[Path]:
    """A trained template and ``shards`` shards of clustered unit vectors (ids: positions)."""
    import faiss
    import numpy as np

    from tipsv2_sdk.index import GlobalIndex

    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(200, dim)).astype(np.float32)

    def block(n: int, seed: int) -> np.ndarray:
        g = np.random.default_rng(seed)
        x = centres[g.integers(200, size=n)] + 0.7 * g.normal(size=(n, dim)).astype(np.float32)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    template = GlobalIndex.create(work / "template", dim=dim, factory=factory)
    template.train(block(min(50_000, shards * per_shard), 999))
    template.save()
    dirs = []
    for s in range(shards):
        shard = GlobalIndex.create(work / f"shard{s}", dim=dim, template=work / "template")
        for lo in range(0, per_shard, 50_000):
            n = min(50_000, per_shard - lo)
            ids = np.arange(s * per_shard + lo, s * per_shard + lo + n)
            shard.add(block(n, s * 1000 + lo), [f"/data/{i:09d}.jpg" for i in ids], ids=ids)
        shard.save()
        dirs.append(work / f"shard{s}")
        print(f"shard {s + 1}/{shards} built", file=sys.stderr)
    return dirs


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--per-shard", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--factory", default="IVF1024,Flat")
    parser.add_argument("--work", default=None, help="folder for the shards (default: a temporary one)")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of " + ",".join(MODES))
    parser.add_argument("--child", nargs=3, metavar=("MODE", "SHARDS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], json.loads(args.child[1]), args.child[2])
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="merge-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    shards = make_shards(work, args.shards, args.per_shard, args.dim, args.factory)
    build_s = time.perf_counter() - start
    sizes = [du(s) for s in shards]
    index_bytes = sum((s / name).stat().st_size for s in shards for name in os.listdir(s) if name.startswith("index-"))
    total = sum(sizes)
    print(f"\n{args.shards} shards x {args.per_shard} vectors x {args.dim}-d, {args.factory}: {total / 2**20:.0f} MiB on "
          f"disk ({index_bytes / 2**20:.0f} MiB FAISS files, largest shard {max(sizes) / 2**20:.0f} MiB); "
          f"built in {build_s:.0f} s\n")
    print("| merge | seconds | peak RSS (MiB) | peak anon (MiB) | anon above start (MiB) | anon / shards' size |")
    print("|---|---|---|---|---|---|")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        out = work / f"merged-{mode}"
        shutil.rmtree(out, ignore_errors=True)
        proc = subprocess.run([sys.executable, __file__, "--child", mode, json.dumps([str(s) for s in shards]), str(out)],
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(f"| {MODES[mode][2]} | failed: {proc.stderr.strip().splitlines()[-1]} |||||")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        above = r["peak_anon"] - r["base_anon"]
        print(f"| {MODES[mode][2]} | {r['seconds']:.1f} | {r['hwm'] / 2**20:.0f} | {r['peak_anon'] / 2**20:.0f} | "
              f"{above / 2**20:.0f} | {above / total:.2f} |")
        shutil.rmtree(out, ignore_errors=True)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
