"""Input sources without a model: brace patterns, tar shard listing and damage, parquet tables, mixing."""
from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest

from tipsv2_sdk.errors import ImageLoadError
from tipsv2_sdk.index.inputs import InputError
from tipsv2_sdk.index.sources import ChunkInputs, SourceError, SourceOptions, collect_sources, read_chunk, split_record
from tipsv2_sdk.index.sources.braces import expand_braces, has_braces
from tipsv2_sdk.index.sources.decode import open_member
from tipsv2_sdk.index.sources.webdataset import list_shard, split_member_name
from tipsv2_sdk.index.sources.writers import image_bytes, write_parquet, write_webdataset


def pictures(n: int, seed: int = 0, fmt: str = "png") -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [image_bytes(rng.integers(0, 255, (20 + i, 24, 3), dtype=np.uint8), fmt) for i in range(n)]


def test_brace_patterns_expand_like_webdataset():
    assert expand_braces("s/{00000..00003}.tar") == [f"s/{i:05d}.tar" for i in range(4)]
    assert expand_braces("{a,b}-{1..2}") == ["a-1", "a-2", "b-1", "b-2"]
    assert expand_braces("x{0..10..5}") == ["x0", "x5", "x10"]
    assert expand_braces("{a,{b,c}}") == ["a", "b", "c"]
    assert expand_braces("plain{name}.tar") == ["plain{name}.tar"] and not has_braces("plain{name}.tar")
    assert expand_braces("{3..1}") == ["3", "2", "1"]
    with pytest.raises(InputError, match="expands to"):
        expand_braces("{0..99999999999}")


def test_member_names_split_at_the_first_dot_of_the_base_name():
    assert split_member_name("000010002.jpg") == ("000010002", "jpg")
    assert split_member_name("dir/a.b/000.seg.PNG") == ("dir/a.b/000", "seg.png")
    assert split_record("/d/00001.tar#000010002") == ("webdataset", "/d/00001.tar", "000010002")
    assert split_record("/d/t.parquet#k#1") == ("parquet", "/d/t.parquet", "k#1")
    assert split_record("/photos/#1.jpg") is None


def test_img2dataset_shards_are_listed_with_captions_and_json(tmp_path):
    shards = write_webdataset(tmp_path / "shards", pictures(5), [f"caption {i}" for i in range(5)], per_shard=2)
    assert [p.name for p in shards] == ["00000.tar", "00001.tar", "00002.tar"]
    found = collect_sources([str(tmp_path / "shards" / "{00000..00002}.tar")])
    assert found.paths == [f"{shards[s]}#{s:05d}{i:04d}" for s, i in ((0, 0), (0, 1), (1, 0), (1, 1), (2, 0))]
    assert found.problems == [] and found.ignored == 0
    chunk = read_chunk(found.paths[1:3])
    assert chunk.errors == [None, None] and chunk.items[0] == pictures(5)[1]
    assert chunk.metas[0]["caption"] == "caption 1"
    assert chunk.metas[0]["metadata"]["key"] == "000000001" and chunk.metas[0]["metadata"]["status"] == "success"
    # a glob of shards and the shards one by one give the same list
    assert collect_sources([str(tmp_path / "shards" / "*.tar")]).paths == found.paths


def test_a_missing_shard_of_a_pattern_is_named(tmp_path):
    write_webdataset(tmp_path, pictures(2), per_shard=1)
    with pytest.raises(InputError, match=r"1 of the 3 files .*00002\.tar"):
        collect_sources([str(tmp_path / "{00000..00002}.tar")])


