"""The /v1 API and clip-retrieval endpoints on a real uvicorn server; answers match `tipsv2 search --json`."""
from __future__ import annotations

import base64
import io
import json
import urllib.error
import urllib.request

import numpy as np
from click.testing import CliRunner


def call(url, body=None, *, content_type="application/json", headers=None):
    """(status, parsed JSON) of a GET (no body) or POST."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, headers={**({"Content-Type": content_type} if content_type else {}),
                                                          **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def b64(path):
    return base64.b64encode(open(path, "rb").read()).decode()


def cli_json(*args):
    from tipsv2_sdk.cli.app import cli

    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def shape(value):
    """The structure of a JSON value (keys and types), ignoring the values themselves."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__ if value is not None else None


def test_text_search_matches_cli_json(running, serve_index, tiny_model_dir):
    status, got = call(running.url + "/v1/search", {"text": "a dog", "k": 3})
    assert status == 200, got
    want = cli_json("search", serve_index, "a dog", "-k", 3, "--json", "--model", tiny_model_dir)
    assert got["generation"] >= 1
    got.pop("generation")
    assert set(got) == set(want)
    assert shape(got["queries"]) == shape(want["queries"])
    assert [h["id"] for h in got["queries"][0]["results"]] == [h["id"] for h in want["queries"][0]["results"]]
    assert np.allclose([h["score"] for h in got["queries"][0]["results"]],
                       [h["score"] for h in want["queries"][0]["results"]], atol=1e-4)


def test_text_regions_with_heatmaps(running, serve_index, tiny_model_dir):
    status, got = call(running.url + "/v1/search", {"text": "a dog", "k": 4, "regions": True, "heatmaps": True})
    assert status == 200, got
    want = cli_json("search", serve_index, "a dog", "-k", 4, "--regions", "--heatmaps", "--json", "--model", tiny_model_dir)
    assert shape(got["queries"]) == shape(want["queries"])
    hit = got["queries"][0]["results"][0]
    assert {"row", "col", "box"} <= set(hit["region"]) and len(hit["heatmap"]) == 4


def test_image_box_and_maxsim(running, serve_images):
    image = sorted(serve_images.iterdir())[2]
    status, same = call(running.url + "/v1/search", {"image": b64(image), "k": 1})
    assert status == 200 and same["queries"][0]["results"][0]["path"].endswith(image.name)
    assert same["queries"][0]["image"] is None  # the temporary query file is not reported
    for extra, method in [({"maxsim": True}, "maxsim"), ({"box": [0, 0, 30, 30]}, "box maxsim"),
                          ({"box": [0, 0, 30, 30], "regions": True}, "box regions")]:
        status, got = call(running.url + "/v1/search", {"image": b64(image), "k": 3, **extra})
        assert status == 200, got
        assert got["queries"][0]["method"] == method and got["queries"][0]["results"]


def test_clear_4xx_errors(running):
    from PIL import Image

    url = running.url + "/v1/search"
    assert call(url, {"text": "x", "k": 0})[0] == 422
    assert call(url, {"text": "x", "k": 100000})[0] == 422
    status, body = call(url, {"text": "  "})
    assert status == 400 and "empty text" in body["error"]
    status, body = call(url, {"image": base64.b64encode(b"not an image").decode()})
    assert status == 400 and "not a readable image" in body["error"]
    status, body = call(url, {"image_url": "http://127.0.0.1:1/x.png"})
    assert status == 403 and "--allow-image-url" in body["error"]
    status, body = call(url, {"text": "x", "index": "../etc"})
    assert status == 404 and "no index named" in body["error"]
    # a decompression bomb: a tiny PNG claiming 100000 x 100000 pixels is refused from its header
    buf = io.BytesIO()
    Image.new("1", (10000, 10000)).save(buf, "PNG")
    status, body = call(url, {"image": base64.b64encode(buf.getvalue()).decode()})
    assert status == 400 and "pixel limit" in body["error"], body
    import http.client
    from urllib.parse import urlparse

    conn = http.client.HTTPConnection(urlparse(running.url).netloc, timeout=30)
    conn.putrequest("POST", "/v1/search")  # announces 17 MiB; refused before any of it is read
    conn.putheader("Content-Length", str(17 * 1024 * 1024))
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 413 and "larger than" in json.loads(resp.read())["error"]
    conn.close()
    status, body = call(running.url + "/v1/image/photos/999999")
    assert status == 404


def test_clip_retrieval_endpoints(running, serve_images):
    assert call(running.url + "/indices-list") == (200, ["photos"])
    # every field ClipClient posts; deduplicate is off: the random tiny model's vectors are all near copies
    body = {"text": "a dog", "image": None, "image_url": None, "embedding_input": None, "deduplicate": False,
            "use_safety_model": True, "use_violence_detector": True, "indice_name": "photos", "use_mclip": False,
            "aesthetic_score": 9, "aesthetic_weight": 0.5, "modality": "image", "num_images": 3, "num_result_ids": 3}
    status, hits = call(running.url + "/knn-service", body, content_type=None)  # no JSON content type
    assert status == 200 and len(hits) == 3
    assert {"id", "similarity", "url", "image_path"} <= set(hits[0])
    status, deduped = call(running.url + "/knn-service", {**body, "deduplicate": True})
    assert status == 200 and 1 <= len(deduped) <= 3 and deduped[0] == hits[0]
    image = sorted(serve_images.iterdir())[1]
    status, hits = call(running.url + "/knn-service", {**body, "text": None, "image": b64(image), "num_images": 2})
    assert status == 200 and hits[0]["image_path"].endswith(image.name)
    assert hits[0]["url"] == f"{running.url}/v1/image/photos/{hits[0]['id']}"  # where this server serves it
    status, meta = call(running.url + "/metadata", {"ids": [hits[0]["id"]], "indice_name": "photos"})
    assert status == 200 and meta == [{"id": hits[0]["id"], "metadata": {"url": hits[0]["url"],
                                                                           "image_path": hits[0]["image_path"]}}]
    assert call(running.url + "/metadata", {"ids": [], "indice_name": "photos"}) == (200, [])


