"""Multi-granularity caption sampling for the second CLS token.

CLS1 is always paired with the web alt-text. CLS2 gets one synthetic caption per example and
step, drawn among the configured sources that the example actually has (TIPSv2 alternates
PaliGemma-style short and Gemini-style long captions; default 50/50, renormalised over the
available sources). The draw is a pure function of ``(seed, example index, step)``, so it is
identical across ranks, data-loader workers and resumed runs.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


class CaptionSampler:
    """Pick the CLS2 caption of one example at one step."""

    def __init__(self, sources: Sequence[str] = ("short", "long"), probs: Sequence[float] = (0.5, 0.5),
                 seed: int = 0, multi_granularity: bool = True):
        """``multi_granularity=False``: always the first listed source the example has (the
        single-caption ablation); ``True``: a weighted draw among the available sources."""
        if not sources:
            raise ValueError("caption sources must not be empty")
        if len(probs) != len(sources):
            raise ValueError(f"{len(sources)} caption sources but {len(probs)} probabilities")
        if any(p < 0 for p in probs) or sum(probs) <= 0:
            raise ValueError(f"caption probabilities must be >= 0 with a positive sum, got {tuple(probs)}")
        self.sources, self.probs = tuple(sources), tuple(float(p) for p in probs)
        self.seed, self.multi_granularity = int(seed), multi_granularity

    def available(self, captions: Mapping[str, str]) -> list[int]:
        """Indices of the configured sources present (non-empty) in ``captions``."""
        return [i for i, s in enumerate(self.sources) if captions.get(s)]

    def sample(self, captions: Mapping[str, str], index: int, step: int, fallback: str | None = None) -> str:
        """The caption for example ``index`` at ``step``; ``fallback`` (e.g. the alt-text) when the
        example has none of the sources, otherwise a ``KeyError`` naming them."""
        idx = self.available(captions)
        if not idx:
            if fallback is not None:
                return fallback
            raise KeyError(f"example {index} has none of the caption sources {self.sources} "
                           f"(it has: {sorted(captions)})")
        if not self.multi_granularity or len(idx) == 1:
            return captions[self.sources[idx[0]]]
        weights = np.array([self.probs[i] for i in idx])
        if weights.sum() <= 0:
            return captions[self.sources[idx[0]]]
        rng = np.random.default_rng([self.seed, int(index), int(step)])
        choice = idx[int(rng.choice(len(idx), p=weights / weights.sum()))]
        return captions[self.sources[choice]]
