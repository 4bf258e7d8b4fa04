"""The Ray engine on a local 2-CPU Ray cluster: same ids, vectors and answers as the local engine,
an actor crash retried without duplicating or losing rows, Ray shards merged with local ones."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tipsv2_sdk.cli.app import cli
from tipsv2_sdk.index import GlobalIndex, PatchIndex
from tipsv2_sdk.index.builder import BuildOptions, build_index
from tipsv2_sdk.index.combine import merge_builds
from tipsv2_sdk.index.engines import EngineOptions
from tipsv2_sdk.index.engines.ray import FAULT_ENV
from tipsv2_sdk.index.shard import Shard
from tipsv2_sdk.index.sources.writers import image_bytes, write_parquet, write_webdataset


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray for the whole module (starting one takes ~15 s); the engine reuses it."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def mixed_inputs(tmp_path_factory):
    """Image files (one broken), img2dataset shards (one corrupt member) and a parquet table.

    Sorted, they are ids 0-4 (files), 5-8 (parquet rows) and 9-14 (tar samples)."""
    from PIL import Image

    from tipsv2_sdk.index.samples import load_samples

    root = tmp_path_factory.mktemp("ray_inputs")
    samples = load_samples()[:14]
    data = [image_bytes(np.asarray(Image.open(s.path).convert("RGB")), "jpg") for s in samples]
    (root / "files").mkdir()
    for s in samples[:4]:
        shutil.copy(s.path, root / "files" / s.path.name)
    (root / "files" / "broken.png").write_text("not an image")
    members = data[4:10]
    members[3] = b"not an image"  # the first image member of the second shard
    write_webdataset(root / "wds", members, [s.short for s in samples[4:10]], per_shard=3)
    write_parquet(root / "table.parquet", data[10:14], [s.short for s in samples[10:14]])
    return [str(root / "files"), str(root / "wds" / "{00000..00001}.tar"), str(root / "table.parquet")]


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from tipsv2_sdk import load

    return load(tiny_model_dir)


OPTS = dict(patches=True, batch_size=2, chunk_size=3, progress=False)


def snapshot(out: Path) -> dict:
    data = {}
    for name, cls in (("global", GlobalIndex), ("patch", PatchIndex)):
        index = cls.open(out / name)
        ids = np.sort(index.ids())
        data[name + "_ids"] = ids.tolist()
        data[name + "_records"] = index.records(ids)
        data[name + "_vectors"] = (index.vectors(ids) if name == "global"
                                   else np.stack([index.patch_vectors(int(i)) for i in ids]))
    glob = GlobalIndex.open(out / "global")
    queries = data["global_vectors"][:5].astype(np.float32)
    data["answers"] = glob.search(queries, k=6).ids
    data["skipped"] = sorted(json.dumps(r, sort_keys=True) for r in
                             (json.loads(x) for x in (out / "skipped.jsonl").read_text().splitlines()))
    return data


def assert_same(a: dict, b: dict, keys=None) -> None:
    for key in keys or a:
        if isinstance(a[key], np.ndarray):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        else:
            assert a[key] == b[key], key


def test_ray_build_equals_local_survives_a_crash_and_merges_with_local_shards(
        ray_cluster, mixed_inputs, model, tiny_model_dir, tmp_path, monkeypatch):
    ref = str(tiny_model_dir)
    local0, ray0, local1 = tmp_path / "local0", tmp_path / "ray0", tmp_path / "local1"
    build_index(model, mixed_inputs, local0, BuildOptions(**OPTS), shard=Shard(0, 2), model_ref=ref)
    faults = tmp_path / "faults"
    faults.mkdir()
    (faults / "crash-after-chunk-1").write_text("")  # the actor dies right after writing chunk 1, once
    monkeypatch.setenv(FAULT_ENV, str(faults))
    report = build_index(model, mixed_inputs, ray0, BuildOptions(engine=EngineOptions("ray"), **OPTS),
                         shard=Shard(0, 2), model_ref=ref)
    assert not (faults / "crash-after-chunk-1").exists()  # the crash happened and Ray retried the chunk
    assert report.engine == "ray" and report.chunks == 3 and report.selected == 7
    a, b = snapshot(local0), snapshot(ray0)
    assert_same(a, b)
    assert len(a["global_ids"]) == 6 and len(set(b["global_ids"])) == len(b["global_ids"])  # none lost, none twice
    # a Ray shard and a local shard merge into what one local build gives
    build_index(model, mixed_inputs, local1, BuildOptions(**OPTS), shard=Shard(1, 2), model_ref=ref)
    single = tmp_path / "single"
    build_index(model, mixed_inputs, single, BuildOptions(**OPTS), model_ref=ref)
    merged = tmp_path / "merged"
    merge_builds(merged, [ray0, local1])
    assert_same(snapshot(single), snapshot(merged))
    meta = GlobalIndex.open(merged / "global").records([7])[0]
    assert meta["path"].endswith("table.parquet#000000002") and meta["meta"]["caption"]


def test_ray_embed_writes_the_bytes_the_local_engine_writes(ray_cluster, mixed_inputs, tiny_model_dir, tmp_path):
    outputs = {}
    for engine in ("local", "ray"):
        out = tmp_path / f"{engine}.npy"
        result = run("embed", *mixed_inputs, "-o", out, "-m", tiny_model_dir, "--kind", "patches", "--batch-size", 2,
                     "--engine", engine, "--json")
        assert result.exit_code == 0, result.output
        outputs[engine] = (out.read_bytes(), json.loads(out.with_name(f"{engine}.ids.json").read_text()))
    assert outputs["ray"] == outputs["local"]
    doc = outputs["ray"][1]
    assert doc["shape"][0] == len(doc["items"]) == 13 and len(doc["skipped"]) == 2


def test_engine_options_are_checked_before_loading_anything(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    result = run("embed", tmp_path, "-o", tmp_path / "v.npy", "--ray-address", "auto")
    assert result.exit_code == 2 and "need --engine ray" in result.output
    result = run("embed", "--text", "hi", "-o", tmp_path / "v.npy", "--engine", "ray")
    assert result.exit_code == 2 and "texts are embedded locally" in result.output
    result = run("index", "build", tmp_path / "nope.tar", tmp_path / "out", "--engine", "ray")
    assert result.exit_code == 2 and "no such file" in result.output
