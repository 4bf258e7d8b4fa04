"""Builds and searches over parquet tables, with the columns chosen on the command line (tiny model)."""
from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from tipsv2_sdk.cli.app import cli
from tipsv2_sdk.index import GlobalIndex
from tipsv2_sdk.index.sources.writers import image_bytes, write_parquet


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_parquet_columns_from_options_reach_records_and_results(tiny_model_dir, tmp_path):
    from PIL import Image

    from tipsv2_sdk.index.samples import load_samples

    samples = load_samples()[:6]
    data = [image_bytes(np.asarray(Image.open(s.path).convert("RGB")), "png") for s in samples]
    data[2] = None  # an empty cell: skipped and reported
    table = write_parquet(tmp_path / "t.parquet", data, image_column="pixels", row_group_size=4,
                          extra={"text": [s.short for s in samples], "uid": [f"u{i}" for i in range(6)],
                                 "url": [f"https://example.com/{i}.png" for i in range(6)]})
    out = tmp_path / "idx"
    args = ("index", "build", table, out, "-m", tiny_model_dir, "--patches", "--image-column", "pixels",
            "--caption-column", "text", "--key-column", "uid", "--meta-column", "url", "-q", "--json")
    result = run(*args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["added"] == 5 and report["skipped"] == [
        {"id": 2, "path": f"{table}#u2", "reason": "the image cell is empty"}]
    record = GlobalIndex.open(out / "global").records([5])[0]
    assert record == {"id": 5, "path": f"{table}#u5",
                      "meta": {"caption": samples[5].short, "metadata": {"url": "https://example.com/5.png"}}}
    hits = json.loads(run("search", out, samples[0].short, "--regions", "-k", 2, "--json").stdout)["queries"][0]["results"]
    assert hits[0]["meta"]["caption"] and hits[0]["region"]["box"] is not None  # the cell read with the build's columns
    # the same command again is a no-op; other columns would read other bytes and are refused while unfinished
    assert json.loads(run(*args).stdout)["added"] == 0


def test_parquet_option_mistakes_exit_2_with_one_line(tiny_model_dir, tmp_path):
    table = write_parquet(tmp_path / "t.parquet", [image_bytes(np.zeros((8, 8, 3), np.uint8), "png")])
    result = run("index", "build", table, tmp_path / "idx", "-m", tiny_model_dir, "--image-column", "nope")
    assert result.exit_code == 2 and "no column 'nope' (--image-column)" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    result = run("embed", table, "-o", tmp_path / "v.npy", "--key-column", "missing")
    assert result.exit_code == 2 and "--key-column" in result.output
