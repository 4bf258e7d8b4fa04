"""Zero-shot semantic segmentation following the TIPS evaluation protocol.

Protocol (``mode="sliding"``, the default):

1. The image's shorter side is resized to ``image_size`` (the model's own size, 448 for TIPSv2)
   with bicubic resampling; the aspect ratio is kept.
2. Square windows of ``image_size`` slide over it with stride ``3/4 * image_size`` (336 for 448);
   the last window in each direction is shifted back to end at the border, so windows cover every
   pixel. All windows go through the vision tower in batches.
3. Patch features are the *value embeddings* of the last block (MaskCLIP's "values trick", as in
   the official TIPS notebook): the last block is run with its self-attention replaced by each token
   attending only to itself, i.e. ``x + ls1(o_proj(v_proj(norm1(x))))`` followed by the block's
   usual MLP branch and the final layer norm. Queries and keys are not used; the residual and MLP
   are kept because the reference does so.
4. Class embeddings: each label is filled into the 9 TCL templates, embeddings L2-normalised,
   averaged and re-normalised.
5. Per window: cosine similarity of every patch with every class → bilinear upsampling to the
   window → ``softmax(cos / temperature)`` over classes → accumulated; overlapping windows are
   averaged. The result is resized bilinearly to the original image size; ``label_map`` is its argmax.

``mode="whole"`` resizes the whole image to ``image_size`` x ``image_size`` once (the same
preprocessing as ``encode_images``), which suits small or square images. ``features="patch"`` uses
the ordinary final patch tokens instead of value embeddings.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .images import load_pixels
from .templates import DEFAULT_SEGMENTATION
from .viz import load_rgb
from .zero_shot import check_labels, label_embeddings

if TYPE_CHECKING:
    from .model import TipsV2

MODES = ("sliding", "whole")
FEATURES = ("value", "patch")


@dataclass
class SegmentationResult:
    """Output of ``zero_shot_segment``.

    ``probs``: (C, H, W) float32 class probabilities at the input image's resolution (sum to 1 over C).
    ``label_map``: (H, W) int64 index into ``labels`` of the most probable class, or -1 where a
    ``background_threshold`` was given and the best probability is below it.
    """

    labels: list[str]
    probs: np.ndarray
    label_map: np.ndarray
    mode: str
    features: str
    windows: int
    temperature: float

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the segmented image."""
        return int(self.label_map.shape[0]), int(self.label_map.shape[1])

    def summary(self) -> list[dict[str, Any]]:
        """Per label: the fraction of pixels assigned to it and its mean probability over the image."""
        total = max(int(self.label_map.size), 1)
        counts = np.bincount(self.label_map.ravel() + 1, minlength=len(self.labels) + 1)
        return [
            {"label": name, "fraction": float(counts[i + 1] / total), "mean_prob": float(self.probs[i].mean())}
            for i, name in enumerate(self.labels)
        ]


def sliding_windows(height: int, width: int, window: int, stride: int) -> list[tuple[int, int, int, int]]:
    """Window boxes ``(y1, y2, x1, x2)`` covering a ``height`` x ``width`` image.

    Windows start every ``stride`` pixels; the last one in each direction is moved back to end at the
    border, and windows are cut to the image when it is smaller than ``window``.
    """
    if window <= 0 or stride <= 0:
        raise ValueError(f"window ({window}) and stride ({stride}) must be positive")
    rows = max(math.ceil((height - window) / stride), 0) + 1
    cols = max(math.ceil((width - window) / stride), 0) + 1
    boxes = []
    for i in range(rows):
        y2 = min(i * stride + window, height)
        y1 = max(y2 - window, 0)
        for j in range(cols):
            x2 = min(j * stride + window, width)
            x1 = max(x2 - window, 0)
            boxes.append((y1, y2, x1, x2))
    return boxes


def short_side_shape(height: int, width: int, short: int) -> tuple[int, int]:
    """(height, width) with the shorter side equal to ``short`` and the aspect ratio kept (rounded down)."""
    if height <= width:
        return short, max(int(short * width / height), short)
    return max(int(short * height / width), short), short


def value_features(model: TipsV2, pixel_values: torch.Tensor) -> torch.Tensor:
    """Value-embedding patch features of the last block, (B, h, w, D), not normalised.

    See the module docstring for the definition; everything is computed with transformers' own
    modules (``norm1``, ``attention.v_proj``/``o_proj``, ``layer_scale1``, ``norm2``, ``mlp``,
    ``layer_scale2`` and the vision model's final ``layernorm``).
    """
    return dense_features(model, pixel_values, "value")


def dense_features(model: TipsV2, pixel_values: torch.Tensor, features: str = "value") -> torch.Tensor:
    """Patch features (B, h, w, D) for a (B, 3, H, W) batch in [0, 1]; ``features`` is "value" or "patch"."""
    if features not in FEATURES:
        raise ValueError(f"features must be one of {', '.join(FEATURES)}, not {features!r}")
    vision = model.hf_model.vision_model
    b, _, h, w = pixel_values.shape
    grid = (h // model.patch_size, w // model.patch_size)
    pixels = pixel_values.to(device=model.device, dtype=model.dtype)
    if features == "patch":
        seq = vision(pixel_values=pixels).last_hidden_state
    else:
        out = vision(pixel_values=pixels, output_hidden_states=True)
        x = out.hidden_states[-2]  # the input of the last block
        block = vision.encoder.layer[-1]
        v = block.attention.v_proj(block.norm1(x))
        x = x + block.layer_scale1(block.attention.o_proj(v))
        x = x + block.layer_scale2(block.mlp(block.norm2(x)))
        seq = vision.layernorm(x)
    return seq[:, model.num_prefix_tokens :].reshape(b, *grid, -1)


def _to_patch_multiple(pixels: torch.Tensor, patch: int) -> torch.Tensor:
    # A window smaller than the model size may not be a multiple of the patch: enlarge it slightly.
    h, w = pixels.shape[-2:]
    th, tw = math.ceil(h / patch) * patch, math.ceil(w / patch) * patch
    if (th, tw) == (h, w):
        return pixels
    return F.interpolate(pixels, size=(th, tw), mode="bicubic", align_corners=False).clamp_(0.0, 1.0)


def _pil_to_tensor(img: Image.Image) -> torch.Tensor:
    arr = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32) * np.float32(1.0 / 255.0)
    return torch.from_numpy(np.ascontiguousarray(arr))


def _check(model: TipsV2, mode: str, image_size: int | None, temperature: float | None) -> tuple[int, float]:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    size = model.check_image_size(image_size)
    temp = model.temperature if temperature is None else float(temperature)
    if not temp > 0:
        raise ValueError(f"temperature must be positive, not {temp}")
    return size, temp


