"""Tiny DPT models and official-layout checkpoints for the dense tests (no downloads, seconds to build).

``tests/core`` is on pytest's ``pythonpath`` (pyproject.toml), so test modules import this one by name.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

WIDTH, DEPTH, HEADS, GRID = 32, 4, 2, 4  # backbone: 4 blocks, 56 px = a 4x4 grid stands for 448 px / 32x32
NECK, FUSION = (4, 8, 16, 32), 16  # width/8, /4, /2, /1 as in the official post_process_channels
BINS, CLASSES = 10, 5
HEAD_NAMES = {"depth": "pixel_depth_classif", "normals": "pixel_normals", "segmentation": "pixel_segmentation"}
OUTPUTS = {"depth": BINS, "normals": 3, "segmentation": CLASSES}


def tiny_spec():
    """A registry spec with the B/14 layout at test size (4 blocks, so four distinct DPT stages)."""
    from tipsv2_sdk.registry import tiny_spec as shrink

    return dataclasses.replace(shrink("tipsv2-b14"), depth=DEPTH, heads=HEADS, image_size=GRID * 14)


def write_official(directory: Path, seed: int = 0) -> dict[str, Path]:
    """Random official-layout files: ``vision`` (.npz) and one Scenic decoder per task (``.zip`` as released)."""
    import dpt_reference as ref

    directory.mkdir(parents=True, exist_ok=True)
    paths = {"vision": directory / "tips_v2_tiny_vision.npz"}
    np.savez(paths["vision"], **ref.random_vision(WIDTH, DEPTH, GRID, seed=seed))
    for n, (task, head) in enumerate(HEAD_NAMES.items()):
        path = directory / f"tips_v2_tiny_{task}_dpt.zip"
        with open(path, "wb") as handle:  # np.savez would append .npz to a name ending in .zip
            np.savez(handle, **ref.random_decoder(head, WIDTH, NECK, FUSION, OUTPUTS[task], seed=seed + 1 + n))
        paths[task] = path
    return paths


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def rewrite(src: Path, dst: Path, drop=(), add=None, rename=None) -> Path:
    """A copy of an archive with keys dropped, added/replaced, or renamed."""
    arrays = {k: v for k, v in load_arrays(src).items() if k not in drop}
    for old, new in (rename or {}).items():
        arrays[new] = arrays.pop(old)
    arrays.update(add or {})
    with open(dst, "wb") as handle:
        np.savez(handle, **arrays)
    return dst


def transformers_dpt(directory: Path, cls_name: str = "Tipsv2DptForDensePrediction", seed: int = 0,
                     labels: list[str] | None = None) -> Path:
    """A random tiny ``Tipsv2Dpt*`` model written by transformers' own ``save_pretrained`` (as on the hub)."""
    import torch
    import transformers
    from transformers import Tipsv2DptConfig, Tipsv2VisionConfig

    backbone = Tipsv2VisionConfig(hidden_size=WIDTH, num_hidden_layers=DEPTH, num_attention_heads=HEADS,
                                  image_size=GRID * 14, patch_size=14, out_indices=[1, 2, 3, 4],
                                  reshape_hidden_states=False)
    names = labels or [f"class {i}" for i in range(CLASSES)]
    config = Tipsv2DptConfig(backbone_config=backbone, neck_hidden_sizes=list(NECK), fusion_hidden_size=FUSION,
                             num_depth_bins=BINS, id2label=dict(enumerate(names)),
                             label2id={n: i for i, n in enumerate(names)})
    torch.manual_seed(seed)
    model = getattr(transformers, cls_name)(config).eval()
    model.save_pretrained(directory)
    return directory


def photo(path: Path, size: tuple[int, int], seed: int = 0) -> Path:
    """A smooth random RGB picture (width, height) saved as PNG."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, size=(4, 4, 3), dtype=np.uint8)
    Image.fromarray(small).resize(size, Image.BILINEAR).save(path)
    return path
