"""``DenseModel``: batching, decoding and output resizing around transformers' ``Tipsv2Dpt*`` models.

The outputs follow the official decoder notebook: depth and segmentation logits are resized
bilinearly to the image's size (the label map is the argmax of the resized logits); normals are
L2-normalised, resized bicubically and normalised again.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .dense import TASKS, DensePrediction, DenseResults, as_list, decoded_batches
from .embeddings import SkippedImage
from .images import DEFAULT_MAX_PIXELS, ImageInput, describe
from .wrapped_model import WrappedModel

# Segmentation logits are resized this many classes at a time, so a 150-class map of a large
# photo never needs all 150 full-resolution planes at once.
_CLASS_CHUNK = 16


class DenseModel(WrappedModel):
    """A TIPSv2 DPT model (one transformers ``Tipsv2Dpt*`` module) with numpy in and out."""

    def __init__(self, hf_model: torch.nn.Module, tasks: Sequence[str], name: str = "tipsv2-dpt",
                 source: str = "", meta: dict[str, Any] | None = None):
        """Wrap ``hf_model``; ``tasks`` are the heads it may be asked for (trained heads only)."""
        self.hf_model = hf_model
        self.tasks = tuple(tasks)
        self.name = name
        self.source = source
        self.meta = dict(meta or {})

    # ------------------------------------------------------------------ properties
    @property
    def config(self):
        return self.hf_model.config

    @property
    def image_size(self) -> int:
        """The backbone's own input size (its position grid times the patch size)."""
        size = self.config.backbone_config.image_size
        return int(size if isinstance(size, int) else size[0])

    @property
    def patch_size(self) -> int:
        size = self.config.backbone_config.patch_size
        return int(size if isinstance(size, int) else size[0])

    @property
    def labels(self) -> list[str]:
        """Segmentation class names by id (from ``config.id2label``); empty without a segmentation head."""
        if "segmentation" not in self.tasks:
            return []
        id2label = self.config.id2label
        return [str(id2label.get(i, i)) for i in range(self.config.num_labels)]

    def _check_tasks(self, tasks: Sequence[str] | None) -> tuple[str, ...]:
        if tasks is None:
            return self.tasks
        tasks = (tasks,) if isinstance(tasks, str) else tuple(tasks)
        for task in tasks:
            if task not in TASKS:
                raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
            if task not in self.tasks:
                raise ValueError(f"{self.name} has no trained {task} head (it has: {', '.join(self.tasks)})")
        if not tasks:
            raise ValueError("no task requested")
        return tasks

    # ------------------------------------------------------------------ the network
    @torch.inference_mode()
    def raw_outputs(self, pixel_values: torch.Tensor, tasks: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """The heads' outputs at the decoder's resolution for a (B, 3, H, W) batch in [0, 1].

        ``depth`` (B, h, w) metres, ``normals`` (B, 3, h, w) unnormalised, ``segmentation`` (B, C, h, w)
        logits. A ``Tipsv2DptForDensePrediction`` runs its backbone once and only the requested heads.
        """
        tasks = self._check_tasks(tasks)
        pixel_values = pixel_values.to(device=self.device, dtype=self.dtype)
        model = self.hf_model
        if not hasattr(model, "depth_neck"):  # a single-task class: its own forward
            out = model(pixel_values=pixel_values)
            return {task: _single_output(out, task) for task in tasks}
        if set(tasks) == set(TASKS):
            out = model(pixel_values=pixel_values)
            return {"depth": out.predicted_depth, "normals": out.normals, "segmentation": out.segmentation_logits}
        # The same steps as Tipsv2DptForDensePrediction.forward, for a subset of its three heads
        # (tests/core/test_dense_model.py checks the outputs equal the full forward's).
        features = model.backbone(pixel_values).feature_maps
        grid = (pixel_values.shape[-2] // self.patch_size, pixel_values.shape[-1] // self.patch_size)
        outputs = {}
        for task in tasks:
            fused = getattr(model, f"{task}_neck")(features, patch_height=grid[0], patch_width=grid[1])
            result = getattr(model, f"{task}_decoder")(fused[-1])
            outputs[task] = model.depth_bin_regressor(result) if task == "depth" else result
        return outputs

    # ------------------------------------------------------------------ prediction
    def iter_predict(
        self,
        images: Sequence[ImageInput] | ImageInput,
        tasks: Sequence[str] | str | None = None,
        *,
        batch_size: int = 4,
        image_size: int | None = None,
        progress: bool = True,
        on_error: str = "raise",
        workers: int = 2,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> Iterator[DensePrediction | SkippedImage]:
        """Yield one ``DensePrediction`` (or ``SkippedImage``) per input, in input order, batch by batch.

        Args:
            images: paths, PIL images, uint8 HWC arrays or CHW float tensors in [0, 1] (or one of them),
                of any size each.
            tasks: the heads to run (default: every head of the model).
            batch_size: images per forward pass.
            image_size: the square network input (a multiple of 14); default the model's own.
            progress: a progress bar on stderr.
            on_error: ``"raise"`` raises ``ImageLoadError`` naming the input; ``"skip"`` yields a
                ``SkippedImage`` for it instead.
            workers: decoding threads.
            max_pixels: images with more pixels are refused (decompression-bomb guard).
        """
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        tasks = self._check_tasks(tasks)
        size = self.check_image_size(image_size)
        images = as_list(images)
        from tqdm.auto import tqdm

        bar = tqdm(total=len(images), unit="images", disable=not progress or not images, dynamic_ncols=True)
        try:
            for batch in decoded_batches(images, size, batch_size, on_error, max_pixels, workers):
                ok = [(i, px, hw) for i, px, hw, skip in batch if skip is None]
                raw = self.raw_outputs(torch.from_numpy(np.stack([px for _, px, _ in ok])), tasks) if ok else {}
                row = {i: n for n, (i, _, _) in enumerate(ok)}
                for i, _, hw, skip in batch:
                    if skip is not None:
                        yield skip
                        continue
                    outputs = {task: _resize(task, raw[task][row[i]], hw) for task in tasks}
                    yield DensePrediction(index=i, source=describe(images[i]), size=hw, **outputs)
                bar.update(len(batch))
        finally:
            bar.close()

    def predict(self, images: Sequence[ImageInput] | ImageInput, tasks: Sequence[str] | str | None = None,
                **kwargs: Any) -> DenseResults:
        """All of ``iter_predict`` at once: ``DenseResults(predictions, skipped)``."""
        results = DenseResults()
        for item in self.iter_predict(images, tasks, **kwargs):
            (results.skipped if isinstance(item, SkippedImage) else results.predictions).append(item)
        return results

    def predict_depth(self, images: Sequence[ImageInput] | ImageInput, **kwargs: Any) -> list[np.ndarray]:
        """Metric depth (H, W) float32 in metres per image, at each image's resolution."""
        return [p.depth for p in self.predict(images, "depth", on_error="raise", **kwargs).predictions]

    def predict_normals(self, images: Sequence[ImageInput] | ImageInput, **kwargs: Any) -> list[np.ndarray]:
        """Surface normals (H, W, 3) float32 unit vectors per image, at each image's resolution."""
        return [p.normals for p in self.predict(images, "normals", on_error="raise", **kwargs).predictions]

    def predict_segmentation(self, images: Sequence[ImageInput] | ImageInput, **kwargs: Any) -> list[np.ndarray]:
        """Class ids (H, W) int32 per image (names: ``self.labels``), at each image's resolution."""
        return [p.segmentation for p in self.predict(images, "segmentation", on_error="raise", **kwargs).predictions]

    def __repr__(self) -> str:
        return (f"DenseModel(name={self.name!r}, tasks={self.tasks}, image_size={self.image_size}, "
                f"device={self.device}, dtype={self.dtype})")


def _single_output(out: Any, task: str) -> torch.Tensor:
    if task == "depth":
        return out.predicted_depth
    if task == "normals":
        return out.normals
    return out.logits


def _resize(task: str, value: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """One image's raw head output, resized to ``size`` = (H, W) as the official notebook does."""
    value = value.float()
    if task == "depth":
        return F.interpolate(value[None, None], size=size, mode="bilinear", align_corners=False)[0, 0].cpu().numpy()
    if task == "normals":
        unit = F.normalize(value, dim=0)[None]
        big = F.normalize(F.interpolate(unit, size=size, mode="bicubic", align_corners=False), dim=1)
        return big[0].permute(1, 2, 0).contiguous().cpu().numpy()
    best = torch.full(size, -torch.inf, device=value.device)
    label = torch.zeros(size, dtype=torch.int32, device=value.device)
    for start in range(0, value.shape[0], _CLASS_CHUNK):
        chunk = F.interpolate(value[None, start:start + _CLASS_CHUNK], size=size, mode="bilinear",
                              align_corners=False)[0]
        top, idx = chunk.max(dim=0)
        better = top > best  # ties keep the lower class id, as one argmax over all classes does
        best = torch.where(better, top, best)
        label = torch.where(better, idx.to(torch.int32) + start, label)
    return label.cpu().numpy()


__all__ = ["DenseModel"]
