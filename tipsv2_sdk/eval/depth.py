"""Monocular depth on NYU Depth v2 with a linear probe on frozen patch features.

1. Training images (optionally an evenly spread subset) are resized to ``image_size`` x
   ``image_size`` and encoded once; depth maps (metres) are resized with nearest neighbours to
   ``target_size`` (default 4x the patch grid) so missing depth (0) is never blended in.
2. ``probe.LinearProbe`` predicts ``bins`` logits per patch; ``probe.DepthBins`` turns them into
   depth; the loss is the scale-invariant log error over pixels with ``min_depth < gt <= max_depth``.
3. Test images: the predicted depth map is upsampled bilinearly to the ground truth's size and
   clipped to ``[min_depth, max_depth]``. Errors are computed per image over valid pixels inside
   the Eigen crop (rows 45:471, columns 41:601 of the 480 x 640 maps; other sizes are not cropped)
   and averaged over images: RMSE (m), AbsRel, delta1 (fraction < 1.25) and the usual others.

The paper's NYUv2 numbers come from DINOv2's depth protocol (which also feeds the CLS token and
uses augmentation); this probe is its simple, deterministic form.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from .datasets.base import DatasetError, even_subset
from .datasets.nyu_mmseg import DepthDataset, read_depth
from .features import FeatureStore, extract_training_set, image_batches
from .linear_seg import probe_sizes
from .metrics import DEPTH_METRICS, depth_errors
from .probe import DepthBins, LinearProbe, ProbeConfig, channel_stats, silog_loss, train_probe
from .report import model_record, progress_bar, rounded, skipped_entry

if TYPE_CHECKING:
    from ..model import TipsV2

EIGEN_CROP = (45, 471, 41, 601)  # y1, y2, x1, x2 of the 480 x 640 NYU frames


def eval_mask(gt: np.ndarray, min_depth: float, max_depth: float, eigen_crop: bool) -> np.ndarray:
    """Pixels that count: ground truth within (min_depth, max_depth], inside the Eigen crop if asked."""
    valid = (gt > min_depth) & (gt <= max_depth)
    if eigen_crop and gt.shape == (480, 640):
        y1, y2, x1, x2 = EIGEN_CROP
        crop = np.zeros_like(valid)
        crop[y1:y2, x1:x2] = True
        valid &= crop
    return valid


class _DepthHead(torch.nn.Module):
    def __init__(self, probe: LinearProbe, bins: DepthBins):
        super().__init__()
        self.probe, self.bins = probe, bins

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.bins(self.probe(feats))


def evaluate_depth(model: TipsV2, train: DepthDataset, test: DepthDataset, *, config: ProbeConfig | None = None,
                   image_size: int | None = None, target_size: int | None = None, bins: int = 256,
                   min_depth: float = 1e-3, max_depth: float = 10.0, eigen_crop: bool = True,
                   train_limit: int | None = None, limit: int | None = None, batch_size: int = 16,
                   cache_dir: str | os.PathLike | None = None, progress: bool = True, autocast: bool = False) -> dict[str, Any]:
    """Train the linear depth probe on ``train``, report errors on ``test`` (RMSE / AbsRel / delta1 ...)."""
    if not 0 < min_depth < max_depth:
        raise ValueError(f"need 0 < min_depth < max_depth (got {min_depth}, {max_depth})")
    if bins < 2:
        raise ValueError(f"bins must be >= 2, not {bins}")
    config = (config or ProbeConfig()).check()
    size, tsize = probe_sizes(model, image_size, target_size)
    samples = even_subset(train.samples, train_limit)

    def load_target(i: int) -> np.ndarray:
        depth = read_depth(samples[i].depth, train.depth_scale)
        if not np.any((depth > min_depth) & (depth <= max_depth)):
            raise DatasetError(f"depth map {samples[i].depth} has no valid depth")
        return depth

    def loss_fn(depth: torch.Tensor, target: torch.Tensor):
        return silog_loss(depth, target, (target > min_depth) & (target <= max_depth))

    with FeatureStore(cache_dir) as store:
        feats, targets, train_skipped = extract_training_set(
            model, store, [s.image for s in samples], load_target, image_size=size, target_size=tsize,
            target_dtype=np.float32, batch_size=batch_size, progress=progress, autocast=autocast)
        if len(feats) == 0:
            raise DatasetError("no NYU training image could be used" + (f" ({train_skipped[0]['reason']})" if train_skipped else ""))
        mean, std = channel_stats(feats)
        head = _DepthHead(LinearProbe(mean, std, bins, seed=config.seed), DepthBins(bins, min_depth, max_depth))
        history = train_probe(head, feats, targets, loss_fn, config, device=model.device, progress=progress)
        num_train = len(feats)

    test_samples = test.samples[:limit] if limit is not None else test.samples
    per_image: list[dict[str, float]] = []
    skipped: list[dict[str, str]] = []
    bar = progress_bar(len(test_samples), "img", progress, desc="nyu test")
    with torch.inference_mode():
        for i, hw, patches in image_batches(model, [s.image for s in test_samples], image_size=size,
                                            batch_size=batch_size, autocast=autocast):
            sample = test_samples[i]
            bar.update(1)
            if hw is None:
                skipped.append(skipped_entry(sample.id, patches))
                continue
            try:
                gt = read_depth(sample.depth, test.depth_scale)
                if gt.shape != hw:
                    raise DatasetError(f"image is {hw[1]}x{hw[0]} but its depth map is {gt.shape[1]}x{gt.shape[0]}")
                valid = eval_mask(gt, min_depth, max_depth, eigen_crop)
                if not valid.any():
                    raise DatasetError("no valid ground-truth depth in the evaluated region")
            except (DatasetError, ValueError) as exc:
                skipped.append(skipped_entry(sample.id, str(exc)))
                continue
            depth = head(torch.from_numpy(patches)[None].to(model.device))
            pred = F.interpolate(depth, size=gt.shape, mode="bilinear", align_corners=False)[0, 0]
            pred = pred.clamp(min_depth, max_depth).cpu().numpy()
            per_image.append(depth_errors(pred, gt, valid))
    bar.close()
    if not per_image:
        raise DatasetError("no NYU test image could be evaluated" + (f" ({skipped[0]['reason']})" if skipped else ""))
    means = {name: float(np.mean([row[name] for row in per_image])) for name in DEPTH_METRICS}
    return {
        "task": "linear-probe depth",
        "dataset": "nyuv2",
        "root": str(test.root),
        "layout": test.layout,
        "model": model_record(model),
        **{name: rounded(value) for name, value in means.items()},
        "num_images": len(per_image),
        "num_train_images": num_train,
        "train_loss": [rounded(v) for v in history],
        "skipped": skipped,
        "train_skipped": train_skipped,
        "settings": {"probe": "linear", "image_size": size, "target_size": tsize, "bins": bins, "min_depth": min_depth,
                     "max_depth": max_depth, "eigen_crop": eigen_crop, "train_limit": train_limit, "limit": limit,
                     "features": "final patch tokens, unit length, standardised per channel",
                     "averaging": "per-image errors, mean over images", **config.to_dict()},
    }


__all__ = ["evaluate_depth", "eval_mask", "EIGEN_CROP"]
