"""Zero-shot semantic segmentation over a whole benchmark split (the TIPS / TCL protocol).

Per image, built from ``tipsv2_sdk.segmentation``'s pieces (value embeddings, sliding windows,
shorter-side resize) and ``tipsv2_sdk.zero_shot.label_embeddings`` (TCL prompt ensembles):

1. The shorter side is resized to ``short_side`` (bicubic; default: the model's size, 448).
2. ``slide``: square windows of ``window`` px (default = ``short_side``) every ``stride`` px
   (default ``3/4 * window``, i.e. 448 / 336); per window the cosine map of the value embeddings
   with the class embeddings is upsampled bilinearly to the window, turned into probabilities by
   ``softmax(cos / temperature)`` and averaged where windows overlap. ``whole``: one pass over the
   whole resized image (rounded up to a patch multiple), no softmax, as the official notebook.
3. The scores are resized bilinearly to the label's size and the argmax is the prediction.
4. Labels are decoded as the dataset says (ignore 255, ``reduce_zero_label``) and summed into one
   confusion matrix (``tipsv2_sdk.eval.metrics``).

``temperature=1.0`` (default) is the reference notebook's softmax over raw cosines. Background
classes (``voc21``, ``pc60``) are prompted as "background" unless ``background_threshold`` is set:
then background is not prompted and a pixel whose best class probability is below the threshold
is background (TCL's constant background score).
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import ImageLoadError
from ..images import open_image
from ..segmentation import FEATURES, dense_features, short_side_shape, sliding_windows
from ..templates import DEFAULT_SEGMENTATION
from ..zero_shot import label_embeddings
from .datasets.base import DatasetError, SegmentationDataset, read_label
from .metrics import ConfusionMatrix, prepare_target
from .report import model_record, percent, progress_bar, skipped_entry

if TYPE_CHECKING:
    from ..model import TipsV2

MODES = ("slide", "whole")


@dataclass
class ZeroShotSegSettings:
    """Protocol settings; ``None`` sizes resolve against the model (see ``resolve``)."""

    mode: str = "slide"
    short_side: int | None = None
    window: int | None = None
    stride: int | None = None
    temperature: float = 1.0
    features: str = "value"
    templates: str | Sequence[str] = DEFAULT_SEGMENTATION
    background_threshold: float | None = None
    batch_size: int = 4
    autocast: bool = False

    def resolve(self, model: TipsV2) -> "ZeroShotSegSettings":
        """A copy with every size filled in and checked."""
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.features not in FEATURES:
            raise ValueError(f"features must be one of {', '.join(FEATURES)}, not {self.features!r}")
        short = model.image_size if self.short_side is None else int(self.short_side)
        window = short if self.window is None else int(self.window)
        stride = (3 * window) // 4 if self.stride is None else int(self.stride)
        for name, value in (("short_side", short), ("window", window), ("stride", stride)):
            if value <= 0:
                raise ValueError(f"{name} must be positive, not {value}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, not {self.temperature}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {self.batch_size}")
        out = ZeroShotSegSettings(**asdict(self))
        out.short_side, out.window, out.stride = short, window, stride
        return out

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["templates"] = self.templates if isinstance(self.templates, str) else list(self.templates)
        return data


def _patch_multiple(pixels: torch.Tensor, patch: int) -> torch.Tensor:
    # A window or whole image that is not a multiple of the patch is enlarged slightly (bicubic),
    # as the reference notebook does, so no pixel is cropped away.
    h, w = pixels.shape[-2:]
    th, tw = math.ceil(h / patch) * patch, math.ceil(w / patch) * patch
    if (th, tw) == (h, w):
        return pixels
    return F.interpolate(pixels, size=(th, tw), mode="bicubic", align_corners=False).clamp_(0.0, 1.0)


def autocast(model: TipsV2, enabled: bool):
    """bf16 autocast on the model's device when ``enabled``, otherwise a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=model.device.type, dtype=torch.bfloat16)


def _cosines(model: TipsV2, crops: torch.Tensor, text: torch.Tensor, s: ZeroShotSegSettings) -> torch.Tensor:
    with autocast(model, s.autocast):
        feats = dense_features(model, _patch_multiple(crops, model.patch_size), s.features).float()
    return torch.einsum("bhwd,cd->bchw", F.normalize(feats, dim=-1), text)


