"""CliRunner tests of `tipsv2 embed`, `tipsv2 index build|add|remove|info|merge` and `tipsv2 search`."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tipsv2_sdk.cli.app import cli

BUILD_KEYS = {"out", "model", "kind", "patches", "shard", "inputs", "selected", "ignored", "added", "removed",
              "unchanged", "skipped", "resumed_chunks", "chunks", "seconds", "images_per_second", "counts",
              "engine", "unreadable_sources", "manual", "notes", "generation"}
REPORT_KEYS = {"index", "model", "trained", "kind", "patches", "k", "queries"}
QUERY_KEYS = {"type", "text", "image", "box", "mode", "method", "results"}
HIT_KEYS = {"rank", "id", "path", "score"}


def run(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


def ok_json(*args, env=None):
    result = run(*args, "--json", env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def user_error(*args, match: str):
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert match in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    return result


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """8 sample images and one unreadable file."""
    from tipsv2_sdk.index.samples import load_samples

    root = tmp_path_factory.mktemp("cli_images")
    for s in load_samples()[:8]:
        shutil.copy(s.path, root / s.path.name)
    (root / "broken.png").write_text("not a png")
    return root


@pytest.fixture(scope="module")
def built(folder, tiny_model_dir, tmp_path_factory):
    """An index with a global (cls1) and a patch index, built through the CLI; returns (dir, build JSON)."""
    out = tmp_path_factory.mktemp("cli_index") / "idx"
    data = ok_json("index", "build", folder, out, "--model", tiny_model_dir, "--patches", "--batch-size", 4, "-q")
    return out, data


def test_build_json_schema_and_skipped_files(built, folder):
    out, data = built
    assert set(data) == BUILD_KEYS
    assert data["counts"] == {"global": 8, "patch": 8} and data["added"] == 8 and data["inputs"] == 9
    assert data["skipped"] == [{"id": 8, "path": str(folder / "broken.png"), "reason": data["skipped"][0]["reason"]}]
    assert data["model"]["trained"] is False and Path(data["model"]["ref"]).is_dir()
    assert (out / "skipped.jsonl").is_file() and (out / "build.json").is_file()


def test_build_human_output_lists_skipped(folder, tiny_model_dir, tmp_path):
    result = run("index", "build", folder, tmp_path / "x", "--model", tiny_model_dir, "--kind", "cls2", "-q")
    assert result.exit_code == 0, result.output
    assert "+8 added" in result.stdout and "broken.png" in result.stdout and "RANDOM WEIGHTS" in result.stderr


def test_info(built):
    out, _ = built
    data = ok_json("index", "info", out)
    assert set(data) == {"path", "generation", "build", "global", "patch", "skipped", "images", "pending", "writer",
                         "warnings"} and data["skipped"] == 1
    assert data["generation"] == 1 and data["images"] == 8 and data["pending"] is None and data["warnings"] == []
    assert data["global"]["count"] == 8 and data["patch"]["patch"]["grid"] == [4, 4]
    assert data["global"]["factory"] == "Flat" and data["build"]["counts"] == {"global": 8, "patch": 8}
    text = run("index", "info", out).stdout
    assert "RANDOM WEIGHTS" in text and "global" in text and "patch" in text


def test_search_text_json_schema(built):
    out, _ = built
    data = ok_json("search", out, "a red ring", "a blue hexagon", "-k", 3)
    assert set(data) == REPORT_KEYS and data["trained"] is False and data["kind"] == "cls1" and data["k"] == 3
    assert [q["text"] for q in data["queries"]] == ["a red ring", "a blue hexagon"]
    for q in data["queries"]:
        assert set(q) == QUERY_KEYS and q["type"] == "text" and q["mode"] == "images" and q["method"] == "global cls1"
        assert [set(h) for h in q["results"]] == [HIT_KEYS] * 3 and [h["rank"] for h in q["results"]] == [1, 2, 3]
        scores = [h["score"] for h in q["results"]]
        assert scores == sorted(scores, reverse=True) and all(Path(h["path"]).is_file() for h in q["results"])


def test_search_regions_with_heatmaps(built):
    out, _ = built
    data = ok_json("search", out, "a red ring", "--regions", "--heatmaps", "-k", 4)
    q = data["queries"][0]
    assert q["mode"] == "regions" and len(q["results"]) == 4
    for hit in q["results"]:
        assert set(hit) == HIT_KEYS | {"region", "heatmap"}
        assert 0 <= hit["region"]["row"] < 4 and 0 <= hit["region"]["col"] < 4
        x0, y0, x1, y1 = hit["region"]["box"]
        assert x1 - x0 == pytest.approx(112 / 4) and y1 - y0 == pytest.approx(112 / 4)  # samples are 112 px
        assert np.asarray(hit["heatmap"]).shape == (4, 4)
        assert hit["score"] == pytest.approx(hit["heatmap"][hit["region"]["row"]][hit["region"]["col"]], abs=2e-3)


def test_search_image_finds_itself(built, folder):
    out, _ = built
    query = sorted(folder.glob("0*.png"))[2]
    for extra, method in (((), "global cls1"), (("--maxsim",), "maxsim")):
        q = ok_json("search", out, "--image", query, "-k", 2, *extra)["queries"][0]
        assert q["type"] == "image" and q["method"] == method
        assert q["results"][0]["path"] == str(query) and q["results"][0]["score"] == pytest.approx(1.0, abs=2e-3)


def test_search_box(built, folder):
    out, _ = built
    query = sorted(folder.glob("0*.png"))[1]
    q = ok_json("search", out, "--image", query, "--box", "0,0,56,56", "-k", 3)["queries"][0]
    assert q["type"] == "box" and q["box"] == [0, 0, 56, 56] and q["method"] == "box maxsim"
    assert q["results"][0]["path"] == str(query)
    r = ok_json("search", out, "--image", query, "--box", "0,0,56,56", "--regions", "-k", 3)["queries"][0]
    assert r["mode"] == "regions" and all("region" in h for h in r["results"])


def test_search_html_page(built, tmp_path):
    out, _ = built
    page = tmp_path / "results.html"
    result = run("search", out, "a red ring", "--regions", "-k", 3, "--html", page)
    assert result.exit_code == 0, result.output
    text = page.read_text(encoding="utf-8")
    assert text.count("data:image/jpeg;base64,") == 3 and "RANDOM WEIGHTS" in text and "patch (" in text
    assert "http://" not in text and "https://" not in text  # self-contained
    assert "a red ring" in result.stdout


def test_search_user_errors(built, tmp_path, folder):
    out, _ = built
    user_error("search", tmp_path / "nope", "x", match="nope")
    user_error("search", out, match="give a text query or --image")
    user_error("search", out, "--box", "1,2,3,4", match="--box needs --image")
    user_error("search", out, "--image", tmp_path / "q.png", match="q.png")
    image = next(folder.glob("0*.png"))
    user_error("search", out, "--image", image, "--box", "1,2,3", match="x0,y0,x1,y1")
    user_error("search", out, "--image", image, "--box", "5,5,500,9", match="box")
    user_error("search", out, "x", "--model", "tipsv2-tiny", match="tipsv2-tiny")
    (tmp_path / "half" / ".build").mkdir(parents=True)
    user_error("search", tmp_path / "half", "x", match="unfinished build")


def test_patch_queries_need_a_patch_index(folder, tiny_model_dir, tmp_path):
    out = tmp_path / "g"
    ok_json("index", "build", folder, out, "--model", tiny_model_dir, "-q")
    user_error("search", out, "red", "--regions", match="--patches")


def test_patch_only_index_answers_text_with_best_patch(folder, tiny_model_dir, tmp_path):
    out = tmp_path / "p"
    data = ok_json("index", "build", folder, out, "--model", tiny_model_dir, "--kind", "patch", "-q")
    assert data["counts"] == {"patch": 8} and data["kind"] is None
    q = ok_json("search", out, "red", "-k", 2)["queries"][0]
    assert q["method"] == "best patch" and len(q["results"]) == 2


def test_add_remove_and_rebuild(folder, tiny_model_dir, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    images = sorted(folder.glob("0*.png"))
    for p in images[:4]:
        shutil.copy(p, src / p.name)
    out = tmp_path / "idx"
    ok_json("index", "build", src, out, "--model", tiny_model_dir, "--patches", "-q")
    extra = tmp_path / "extra"
    extra.mkdir()
    shutil.copy(images[5], extra / images[5].name)
    added = ok_json("index", "add", out, extra, "-q")
    assert added["added"] == 1 and added["counts"] == {"global": 5, "patch": 5}
    removed = ok_json("index", "remove", out, extra / images[5].name, "--id", 0)
    assert removed == {"removed": 2, "counts": {"global": 3, "patch": 3}, "generation": 3}
    user_error("index", "remove", out, "--id", 99, match="99")
    assert ok_json("index", "remove", out, "--id", 99, "--missing-ok")["removed"] == 0
    user_error("index", "remove", out, match="give the paths or --id")
    # a sync rebuild over the same folder keeps the changes made by hand (and says so)
    again = ok_json("index", "build", src, out, "--model", tiny_model_dir, "--patches", "-q")
    assert again["added"] == 0 and again["counts"] == {"global": 3, "patch": 3}
    assert again["manual"] == {"kept": 0, "left_out": 1}
    ok_json("index", "add", out, src / images[0].name, "-q")  # adding it by hand brings it back
    again = ok_json("index", "build", src, out, "--model", tiny_model_dir, "--patches", "-q")
    assert again["added"] == 0 and again["counts"] == {"global": 4, "patch": 4} and again["manual"]["left_out"] == 0


def test_shard_build_and_merge_answer_like_one_build(built, folder, tiny_model_dir, tmp_path):
    single, _ = built
    s0 = ok_json("index", "build", folder, tmp_path / "s0", "--model", tiny_model_dir, "--patches", "--shard", "0/2",
                 "-q")
    s1 = ok_json("index", "build", folder, tmp_path / "s1", "--model", tiny_model_dir, "--patches", "--shard", "auto",
                 "-q", env={"RANK": "1", "WORLD_SIZE": "2"})
    assert (s0["shard"], s1["shard"]) == ("0/2", "1/2") and s0["selected"] + s1["selected"] == 9
    merged = ok_json("index", "merge", tmp_path / "m", tmp_path / "s0", tmp_path / "s1")
    assert merged["counts"] == {"global": 8, "patch": 8}
    image = sorted(folder.glob("0*.png"))[3]
    for args in (("a red ring",), ("a red ring", "--regions"), ("--image", image, "--box", "10,10,80,90")):
        a = ok_json("search", single, *args, "-k", 5)
        b = ok_json("search", tmp_path / "m", *args, "-k", 5)
        assert a["queries"][0]["results"] == b["queries"][0]["results"]
    user_error("index", "merge", tmp_path / "m2", tmp_path / "s0", match="shard 1/2 is missing")
    user_error("index", "build", folder, tmp_path / "bad", "--model", tiny_model_dir, "--shard", "2/2", match="shard")


def test_embed_images_and_texts(folder, tiny_model_dir, tmp_path):
    out = tmp_path / "vecs.npy"
    data = ok_json("embed", folder, "-o", out, "--model", tiny_model_dir)
    assert set(data) == {"vectors", "ids", "count", "shape", "kind", "skipped"}
    assert data["count"] == 8 and data["shape"] == [8, 32] and len(data["skipped"]) == 1
    vectors = np.load(out, allow_pickle=False)
    ids = json.loads(Path(data["ids"]).read_text())
    assert Path(data["ids"]).name == "vecs.ids.json" and vectors.shape == (8, 32)
    assert set(ids) == {"model", "kind", "dim", "shape", "dtype", "items", "skipped"}
    assert [it["id"] for it in ids["items"]] == list(range(8))  # broken.png sorts last: id 8
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    patches = ok_json("embed", folder, "-o", tmp_path / "p.npy", "--kind", "patches", "--dtype", "float16",
                      "--model", tiny_model_dir)
    assert patches["shape"] == [8, 4, 4, 32] and np.load(tmp_path / "p.npy").dtype == np.float16
    texts = tmp_path / "texts.txt"
    texts.write_text("a red ring\n\na blue square\n")
    t = ok_json("embed", "--text", "a cat", "--texts-file", texts, "-o", tmp_path / "t.npy", "--model", tiny_model_dir)
    assert t["shape"] == [3, 32] and t["kind"] == "text"
    assert [i["text"] for i in json.loads((tmp_path / "t.ids.json").read_text())["items"]] == [
        "a cat", "a red ring", "a blue square"]
    user_error("embed", folder, "--text", "x", "-o", tmp_path / "z.npy", "--model", tiny_model_dir, match="either")
    user_error("embed", tmp_path / "missing", "-o", tmp_path / "z.npy", "--model", tiny_model_dir, match="missing")


def test_build_user_errors(folder, tiny_model_dir, tmp_path):
    user_error("index", "build", tmp_path / "none", tmp_path / "o", "--model", tiny_model_dir, match="none")
    user_error("index", "build", folder, tmp_path / "o", "--model", tmp_path / "no_model", match="no_model")
    user_error("index", "build", folder, tmp_path / "o", "--model", tiny_model_dir, "--memory-budget", "lots",
               match="--memory-budget")
    user_error("index", "add", tmp_path / "nothing", folder, match="nothing")
    user_error("index", "build", folder, tmp_path / "f", "--model", tiny_model_dir, "--index-type", "Garbage12",
               match="Garbage12")
    assert not (tmp_path / "f" / ".build").exists()  # rejected before any embedding


def test_ivf_shards_share_a_template_and_merge_inverted_lists_on_disk(folder, tiny_model_dir, tmp_path):
    common = ("--model", tiny_model_dir, "--index-type", "IVF2,Flat", "-q")
    ok_json("index", "build", folder, tmp_path / "s0", "--shard", "0/2", *common)
    ok_json("index", "build", folder, tmp_path / "s1", "--shard", "1/2", "--template", tmp_path / "s0", *common)
    ok_json("index", "build", folder, tmp_path / "one", "--template", tmp_path / "s0", *common)
    merged = ok_json("index", "merge", tmp_path / "m", tmp_path / "s0", tmp_path / "s1", "--strategy", "invlists",
                     "--on-disk")
    assert merged["counts"] == {"global": 8}
    assert list((tmp_path / "m" / "global").glob("*.ivfdata"))
    assert ok_json("index", "info", tmp_path / "m")["global"]["factory"] == "IVF2,Flat"
    for nprobe, found in ((1, range(1, 8)), (2, [8])):  # one of two lists, then both
        a = ok_json("search", tmp_path / "m", "a red ring", "-k", 8, "--nprobe", nprobe)["queries"][0]["results"]
        b = ok_json("search", tmp_path / "one", "a red ring", "-k", 8, "--nprobe", nprobe)["queries"][0]["results"]
        assert a == b and len(a) in found


def test_one_command_line_for_every_rank(folder, tiny_model_dir, tmp_path):
    from tipsv2_sdk.index.cli import rank_device

    for rank in ("0", "1"):
        data = ok_json("index", "build", folder, tmp_path / "idx-{shard}", "--model", tiny_model_dir, "--shard", "auto",
                       "-q", env={"RANK": rank, "WORLD_SIZE": "2"})
        assert data["out"] == str(tmp_path / f"idx-{rank}") and data["shard"] == f"{rank}/2"
    assert ok_json("index", "merge", tmp_path / "idx", tmp_path / "idx-0", tmp_path / "idx-1")["counts"] == {"global": 8}
    user_error("index", "build", folder, tmp_path / "x-{shard}", "--model", tiny_model_dir, match="{shard}")
    assert rank_device("cuda", "auto", {"LOCAL_RANK": "3"}) == "cuda:3"
    assert rank_device("cuda", "0/2", {"LOCAL_RANK": "3"}) == "cuda"
    assert rank_device("cpu", "auto", {"LOCAL_RANK": "3"}) == "cpu"


def test_bare_library_index_directories_are_searchable(tiny_model, tiny_model_dir, folder, tmp_path):
    from tipsv2_sdk.index import GlobalIndex

    paths = sorted(str(p) for p in folder.glob("0*.png"))
    index = GlobalIndex.create(tmp_path / "bare", model=tiny_model)
    index.add(tiny_model.encode_images(paths, progress=False, with_patches=False).cls1, paths)
    index.save()
    data = ok_json("search", tmp_path / "bare", "--image", paths[2], "-k", 1, "--model", tiny_model_dir)
    assert data["queries"][0]["results"][0]["path"] == paths[2] and data["patches"] is False
    user_error("search", tmp_path / "bare", "red", match="tipsv2-b14-tiny-test")  # recorded name, not loadable
    info = ok_json("index", "info", tmp_path / "bare")
    assert info["build"] == {} and info["global"]["count"] == 8 and info["patch"] is None
