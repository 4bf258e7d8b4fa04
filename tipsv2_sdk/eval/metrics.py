"""Benchmark metrics (numpy only): segmentation confusion matrix, top-k accuracy, retrieval recall, depth errors.

Segmentation convention (mmsegmentation's ``IoUMetric``):

* Labels are decoded first: the raw value ``ignore_index`` is ignored; with ``reduce_zero_label``
  the raw value 0 is ignored too and every other value is shifted by -1.
* One confusion matrix (rows = ground truth, columns = prediction) is summed over the whole split.
* ``IoU_c = TP / (TP + FP + FN)``. A class that appears neither in the ground truth nor in the
  predictions of the split has no IoU (NaN) and is left out of the mean (``np.nanmean``). A class
  that is predicted but absent from the ground truth has IoU 0 and counts.
* Pixel accuracy (mmseg's ``aAcc``) = correct / labelled pixels; mean accuracy (``mAcc``) = the
  mean over classes present in the ground truth of their recall.

All values are fractions in [0, 1]; the evaluation commands report percentages.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def prepare_target(label: np.ndarray, num_classes: int, ignore_index: int | None = 255,
                   reduce_zero_label: bool = False) -> np.ndarray:
    """Raw label values → class ids (int64), ``-1`` where ignored.

    Raises ``ValueError`` naming the values when a label is outside ``0 .. num_classes - 1`` after
    decoding (a wrong dataset or an unconverted annotation), instead of silently dropping it.
    """
    raw = np.asarray(label).astype(np.int64)
    ignored = np.zeros(raw.shape, bool) if ignore_index is None else raw == ignore_index
    target = raw.copy()
    if reduce_zero_label:
        ignored |= raw == 0
        target = target - 1
    target[ignored] = -1
    bad = (~ignored) & ((target < 0) | (target >= num_classes))
    if bad.any():
        values = np.unique(raw[bad])[:8].tolist()
        raise ValueError(f"label values {values} are outside the {num_classes} classes"
                         + (" (after the -1 shift)" if reduce_zero_label else ""))
    return target


@dataclass
class SegmentationScores:
    """Scores of one confusion matrix (fractions; ``iou``/``accuracy`` are NaN for classes without pixels)."""

    miou: float
    pixel_accuracy: float
    mean_accuracy: float
    iou: np.ndarray
    accuracy: np.ndarray
    labelled_pixels: int
    present_classes: int


class ConfusionMatrix:
    """A ``num_classes`` x ``num_classes`` pixel confusion matrix summed over images."""

    def __init__(self, num_classes: int):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, not {num_classes}")
        self.num_classes = int(num_classes)
        self.matrix = np.zeros((self.num_classes, self.num_classes), np.int64)

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        """Add one image: ``pred`` class ids (same shape as ``target``), ``target`` from ``prepare_target``.

        Pixels whose target is negative are ignored. Predictions must be valid class ids.
        """
        pred = np.asarray(pred).astype(np.int64)
        target = np.asarray(target).astype(np.int64)
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {pred.shape} differs from label shape {target.shape}")
        keep = target >= 0
        p, t = pred[keep], target[keep]
        if t.size and (t.max() >= self.num_classes):
            raise ValueError(f"target id {int(t.max())} >= num_classes {self.num_classes}")
        if p.size and (p.min() < 0 or p.max() >= self.num_classes):
            raise ValueError(f"predicted ids must lie in 0..{self.num_classes - 1}, got {int(p.min())}..{int(p.max())}")
        n = self.num_classes
        self.matrix += np.bincount(t * n + p, minlength=n * n).reshape(n, n)

    def scores(self) -> SegmentationScores:
        return segmentation_scores(self.matrix)


def segmentation_scores(matrix: np.ndarray) -> SegmentationScores:
    """mIoU (nanmean over classes with pixels in the ground truth or the predictions), aAcc and mAcc."""
    conf = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(conf)
    gt = conf.sum(axis=1)
    predicted = conf.sum(axis=0)
    union = gt + predicted - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt > 0, tp / gt, np.nan)
    total = gt.sum()
    present = int(np.count_nonzero(union > 0))
    return SegmentationScores(
        miou=float(np.nanmean(iou)) if present else float("nan"),
        pixel_accuracy=float(tp.sum() / total) if total else float("nan"),
        mean_accuracy=float(np.nanmean(acc)) if np.any(gt > 0) else float("nan"),
        iou=iou, accuracy=acc, labelled_pixels=int(total), present_classes=present,
    )


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows of ``scores`` (N, C) whose true class is among the ``k`` highest.

    Ties are broken against the true class (a class scored equal to it ranks before it), so a
    constant classifier does not get credit.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if len(scores) == 0:
        return float("nan")
    true = scores[np.arange(len(scores)), labels]
    rank = (scores >= true[:, None]).sum(axis=1) - 1  # classes at least as good, other than itself
    return float(np.mean(rank < k))


def retrieval_ranks(image_emb: np.ndarray, text_emb: np.ndarray, text_image: np.ndarray,
                    chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """0-based ranks: per image, of its best-scored own caption among all texts; per text, of its image.

    Similarities are dot products. Ties count against the query (an equal score ranks before the
    match). Computed in chunks so 5k x 25k scores never sit in memory at once.
    """
    image_emb = np.asarray(image_emb, np.float32)
    text_emb = np.asarray(text_emb, np.float32)
    text_image = np.asarray(text_image, np.int64)
    n_img, n_txt = len(image_emb), len(text_emb)
    if n_txt != len(text_image):
        raise ValueError("text_image must give one image index per text")
    i2t = np.zeros(n_img, np.int64)
    for start in range(0, n_img, chunk):
        sims = image_emb[start : start + chunk] @ text_emb.T  # (b, T)
        rows = np.arange(start, start + len(sims))
        own = text_image[None, :] == rows[:, None]
        best_own = np.where(own, sims, -np.inf).max(axis=1)
        i2t[start : start + len(sims)] = ((sims >= best_own[:, None]) & ~own).sum(axis=1)
    t2i = np.zeros(n_txt, np.int64)
    for start in range(0, n_txt, chunk):
        sims = text_emb[start : start + chunk] @ image_emb.T  # (b, N)
        target = text_image[start : start + len(sims)]
        own_score = sims[np.arange(len(sims)), target]
        t2i[start : start + len(sims)] = (sims >= own_score[:, None]).sum(axis=1) - 1
    return i2t, t2i


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    """Fraction of queries whose match has a 0-based rank below ``k``."""
    ranks = np.asarray(ranks)
    return float(np.mean(ranks < k)) if ranks.size else float("nan")


DEPTH_METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "delta1", "delta2", "delta3")


def depth_errors(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """The standard monocular-depth errors (Eigen et al.) of one image over its ``valid`` pixels.

    ``abs_rel = mean(|p - g| / g)``, ``rmse = sqrt(mean((p - g)^2))`` (metres), ``delta_k`` = fraction
    with ``max(p/g, g/p) < 1.25^k``. ``pred`` must be positive where valid.
    """
    p = np.asarray(pred, np.float64)[valid]
    g = np.asarray(gt, np.float64)[valid]
    if g.size == 0:
        raise ValueError("no valid depth pixels")
    ratio = np.maximum(p / g, g / p)
    return {
        "abs_rel": float(np.mean(np.abs(p - g) / g)),
        "sq_rel": float(np.mean((p - g) ** 2 / g)),
        "rmse": float(np.sqrt(np.mean((p - g) ** 2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(p) - np.log(g)) ** 2))),
        "log10": float(np.mean(np.abs(np.log10(p) - np.log10(g)))),
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25**2)),
        "delta3": float(np.mean(ratio < 1.25**3)),
    }


__all__ = ["prepare_target", "ConfusionMatrix", "SegmentationScores", "segmentation_scores", "topk_accuracy",
           "retrieval_ranks", "recall_at_k", "depth_errors", "DEPTH_METRICS"]
