"""Builds, searches and embeds over WebDataset shards in img2dataset's exact layout (tiny model)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tipsv2_sdk.cli.app import cli
from tipsv2_sdk.index import GlobalIndex
from tipsv2_sdk.index.builder import BuildOptions, build_index
from tipsv2_sdk.index.engines.embed import embed_records, work_dir_for
from tipsv2_sdk.index.sources import collect_sources
from tipsv2_sdk.index.sources.writers import image_bytes, write_webdataset

BAD = 5  # the sample whose image member is corrupt (shard 1, key 000010001)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def pictures():
    from PIL import Image

    from tipsv2_sdk.index.samples import load_samples

    samples = load_samples()[:10]
    data = [image_bytes(np.asarray(Image.open(s.path).convert("RGB")), "jpg") for s in samples]
    captions = [s.short for s in samples]
    return data, captions


@pytest.fixture(scope="module")
def shards(pictures, tmp_path_factory):
    data, captions = pictures
    data = list(data)
    data[BAD] = data[BAD][:200]  # a truncated JPEG member
    root = tmp_path_factory.mktemp("wds")
    write_webdataset(root, data, captions, per_shard=4)  # 00000.tar .. 00002.tar (4 + 4 + 2)
    return root


def test_shards_build_skips_the_corrupt_member_and_search_shows_captions(shards, pictures, tiny_model_dir, tmp_path):
    out = tmp_path / "idx"
    pattern = str(shards / "{00000..00002}.tar")
    result = run("index", "build", pattern, out, "-m", tiny_model_dir, "--patches", "--batch-size", 2, "--chunk-size", 4,
                 "-q", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["inputs"], report["added"], report["engine"]) == (10, 9, "local")
    [bad] = report["skipped"]
    assert bad["id"] == BAD and bad["path"] == f"{shards / '00001.tar'}#000010001"
    assert "truncated" in bad["reason"].lower(), bad["reason"]
    records = GlobalIndex.open(out / "global").records([0, 9])
    assert records[0]["path"].endswith("00000.tar#000000000") and records[1]["path"].endswith("00002.tar#000020001")
    assert records[1]["meta"]["caption"] == pictures[1][9] and records[1]["meta"]["metadata"]["key"] == "000020001"

    result = run("search", out, pictures[1][0], "-k", 3, "--json")
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)["queries"][0]["results"]
    assert all(h["meta"]["caption"] for h in hits) and all("#" in h["path"] for h in hits)
    regions = json.loads(run("search", out, "a shape", "--regions", "-k", 2, "--json").stdout)["queries"][0]["results"]
    assert regions[0]["region"]["box"] is not None and regions[0]["meta"]["caption"]  # box from the member's size
    human = run("search", out, pictures[1][0], "-k", 1)
    assert human.exit_code == 0 and f'"{hits[0]["meta"]["caption"]}"' in human.stdout
    page = tmp_path / "page.html"
    assert run("search", out, "a shape", "-k", 2, "--html", page).exit_code == 0
    assert "image not readable" not in page.read_text() and "data:image/jpeg;base64" in page.read_text()


def state(out: Path):
    index = GlobalIndex.open(out / "global")
    ids = np.sort(index.ids())
    return ids.tolist(), index.vectors(ids), index.records(ids), index.search(index.vectors(ids[:3]), k=4).ids


def test_an_interrupted_build_resumes_per_shard_to_the_same_index(shards, tiny_model, tmp_path, stop_after):
    inputs = [str(shards / "{00000..00002}.tar")]
    opts = dict(batch_size=2, chunk_size=4, progress=False)  # one chunk per shard of 4
    straight = tmp_path / "straight"
    build_index(tiny_model, inputs, straight, BuildOptions(**opts))
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        build_index(stop_after(tiny_model, 2), inputs, out, BuildOptions(**opts))
    again = stop_after(tiny_model, 99)
    report = build_index(again, inputs, out, BuildOptions(**opts))
    assert report.resumed_chunks == 2 and again.calls == 1  # only the unfinished shard was read and embedded
    a, b = state(straight), state(out)
    assert a[0] == b[0] and a[2] == b[2]
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[3], b[3])


def test_member_images_embed_exactly_like_the_same_files(shards, pictures, tiny_model, tmp_path):
    folder = tmp_path / "files"
    folder.mkdir()
    for i, data in enumerate(pictures[0][:4]):
        (folder / f"{i}.jpg").write_bytes(data)
    a, b = tmp_path / "a", tmp_path / "b"
    opts = BuildOptions(batch_size=2, dtype="float32", progress=False)
    build_index(tiny_model, [str(shards / "00000.tar")], a, opts)
    build_index(tiny_model, [str(folder)], b, opts)
    np.testing.assert_array_equal(GlobalIndex.open(a / "global").vectors([0, 1, 2, 3]),
                                  GlobalIndex.open(b / "global").vectors([0, 1, 2, 3]))


def test_embed_over_shards_writes_metadata_and_resumes(shards, pictures, tiny_model, tiny_model_dir, tmp_path, stop_after):
    out = tmp_path / "vecs.npy"
    result = run("embed", str(shards / "*.tar"), "-o", out, "-m", tiny_model_dir, "--batch-size", 2, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(out.with_name("vecs.ids.json").read_text())
    vectors = np.load(out)
    assert vectors.shape == (9, tiny_model.embed_dim) and doc["shape"] == [9, tiny_model.embed_dim]
    assert [s["id"] for s in doc["skipped"]] == [BAD] and doc["skipped"][0]["path"].endswith("00001.tar#000010001")
    assert doc["items"][0]["meta"]["caption"] == pictures[1][0] and "#" in doc["items"][0]["path"]
    assert not work_dir_for(out).exists()
    # interrupted after one chunk, the same call finishes without redoing it and writes the same bytes
    records = collect_sources([str(shards / "*.tar")]).paths
    again = tmp_path / "again.npy"
    with pytest.raises(KeyboardInterrupt):
        embed_records(stop_after(tiny_model, 1), records, again, batch_size=2, chunk_size=4)
    assert work_dir_for(again).is_dir() and not again.exists()
    model = stop_after(tiny_model, 99)
    redo = embed_records(model, records, again, batch_size=2, chunk_size=4)
    assert model.calls == 2 and redo["items"] == doc["items"]
    np.testing.assert_array_equal(np.load(again), vectors)
