"""Training throughput and memory: tiny and small configs, head-only vs full EMA, in one run.

Each case trains for a few steps in its own process (so its peak RSS is its own) and reports the
median seconds per step after the first (warm-up) step, images/s, peak RSS and the parameters
the run holds. ``--write docs/pretrain.md`` replaces the table between the benchmark markers.

    python benchmarks/pretrain.py [--steps-tiny 12] [--steps-small 6] [--write docs/pretrain.md]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "pretrain" / "configs"
START, END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"

CASES = {
    # name: (config, overrides)
    "tiny (w32, 56/28 px, batch 8)": ("tiny_test.yaml", []),
    "small (tipsv2-tiny w192, 112/56 px, batch 32)": ("tiny_shapes.yaml", ["data.batch_size=32", "data.num_workers=1"]),
}


def run_case(config: str, overrides: list[str], teacher: str, steps: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        args = [f"output_dir={tmp}", f"schedule.steps={steps}", f"objective.teacher={teacher}", "checkpoint.every_steps=0",
                "logging.every_steps=1", "logging.progress=false", "schedule.max_minutes=null", f"threads={threads}",
                *overrides]
        cmd = [sys.executable, "-m", "tipsv2_sdk.pretrain", "train", "--config", str(CONFIGS / config), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        rows = [json.loads(line) for line in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
        summary = json.loads((Path(tmp) / "train_summary.json").read_text())
    step_s = statistics.median(r["step_s"] for r in rows[1:]) if len(rows) > 1 else rows[0]["step_s"]
    return {"steps_per_s": 1.0 / step_s, "images_per_s": statistics.median(r["images_per_s"] for r in rows[1:] or rows),
            "peak_rss_mb": summary["peak_rss_mb"], **summary["parameters"]}


def table(results: dict) -> str:
    lines = ["| config | teacher | steps/s | images/s | peak RSS MB | trainable params | held params |",
             "|---|---|---|---|---|---|---|"]
    for (case, teacher), r in results.items():
        lines.append(f"| {case} | {teacher} | {r['steps_per_s']:.2f} | {r['images_per_s']:.1f} | {r['peak_rss_mb']:.0f} "
                     f"| {r['trainable']:,} | {r['held']:,} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps-tiny", type=int, default=12)
    parser.add_argument("--steps-small", type=int, default=6)
    parser.add_argument("--threads", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    parser.add_argument("--write", type=Path, default=None, help="markdown file with benchmark markers to update")
    args = parser.parse_args()
    results = {}
    for case, (config, overrides) in CASES.items():
        steps = args.steps_tiny if case.startswith("tiny") else args.steps_small
        for teacher in ("head_ema", "full_ema"):
            results[(case, teacher)] = run_case(config, overrides, teacher, steps, args.threads)
            print(f"{case} / {teacher}: {results[(case, teacher)]}", file=sys.stderr)
    machine = (f"{platform.processor() or platform.machine()}, {args.threads} torch threads, torch {torch.__version__}, "
               f"CPU, fp32; median step after the first")
    text = f"{table(results)}\n\n_Measured with `python benchmarks/pretrain.py` ({machine})._"
    print(text)
    if args.write:
        doc = args.write.read_text()
        if START not in doc or END not in doc:
            raise SystemExit(f"{args.write} has no {START} ... {END} markers")
        head, rest = doc.split(START, 1)
        args.write.write_text(f"{head}{START}\n{text}\n{END}{rest.split(END, 1)[1]}")


if __name__ == "__main__":
    main()
