"""Training-parameter accounting of head-only vs full EMA (meta device, no memory)."""
from __future__ import annotations

import pytest

from tipsv2_sdk.errors import UnknownModelError
from tipsv2_sdk.pretrain.params import count_training_parameters, parameter_breakdown, training_parameter_counts


def head_size(width: int, k: int = 65536, hidden: int = 2048, bottleneck: int = 256) -> int:
    """in -> 2048 -> 2048 -> 256 linear layers with biases, then K x 256 prototypes (no bias)."""
    return (width * hidden + hidden) + (hidden * hidden + hidden) + (hidden * bottleneck + bottleneck) + k * bottleneck


def test_b14_breakdown_matches_the_published_sizes_and_hand_counted_heads():
    parts = parameter_breakdown("tipsv2-b14")
    assert parts["image_encoder"] == pytest.approx(85.7e6, rel=0.01)  # README: 85.7M (ours adds the 32x32 grid)
    assert parts["text_encoder"] == pytest.approx(109.6e6, rel=0.001)
    assert parts["heads"] == 2 * head_size(768)
    assert parameter_breakdown("tipsv2-b14", shared_head=True)["heads"] == head_size(768)


def test_head_ema_saves_exactly_the_encoder_copy():
    parts = parameter_breakdown("tipsv2-b14")
    counts = training_parameter_counts("tipsv2-b14")
    assert set(counts) == {"full_ema", "head_ema", "reduction", "counted"}
    assert counts["full_ema"] - counts["head_ema"] == parts["image_encoder"]
    student = parts["image_encoder"] + parts["text_encoder"] + parts["heads"] + 1
    assert counts["head_ema"] == student + parts["heads"]  # student + EMA heads
    assert counts["reduction"] == pytest.approx(parts["image_encoder"] / counts["full_ema"])
    assert 0.22 < counts["reduction"] < 0.24  # 23.0% with the text tower and two 65536-prototype heads
    image_only = training_parameter_counts("tipsv2-b14", include_text=False)
    assert image_only["reduction"] > counts["reduction"] and "image tower" in image_only["counted"]
    detail = count_training_parameters("tipsv2-b14", "head_ema")
    assert detail["teacher_copy"] == parts["heads"] and detail["total"] == counts["head_ema"]


def test_giant_model_is_counted_without_memory():
    counts = training_parameter_counts("tipsv2-g14")  # 2.8e9 parameters would need 11 GB if allocated
    assert counts["full_ema"] > 2.5e9 and 0.4 < counts["reduction"] < 0.45


def test_errors_name_the_bad_value():
    with pytest.raises(UnknownModelError, match="tipsv2-x99"):
        training_parameter_counts("tipsv2-x99")
    with pytest.raises(ValueError, match="ema_only"):
        count_training_parameters("tipsv2-b14", "ema_only")


def test_paper_accounting_reproduces_the_papers_42_percent_for_vit_b():
    from tipsv2_sdk.pretrain.params import paper_parameter_counts

    encoder = parameter_breakdown("tipsv2-b14")["image_encoder"]
    ibot_head = head_size(768, k=8192)
    paper = paper_parameter_counts("tipsv2-b14")  # two iBOT-sized (8,192-prototype) heads, image side only
    assert paper["terms"]["full_ema"] == {"student_image_encoder": encoder, "student_heads": 2 * ibot_head,
                                          "teacher_image_encoder": encoder, "teacher_heads": 2 * ibot_head}
    assert paper["terms"]["head_ema"] == {"student_image_encoder": encoder, "student_heads": 2 * ibot_head,
                                          "teacher_heads": 2 * ibot_head}
    assert paper["full_ema"] == 2 * encoder + 4 * ibot_head and paper["head_ema"] == encoder + 4 * ibot_head
    assert round(100 * paper["reduction"], 1) == 41.9
    shared = paper_parameter_counts("tipsv2-b14", prototypes=32768, shared_head=True)  # TIPS v1's 32k prototypes
    assert shared["terms"]["head_ema"]["student_heads"] == head_size(768, k=32768)
    assert round(100 * shared["reduction"], 1) == 42.7
    with_text = paper_parameter_counts("tipsv2-b14", include_text=True)
    text = parameter_breakdown("tipsv2-b14")["text_encoder"]
    assert with_text["terms"]["head_ema"]["student_text_encoder"] == text
    assert with_text["full_ema"] - with_text["head_ema"] == encoder  # the saving is always one encoder copy
    assert with_text["reduction"] == pytest.approx(encoder / (2 * encoder + 4 * ibot_head + text))
