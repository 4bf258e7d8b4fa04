"""Hub ids, registry names and the HF cache: offline use of cached snapshots, one-line errors, downloads.

Every model here is written by transformers' own classes (``transformers_tiny_model``) and placed
in a fake HF cache layout under tmp; nothing touches the network (downloads are monkeypatched).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import tipsv2_sdk as tips
from tipsv2_sdk import hub
from tipsv2_sdk.cli.app import cli
from tipsv2_sdk.errors import ModelUnavailableError, UnknownModelError
from tipsv2_sdk.fingerprint import directory_fingerprint
from tipsv2_sdk.testing import fake_hub_cache, transformers_tiny_model

REPO = "google/tipsv2-b14"


@pytest.fixture(scope="module")
def hf_written(tmp_path_factory):
    return transformers_tiny_model(tmp_path_factory.mktemp("hf") / "model")


@pytest.fixture(scope="module")
def hf_written_other(tmp_path_factory):
    """Same architecture, other weights: stands for a second revision of the repo."""
    return transformers_tiny_model(tmp_path_factory.mktemp("hf_other") / "model", seed=1)


@pytest.fixture
def cached(hub_env, hf_written):
    return fake_hub_cache(hub_env, REPO, hf_written)


# ---------------------------------------------------------------------------- offline, cached
@pytest.mark.parametrize("name", [REPO, "tipsv2-b14"])
def test_cached_snapshot_loads_offline(name, cached, hf_written):
    model = tips.load(name)
    assert model.name == "tipsv2-b14"
    assert model.source.startswith(f"hub-cache:{REPO}@{cached.name}:")
    assert model.tokenizer is not None and model.tokenizer.kind == "transformers"
    assert model.weights_fingerprint == directory_fingerprint(hf_written)
    assert model.encode_texts(["a red circle"]).shape == (1, 32)


def test_cached_snapshot_is_used_online_without_network(cached, monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    real = huggingface_hub.snapshot_download

    def local_only(*args, **kwargs):
        assert kwargs.get("local_files_only"), "a cached snapshot must not go to the network"
        return real(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", local_only)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("no download expected"))
    assert tips.load(REPO).source.startswith("hub-cache:")


def test_hf_home_is_honoured(tmp_path, monkeypatch, hf_written):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TIPSV2_HOME", str(tmp_path / "tipsv2"))
    assert hub.hub_cache_dir() == tmp_path / "home" / "hub"
    fake_hub_cache(tmp_path / "home" / "hub", REPO, hf_written)
    assert tips.load(REPO).source.startswith("hub-cache:")


def test_converted_copy_comes_before_the_hub_cache(cached, hub_env, tmp_path, tiny_model_dir):
    converted = tmp_path / "tipsv2" / "tipsv2-b14"
    shutil.copytree(tiny_model_dir, converted)
    assert tips.load("tipsv2-b14").source == f"cache:{converted}"
    assert tips.load(REPO).source.startswith("hub-cache:")  # a hub id always means the hub's files


def test_revisions(hub_env, hf_written, hf_written_other):
    main = fake_hub_cache(hub_env, REPO, hf_written)
    v2 = fake_hub_cache(hub_env, REPO, hf_written_other, revision="v2")
    assert main.name != v2.name
    other = directory_fingerprint(hf_written_other)
    assert tips.load(REPO).weights_fingerprint == directory_fingerprint(hf_written)
    assert tips.load(REPO, revision="v2").weights_fingerprint == other
    assert tips.load("tipsv2-b14", revision=v2.name).weights_fingerprint == other  # a commit id
    with pytest.raises(ModelUnavailableError, match="@v3"):
        tips.load(REPO, revision="v3")
    result = CliRunner().invoke(cli, ["info", f"{REPO}@v2", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["weights_fingerprint"] == other


def test_revision_on_a_local_directory_is_refused(hf_written):
    with pytest.raises(UnknownModelError, match="revision='v1' applies to hub ids"):
        tips.load(hf_written, revision="v1")


# ---------------------------------------------------------------------------- offline, missing
def test_missing_offline_is_one_line_naming_id_cache_and_convert(hub_env):
    with pytest.raises(ModelUnavailableError) as info:
        tips.load("tipsv2-b14")
    message = str(info.value)
    assert "\n" not in message
    assert REPO in message and str(hub_env) in message and "tipsv2 convert" in message
    assert "HF_HUB_OFFLINE=1" in message and "--variant tipsv2-b14" in message


def test_transformers_offline_counts_too(hub_env, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match="TRANSFORMERS_OFFLINE=1"):
        tips.load("someorg/some-tipsv2")


def test_incomplete_snapshot_is_not_used(hub_env, hf_written, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copyfile(hf_written / "config.json", partial / "config.json")  # e.g. after AutoConfig only
    fake_hub_cache(hub_env, REPO, partial)
    assert hub.cached_snapshot(REPO) is None
    with pytest.raises(ModelUnavailableError, match="not in the Hugging Face cache"):
        tips.load(REPO)


@pytest.mark.parametrize("args", [
    ["info", "tipsv2-b14"],
    ["info", f"{REPO}@v1"],
    ["pca", "IMAGE", "-o", "OUT.png", "-m", REPO],
    ["embed", "--text", "a cat", "-o", "OUT.npy", "-m", "tipsv2-l14"],
])
def test_cli_missing_offline_exit_2_one_line(args, hub_env, image_files, tmp_path):
    args = [str(image_files[0]) if a == "IMAGE" else str(tmp_path / a) if a.startswith("OUT") else a for a in args]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert "google/tipsv2-" in lines[0] and str(hub_env) in lines[0] and "tipsv2 convert" in lines[0]


# ---------------------------------------------------------------------------- refusals
def _cache_config(hub_env, tmp_path, repo, config):
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text(json.dumps(config))
    (src / "model.safetensors").write_bytes(b"")
    return fake_hub_cache(hub_env, repo, src)


def test_cached_repo_of_another_model_type_is_refused(hub_env, tmp_path):
    _cache_config(hub_env, tmp_path, "openai/clip-vit-base-patch32", {"model_type": "clip"})
    with pytest.raises(UnknownModelError, match="not a TIPSv2 model: its config.json has model_type 'clip'"):
        tips.load("openai/clip-vit-base-patch32")


def test_remote_code_config_is_refused_with_the_way_out(hub_env, tmp_path):
    _cache_config(hub_env, tmp_path, REPO, {"model_type": "tipsv2", "auto_map": {}, "embed_dim": 768})
    with pytest.raises(UnknownModelError, match="remote-code TIPSv2 config.*revision=.*tipsv2 convert"):
        tips.load(REPO)


def test_unknown_names_mention_hub_ids(hub_env):
    with pytest.raises(UnknownModelError, match="not a hub id"):
        tips.load("no-such-model")
    with pytest.raises(UnknownModelError, match="not a directory"):
        tips.load("./a/b/c")


# ---------------------------------------------------------------------------- online (monkeypatched)
@pytest.fixture
def online(hub_env, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    return hub_env


def _fake_hub(monkeypatch, repos: dict[str, Path], calls: list):
    """Stand-ins for the two download functions, serving local directories as hub repos."""
    import huggingface_hub

    real_snapshot = huggingface_hub.snapshot_download

    def snapshot_download(repo_id, *, revision=None, cache_dir=None, local_files_only=False, **kwargs):
        if local_files_only:
            return real_snapshot(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True, **kwargs)
        calls.append(("snapshot", repo_id, revision, Path(cache_dir), kwargs.get("allow_patterns")))
        return str(fake_hub_cache(cache_dir, repo_id, repos[repo_id], revision=revision or "main"))

    def hf_hub_download(repo_id, filename, *, revision=None, cache_dir=None, **kwargs):
        calls.append(("file", repo_id, filename, revision))
        return str(repos[repo_id] / filename)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)


def test_online_downloads_once_with_the_revision(online, monkeypatch, hf_written):
    calls: list = []
    _fake_hub(monkeypatch, {REPO: hf_written}, calls)
    model = tips.load("tipsv2-b14", revision="v1.0")
    assert ("file", REPO, "config.json", "v1.0") in calls
    assert ("snapshot", REPO, "v1.0", online, hub.ALLOW_PATTERNS) in calls
    assert model.source.startswith(f"hub:{REPO}@") and model.weights_fingerprint == directory_fingerprint(hf_written)
    calls.clear()
    assert tips.load(REPO, revision="v1.0").source.startswith("hub-cache:")
    assert calls == []  # now cached: no second download


def test_online_refuses_a_repo_that_is_not_tipsv2_before_downloading_weights(online, monkeypatch, tmp_path):
    clip = tmp_path / "clip"
    clip.mkdir()
    (clip / "config.json").write_text(json.dumps({"model_type": "clip"}))
    calls: list = []
    _fake_hub(monkeypatch, {"openai/clip": clip}, calls)
    with pytest.raises(UnknownModelError, match="not a TIPSv2 model"):
        tips.load("openai/clip")
    assert [c[0] for c in calls] == ["file"]


def test_online_but_unreachable_is_one_line(online, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def unreachable(*args, **kwargs):
        raise LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub\nmore")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(ModelUnavailableError) as info:
        tips.load("tipsv2-g14")
    message = str(info.value)
    assert "\n" not in message and "could not be reached" in message
    assert "google/tipsv2-g14" in message and str(online) in message and "tipsv2 convert" in message


def test_online_repo_not_found(online, monkeypatch):
    import httpx2
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError

    def not_found(repo_id, *args, **kwargs):
        response = httpx2.Response(404, request=httpx2.Request("GET", f"https://huggingface.co/api/models/{repo_id}"))
        raise RepositoryNotFoundError("404 Client Error", response=response)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", not_found)
    result = CliRunner().invoke(cli, ["info", "someone/nothing-here"])
    assert result.exit_code == 2
    assert result.output.strip() == ("Error: someone/nothing-here was not found on the Hugging Face hub "
                                     "(nor as a local directory or a registered name)")


# ---------------------------------------------------------------------------- listing, helpers
def test_info_list_shows_where_each_model_is(cached):
    rows = {r["name"]: r for r in json.loads(CliRunner().invoke(cli, ["info", "--list", "--json"]).stdout)}
    assert rows["tipsv2-b14"]["where"] == "hub-cache" and rows["tipsv2-b14"]["available"] is True
    assert rows["tipsv2-b14"]["path"] == str(cached)
    assert rows["tipsv2-l14"]["where"] == "hub" and rows["tipsv2-l14"]["available"] is False
    assert rows["tips-b14"]["where"] == "missing"
    assert rows["tipsv2-tiny"]["where"] == "embedded"


def test_split_revision_and_hub_ids(tmp_path):
    assert hub.split_revision("google/tipsv2-b14@v1") == ("google/tipsv2-b14", "v1")
    assert hub.split_revision("tipsv2-b14@main") == ("tipsv2-b14", "main")
    assert hub.split_revision("google/tipsv2-b14") == ("google/tipsv2-b14", None)
    assert hub.split_revision("some@thing") == ("some@thing", None)
    odd = tmp_path / "dir@v1"
    odd.mkdir()
    assert hub.split_revision(str(odd)) == (str(odd), None)
    assert hub.is_hub_id("google/tipsv2-b14") and hub.is_hub_id("a-b/c.d_e")
    for bad in ("tipsv2-b14", "/abs/path", "./a/b", "a/b/c", "a/..", "../x", ".a/b"):
        assert not hub.is_hub_id(bad), bad


def test_cache_dir_precedence(monkeypatch, tmp_path):
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert hub.hub_cache_dir() == tmp_path / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.hub_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub.hub_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "direct"))
    assert hub.hub_cache_dir() == tmp_path / "direct"


def test_resolve_takes_a_config_check_and_an_alternative(hub_env, tmp_path):
    """Other model kinds (e.g. DPT repos) reuse the same cache and offline rules with their own check."""
    snapshot = _cache_config(hub_env, tmp_path, "google/tipsv2-b14-dpt", {"model_type": "tipsv2_dpt"})
    with pytest.raises(UnknownModelError, match="not a TIPSv2 model"):
        hub.resolve("google/tipsv2-b14-dpt")

    def dpt_only(config, repo_id, revision):
        if config.get("model_type") != "tipsv2_dpt":
            raise UnknownModelError(f"{repo_id} is not a DPT model")

    assert hub.resolve("google/tipsv2-b14-dpt", check=dpt_only) == snapshot
    with pytest.raises(ModelUnavailableError, match=r"download it once with network access, or use X\.$"):
        hub.resolve("google/tipsv2-l14-dpt", check=dpt_only, alternative="use X.")


def test_online_repo_without_config(online, monkeypatch):
    import httpx2
    import huggingface_hub
    from huggingface_hub.errors import RemoteEntryNotFoundError

    def no_config(repo_id, filename, *args, **kwargs):
        response = httpx2.Response(404, request=httpx2.Request("GET", f"https://huggingface.co/{repo_id}/{filename}"))
        raise RemoteEntryNotFoundError("404 Client Error: Entry Not Found", response=response)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_config)
    with pytest.raises(UnknownModelError, match="someone/weights-only has no config.json") as info:
        tips.load("someone/weights-only")
    assert not isinstance(info.value, ModelUnavailableError)
