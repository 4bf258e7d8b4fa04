"""Dense prediction with the TIPSv2 DPT heads: depth, surface normals and semantic segmentation.

``tips.load_dense`` loads a transformers-native ``Tipsv2Dpt*`` directory (``google/tipsv2-*-dpt``
from the hub, or the output of ``tipsv2 convert --dpt``) into a ``DenseModel``. The network is
transformers' own; this module adds image decoding, batching and resizing the outputs back to each
input's resolution::

    dense = tips.load_dense("tipsv2-b14-dpt")
    depth = dense.predict_depth(["room.jpg"])[0]        # (H, W) metres
    normals = dense.predict_normals(["room.jpg"])[0]    # (H, W, 3) unit vectors
    labels = dense.predict_segmentation(["room.jpg"])[0]  # (H, W) class ids

Images are resized to a square of ``image_size`` (default: the backbone's, 448 px) as the official
decoder notebook does; pixels are in [0, 1] with no mean/std. Importing this module imports
neither torch nor transformers.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .embeddings import SkippedImage
from .errors import CheckpointError, ImageLoadError, UnknownModelError
from .images import DEFAULT_MAX_PIXELS, ImageInput, load_pixels, pil_to_pixels
from .prefetch import prefetched

if TYPE_CHECKING:
    import torch

    from .dense_model import DenseModel

TASKS = ("depth", "normals", "segmentation")
DENSE_MODEL_TYPE = "tipsv2_dpt"
# transformers class -> the heads it has
CLASS_TASKS = {
    "Tipsv2DptForDensePrediction": TASKS,
    "Tipsv2DptForDepthEstimation": ("depth",),
    "Tipsv2DptForNormalEstimation": ("normals",),
    "Tipsv2DptForSemanticSegmentation": ("segmentation",),
}
TASK_CLASSES = {tasks[0]: cls for cls, tasks in CLASS_TASKS.items() if len(tasks) == 1}
SDK_CONFIG_FILE = "tipsv2_sdk.json"  # the same file name the TipsV2 directories use
# The encoders with official DPT decoders (B, L, SO400m, g; the official decoder notebook's list).
DPT_RELEASES = ("tipsv2-b14", "tipsv2-l14", "tipsv2-so400m14", "tipsv2-g14")


@dataclass
class DensePrediction:
    """The outputs for one image, each at the image's own resolution (``size`` = (height, width)).

    ``depth``: (H, W) float32, metres. ``normals``: (H, W, 3) float32 unit vectors (x, y, z).
    ``segmentation``: (H, W) int32 class ids (``DenseModel.labels`` names them). A task that was not
    requested is ``None``.
    """

    index: int  # position in the input list
    source: str
    size: tuple[int, int]
    depth: np.ndarray | None = None
    normals: np.ndarray | None = None
    segmentation: np.ndarray | None = None


@dataclass
class DenseResults:
    """``predictions`` in input order, and the inputs that could not be decoded."""

    predictions: list[DensePrediction] = field(default_factory=list)
    skipped: list[SkippedImage] = field(default_factory=list)


# ---------------------------------------------------------------------- finding and loading
def read_dense_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` of a DPT directory; refuses anything that is not a ``tipsv2_dpt`` model."""
    directory = Path(directory)
    path = directory / "config.json"
    if not path.is_file():
        raise UnknownModelError(f"{directory} is not a model directory: config.json is missing")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UnknownModelError(f"{path} is not readable JSON: {exc}") from None
    model_type = config.get("model_type")
    if model_type != DENSE_MODEL_TYPE:
        hint = "; it is an encoder: load it with tips.load" if model_type == "tipsv2" else ""
        raise UnknownModelError(
            f"{directory} holds a {model_type!r} model, not a TIPSv2 DPT model ({DENSE_MODEL_TYPE}){hint}; "
            "convert the official decoders with `tipsv2 convert --vision ... --dpt ...`"
        )
    return config


def directory_tasks(directory: str | os.PathLike) -> tuple[str, ...]:
    """The tasks a DPT directory can predict: its class's heads minus heads that were never converted."""
    directory = Path(directory)
    config = read_dense_config(directory)
    classes = [c for c in config.get("architectures") or [] if c in CLASS_TASKS]
    if not classes:
        raise UnknownModelError(
            f"{directory}/config.json names no Tipsv2Dpt model class (architectures: {config.get('architectures')}); "
            f"expected one of {', '.join(CLASS_TASKS)}"
        )
    meta_path = directory / SDK_CONFIG_FILE
    random_heads = json.loads(meta_path.read_text()).get("random_heads", []) if meta_path.is_file() else []
    return tuple(task for task in CLASS_TASKS[classes[0]] if task not in random_heads)


def dense_names() -> dict[str, str]:
    """Short names of the released DPT models and their hub ids: ``tipsv2-b14-dpt`` -> ``google/tipsv2-b14-dpt``."""
    from .registry import get_spec

    return {f"{name}-dpt": f"{get_spec(name).hub_id}-dpt" for name in DPT_RELEASES}


def check_dense_config(config: dict[str, Any], repo_id: str, revision: str | None = None) -> None:
    """Refuse a hub repo whose ``config.json`` is not a TIPSv2 DPT model, naming what it is."""
    model_type = config.get("model_type")
    if model_type != DENSE_MODEL_TYPE:
        hint = " (an encoder: load it with tips.load)" if model_type == "tipsv2" else ""
        raise UnknownModelError(f"{repo_id} is not a TIPSv2 DPT model: its config.json has model_type "
                                f"{model_type!r}, not {DENSE_MODEL_TYPE!r}{hint}")


def split_revision(name: str) -> tuple[str, str | None]:
    """``"tipsv2-b14-dpt@rev"`` or ``"org/name@rev"`` → ``(name, "rev")``; anything else (a directory) unchanged."""
    from . import hub

    base, sep, revision = name.rpartition("@")
    if sep and revision and not os.path.isdir(name) and (base in dense_names() or hub.is_hub_id(base)):
        return base, revision
    return name, None


def resolve_dense(name_or_path: str | os.PathLike, revision: str | None = None) -> Path:
    """The local directory a DPT model name refers to, downloading only as ``tips.load`` would.

    A directory is used as it is. A short name (``tipsv2-b14-dpt``, see ``dense_names``) is looked
    up in ``$TIPSV2_HOME`` (where converted models go) and then by its hub id; a hub id goes
    through the HF cache, offline rules and download of ``tipsv2_sdk.hub.resolve``.

    Raises:
        UnknownModelError: an unknown name, or a repo that is not a DPT model.
        ModelUnavailableError: offline (or the hub unreachable) and no cached copy.
    """
    from . import hub
    from .loading import cache_dir

    path = Path(name_or_path)
    if path.is_dir():
        if revision is not None:
            raise UnknownModelError(f"revision={revision!r} applies to hub ids, not to the local directory {path}")
        return path
    name = os.fspath(name_or_path)
    known = dense_names()
    if name in known:
        repo_id, short = known[name], name
    elif hub.is_hub_id(name):
        repo_id = name
        short = next((n for n, r in known.items() if r == name), name.split("/")[-1])
    else:
        raise UnknownModelError(
            f"unknown DPT model {name!r}: not a directory, not a hub id (org/name) and not a known name "
            f"({', '.join(known)}); convert the official checkpoints with `tipsv2 convert --vision ... --dpt ...`"
        )
    cached = cache_dir() / short
    if revision is None and cached.is_dir():
        return cached
    variant = short[: -len("-dpt")] if short in known else "VARIANT"
    alternative = (f"convert the official checkpoints: tipsv2 convert --variant {variant} --vision VISION.npz "
                   f"--dpt DECODER.zip [--dpt ...] {cached}")
    return hub.resolve(repo_id, revision, check=check_dense_config, alternative=alternative)


def load_dense(name_or_path: str | os.PathLike, task: str | None = None, device: str | torch.device = "cpu",
               dtype: torch.dtype | str | None = None, revision: str | None = None) -> DenseModel:
    """Load a TIPSv2 DPT model for dense prediction.

    Args:
        name_or_path: a ``tipsv2_dpt`` directory (``google/tipsv2-*-dpt`` layout, ``tipsv2 convert --dpt``
            output or any ``Tipsv2Dpt*.save_pretrained``), a short name (``tips.dense_names()``) or a
            hub id whose config is ``model_type: tipsv2_dpt``.
        task: ``None`` loads every head the directory has; ``"depth"``, ``"normals"`` or
            ``"segmentation"`` loads the backbone and that head only, with transformers' single-task class.
        device: torch device for the weights.
        dtype: weight dtype (``torch.float32`` default, ``"bf16"``, ``"fp16"``).
        revision: hub revision, for names resolved on the hub.

    Raises:
        UnknownModelError: not a DPT model, or not found.
        CheckpointError: the directory lacks the requested head, or its weights do not fill the model.
    """
    import transformers

    from .hf_utils import quiet_transformers
    from .loading import _parse_dtype

    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)} or None, not {task!r}")
    directory = resolve_dense(name_or_path, revision=revision)
    tasks = directory_tasks(directory)
    if task is not None and task not in tasks:
        raise CheckpointError(f"{directory} has no trained {task} head (it has: {', '.join(tasks) or 'none'})")
    config = read_dense_config(directory)
    cls_name = TASK_CLASSES[task] if task is not None else next(c for c in config["architectures"] if c in CLASS_TASKS)
    with quiet_transformers():
        import torch

        hf_model, info = getattr(transformers, cls_name).from_pretrained(
            directory, dtype=_parse_dtype(dtype) or torch.float32, output_loading_info=True)
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise CheckpointError(f"{directory} does not fill {cls_name}: missing weights {', '.join(missing[:12])}"
                              + (f" (and {len(missing) - 12} more)" if len(missing) > 12 else ""))
    hf_model.to(device).eval()
    meta_path = directory / SDK_CONFIG_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    from .dense_model import DenseModel

    # A hub snapshot's directory is named by its commit: name it by the repo instead.
    named = directory.name if Path(name_or_path).is_dir() else os.fspath(name_or_path).split("/")[-1]
    return DenseModel(hf_model, tasks=(task,) if task else tasks, name=meta.get("name") or named,
                      source=str(directory), meta=meta)


# ---------------------------------------------------------------------- decoding
def decode_image(source: ImageInput, size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, tuple[int, int]]:
    """``(pixels (3, size, size) in [0, 1], (height, width) of the original)`` for any accepted input."""
    if isinstance(source, np.ndarray):
        return load_pixels(source, size, max_pixels=max_pixels), (int(source.shape[0]), int(source.shape[1]))
    if hasattr(source, "detach") and hasattr(source, "cpu"):  # CHW tensor in [0, 1]
        return load_pixels(source, size, max_pixels=max_pixels), (int(source.shape[-2]), int(source.shape[-1]))
    from .viz import load_rgb

    img = load_rgb(source, max_pixels=max_pixels)  # paths (EXIF applied) and PIL images, decoded once
    return pil_to_pixels(img, size), (img.height, img.width)


def decoded_batches(images: Sequence[ImageInput], size: int, batch_size: int, on_error: str, max_pixels: int,
                    workers: int) -> Iterator[list[tuple[int, np.ndarray | None, tuple[int, int] | None, SkippedImage | None]]]:
    """Batches of ``(index, pixels, original size, skipped)``, decoded in threads one batch ahead."""

    def decode(i: int):
        try:
            pixels, hw = decode_image(images[i], size, max_pixels)
            return i, pixels, hw, None
        except ImageLoadError as exc:
            if on_error == "raise":
                raise
            return i, None, None, SkippedImage(i, exc.source, exc.reason)

    yield from prefetched(decode, len(images), batch_size, max(1, workers))


def as_list(images: Sequence[ImageInput] | ImageInput) -> list[ImageInput]:
    """One input or a sequence of them, as a list (a path string is one image, not characters)."""
    if isinstance(images, (str, os.PathLike)) or not isinstance(images, Sequence):
        return [images]
    return list(images)


__all__ = ["TASKS", "DensePrediction", "DenseResults", "load_dense", "resolve_dense", "read_dense_config",
           "check_dense_config", "split_revision", "directory_tasks", "dense_names", "decode_image", "decoded_batches",
           "as_list"]
