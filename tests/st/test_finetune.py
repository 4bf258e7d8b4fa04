"""Fine-tuning TipsV2Module with SentenceTransformerTrainer on generated image-caption pairs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("sentence_transformers")
pytest.importorskip("datasets")
pytest.importorskip("accelerate")

from datasets import Dataset  # noqa: E402
from sentence_transformers import (  # noqa: E402
    SentenceTransformer,
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
)
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss  # noqa: E402

from tipsv2_sdk import load  # noqa: E402
from tipsv2_sdk.pretrain.data.shapes import render_scene  # noqa: E402


def shapes_pairs(n: int) -> Dataset:
    """(image, caption) pairs from the synthetic shapes scenes, image column first (the anchor)."""
    rows = [render_scene(0, "train", i, size=56) for i in range(n)]
    return Dataset.from_dict({"image": [r["image"] for r in rows], "caption": [r["captions"]["short"] for r in rows]})


@pytest.fixture
def one_thread():
    """Backward passes of a width-32 model gain nothing from threads; on a busy machine two
    threads spin-wait and run ~20x slower. Restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_mnrl_finetune_reduces_loss_and_reloads(tiny_model_dir, tmp_path, one_thread):
    model = load(tiny_model_dir)  # a private copy: training changes the weights it shares
    st = model.to_sentence_transformer()
    data = shapes_pairs(16)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "run"),
        num_train_epochs=30,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        warmup_steps=0,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        logging_strategy="no",
    )
    trainer = SentenceTransformerTrainer(
        model=st, args=args, train_dataset=data, eval_dataset=data, loss=MultipleNegativesRankingLoss(st)
    )
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    assert after < 0.8 * before, (before, after)

    images, captions = data["image"][:4], data["caption"][:4]
    st.save(str(tmp_path / "tuned"))
    back = SentenceTransformer(str(tmp_path / "tuned"), trust_remote_code=True)
    assert np.array_equal(back.encode(images), st.encode(images))
    assert np.array_equal(back.encode(captions), st.encode(captions))
    # The saved weights are the trained ones: the SDK reads them too, and they differ from the start.
    tuned = load(tmp_path / "tuned")
    assert np.abs(tuned.encode_images(images, progress=False).cls1 - back.encode(images)).max() <= 1e-5
    untrained = load(tiny_model_dir).encode_images(images, progress=False).cls1
    assert np.abs(untrained - back.encode(images)).max() > 1e-2
