"""Supervised ceiling: how many steps the tiny ViT needs to tell shapes apart per patch, *with labels*.

The miniature reproduction asks a self-supervised + contrastive model to segment shapes zero-shot.
This benchmark trains the same vision layout (transformers' ``Tipsv2VisionModel``, random init)
with a linear head and per-patch cross-entropy against the rendered masks of ``scenes``, and scores
each budget on the same held-out scenes: object-patch accuracy (chance 1/8) and segmentation mIoU
(logits upsampled to pixels). If labels need N steps, the unsupervised recipe needs more.

    python benchmarks/shape_ceiling.py [--steps 300,1500,5000] [--width 96] [--size 112] [--radius 0.08,0.30]

One row per step budget, each trained from the same seed in this run; one intra-op thread.
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from tipsv2_sdk.pretrain.data import scenes
from tipsv2_sdk.pretrain.data.shapes import CLASS_NAMES
from tipsv2_sdk.pretrain.evaluate import confusion_miou
from tipsv2_sdk.pretrain.probe import patch_labels
from tipsv2_sdk.registry import make_config

PATCH = 14


def render_batch(split: str, indices, size: int) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
    """Pixels in [0, 1] (B, 3, S, S), pixel masks (B, S, S) and patch labels (B, g, g)."""
    examples = [scenes.render_rich_scene(0, split, int(i), size=size) for i in indices]
    pixels = np.stack([np.asarray(ex["image"], np.float32) / 255.0 for ex in examples])
    masks = np.stack([ex["mask"] for ex in examples])
    grid = (size // PATCH, size // PATCH)
    labels = np.stack([patch_labels(m, grid, len(CLASS_NAMES)) for m in masks])
    return torch.from_numpy(pixels).permute(0, 3, 1, 2), masks, torch.from_numpy(labels)


def train_and_score(steps: int, width: int, size: int, batch: int, lr: float, n_val: int, seed: int = 0) -> dict:
    from transformers import Tipsv2VisionConfig, Tipsv2VisionModel

    torch.manual_seed(seed)
    base = make_config("tipsv2-tiny").vision_config.to_dict()
    heads = 3 if width % 3 == 0 else 4
    model = Tipsv2VisionModel(Tipsv2VisionConfig(**{**base, "hidden_size": width, "image_size": size,
                                                    "num_attention_heads": heads}))
    head = torch.nn.Linear(width, len(CLASS_NAMES))
    opt = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=lr, weight_decay=0.04)
    prefix = 2  # [CLS1, CLS2 (register)] before the patches
    rng = np.random.default_rng(seed + 1)
    start = time.perf_counter()
    model.train()
    for step in range(steps):
        # linear warm-up (50 steps) then cosine decay
        scale = min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for group in opt.param_groups:
            group["lr"] = lr * scale
        x, _, labels = render_batch("train", rng.integers(0, 10**6, batch), size)
        logits = head(model(pixel_values=x).last_hidden_state[:, prefix:])
        loss = F.cross_entropy(logits.reshape(-1, len(CLASS_NAMES)), labels.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    train_min = (time.perf_counter() - start) / 60
    model.eval()
    hits = total = 0
    preds, targets = [], []
    grid = size // PATCH
    with torch.no_grad():
        for lo in range(0, n_val, 50):
            x, masks, labels = render_batch("val", range(lo, min(n_val, lo + 50)), size)
            logits = head(model(pixel_values=x).last_hidden_state[:, prefix:])
            logits = logits.reshape(len(x), grid, grid, -1).permute(0, 3, 1, 2)
            objects = labels > 0
            hits += int(((logits.argmax(1) == labels) & objects).sum())
            total += int(objects.sum())
            preds.append(F.interpolate(logits, size=(size, size), mode="bilinear").argmax(1).numpy())
            targets.append(masks)
    miou, pixel_acc, _ = confusion_miou(np.concatenate(preds), np.concatenate(targets), len(CLASS_NAMES))
    return {"steps": steps, "object_patch_acc": hits / max(total, 1), "miou": miou, "pixel_acc": pixel_acc,
            "final_loss": float(loss.detach()), "train_min": train_min}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="300,1500,5000", help="Comma-separated step budgets, one row each.")
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--n-val", type=int, default=200)
    parser.add_argument("--radius", default=None, help="Object radius range 'lo,hi' (fractions of the side).")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.radius:
        # the generator reads its module-level range at render time; this process only
        scenes.RADIUS = tuple(float(v) for v in args.radius.split(","))
    rows = [train_and_score(int(s), args.width, args.size, args.batch, args.lr, args.n_val)
            for s in args.steps.split(",")]
    print(f"width {args.width}, {args.size} px, batch {args.batch}, lr {args.lr}, radius {scenes.RADIUS}, "
          f"{args.n_val} held-out scenes; chance: object-patch accuracy {100 / (len(CLASS_NAMES) - 1):.1f}%")
    print("| steps | object-patch accuracy | mIoU | pixel acc | final loss | train min |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['steps']:,} | {100 * r['object_patch_acc']:.1f}% | {100 * r['miou']:.1f}% "
              f"| {100 * r['pixel_acc']:.1f}% | {r['final_loss']:.3f} | {r['train_min']:.1f} |")


if __name__ == "__main__":
    main()
