"""Linear probes on frozen patch features: the head, its training loop and the two task losses.

The head is one linear layer applied to every patch after a fixed per-channel standardisation
(mean / std of the training features: what a BatchNorm in eval mode does in DINOv2's linear
heads, without running statistics). Its (K, h, w) output is upsampled bilinearly to the target
resolution before the loss, as in DINOv2's linear segmentation and depth probes.

* Segmentation: K = classes, cross-entropy over labelled pixels.
* Depth: K = bins with centres spaced linearly in [min_depth, max_depth]; depth = a weighted mean
  of the centres (classification-regression, DINOv2's "linear" normalisation); loss = the scale-invariant
  log error ``sqrt(mean(g^2) - 0.85 mean(g)^2)``, ``g = log(pred) - log(gt)``, over valid pixels (BTS).

Training: AdamW, cosine learning-rate decay to 0, mini-batches of whole images; the head's
initialisation and the batch order come from ``ProbeConfig.seed`` only.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .report import progress_bar


@dataclass
class ProbeConfig:
    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 16
    seed: int = 0

    def check(self) -> "ProbeConfig":
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs ({self.epochs}) and batch_size ({self.batch_size}) must be >= 1")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ValueError(f"lr must be positive and weight_decay >= 0 (got {self.lr}, {self.weight_decay})")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def channel_stats(features: np.ndarray, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (float32) of (N, h, w, D) features, streamed over the memory map."""
    d = features.shape[-1]
    total, sq, count = np.zeros(d), np.zeros(d), 0
    for start in range(0, len(features), chunk):
        x = np.asarray(features[start : start + chunk], np.float64).reshape(-1, d)
        total += x.sum(axis=0)
        sq += (x * x).sum(axis=0)
        count += len(x)
    mean = total / max(count, 1)
    var = np.maximum(sq / max(count, 1) - mean**2, 0.0)
    return mean.astype(np.float32), np.sqrt(var + 1e-6).astype(np.float32)


class LinearProbe(nn.Module):
    """Standardise each patch feature with fixed statistics, then one linear layer: (B, h, w, D) → (B, K, h, w)."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, out_dim: int, seed: int = 0):
        super().__init__()
        self.register_buffer("mean", torch.from_numpy(np.asarray(mean, np.float32)))
        self.register_buffer("std", torch.from_numpy(np.asarray(std, np.float32)))
        # Initialised from ``seed`` alone (the global RNG is restored), so a probe does not depend
        # on whatever ran before it in the process.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.linear = nn.Linear(len(mean), out_dim)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = (feats.float() - self.mean) / self.std
        return self.linear(x).permute(0, 3, 1, 2)


class DepthBins(nn.Module):
    """Bin scores (B, K, h, w) → depth (B, 1, h, w) in metres: a weighted mean of linear bin centres.

    The weights are ``(relu(s) + 0.1)`` normalised to sum 1 (DINOv2's "linear" bin normalisation):
    unlike a softmax they never saturate onto one bin, where the gradient would vanish.
    """

    def __init__(self, bins: int, min_depth: float, max_depth: float):
        super().__init__()
        self.register_buffer("centres", torch.linspace(min_depth, max_depth, bins).view(1, bins, 1, 1))

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        weights = torch.relu(scores) + 0.1
        weights = weights / weights.sum(dim=1, keepdim=True)
        return (weights * self.centres).sum(dim=1, keepdim=True)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """Cross-entropy of (B, K, h, w) logits upsampled to the (B, H, W) target; -1 = ignored; None if all ignored."""
    if not bool((target >= 0).any()):
        return None
    up = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(up, target.long(), ignore_index=-1)


def silog_loss(depth: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, lam: float = 0.85) -> torch.Tensor | None:
    """Scale-invariant log loss of (B, 1, h, w) depth upsampled to the (B, H, W) target over ``valid``."""
    if not bool(valid.any()):
        return None
    up = F.interpolate(depth, size=target.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    g = torch.log(up[valid].clamp_min(1e-6)) - torch.log(target[valid])
    return torch.sqrt(torch.clamp((g**2).mean() - lam * g.mean() ** 2, min=1e-12))


def train_probe(head: nn.Module, features: np.ndarray, targets: np.ndarray, loss_fn, config: ProbeConfig,
                *, device: str | torch.device = "cpu", progress: bool = True) -> list[float]:
    """Fit ``head`` on (N, h, w, D) features and (N, H, W) targets; returns the mean loss of each epoch.

    ``loss_fn(head_output, target_batch)`` returns a scalar tensor, or None to skip a batch that has
    nothing to learn from (e.g. every pixel ignored).
    """
    config.check()
    n = len(features)
    if n == 0:
        raise ValueError("no training images to fit the probe on")
    head.to(device).train()
    optim = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total = steps_per_epoch * config.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
    rng = np.random.default_rng(config.seed)
    history = []
    bar = progress_bar(total, "step", progress, desc="probe")
    for _ in range(config.epochs):
        order = rng.permutation(n)
        losses = []
        for start in range(0, n, config.batch_size):
            idx = np.sort(order[start : start + config.batch_size])  # sorted reads are faster on a memory map
            x = torch.from_numpy(np.asarray(features[idx], np.float32)).to(device)
            y = torch.from_numpy(np.asarray(targets[idx])).to(device)
            loss = loss_fn(head(x), y)
            if loss is not None:
                optim.zero_grad(set_to_none=True)
                loss.backward()
                optim.step()
                losses.append(float(loss.detach()))
            sched.step()
            bar.update(1)
        history.append(float(np.mean(losses)) if losses else float("nan"))
    bar.close()
    head.eval()
    return history


__all__ = ["ProbeConfig", "LinearProbe", "DepthBins", "channel_stats", "segmentation_loss", "silog_loss", "train_probe"]
