"""``torch.compile`` for the prepared towers, with a compile cache that outlives the process.

Inductor already caches compiled graphs in its own directory (``TORCHINDUCTOR_CACHE_DIR``,
default under the system temp dir, which is often wiped and is per machine user). We do not
change that process-wide setting; instead, after every compile the artifacts are exported with
``torch.compiler.save_cache_artifacts`` into files under ``compile_cache_dir()`` and loaded back
with ``torch.compiler.load_cache_artifacts`` before the next process compiles the same tower, so
its graphs come out of the cache (counted in ``compile_stats()["fxgraph_cache_hit"]``) instead of
being generated and built again.

Batch (and, for texts, sequence length) dimensions are marked dynamic, so one compiled graph
serves every batch size above one instead of one compile per size.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .fast import Mode
    from .model import TipsV2

_SUFFIX = ".artifacts"


def compile_cache_dir() -> Path:
    """``$TIPSV2_COMPILE_CACHE`` if set, else ``<model cache>/compile`` (``$TIPSV2_HOME`` or ~/.cache/tipsv2_sdk)."""
    explicit = os.environ.get("TIPSV2_COMPILE_CACHE")
    if explicit:
        return Path(explicit)
    from .loading import cache_dir

    return cache_dir() / "compile"


def cache_key(model: TipsV2, kind: str, mode: Mode) -> str:
    """Names the artifact files of one tower layout, precision, device type and torch build."""
    config = model.vision_config if kind == "vision" else model.config.text_config
    text = json.dumps({"torch": torch.__version__, "kind": kind, "precision": mode.precision,
                       "device": model.device.type, "cpu": torch.backends.cpu.get_cpu_capability(),
                       "config": config.to_json_string(use_diff=False)}, sort_keys=True)
    return f"{kind}-{mode.precision}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def compile_stats() -> dict[str, int]:
    """Inductor's graph-cache counters in this process (``fxgraph_cache_hit`` / ``_miss``) and graphs compiled."""
    from torch._dynamo.utils import counters

    return {"fxgraph_cache_hit": int(counters["inductor"]["fxgraph_cache_hit"]),
            "fxgraph_cache_miss": int(counters["inductor"]["fxgraph_cache_miss"]),
            "graphs": int(counters["stats"]["unique_graphs"])}


def load_artifacts(directory: Path, key: str) -> int:
    """Hot-load every saved artifact file of ``key``; returns how many were loaded (unreadable ones are skipped)."""
    loaded = 0
    for path in sorted(directory.glob(f"{key}-*{_SUFFIX}")):
        try:
            torch.compiler.load_cache_artifacts(path.read_bytes())
            loaded += 1
        except Exception as exc:  # a truncated or foreign file must not stop encoding: it only costs a compile
            warnings.warn(f"ignoring unreadable compile cache file {path}: {exc}", RuntimeWarning, stacklevel=2)
    return loaded


def save_artifacts(directory: Path, key: str) -> Path | None:
    """Write this process's compile artifacts (content-addressed, atomically); ``None`` if there are none."""
    from .io import atomic_write

    saved = torch.compiler.save_cache_artifacts()
    if saved is None:
        return None
    blob = saved[0]
    path = directory / f"{key}-{hashlib.sha256(blob).hexdigest()[:16]}{_SUFFIX}"
    if not path.exists():
        with atomic_write(path) as handle:
            handle.write(blob)
    return path


def inductor_options(mode: Mode, device: torch.device) -> dict[str, Any]:
    """Inductor settings per mode (see docs/benchmarks.md for the measurements behind them).

    ``freezing`` (weights folded into the graph as constants, pre-packed for oneDNN) pays off for
    bf16 on CPUs with native bf16; on AVX2-only CPUs it measured slower than eager for fp32.
    """
    from .fast import bf16_is_native

    return {"freezing": bool(mode.precision == "bf16" and device.type == "cpu" and bf16_is_native(device))}


def compiled(module: torch.nn.Module, model: TipsV2, kind: str, mode: Mode) -> Callable[..., Any]:
    """``module`` compiled by inductor, reusing and extending the on-disk compile cache."""
    directory = compile_cache_dir()
    key = cache_key(model, kind, mode)
    load_artifacts(directory, key)
    function = torch.compile(module, options=inductor_options(mode, model.device))

    def run(**inputs: torch.Tensor) -> Any:
        before = compile_stats()["fxgraph_cache_miss"]
        out = function(**inputs)
        if compile_stats()["fxgraph_cache_miss"] != before:  # a graph was built now: keep it for the next process
            try:
                save_artifacts(directory, key)
            except OSError as exc:
                warnings.warn(f"could not write the compile cache under {directory}: {exc}", RuntimeWarning,
                              stacklevel=2)
        return out

    return run


def mark_dynamic_batch(*tensors: torch.Tensor) -> None:
    """Mark the batch (and for 2-D token tensors the length) dimension dynamic, so sizes share one graph."""
    for tensor in tensors:
        torch._dynamo.maybe_mark_dynamic(tensor, 0)
        if tensor.dim() == 2:
            torch._dynamo.maybe_mark_dynamic(tensor, 1)


__all__ = ["cache_key", "compile_cache_dir", "compile_stats", "compiled", "inductor_options", "load_artifacts",
           "mark_dynamic_batch", "save_artifacts"]
