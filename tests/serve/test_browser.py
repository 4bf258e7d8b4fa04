"""The search page in a real headless chromium: a text query shows images; a box query shows regions.

The page is driven through its URL hash (``#text=...`` / ``#image_id=N&box=...&regions=1``), the same
code path as typing and drawing. Without chromium the test skips, except under CI=true where it fails.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed")
    return exe


def dump_dom(url: str, tmp_path) -> str:
    out = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000",
                          "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_text_query_shows_images_and_box_query_shows_regions(running, tmp_path):
    dom = dump_dom(running.url + "/#text=a%20dog", tmp_path)
    assert 'data-done="1"' in dom, dom[-3000:]
    assert len(re.findall(r'class="hit"', dom)) >= 3
    assert re.search(r'<img src="/v1/image/photos/\d+"', dom)
    assert "heat" in dom  # heatmap overlays drawn

    dom = dump_dom(running.url + "/#image_id=0&box=0,0,30,30&regions=1", tmp_path)
    assert 'data-done="1"' in dom, dom[-3000:]
    assert "box 0,0,30,30" in dom  # the box drawn on the query image
    regions = re.findall(r'class="region" data-row="\d+" data-col="\d+"', dom)
    assert len(regions) >= 3, dom[-3000:]
    assert "box regions" in dom
