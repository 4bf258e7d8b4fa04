"""Shared fixtures. Tests never touch the network and use tiny random models."""
from __future__ import annotations

import os

# Must be set before transformers / huggingface_hub are imported by any test module.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny random TIPSv2 (B/14 layout, width 32, 56 px → 4x4 patches). Do not mutate it."""
    from tipsv2_sdk.testing import tiny_model as make

    return make("tipsv2-b14", width=32, image_size=56, directory=tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model, tmp_path_factory):
    """The tiny model saved as an HF-format directory."""
    out = tmp_path_factory.mktemp("tiny_saved") / "model"
    tiny_model.save_pretrained(out)
    return out


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def image_files(tmp_path):
    """Five small RGB PNG files with distinct content."""
    from PIL import Image

    paths = []
    gen = np.random.default_rng(1)
    for i in range(5):
        arr = gen.integers(0, 255, size=(40 + 7 * i, 50, 3), dtype=np.uint8)
        path = tmp_path / f"img_{i}.png"
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths
