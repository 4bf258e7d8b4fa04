"""The evaluation protocol of the miniature reproduction, on a held-out synthetic split.

One function, ``evaluate_shapes``, measures what the TIPSv2 ablations measure, scaled down:

* zero-shot segmentation mIoU (``TipsV2.zero_shot_segment`` with the class names as prompts,
  background included) against the rendered masks by shape, and by object colour on object pixels;
* global retrieval recall@1 in both directions: detailed ("long") captions against CLS2 (the token
  trained on synthetic captions) and alt-text-like captions against CLS1;
* k-NN classification (k=10, cosine) of the largest object's shape from CLS1 features, with the
  training split as the memory bank.

Chance levels are reported next to each number so a reader can tell "learned" from "random".
The scenes come from either generator: ``"shapes"`` (``data/shapes.py``, the ablation data) or
``"scenes"`` (``data/scenes.py``, the richer scenes the embedded default is trained on).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .data.shapes import CLASS_NAMES, COLOR_CLASS_NAMES

DATASETS = ("shapes", "scenes")

# What zero-shot segmentation is scored against: the prompts, the rendered mask's field and whether
# the mask's class 0 (background) is a class or ignored. Colour is scored on object pixels only,
# like VOC20 / PC59: it measures patch-text alignment, not how well the word "background" matches.
SEG_TARGETS = {"shape": (CLASS_NAMES, "mask", False), "color": (COLOR_CLASS_NAMES[1:], "color_mask", True)}


def synthetic_dataset(name: str, split: str, size: int, seed: int, length: int):
    """A map-style split of one of the synthetic generators (``DATASETS``)."""
    if name == "shapes":
        from .data.shapes import ShapesDataset as Data
    elif name == "scenes":
        from .data.scenes import SceneDataset as Data
    else:
        raise ValueError(f"unknown synthetic dataset {name!r}; expected one of {', '.join(DATASETS)}")
    return Data(split, size=size, seed=seed, length=length)


@dataclass
class ShapesEval:
    """Scores on the synthetic validation split (fractions in [0, 1])."""

    seg_miou: float  # by shape (background + 8 shapes)
    seg_pixel_acc: float
    seg_miou_color: float  # by object colour (8 colours, object pixels only)
    seg_pixel_acc_color: float
    t2i_r1_long_cls2: float
    i2t_r1_long_cls2: float
    t2i_r1_alt_cls1: float
    knn_acc_cls1: float
    n_val: int
    chance_r1: float
    chance_knn: float
    dataset: str

    def to_dict(self) -> dict:
        return asdict(self)


def recall_at_1(queries: np.ndarray, keys: np.ndarray) -> float:
    """Fraction of queries whose most similar key has the same index (row i matches key i)."""
    sims = queries @ keys.T
    return float(np.mean(np.argmax(sims, axis=1) == np.arange(len(queries))))


def knn_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                 k: int = 10) -> float:
    """Cosine k-NN with similarity-weighted votes (DINO-style, without the temperature)."""
    sims = test_x @ train_x.T
    k = min(k, len(train_x))  # a bank smaller than k votes with all of it
    top = np.argsort(-sims, axis=1)[:, :k]
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    votes = np.zeros((len(test_x), n_classes))
    for j in range(k):
        np.add.at(votes, (np.arange(len(test_x)), train_y[top[:, j]]), np.maximum(sims[np.arange(len(test_x)), top[:, j]], 0))
    return float(np.mean(votes.argmax(axis=1) == test_y))


def confusion_miou(pred: np.ndarray, target: np.ndarray, num_classes: int) -> tuple[float, float, np.ndarray]:
    """mIoU over classes present in the target or prediction, pixel accuracy, and the confusion matrix.

    Delegates to ``tipsv2_sdk.eval.metrics`` (the benchmark convention: mmseg's nanmean), so the
    miniature and the dataset-level evaluations count the same way.
    """
    from tipsv2_sdk.eval.metrics import ConfusionMatrix

    matrix = ConfusionMatrix(num_classes)
    matrix.update(pred, target)
    scores = matrix.scores()
    return scores.miou, scores.pixel_accuracy, matrix.matrix


def segmentation_scores(model, examples: list[dict], seg_target: str = "shape") -> tuple[float, float]:
    """Zero-shot segmentation (whole image, the class names as prompts, background included) of
    ``examples`` scored against one of their masks: (mIoU, pixel accuracy).

    ``seg_target`` chooses what the classes are: ``"shape"`` (background + 8 shapes, which
    interior patches can only tell apart through context) or ``"color"`` (the 8 object colours,
    which every single patch shows, scored on object pixels only: this isolates patch-text
    *alignment* from learning to recognise shapes).
    """
    if seg_target not in SEG_TARGETS:
        raise ValueError(f"seg_target must be one of {', '.join(SEG_TARGETS)}, not {seg_target!r}")
    class_names, mask_key, ignore_background = SEG_TARGETS[seg_target]
    preds, targets = [], []
    for ex in examples:
        seg = model.zero_shot_segment(ex["image"], list(class_names), mode="whole")
        preds.append(np.asarray(seg.label_map))
        # Without a background class the ids shift down by one and background becomes -1 (ignored).
        targets.append(ex[mask_key] - 1 if ignore_background else ex[mask_key])
    miou, acc, _ = confusion_miou(np.stack(preds), np.stack(targets), len(class_names))
    return miou, acc


def evaluate_shapes(model, n_val: int = 200, n_train: int = 1000, size: int | None = None, seed: int = 0,
                    batch_size: int = 64, dataset: str = "shapes") -> ShapesEval:
    """Run the whole protocol on ``model`` (a ``TipsV2``) with scenes from ``dataset``.

    Deterministic for a given seed. The k-NN bank is ``n_train`` training-split scenes from another
    seed than any training run's (unseen scenes, same distribution).
    """
    size = size or model.image_size
    held_out = synthetic_dataset(dataset, "val", size, seed, n_val)
    val = [held_out[i] for i in range(n_val)]
    train = synthetic_dataset(dataset, "train", size, seed + 1000, n_train)
    images = [ex["image"] for ex in val]
    emb = model.encode_images(images, batch_size=batch_size, image_size=size, progress=False, with_patches=False)
    long_txt = model.encode_texts([ex["captions"]["long"] for ex in val], batch_size=batch_size)
    alt_txt = model.encode_texts([ex["alt_text"] for ex in val], batch_size=batch_size)

    train_emb = model.encode_images([train[i]["image"] for i in range(n_train)], batch_size=batch_size,
                                    image_size=size, progress=False, with_patches=False)
    train_y = np.array([train[i]["label"] for i in range(n_train)])
    val_y = np.array([ex["label"] for ex in val])
    miou, acc = segmentation_scores(model, val, "shape")
    miou_color, acc_color = segmentation_scores(model, val, "color")

    return ShapesEval(
        seg_miou=miou,
        seg_pixel_acc=acc,
        seg_miou_color=miou_color,
        seg_pixel_acc_color=acc_color,
        t2i_r1_long_cls2=recall_at_1(long_txt, emb.cls2),
        i2t_r1_long_cls2=recall_at_1(emb.cls2, long_txt),
        t2i_r1_alt_cls1=recall_at_1(alt_txt, emb.cls1),
        knn_acc_cls1=knn_accuracy(train_emb.cls1, train_y, emb.cls1, val_y),
        n_val=n_val,
        chance_r1=1.0 / n_val,
        chance_knn=float(np.max(np.bincount(val_y)) / n_val),
        dataset=dataset,
    )