def test_knn_service_num_images_and_num_result_ids(running):
    """Like clip-retrieval's back end: num_result_ids neighbours, metadata on the first num_images only
    (the front end fetches the rest through /metadata)."""
    base = {"text": "a dog", "modality": "image", "indice_name": "photos", "deduplicate": False}
    status, full = call(running.url + "/knn-service", {**base, "num_images": 6})
    assert status == 200 and len(full) == 6
    status, hits = call(running.url + "/knn-service", {**base, "num_images": 2, "num_result_ids": 6})
    assert status == 200 and [h["id"] for h in hits] == [h["id"] for h in full]
    assert hits[:2] == full[:2] and all(set(h) == {"id", "similarity"} for h in hits[2:])
    status, meta = call(running.url + "/metadata", {"ids": [h["id"] for h in hits[2:]], "indice_name": "photos"})
    assert status == 200
    assert [{**m["metadata"], "id": m["id"], "similarity": h["similarity"]} for m, h in zip(meta, hits[2:])] == full[2:]
    status, capped = call(running.url + "/knn-service", {**base, "num_images": 3, "num_result_ids": 10 ** 6})
    assert status == 200 and len(capped) == 8  # a huge num_result_ids is capped, not refused


def test_knn_service_errors_name_the_field(running):
    url = running.url + "/knn-service"
    base = {"text": "a dog", "modality": "image", "num_images": 3}
    for change, status, words in [({"modality": "text"}, 400, "caption embeddings"),
                                  ({"modality": "video"}, 400, "modality must be"),
                                  ({"num_images": 0}, 400, "num_images must be between"),
                                  ({"num_images": "many"}, 400, "num_images must be an integer"),
                                  ({"num_result_ids": "all"}, 400, "num_result_ids must be an integer"),
                                  ({"text": None}, 400, "embedding_input"),
                                  ({"text": None, "image_url": "http://127.0.0.1:1/x.png"}, 403, "--allow-image-url"),
                                  ({"text": None, "embedding_input": "0.1,0.2"}, 400, "list of"),
                                  ({"text": None, "embedding_input": [1, 2, 3]}, 400, "has 3 numbers"),
                                  ({"indice_name": "nope"}, 404, "no index named")]:
        got = call(url, {**base, **change})
        assert got[0] == status and words in got[1]["error"], (change, got)
    assert call(url, b"{not json", content_type=None)[0] == 400
    assert call(running.url + "/metadata", {"ids": "1,2"})[0] == 400
    assert call(running.url + "/metadata", {"ids": [1.5]})[0] == 400


def test_deduplicate_keeps_the_best_ranked_of_each_group_of_near_copies():
    from types import SimpleNamespace

    from tipsv2_sdk.index.server.clip_compat import deduplicated

    a = np.array([1.0, 0.0, 0.0])
    b = np.array([0.0, 1.0, 0.0])
    turn = lambda v, w, t: np.cos(t) * v + np.sin(t) * w  # noqa: E731 - v rotated towards w by t radians
    vectors = {1: a, 2: turn(a, b, 0.3), 3: b, 4: turn(a, b, 0.15), 5: turn(b, np.array([0, 0, 1.0]), 0.3),
               6: turn(a, b, 0.6)}  # cos(0.3) = 0.955 >= 0.94 > cos(0.45) = 0.90
    glob = SimpleNamespace(vectors=lambda ids: np.stack([vectors[i] for i in ids]))
    hits = [{"id": i, "score": 1.0 - i / 10} for i in (1, 3, 2, 4, 5, 6)]
    kept = deduplicated(SimpleNamespace(glob=glob), hits)
    # 1 ~ 4 ~ 2 ~ 6 (a chain: 1 and 6 are 0.6 rad apart) is one group led by 1; 3 ~ 5 another led by 3
    assert [h["id"] for h in kept] == [1, 3]
    hits = [{"id": i, "score": 0.5} for i in (2, 3)]
    assert deduplicated(SimpleNamespace(glob=glob), hits) == hits
    assert deduplicated(SimpleNamespace(glob=None), hits) == hits  # no global vectors: answered as is


def test_page_and_openapi(running):
    with urllib.request.urlopen(running.url + "/") as resp:
        page = resp.read().decode()
    assert "/static/page.js" in page and "http" not in page.replace("http-equiv", "")  # no CDN
    status, spec = call(running.url + "/openapi.json")
    assert status == 200 and "/v1/search" in spec["paths"]
