"""Fixtures shared by the core tests."""
from __future__ import annotations

import pytest


@pytest.fixture
def hub_env(tmp_path, monkeypatch):
    """An empty HF cache and an empty converted-model cache, offline."""
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("TIPSV2_HOME", str(tmp_path / "tipsv2"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache
