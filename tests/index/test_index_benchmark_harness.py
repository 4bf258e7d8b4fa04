"""benchmarks/index.py's contender runner: a stopped, killed or finished autofaiss child always yields a row."""
from __future__ import annotations

import importlib.util
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "index.py"


@pytest.fixture()
def bench():
    spec = importlib.util.spec_from_file_location("index_benchmark", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _args(tmp_path):
    base = np.zeros((5, 4), np.float32)
    return base, base[:2], np.zeros((2, 10), np.int64), 1024, tmp_path / "af5"


def test_a_child_killed_by_the_oom_killer_is_reported(bench, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "bench_autofaiss", lambda *a: os.kill(os.getpid(), signal.SIGKILL))
    row = bench.autofaiss_limited(*_args(tmp_path), limit_s=30)
    assert row["n"] == 5 and "killed by signal 9" in row["skipped"] and "out of memory" in row["skipped"]


def test_a_child_over_its_time_limit_is_stopped_and_reported(bench, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "bench_autofaiss", lambda *a: time.sleep(60))
    row = bench.autofaiss_limited(*_args(tmp_path), limit_s=0.5)
    assert "did not finish within 0 s" in row["skipped"] or "did not finish within 1 s" in row["skipped"]


def test_a_finished_child_returns_its_row(bench, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "bench_autofaiss", lambda *a: {"n": 5, "config": "autofaiss", "recall@10": 0.5})
    row = bench.autofaiss_limited(*_args(tmp_path), limit_s=30)
    assert row["recall@10"] == 0.5 and row["build_s"] > 0 and row["peak_rss_gib"] > 0
