"""``compile=True``: the compiled tower agrees with fp32 and a second process reuses the on-disk compile cache."""
from __future__ import annotations

import json
import os
import subprocess
import sys

_SCRIPT = """
import json, sys, torch
import tipsv2_sdk as tips
from tipsv2_sdk import fast
from tipsv2_sdk.compile_cache import compile_stats
torch.set_num_threads(1)
model = tips.load(sys.argv[1])
pixels = [torch.from_numpy(p) for p in fast.probe_pixels(model.image_size, 3, seed=3)]
ref = model.encode_images(pixels, progress=False)
got = model.encode_images(pixels, progress=False, compile=True)
cos = min(float((getattr(got, k).reshape(-1, got.cls1.shape[-1]) * getattr(ref, k).reshape(-1, got.cls1.shape[-1]))
                .sum(-1).min()) for k in ("cls1", "cls2", "patches"))
print(json.dumps({"cos": cos, **compile_stats()}))
"""


def _run(model_dir, cache, inductor_dir):
    # A fresh inductor directory per process: graphs can only come from our artifact files.
    env = {**os.environ, "TIPSV2_COMPILE_CACHE": str(cache), "TORCHINDUCTOR_CACHE_DIR": str(inductor_dir),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(model_dir)], capture_output=True, text=True, env=env,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_compiled_agrees_and_the_cache_is_written_then_reused(tiny_model_dir, tmp_path):
    cache = tmp_path / "compile"
    first = _run(tiny_model_dir, cache, tmp_path / "inductor1")
    assert first["cos"] >= 0.99 and first["fxgraph_cache_miss"] >= 1
    files = sorted(p.name for p in cache.glob("vision-fp32-*.artifacts"))
    assert files
    second = _run(tiny_model_dir, cache, tmp_path / "inductor2")
    assert second["cos"] >= 0.99
    assert second["fxgraph_cache_hit"] >= 1 and second["fxgraph_cache_miss"] == 0
    assert sorted(p.name for p in cache.glob("vision-fp32-*.artifacts")) == files  # nothing new to write