def argmax_resized(scores: torch.Tensor, size: tuple[int, int], chunk: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Best score and its class after bilinear resizing of (C, h, w) scores to ``size``, a few classes
    at a time so the peak memory does not grow with the class count."""
    best = torch.full(size, -math.inf, device=scores.device)
    arg = torch.zeros(size, dtype=torch.int64, device=scores.device)
    for c in range(0, scores.shape[0], chunk):
        part = scores[c : c + chunk]
        if tuple(part.shape[-2:]) != size:
            part = F.interpolate(part[None], size=size, mode="bilinear", align_corners=False)[0]
        value, index = part.max(dim=0)
        better = value > best
        best = torch.where(better, value, best)
        arg = torch.where(better, index + c, arg)
    return best, arg


@torch.inference_mode()
def predict_scores(model: TipsV2, image: Image.Image, text: torch.Tensor, s: ZeroShotSegSettings) -> torch.Tensor:
    """(C, h, w) class scores for one RGB image: probabilities at the resized image (``slide``) or
    cosines at the patch grid (``whole``). ``s`` must be resolved."""
    width, height = image.size
    rh, rw = short_side_shape(height, width, s.short_side)
    resized = image if (rh, rw) == (height, width) else image.resize((rw, rh), Image.BICUBIC)
    arr = np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32) * np.float32(1.0 / 255.0)
    pixels = torch.from_numpy(np.ascontiguousarray(arr))
    if s.mode == "whole":
        cos = _cosines(model, pixels[None], text, s)[0]
        return torch.softmax(cos / s.temperature, dim=0) if s.background_threshold is not None else cos
    boxes = sliding_windows(rh, rw, s.window, s.stride)
    acc = torch.zeros(text.shape[0], rh, rw, device=text.device)
    count = torch.zeros(rh, rw, device=text.device)
    for start in range(0, len(boxes), s.batch_size):
        chunk = boxes[start : start + s.batch_size]
        crops = torch.stack([pixels[:, y1:y2, x1:x2] for y1, y2, x1, x2 in chunk])  # one shape for all
        cos = _cosines(model, crops, text, s)
        for k, (y1, y2, x1, x2) in enumerate(chunk):
            up = F.interpolate(cos[k : k + 1], size=(y2 - y1, x2 - x1), mode="bilinear", align_corners=False)[0]
            acc[:, y1:y2, x1:x2] += torch.softmax(up / s.temperature, dim=0)
            count[y1:y2, x1:x2] += 1
    return acc / count


def predict_label_map(model: TipsV2, image: Image.Image, text: torch.Tensor, s: ZeroShotSegSettings,
                      size: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W) int64 class ids at ``size`` (default: the image's (height, width)).

    With ``s.background_threshold`` the ids are shifted by one and 0 is background.
    """
    size = size or (image.height, image.width)
    scores = predict_scores(model, image, text, s)
    best, arg = argmax_resized(scores, size)
    if s.background_threshold is not None:
        arg = torch.where(best >= s.background_threshold, arg + 1, torch.zeros_like(arg))
    return arg.cpu().numpy()


def class_prompts(dataset: SegmentationDataset, s: ZeroShotSegSettings, names: Sequence[str] | None = None) -> list[str]:
    """The names to prompt: the dataset's classes (or ``names``), minus background in threshold mode."""
    prompts = list(names) if names is not None else list(dataset.classes)
    if len(prompts) != dataset.num_classes:
        raise DatasetError(f"{len(prompts)} class names given for {dataset.num_classes} classes of {dataset.key}")
    if s.background_threshold is not None:
        if dataset.classes[0] != "background":
            raise DatasetError(f"background_threshold needs a dataset with a background class; {dataset.key} has none "
                               "(use voc21 or pc60)")
        prompts = prompts[1:]
    return prompts


def evaluate_zero_shot_segmentation(model: TipsV2, dataset: SegmentationDataset, settings: ZeroShotSegSettings | None = None,
                                    *, class_names: Sequence[str] | None = None, limit: int | None = None,
                                    progress: bool = True) -> dict[str, Any]:
    """Run the protocol over ``dataset`` and return the report (percentages; see ``metrics``).

    Images or labels that cannot be read, or whose sizes differ, are skipped and listed.
    """
    s = (settings or ZeroShotSegSettings()).resolve(model)
    prompts = class_prompts(dataset, s, class_names)
    text = torch.from_numpy(label_embeddings(model, prompts, s.templates, default=DEFAULT_SEGMENTATION)).to(model.device)
    samples = dataset.samples[:limit] if limit is not None else dataset.samples
    conf = ConfusionMatrix(dataset.num_classes)
    skipped: list[dict[str, str]] = []
    bar = progress_bar(len(samples), "img", progress, desc=dataset.key)
    for sample in samples:
        try:
            target = prepare_target(read_label(sample.label), dataset.num_classes, dataset.ignore_index,
                                    dataset.reduce_zero_label)
            image = open_image(sample.image)
            if (image.height, image.width) != target.shape:
                raise DatasetError(f"image is {image.width}x{image.height} but its label is "
                                   f"{target.shape[1]}x{target.shape[0]}")
        except (ImageLoadError, DatasetError, ValueError) as exc:
            skipped.append(skipped_entry(sample.id, str(exc)))
            bar.update(1)
            continue
        conf.update(predict_label_map(model, image, text, s, target.shape), target)
        bar.update(1)
    bar.close()
    if len(skipped) == len(samples):
        first = skipped[0]["reason"] if skipped else "the split is empty"
        raise DatasetError(f"no image of {dataset.key} could be evaluated ({first})")
    scores = conf.scores()
    return {
        "task": "zero-shot segmentation",
        "dataset": dataset.key,
        "title": dataset.title,
        "root": str(dataset.root),
        "split": dataset.split,
        "model": model_record(model),
        "miou": percent(scores.miou),
        "pixel_accuracy": percent(scores.pixel_accuracy),
        "mean_accuracy": percent(scores.mean_accuracy),
        "num_images": len(samples) - len(skipped),
        "num_classes": dataset.num_classes,
        "classes_in_mean": scores.present_classes,
        "per_class_iou": {name: percent(v) for name, v in zip(dataset.classes, scores.iou)},
        "skipped": skipped,
        "settings": {**s.to_dict(), "prompts": prompts if class_names is not None else "dataset class names",
                     "limit": limit, "ignore_index": dataset.ignore_index,
                     "reduce_zero_label": dataset.reduce_zero_label,
                     "miou_convention": "nanmean over classes present in the ground truth or the predictions "
                                        "(mmseg IoUMetric); percent"},
    }


__all__ = ["ZeroShotSegSettings", "evaluate_zero_shot_segmentation", "predict_label_map", "predict_scores", "argmax_resized",
           "class_prompts", "MODES"]
