"""The server keeps answering while a real `tipsv2 index add` runs, then serves the new generation."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request


def get(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.status == 200
        return json.loads(resp.read())


def test_queries_during_index_add_see_whole_generations(serve_images, tmp_path, build_index, start_server):
    images = sorted(serve_images.iterdir())
    first, extra = tmp_path / "first", tmp_path / "extra"
    first.mkdir(), extra.mkdir()
    for p in images[:4]:
        shutil.copy(p, first / p.name)
    for p in images[4:]:
        shutil.copy(p, extra / p.name)
    index = build_index(first, tmp_path / "live")
    run = start_server([index])
    before = get(run.url + "/v1/indexes")[0]
    assert before["size"] == 4

    add = subprocess.Popen([sys.executable, "-m", "tipsv2_sdk.cli.app", "index", "add", str(index), str(extra), "-q"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    while True:  # query for as long as the writer runs, and once more after it finished
        done = add.poll() is not None
        report = get(run.url + "/v1/search", {"text": "a photo", "k": 8, "regions": False})
        ids = [h["id"] for h in report["queries"][0]["results"]]
        size = get(run.url + "/v1/indexes")[0]["size"]
        seen.append((report["generation"], len(ids), size))
        assert len(ids) in (4, 8) and len(set(ids)) == len(ids)  # one whole generation, never a mix
        if done:
            break
    assert add.returncode == 0, add.stderr
    last_generation, last_count, last_size = seen[-1]
    assert last_count == 8 and last_size == 8 and last_generation > before["generation"]
