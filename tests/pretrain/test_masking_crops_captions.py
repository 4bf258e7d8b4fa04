"""Mask generator, multi-crop augmentation and multi-granularity caption sampling."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tipsv2_sdk.pretrain.captions import CaptionSampler
from tipsv2_sdk.pretrain.crops import MultiCrop, random_resized_box
from tipsv2_sdk.pretrain.masking import MaskGenerator, example_seed


@pytest.mark.parametrize("mode", ["random", "block"])
@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.75, 1.0])
def test_mask_ratio_is_exact(mode, ratio):
    gen = MaskGenerator((16, 16), ratio=ratio, mode=mode)
    masks = gen(8, torch.Generator().manual_seed(0))
    assert masks.shape == (8, 256) and masks.dtype == torch.bool
    assert masks.sum(1).tolist() == [round(ratio * 256)] * 8


def _edges(mask: torch.Tensor, side: int) -> int:
    grid = mask.view(side, side)
    return int((grid[1:] != grid[:-1]).sum() + (grid[:, 1:] != grid[:, :-1]).sum())


def test_masks_are_deterministic_and_block_masks_are_contiguous():
    random_gen, block_gen = MaskGenerator((16, 16), 0.5), MaskGenerator((16, 16), 0.5, "block")
    a = random_gen.for_examples([example_seed(0, 1, i) for i in range(4)])
    assert torch.equal(a, random_gen.for_examples([example_seed(0, 1, i) for i in range(4)]))
    assert not torch.equal(a[0], a[1])
    b = block_gen.for_examples([example_seed(0, 1, i) for i in range(4)])
    # blocks have far fewer masked/visible boundaries than scattered patches
    assert np.mean([_edges(m, 16) for m in b]) < 0.5 * np.mean([_edges(m, 16) for m in a])
    assert example_seed(0, 1, 2) != example_seed(0, 2, 1)


def test_mask_generator_rejects_bad_arguments():
    with pytest.raises(ValueError, match="mask mode"):
        MaskGenerator((4, 4), 0.5, "stripes")
    with pytest.raises(ValueError, match="ratio"):
        MaskGenerator((4, 4), 1.5)


def test_multicrop_shapes_range_and_determinism():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 120, 3), dtype=np.uint8))
    crops = MultiCrop(global_size=56, local_size=28, n_local=3)
    g, loc = crops(image, np.random.default_rng(5))
    assert g.shape == (3, 56, 56) and loc.shape == (3, 3, 28, 28)
    assert g.dtype == np.float32 and loc.dtype == np.float32 and 0.0 <= g.min() and g.max() <= 1.0
    g2, loc2 = crops(image, np.random.default_rng(5))
    assert np.array_equal(g, g2) and np.array_equal(loc, loc2)
    g3, _ = crops(image, np.random.default_rng(6))
    assert not np.array_equal(g, g3)
    _, none = MultiCrop(56, 28, n_local=0)(image.convert("L"), np.random.default_rng(0))
    assert none.shape == (0, 3, 28, 28)


def test_full_crop_and_flip_reproduce_the_image():
    arr = np.random.default_rng(1).integers(0, 255, (28, 28, 3), dtype=np.uint8)
    image = Image.fromarray(arr)
    crops = MultiCrop(28, 14, n_local=0, global_scale=(1.0, 1.0), ratio=(1.0, 1.0))
    seen = set()
    for seed in range(8):
        g, _ = crops(image, np.random.default_rng(seed))
        pixels = np.round(g.transpose(1, 2, 0) * 255).astype(np.uint8)
        flipped = np.array_equal(pixels, arr[:, ::-1])
        assert flipped or np.array_equal(pixels, arr)
        seen.add(flipped)
    assert seen == {True, False}


def test_random_resized_box_respects_scale():
    rng = np.random.default_rng(0)
    for _ in range(50):
        left, top, w, h = random_resized_box(100, 60, (0.1, 0.3), (3 / 4, 4 / 3), rng)
        assert 0 <= left and left + w <= 100 and 0 <= top and top + h <= 60
        assert 0.08 * 6000 <= w * h <= 0.32 * 6000
    # impossible aspect ratios fall back to a centred crop
    assert random_resized_box(100, 10, (0.9, 1.0), (1.0, 1.0), rng) == (45, 0, 10, 10)
    with pytest.raises(ValueError, match="local_scale"):
        MultiCrop(local_scale=(0.5, 0.1))


CAPTIONS = {"short": "a red circle", "long": "a large red circle at the top left, on a plain white background"}


def test_caption_sampling_is_about_half_half_and_deterministic():
    sampler = CaptionSampler(seed=3)
    draws = [sampler.sample(CAPTIONS, index, step) for index in range(50) for step in range(40)]
    share_long = np.mean([d == CAPTIONS["long"] for d in draws])
    assert 0.46 < share_long < 0.54
    again = CaptionSampler(seed=3)
    assert draws == [again.sample(CAPTIONS, index, step) for index in range(50) for step in range(40)]
    other_seed = [CaptionSampler(seed=4).sample(CAPTIONS, index, step) for index in range(50) for step in range(40)]
    assert draws != other_seed
    # the same example alternates between granularities over steps
    assert len({sampler.sample(CAPTIONS, 7, step) for step in range(20)}) == 2


def test_caption_probabilities_availability_and_single_source():
    skewed = CaptionSampler(probs=(0.9, 0.1))
    share_short = np.mean([skewed.sample(CAPTIONS, i, 0) == CAPTIONS["short"] for i in range(2000)])
    assert 0.87 < share_short < 0.93
    only_long = {"long": CAPTIONS["long"], "short": ""}
    assert CaptionSampler().sample(only_long, 0, 0) == CAPTIONS["long"]
    single = CaptionSampler(multi_granularity=False)
    assert {single.sample(CAPTIONS, i, s) for i in range(10) for s in range(10)} == {CAPTIONS["short"]}
    assert CaptionSampler().sample({}, 0, 0, fallback="alt") == "alt"
    with pytest.raises(KeyError, match="none of the caption sources"):
        CaptionSampler().sample({"medium": "x"}, 5, 0)
    with pytest.raises(ValueError, match="probabilities"):
        CaptionSampler(probs=(1.0,))
