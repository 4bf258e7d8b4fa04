"""Cold start of ``tipsv2 search``: where the seconds go (imports, model load, index open, query).

Each repeat is a fresh Python process (nothing imported, nothing cached in the process), on a small
index of the embedded ``tipsv2-tiny`` model built once at the start. The split is measured with
the same calls the command makes; the "whole command" column is the wall time of running
``tipsv2 search INDEX "a red circle"`` as a subprocess. ``--tree`` points at another checkout of
the project (e.g. a ``git worktree`` of an older commit) to time its whole command on the same
index, for a before/after comparison in one run.

    python benchmarks/startup.py --repeats 5 [--tree OLD_CHECKOUT]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_SPLIT = r"""
import json, sys, time
t0 = time.perf_counter()
import torch, transformers  # what every command that loads a model needs
from tipsv2_sdk.cli.common import load_model
from tipsv2_sdk.index.collection import locate
from tipsv2_sdk.index.search import Query, Searcher, resolve_model_ref
t1 = time.perf_counter()
collection = locate(sys.argv[1])
model = load_model(resolve_model_ref(collection, None))
t2 = time.perf_counter()
searcher = Searcher(collection, model)
t3 = time.perf_counter()
searcher.run(Query(text="a red circle"), 5)
t4 = time.perf_counter()
print(json.dumps({"imports": t1 - t0, "model load": t2 - t1, "index open": t3 - t2, "query": t4 - t3}))
"""

_CLI = "import sys; from tipsv2_sdk.cli.app import main; sys.argv = ['tipsv2'] + sys.argv[1:]; main()"


def _env(tree: Path | None) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    return env


def make_index(work: Path, tree: Path | None = None) -> Path:
    """A 16-image index of tipsv2-tiny over generated PNGs, built by ``tree``'s code (index formats change)."""
    import numpy as np
    from PIL import Image

    images = work / "images"
    images.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(16):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(images / f"{i:02d}.png")
    out = work / ("index" if tree is None else "index-other")
    subprocess.run([sys.executable, "-c", _CLI, "index", "build", str(images), str(out), "-m", "tipsv2-tiny", "-q"],
                   check=True, env=_env(tree), capture_output=True, cwd=tree or None)
    return out


def whole_command(index: Path, tree: Path | None) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", _CLI, "search", str(index), "a red circle", "-k", "5", "--json"],
                   check=True, env=_env(tree), capture_output=True, cwd=tree or None)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tree", type=Path, default=None, help="another checkout to time (whole command only)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tipsv2-startup-"))
    index = make_index(work)
    other = make_index(work, args.tree) if args.tree is not None else None
    splits, now, before = [], [], []
    for _ in range(args.repeats):  # interleaved, so both trees see the same machine load
        out = subprocess.run([sys.executable, "-c", _SPLIT, str(index)], check=True, env=_env(None),
                             capture_output=True, text=True).stdout
        splits.append(json.loads(out.strip().splitlines()[-1]))
        now.append(whole_command(index, None))
        if args.tree is not None:
            before.append(whole_command(other, args.tree))
    print(f"| phase (median of {args.repeats} cold processes) | seconds |\n|---|---|")
    for phase in splits[0]:
        print(f"| {phase} | {statistics.median(s[phase] for s in splits):.2f} |")
    print(f"| whole `tipsv2 search` command | {statistics.median(now):.2f} |")
    if before:
        print(f"| whole command, {args.tree} | {statistics.median(before):.2f} |")


if __name__ == "__main__":
    main()