def test_corrupt_members_and_damaged_shards_are_reported_not_fatal(tmp_path):
    good = pictures(3)
    path = tmp_path / "00000.tar"
    with tarfile.open(path, "w") as archive:
        for name, data in (("000000000.png", good[0]), ("000000001.png", b"not an image"), ("000000002.png", b""),
                           ("000000003.json", b"{}"), ("000000004.png", good[1]), ("000000004.json", b"{oops")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    found = collect_sources([str(path)])
    assert [p.rsplit("#", 1)[1] for p in found.paths] == ["000000000", "000000001", "000000002", "000000004"]
    assert found.ignored == 1  # 000000003 has no image
    chunk = read_chunk(found.paths)
    images = chunk.images(10**8)
    assert images[0].size == (24, 20)
    with pytest.raises(ImageLoadError, match="cannot identify image file '.*#000000001'"):
        images[1]
    with pytest.raises(ImageLoadError, match="empty"):
        images[2]
    assert "metadata_error" in chunk.metas[3] and chunk.items[3] == good[1]
    # a truncated copy keeps the complete members; the cut one fails when read
    data = path.read_bytes()
    cut = tmp_path / "cut.tar"
    offset = list_shard(path).samples["000000004"]["png"].offset
    cut.write_bytes(data[: offset + 10])
    listing = collect_sources([str(cut)])
    assert len(listing.paths) == 4
    assert "truncated tar member" in read_chunk(listing.paths[-1:]).errors[0]
    # garbage instead of a header: the samples before it are kept and the shard is reported
    bad = tmp_path / "bad.tar"
    header = list_shard(path).samples["000000002"]["png"].offset - 512
    bad.write_bytes(data[:header] + b"\x7f" * 512 + data[header + 512:])
    damaged = collect_sources([str(bad)])
    assert damaged.problems and damaged.problems[0]["path"] == str(bad)
    assert "unreadable" in damaged.problems[0]["reason"] and len(damaged.paths) == 2
    not_tar = tmp_path / "junk.tar"
    not_tar.write_bytes(b"hello" * 300)
    assert collect_sources([str(not_tar), str(path)]).problems[0]["reason"].startswith("not a readable tar")


def test_member_images_decode_like_files(tmp_path):
    from tipsv2_sdk.images import load_pixels

    data = pictures(1, fmt="jpg")[0]
    (tmp_path / "a.jpg").write_bytes(data)
    from_file = load_pixels(str(tmp_path / "a.jpg"), 28)
    from_member = load_pixels(open_member(data, "x.tar#a"), 28)
    np.testing.assert_array_equal(from_file, from_member)
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        open_member(data, "x.tar#a", max_pixels=100)


def test_parquet_tables_with_bytes_paths_and_structs(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    imgs = pictures(5)
    write_parquet(tmp_path / "t.parquet", imgs, [f"c{i}" for i in range(5)], row_group_size=2,
                  extra={"width": [1, 2, 3, 4, 5]})
    found = collect_sources([str(tmp_path / "t.parquet")])
    assert found.paths == [f"{tmp_path / 't.parquet'}#{i:09d}" for i in range(5)]
    chunk = read_chunk(found.paths[::-2], SourceOptions(meta_columns=("width",)))
    assert chunk.items == [imgs[4], imgs[2], imgs[0]]
    assert chunk.metas[0] == {"caption": "c4", "metadata": {"width": 5}}
    # a path column, relative to the table's folder, with keys; a missing file is that row's error
    for i, data in enumerate(imgs[:2]):
        (tmp_path / f"f{i}.png").write_bytes(data)
    write_parquet(tmp_path / "p.parquet", ["f0.png", "f1.png", "gone.png"], keys=["b", "a", "c"], image_column="path")
    found = collect_sources([str(tmp_path / "p.parquet")])
    assert [p.rsplit("#", 1)[1] for p in found.paths] == ["a", "b", "c"]
    chunk = read_chunk(found.paths)
    assert chunk.items[:2] == [imgs[1], imgs[0]] and "no such file" in chunk.errors[2]
    # a datasets-style {bytes, path} struct column
    struct = pa.array([{"bytes": imgs[0], "path": None}, {"bytes": None, "path": "f1.png"}],
                      pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    pq.write_table(pa.table({"image": struct}), tmp_path / "s.parquet")
    assert read_chunk(collect_sources([str(tmp_path / "s.parquet")]).paths).items == [imgs[0], imgs[1]]


def test_parquet_column_mistakes_are_named(tmp_path):
    write_parquet(tmp_path / "t.parquet", pictures(2), keys=["x", "x"])
    with pytest.raises(SourceError, match="key 'x' appears more than once"):
        collect_sources([str(tmp_path / "t.parquet")])
    with pytest.raises(SourceError, match="no column 'pixels' \\(--image-column\\)"):
        collect_sources([str(tmp_path / "t.parquet")], SourceOptions(image_column="pixels", key_column="jpg"))
    write_parquet(tmp_path / "u.parquet", pictures(1), image_column="blob")
    with pytest.raises(SourceError, match="no image column found"):
        collect_sources([str(tmp_path / "u.parquet")])


def test_files_and_containers_mix_in_one_sorted_list(tmp_path):
    write_webdataset(tmp_path / "wds", pictures(3), per_shard=2)
    write_parquet(tmp_path / "t.parquet", pictures(2))
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(pictures(1)[0])
    (tmp_path / "imgs" / "notes.md").write_text("x")
    found = collect_sources([str(tmp_path / "imgs"), str(tmp_path / "wds" / "*"), str(tmp_path / "t.parquet")])
    assert len(found.paths) == 1 + 3 + 2 and found.paths == sorted(found.paths)
    assert found.ignored == 1 + 2  # notes.md; the two _stats.json files the glob matched
    chunk = read_chunk(found.paths)
    assert sum(isinstance(x, str) for x in chunk.items) == 1
    again = ChunkInputs.from_bytes(chunk.to_bytes())
    assert again == chunk


def test_no_such_container_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        collect_sources([str(tmp_path / "nope.tar")])
    assert json.loads(json.dumps(SourceOptions(meta_columns=("a",)).to_dict())) == {
        "image_column": None, "caption_column": None, "key_column": None, "meta_columns": ["a"]}
