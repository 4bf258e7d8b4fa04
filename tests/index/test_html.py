"""The self-contained results page: thumbnails, heatmaps, patch boxes, escaping, unreadable files."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tipsv2_sdk.index.html import heat_colors, overlay_heatmap, patch_box, render_hit_image, render_html, write_html


def test_patch_box_stretches_with_the_image():
    assert patch_box((100, 50), (4, 4), 0, 0) == (0, 0, 25, 12.5)
    assert patch_box((100, 50), (4, 4), 3, 2) == (50, 37.5, 75, 50)


def test_heat_colors_run_from_blue_to_red():
    low, high = heat_colors(np.array([0.0, 1.0]))
    assert low[2] > low[0] and high[0] > high[2]
    assert heat_colors(np.array([-5.0]))[0].tolist() == low.tolist()  # clipped


def test_overlay_peaks_where_the_heatmap_peaks():
    img = Image.new("RGB", (80, 80), (128, 128, 128))
    grid = np.zeros((4, 4), np.float32)
    grid[3, 0] = 1.0
    out = np.asarray(overlay_heatmap(img, grid)).astype(int)
    assert out[75, 5, 0] - out[75, 5, 2] > 50  # red where the hot patch is
    assert out[5, 75, 2] - out[5, 75, 0] > 20  # blue far from it
    flat = np.asarray(overlay_heatmap(img, np.ones((4, 4))))  # constant map: no division by zero
    assert flat.shape == (80, 80, 3)


@pytest.fixture
def picture(tmp_path):
    path = tmp_path / "pic <1>.png"
    Image.fromarray(np.full((30, 60, 3), 200, np.uint8)).save(path)
    return path


def test_page_is_self_contained_and_escaped(picture, tmp_path):
    report = {"index": "idx", "model": "m", "trained": False, "kind": "cls1", "queries": [
        {"type": "text", "text": "<script>x</script>", "image": None, "box": None, "mode": "regions",
         "results": [{"rank": 1, "id": 4, "path": str(picture), "score": 0.5,
                      "region": {"row": 0, "col": 1, "box": [15, 0, 30, 7.5]}, "heatmap": np.eye(4).tolist()},
                     {"rank": 2, "id": 5, "path": str(tmp_path / "gone.png"), "score": 0.25}]},
        {"type": "box", "text": None, "image": str(picture), "box": [0, 0, 30, 30], "mode": "images", "results": []},
    ]}
    page = render_html(report)
    assert "<script>x" not in page and "&lt;script&gt;" in page
    assert page.count('src="data:image/jpeg;base64,') == 2  # one hit + one query image; the missing file is a placeholder
    assert "image not readable" in page and "pic &lt;1&gt;.png" in page and "RANDOM WEIGHTS" in page
    assert "patch (0, 1)" in page and "no results" in page
    target = write_html(tmp_path / "r.html", report)
    assert open(target, encoding="utf-8").read() == page


def test_hit_thumbnail_is_enlarged_to_the_card(picture):
    import base64
    import io

    uri = render_hit_image({"path": str(picture)}, size=120)
    img = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert img.size == (120, 60)
    assert render_hit_image({"path": None}) is None
