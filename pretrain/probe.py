"""Linear probe of patch features: do an encoder's patch tokens encode *which object* they cover?

Zero-shot segmentation needs two things: patch features that carry the object class, and text
embeddings aligned with them. ``evaluate_shapes`` measures the product; this probe measures the first
factor alone. A multinomial logistic regression is fitted on the patch features of object patches
from training-split scenes and scored on held-out scenes, next to the majority-class chance. A probe
near chance means the encoder never learned the object classes, so no amount of text alignment can
make zero-shot segmentation work; a high probe with low mIoU points at the text side instead.

Each patch's label is the majority class of the mask pixels it covers; patches whose majority is
the background are left out, since background vs object is solved by colour alone.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .data.shapes import CLASS_NAMES
from .evaluate import DATASETS, synthetic_dataset


@dataclass
class PatchProbe:
    """Held-out accuracy of the linear probe (fractions in [0, 1]) and what it was fitted on.

    ``chance`` is the majority class's share of the held-out patches; ``balanced_accuracy`` is the
    mean of the per-class accuracies, whose chance is one over the number of classes present.
    """

    accuracy: float
    chance: float
    balanced_accuracy: float
    balanced_chance: float
    per_class: dict[str, float]
    n_train_patches: int
    n_val_patches: int
    dataset: str
    grid: tuple[int, int]

    def to_dict(self) -> dict:
        return asdict(self)


def patch_labels(mask: np.ndarray, grid: tuple[int, int], num_classes: int) -> np.ndarray:
    """(h, w) majority class of each patch's block of a (H, W) integer mask (H, W multiples of h, w)."""
    h, w = grid
    big_h, big_w = mask.shape
    if big_h % h or big_w % w:
        raise ValueError(f"mask of shape {mask.shape} does not split into a {h}x{w} patch grid")
    blocks = mask.reshape(h, big_h // h, w, big_w // w).transpose(0, 2, 1, 3).reshape(h, w, -1)
    counts = np.stack([(blocks == c).sum(-1) for c in range(num_classes)], axis=-1)
    return counts.argmax(-1)  # ties go to the lower class id, i.e. to the background


def fit_linear_probe(x: np.ndarray, y: np.ndarray, num_classes: int, weight_decay: float = 1e-4,
                     max_iter: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fit softmax regression on standardised features (full-batch L-BFGS, deterministic).

    Returns ``(weight (D, C), bias (C,), mean (D,), std (D,))``; ``predict_linear_probe`` applies them.
    """
    import torch

    if len(x) == 0:
        raise ValueError("the linear probe needs at least one training patch")
    mean, std = x.mean(0), x.std(0) + 1e-6
    xt = torch.from_numpy(((x - mean) / std).astype(np.float64))
    yt = torch.from_numpy(y.astype(np.int64))
    weight = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ weight + bias, yt) + weight_decay * (weight ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return weight.detach().numpy(), bias.detach().numpy(), mean, std


def predict_linear_probe(params: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Class ids predicted by a probe from ``fit_linear_probe``."""
    weight, bias, mean, std = params
    return np.argmax(((x - mean) / std) @ weight + bias, axis=1)


def _object_patches(model, dataset, n: int, size: int, batch_size: int) -> tuple[np.ndarray, np.ndarray, tuple]:
    examples = [dataset[i] for i in range(n)]
    emb = model.encode_images([ex["image"] for ex in examples], batch_size=batch_size, image_size=size,
                              progress=False, with_patches=True)
    grid = tuple(emb.patches.shape[1:3])
    labels = np.stack([patch_labels(ex["mask"], grid, len(CLASS_NAMES)) for ex in examples])
    keep = labels > 0
    return emb.patches[keep], labels[keep], grid


def patch_shape_probe(model, n_train: int = 600, n_val: int = 200, dataset: str = "shapes", size: int | None = None,
                      seed: int = 0, batch_size: int = 64) -> PatchProbe:
    """Fit the probe on ``n_train`` training scenes and score it on ``n_val`` held-out scenes."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown probe dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    if n_train < 1 or n_val < 1:
        raise ValueError(f"n_train and n_val must be positive, got {n_train} and {n_val}")
    size = size or model.image_size
    train_x, train_y, grid = _object_patches(model, synthetic_dataset(dataset, "train", size, seed + 1000, n_train),
                                             n_train, size, batch_size)
    val_x, val_y, _ = _object_patches(model, synthetic_dataset(dataset, "val", size, seed, n_val), n_val, size,
                                      batch_size)
    if len(train_x) == 0 or len(val_x) == 0:
        raise ValueError(f"no object patches in the probe scenes at {size} px: use more scenes or a larger size")
    pred = predict_linear_probe(fit_linear_probe(train_x, train_y, len(CLASS_NAMES)), val_x)
    per_class = {CLASS_NAMES[c]: float(np.mean(pred[val_y == c] == c)) for c in np.unique(val_y)}
    return PatchProbe(
        accuracy=float(np.mean(pred == val_y)),
        chance=float(np.bincount(val_y).max() / len(val_y)),
        balanced_accuracy=float(np.mean(list(per_class.values()))),
        balanced_chance=1.0 / len(per_class),
        per_class=per_class,
        n_train_patches=int(len(train_y)),
        n_val_patches=int(len(val_y)),
        dataset=dataset,
        grid=grid,
    )


__all__ = ["DATASETS", "PatchProbe", "fit_linear_probe", "patch_labels", "patch_shape_probe", "predict_linear_probe"]
