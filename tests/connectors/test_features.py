"""Token selection for TIPSv2's [CLS1, CLS2, patches] layout, layer indices and token counts."""
from __future__ import annotations

import pytest
import torch

from tipsv2_sdk.connectors.features import (
    FEATURE_SELECTS,
    grid_size,
    normalize_feature_layer,
    num_prefix_kept,
    select_features,
    select_tokens,
    tokens_per_image,
)


def _labelled(n_patches: int = 4) -> torch.Tensor:
    # token i carries the value i, so the kept positions can be read back
    return torch.arange(2 + n_patches, dtype=torch.float32).view(1, -1, 1).expand(2, -1, 3)


@pytest.mark.parametrize(
    "select, kept",
    [("patch", [2, 3, 4, 5]), ("cls_patch", [0, 2, 3, 4, 5]), ("cls2_patch", [1, 2, 3, 4, 5]), ("full", [0, 1, 2, 3, 4, 5])],
)
def test_select_tokens_keeps_exactly_the_named_tokens(select, kept):
    out = select_tokens(_labelled(), select)
    assert out[0, :, 0].tolist() == kept and out.shape == (2, len(kept), 3)
    assert num_prefix_kept(select) == len(kept) - 4


def test_patch_drops_both_prefix_tokens_unlike_clip_style_one_token_drop():
    seq = _labelled()
    assert 1.0 in seq[:, 1:][0, :, 0].tolist()  # the CLIP-style [:, 1:] leaks CLS2
    assert 1.0 not in select_tokens(seq, "patch")[0, :, 0].tolist()


def test_unknown_feature_select_names_the_choices():
    with pytest.raises(ValueError, match="unknown feature_select 'cls'.*patch, cls_patch, cls2_patch, full"):
        select_tokens(_labelled(), "cls")
    with pytest.raises(ValueError, match="unknown feature_select"):
        num_prefix_kept("default")


def test_select_features_concatenates_layers_on_channels():
    hidden = [torch.full((1, 6, 3), float(i)) for i in range(4)]
    one = select_features(hidden, -2, "patch")
    both = select_features(hidden, [1, -1], "cls_patch")
    assert one.shape == (1, 4, 3) and float(one[0, 0, 0]) == 2.0
    assert both.shape == (1, 5, 6) and both[0, 0, :3].eq(1).all() and both[0, 0, 3:].eq(3).all()


def test_normalize_feature_layer():
    assert normalize_feature_layer(-2, 3) == -2
    assert normalize_feature_layer(0, 3) == -4  # same layer, but a truthy output_hidden_states flag
    assert normalize_feature_layer([0, -1], 3) == [0, -1]
    for bad in (4, -5, [], [1, 7], True, 1.5):
        with pytest.raises(ValueError):
            normalize_feature_layer(bad, 3)


@pytest.mark.parametrize("size, grid", [(224, 16), (336, 24), (448, 32), (518, 37)])
def test_tokens_per_image_table(size, grid):
    counts = {s: tokens_per_image(size, s) for s in FEATURE_SELECTS}
    assert counts == {"patch": grid**2, "cls_patch": grid**2 + 1, "cls2_patch": grid**2 + 1, "full": grid**2 + 2}


def test_grid_size_non_square_and_errors():
    assert grid_size((42, 70)) == (3, 5)
    for bad in (50, (56, 57), 0, -14):
        with pytest.raises(ValueError, match="not a positive multiple of the patch size 14"):
            grid_size(bad)
