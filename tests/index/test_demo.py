"""`tipsv2 demo` over the bundled samples, and the samples themselves."""
from __future__ import annotations

import json
import re

import numpy as np
from click.testing import CliRunner
from PIL import Image

from tipsv2_sdk.cli.app import cli
from tipsv2_sdk.index.samples import SAMPLE_COUNT, SAMPLE_SIZE, load_samples, render_samples, samples_dir


def test_bundled_samples_are_the_rendered_scenes(tmp_path):
    samples = load_samples()
    assert len(samples) == SAMPLE_COUNT
    assert sum(f.stat().st_size for f in samples_dir().iterdir()) < 1_000_000
    fresh = render_samples(tmp_path, count=3)
    for bundled, path in zip(samples[:3], fresh):
        assert bundled.path.name == path.name
        np.testing.assert_array_equal(np.asarray(Image.open(bundled.path)), np.asarray(Image.open(path)))
        assert Image.open(bundled.path).size == (SAMPLE_SIZE, SAMPLE_SIZE)
    rendered = json.loads((tmp_path / "captions.json").read_text())["images"]
    bundled_meta = json.loads((samples_dir() / "captions.json").read_text())["images"][:3]
    assert rendered == bundled_meta
    for s in samples:
        assert s.short and s.alt_text and s.objects
        x0, y0, x1, y1 = s.objects[0]["box"]
        assert 0 <= x0 < x1 <= SAMPLE_SIZE and 0 <= y0 < y1 <= SAMPLE_SIZE


def test_demo_with_the_embedded_model(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(cli, ["demo", "--out", str(out), "--json", "-k", "3"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"] == "tipsv2-tiny" and data["trained"] is True
    assert data["build"]["counts"] == {"global": SAMPLE_COUNT, "patch": SAMPLE_COUNT} and not data["build"]["skipped"]
    kinds = [(q["type"], q["mode"]) for q in data["queries"]]
    assert kinds == [("text", "images"), ("text", "images"), ("text", "regions"), ("image", "images"), ("box", "images")]
    assert all(len(q["results"]) == 3 for q in data["queries"])
    image_query = data["queries"][3]
    assert image_query["results"][0]["path"] == image_query["image"]  # an image finds itself first
    page = (out / "results.html").read_text(encoding="utf-8")
    assert data["html"] == str(out / "results.html")
    assert len(re.findall(r'src="data:image/jpeg;base64,', page)) == 5 * 3 + 2  # hits + two query images
    assert "RANDOM WEIGHTS" not in page
    # the trained default model finds what the text asks for among the top 3 (known by construction)
    objects = {s.path.name: {(o["color"], o["shape"]) for o in s.objects} for s in load_samples()}
    for query in data["queries"][:3]:
        color, shape = query["text"].split()[-2:]
        assert any((color, shape) in objects[hit["path"].rsplit("/", 1)[-1]] for hit in query["results"]), query
    # a second run reuses the index and prints the summary for people
    again = CliRunner().invoke(cli, ["demo", "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert "RANDOM WEIGHTS" not in again.stdout and "results page" in again.stdout
    # nothing changed, so nothing was published: still the first generation
    assert json.loads((out / "index" / "generation.json").read_text())["generation"] == 1


def test_demo_rebuilds_for_another_model(tmp_path, tiny_model_dir):
    out = tmp_path / "demo"
    first = CliRunner().invoke(cli, ["demo", "--out", str(out), "--json", "-k", "2", "--model", str(tiny_model_dir)])
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["trained"] is False
    assert "RANDOM WEIGHTS" in (out / "results.html").read_text(encoding="utf-8")
    second = CliRunner().invoke(cli, ["demo", "--out", str(out), "--json", "-k", "2"])
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout)["model"] == "tipsv2-tiny"