@torch.inference_mode()
def zero_shot_segment(
    model: TipsV2,
    image: Any,
    labels: Sequence[str],
    *,
    mode: str = "sliding",
    features: str = "value",
    templates: str | Sequence[str] | None = None,
    image_size: int | None = None,
    stride: int | None = None,
    temperature: float | None = None,
    background_threshold: float | None = None,
    batch_size: int = 4,
    autocast: bool = False,
) -> SegmentationResult:
    """Segment ``image`` into ``labels`` without training (see the module docstring for the protocol).

    Args:
        image: a path, PIL image, uint8 HWC array or CHW tensor in [0, 1].
        labels: class names. Add a background class (e.g. ``"background"``) when parts of the image
            belong to none of them; alternatively use ``background_threshold``.
        mode: ``"sliding"`` (TIPS protocol) or ``"whole"`` (one square pass).
        features: ``"value"`` (value embeddings, the protocol) or ``"patch"`` (final patch tokens).
        templates: prompt templates; ``None`` = the 9 TCL templates.
        image_size: window size and shorter-side length; ``None`` = the model's size. Multiple of 14.
        stride: sliding-window stride; ``None`` = ``3 * image_size // 4``.
        temperature: softmax temperature on cosine similarities; ``None`` = the model's learned
            temperature (sharp probabilities); ``1.0`` reproduces the reference evaluation notebook,
            whose softmax is over raw cosines. The argmax differs only where windows overlap.
        background_threshold: pixels whose best probability is below it get label -1.
        batch_size: windows per forward pass.
        autocast: run the vision tower under bf16 autocast.
    """
    labels = check_labels(labels)
    size, temp = _check(model, mode, image_size, temperature)
    if features not in FEATURES:
        raise ValueError(f"features must be one of {', '.join(FEATURES)}, not {features!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    text = torch.from_numpy(label_embeddings(model, labels, templates, default=DEFAULT_SEGMENTATION)).to(model.device)
    rgb = load_rgb(image)
    height, width = rgb.height, rgb.width
    if mode == "whole":
        pixels = torch.from_numpy(load_pixels(rgb, size))[None]
        with model._autocast(autocast):
            feats = dense_features(model, pixels, features)[0].float()
        cos = torch.einsum("hwd,cd->chw", F.normalize(feats, dim=-1), text)
        logits = F.interpolate(cos[None], size=(height, width), mode="bilinear", align_corners=False)[0]
        probs = torch.softmax(logits / temp, dim=0).cpu()
        windows = 1
    else:
        step = (3 * size) // 4 if stride is None else int(stride)
        probs, windows = _slide(model, rgb, text, size, step, temp, features, batch_size, autocast)
    probs_np = probs.numpy().astype(np.float32, copy=False)
    label_map = probs.argmax(dim=0).numpy().astype(np.int64)
    if background_threshold is not None:
        label_map[probs_np.max(axis=0) < float(background_threshold)] = -1
    return SegmentationResult(labels=labels, probs=probs_np, label_map=label_map, mode=mode, features=features,
                              windows=windows, temperature=temp)


def _slide(model: TipsV2, rgb: Image.Image, text: torch.Tensor, size: int, stride: int, temp: float,
           features: str, batch_size: int, autocast: bool) -> tuple[torch.Tensor, int]:
    """Sliding-window class probabilities (C, H, W) at the original resolution, and the window count."""
    height, width = rgb.height, rgb.width
    rh, rw = short_side_shape(height, width, size)
    resized = rgb if (rh, rw) == (height, width) else rgb.resize((rw, rh), Image.BICUBIC)
    pixels = _pil_to_tensor(resized)
    boxes = sliding_windows(rh, rw, size, stride)
    num_classes = text.shape[0]
    acc = torch.zeros(num_classes, rh, rw, device=text.device)  # accumulated where the model runs
    count = torch.zeros(rh, rw, device=text.device)
    for start in range(0, len(boxes), batch_size):
        chunk = boxes[start : start + batch_size]
        crops = torch.stack([pixels[:, y1:y2, x1:x2] for y1, y2, x1, x2 in chunk])  # same shape for all
        with model._autocast(autocast):
            feats = dense_features(model, _to_patch_multiple(crops, model.patch_size), features).float()
        cos = torch.einsum("bhwd,cd->bchw", F.normalize(feats, dim=-1), text)
        for k, (y1, y2, x1, x2) in enumerate(chunk):
            up = F.interpolate(cos[k : k + 1], size=(y2 - y1, x2 - x1), mode="bilinear", align_corners=False)[0]
            acc[:, y1:y2, x1:x2] += torch.softmax(up / temp, dim=0)
            count[y1:y2, x1:x2] += 1
    acc /= count
    if (rh, rw) != (height, width):
        # Class by class, so the peak memory is one full-resolution copy of the output.
        out = torch.empty(num_classes, height, width)
        for c in range(0, num_classes, 16):
            out[c : c + 16] = F.interpolate(acc[None, c : c + 16], size=(height, width), mode="bilinear",
                                            align_corners=False)[0].cpu()
        return out, len(boxes)
    return acc.cpu(), len(boxes)


@torch.inference_mode()
def similarity_map(
    model: TipsV2,
    image: Any,
    text: str,
    *,
    templates: str | Sequence[str] | None = None,
    features: str = "value",
    image_size: int | None = None,
) -> np.ndarray:
    """Cosine similarity (h, w) of each patch with a text, for ``viz.heatmap_overlay``.

    The image is resized to ``image_size`` (square, the model's size by default). ``templates=None``
    encodes ``text`` as written; a set name or patterns treat it as a class name to ensemble.
    """
    size = model.check_image_size(image_size)
    if not isinstance(text, str) or not text.strip():
        raise ValueError("text must be a non-empty string")
    if templates is None:
        query = torch.from_numpy(model.encode_texts([text])).to(model.device)
    else:
        query = torch.from_numpy(label_embeddings(model, [text], templates)).to(model.device)
    pixels = torch.from_numpy(load_pixels(load_rgb(image), size))[None]
    feats = F.normalize(dense_features(model, pixels, features)[0].float(), dim=-1)
    return (feats @ query[0]).cpu().numpy().astype(np.float32)


__all__ = ["zero_shot_segment", "SegmentationResult", "sliding_windows", "short_side_shape", "dense_features",
           "value_features", "similarity_map", "MODES", "FEATURES"]
