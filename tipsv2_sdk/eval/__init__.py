"""Dataset-level benchmarks for TIPS / TIPSv2 models (docs/eval.md), one module per task.

* ``segmentation``: zero-shot semantic segmentation (TIPS / TCL protocol) on VOC, PASCAL Context,
  ADE20K and COCO-Stuff as they ship;
* ``classification``: zero-shot top-1 / top-5 on ImageNet-style folders;
* ``retrieval``: image↔text recall@1/5/10 on Karpathy splits (COCO, Flickr30k);
* ``linear_seg`` / ``depth``: linear probes on frozen patch features (segmentation mIoU, NYUv2 depth);
* ``metrics``: the numbers themselves (numpy only); ``datasets``: the on-disk readers (no torch).

Attributes load lazily, so ``tipsv2_sdk.eval.datasets`` can be used without importing torch.
"""
from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    "evaluate_zero_shot_segmentation": "segmentation",
    "ZeroShotSegSettings": "segmentation",
    "evaluate_classification": "classification",
    "evaluate_retrieval": "retrieval",
    "evaluate_linear_segmentation": "linear_seg",
    "evaluate_depth": "depth",
    "ProbeConfig": "probe",
    "ConfusionMatrix": "metrics",
    "prepare_target": "metrics",
    "segmentation_scores": "metrics",
    "open_segmentation": "datasets",
    "open_depth": "datasets",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

__all__ = sorted(_EXPORTS)
