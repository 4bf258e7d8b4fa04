"""clip-retrieval's released ``ClipClient`` against a real ``tipsv2 serve`` app: text, an image file and
``embedding_input`` answer exactly what our ``/v1/search`` answers, with captions and img2dataset
metadata. Runs only in its own CI step (``-m clip_client``), where clip-retrieval is installed with
``--no-deps``; there, a missing wheel fails instead of skipping.
"""
from __future__ import annotations

import base64
import importlib.util
import json
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.clip_client

requests = pytest.importorskip("requests")


def load_clip_client():
    """``clip_retrieval/clip_client.py`` from the installed wheel, loaded on its own: the package's
    ``__init__`` imports the whole back end (flask, faiss, pandas, ...), which ``--no-deps`` leaves out."""
    spec = importlib.util.find_spec("clip_retrieval")
    if spec is None or not spec.submodule_search_locations:
        if os.environ.get("CI") == "true":
            pytest.fail("clip-retrieval is not installed (pip install --no-deps clip-retrieval==2.45.0)")
        pytest.skip("clip-retrieval is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "clip_client.py"
    module_spec = importlib.util.spec_from_file_location("clip_retrieval_released_client", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def clip_client():
    return load_clip_client()


@pytest.fixture(scope="module")
def captioned(serve_images, tiny_model_dir, tmp_path_factory):
    """An img2dataset shard of the 8 sample images (captions, json with urls) plus a copy of the first
    one under another key, built as the index ``shards``; returns (index, captions, urls)."""
    from tipsv2_sdk.index.sources.writers import write_webdataset

    from .conftest import build

    pictures = [p.read_bytes() for p in sorted(serve_images.iterdir())]
    pictures.append(pictures[0])
    captions = [f"sample picture number {n}" for n in range(len(pictures))]
    urls = [f"https://images.example.org/{n}.png" for n in range(len(pictures))]
    root = tmp_path_factory.mktemp("clip_shards")
    write_webdataset(root / "tars", pictures, captions, per_shard=100, fmt="png", urls=urls)
    return build(root / "tars" / "00000.tar", root / "shards", tiny_model_dir), captions, urls


@pytest.fixture
def served(captioned, serve_index, start_server):
    """One server over both ``photos`` (plain files) and ``shards`` (tar members with metadata)."""
    return start_server([serve_index, captioned[0]])


def ours(url, body):
    resp = requests.post(url + "/v1/search", json=body, timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.json()["queries"][0]["results"]


def same_answer(clip_hits, v1_hits):
    """Same ids in the same order with the same scores."""
    assert [h["id"] for h in clip_hits] == [h["id"] for h in v1_hits]
    assert [h["similarity"] for h in clip_hits] == [h["score"] for h in v1_hits]


def test_text_query_with_captions_and_urls(clip_client, served, captioned):
    _, captions, urls = captioned
    client = clip_client.ClipClient(url=served.url + "/knn-service", indice_name="shards", num_images=6,
                                    deduplicate=False)
    hits = client.query(text="a red circle")
    same_answer(hits, ours(served.url, {"index": "shards", "text": "a red circle", "k": 6}))
    assert len(hits) == 6
    for hit in hits:
        n = captions.index(hit["caption"])  # the sample's own txt caption ...
        assert hit["url"] == urls[n]  # ... and the original address from its json record
        assert hit["image_path"].endswith(f"00000.tar#{hit['key']}") and hit["status"] == "success"


def test_image_file_query_and_plain_file_urls(clip_client, served, serve_images):
    image = sorted(serve_images.iterdir())[3]
    client = clip_client.ClipClient(url=served.url + "/knn-service", indice_name="photos", num_images=4,
                                    deduplicate=False)
    hits = client.query(image=str(image))  # ClipClient reads the file and posts it as base64
    encoded = base64.b64encode(image.read_bytes()).decode()
    same_answer(hits, ours(served.url, {"index": "photos", "image": encoded, "k": 4}))
    assert hits[0]["image_path"].endswith(image.name)
    assert "caption" not in hits[0]  # plain files have no caption
    assert hits[0]["url"] == f"{served.url}/v1/image/photos/{hits[0]['id']}"
    served_file = requests.get(hits[0]["url"], timeout=30)
    assert served_file.status_code == 200 and served_file.content == image.read_bytes()


def test_embedding_input_equals_the_text_query(clip_client, served, serve_model):
    vector = serve_model.encode_texts(["two blue squares"])[0]
    client = clip_client.ClipClient(url=served.url + "/knn-service", indice_name="photos", num_images=5,
                                    deduplicate=False)
    hits = client.query(embedding_input=[float(v) for v in vector])
    same_answer(hits, ours(served.url, {"index": "photos", "text": "two blue squares", "k": 5}))
    assert client.query(text="two blue squares") == hits
    # a wrong length, NaN or a zero vector: a 400 whose JSON ClipClient hands back as it is
    wrong = client.query(embedding_input=[0.5] * (len(vector) + 1))
    assert f"holds {len(vector)}-d vectors" in wrong["error"]
    body = json.loads(json.dumps({"embedding_input": [float("nan")] * len(vector), "indice_name": "photos",
                                  "modality": "image", "num_images": 3}))
    resp = requests.post(served.url + "/knn-service", data=json.dumps(body), timeout=30)
    assert resp.status_code == 400 and "NaN" in resp.json()["error"]
    resp = requests.post(served.url + "/knn-service", timeout=30,
                         data=json.dumps({"embedding_input": [0.0] * len(vector), "modality": "image", "num_images": 3}))
    assert resp.status_code == 400 and "all zeros" in resp.json()["error"]


def test_deduplicate_drops_the_copied_picture(clip_client, served):
    plain = clip_client.ClipClient(url=served.url + "/knn-service", indice_name="shards", num_images=9,
                                   deduplicate=False)
    deduped = clip_client.ClipClient(url=served.url + "/knn-service", indice_name="shards", num_images=9)
    everything = plain.query(text="a photo")
    keys = [h["key"] for h in everything]
    assert len(everything) == 9 and "000000000" in keys and "000000008" in keys  # the picture and its copy
    kept = deduped.query(text="a photo")
    kept_keys = [h["key"] for h in kept]
    assert not {"000000000", "000000008"} <= set(kept_keys)  # one of the two identical pictures is gone
    # what stays is the plain answer in the same order with the same scores, minus near copies
    assert kept == [h for h in everything if h["key"] in kept_keys]
    assert kept[0] == everything[0]
