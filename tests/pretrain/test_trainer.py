"""The training loop end to end on CI-sized configs: learning, export, data stream, options."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import tipsv2_sdk
from tipsv2_sdk.pretrain.config import load_config
from tipsv2_sdk.pretrain.trainer import train

TINY = Path(__file__).resolve().parents[2] / "pretrain" / "configs" / "tiny_test.yaml"


def tiny(tmp_path: Path, *overrides: str):
    return load_config(TINY, [f"output_dir={tmp_path}", *overrides])


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def run150(tmp_path_factory):
    """``tiny_test`` exactly as it ships: 150 steps."""
    out = tmp_path_factory.mktemp("run150")
    return out, train(tiny(out))


def _mean(rows: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def test_tiny_test_learns_in_150_steps(run150):
    """Contrastive terms well below chance, teachers neither uniform nor on a single prototype."""
    _, result = run150
    rows = read_metrics(result.metrics_file)
    assert [r["step"] for r in rows] == list(range(1, 151))
    cfg = tiny(Path("unused"))
    chance, uniform = math.log(cfg.data.batch_size), math.log(cfg.objective.head_prototypes)
    first, last = rows[:10], rows[-10:]
    assert _mean(last, "loss") < _mean(first, "loss") - 1.0
    assert _mean(last, "clip_cls1") < 0.95 * chance  # measured 0.89 of chance
    assert _mean(last, "clip_cls2") < 0.85 * chance  # measured 0.74 of chance
    for teacher in ("dino", "ibot"):
        # per-sample entropy below uniform: targets carry information (measured 0.87 / 0.81 of ln K) ...
        assert _mean(last, f"{teacher}_teacher_entropy") < 0.93 * uniform, teacher
        # ... and the targets of the batch still use many prototypes, not one (measured ln K)
        assert _mean(last, f"{teacher}_teacher_marginal_entropy") > 0.8 * uniform, teacher
    assert 0.02 < rows[-1]["temperature"] < 0.5  # from 0.07, not the released checkpoints' 0.005


def test_metrics_have_every_term(run150):
    _, result = run150
    row = read_metrics(result.metrics_file)[-1]
    for key in ("loss", "clip_cls1", "clip_cls2", "dino", "ibot", "temperature", "teacher_temp", "ema_momentum",
                "lr", "weight_decay", "images_per_s", "step_s", "grad_norm"):
        assert key in row and np.isfinite(row[key]), key
    assert 0.9 < row["ema_momentum"] <= 1.0


def test_export_loads_with_tipsv2_load(run150):
    out, result = run150
    assert result.export_dir == out / "model"
    model = tipsv2_sdk.load(result.export_dir)
    assert model.meta["trained"] is True and model.meta["steps"] == 150
    assert model.meta["config"]["schedule"]["steps"] == 150
    emb = model.encode_images([np.zeros((56, 56, 3), np.uint8)], progress=False)
    assert emb.cls1.shape == (1, 32)
    assert model.encode_texts(["a red circle"]).shape == (1, 32)
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 150 and not summary["stopped_early"]


def test_time_budget_stops_gracefully_and_exports(tmp_path):
    result = train(tiny(tmp_path, "schedule.steps=50", "schedule.max_minutes=0.000001"))
    assert result.stopped_early and result.steps == 1
    assert tipsv2_sdk.load(result.export_dir).meta["steps"] == 1


def test_accumulation_adafactor_and_workers(tmp_path):
    result = train(tiny(tmp_path, "schedule.steps=2", "optim.accum_steps=2", "optim.name=adafactor",
                        "data.num_workers=1", "objective.teacher=full_ema"))
    rows = read_metrics(result.metrics_file)
    assert len(rows) == 2 and all(np.isfinite(r["loss"]) for r in rows)


def test_hires_stage_resizes_the_position_grid(tmp_path):
    result = train(tiny(tmp_path, "schedule.steps=1", "schedule.hires_steps=1", "schedule.hires_global_crop_size=84",
                        "schedule.hires_local_crop_size=42", "schedule.hires_batch_size=4"))
    model = tipsv2_sdk.load(result.export_dir)
    assert model.image_size == 84
    assert model.hf_model.vision_model.embeddings.position_embeddings.shape[1] == 1 + 6 * 6


def _write_folder(root: Path, n_good: int = 6) -> Path:
    from PIL import Image

    from tipsv2_sdk.pretrain.data.shapes import render_scene

    lines = []
    for i in range(n_good):
        ex = render_scene(0, "train", i, size=64)
        ex["image"].save(root / f"ok_{i}.png")
        lines.append({"image": f"ok_{i}.png", "alt_text": ex["alt_text"], "captions": ex["captions"]})
    (root / "broken.png").write_bytes(b"not a png at all")
    lines.append({"image": "broken.png", "alt_text": "broken", "captions": {"short": "x"}})
    lines.append({"image": "missing.png", "alt_text": "gone"})
    Image.new("RGB", (30, 20), (255, 0, 0)).save(root / "alt_only.jpg")
    lines.append({"image": "alt_only.jpg", "alt_text": "a red rectangle"})  # no synthetic captions
    text = "\n".join(json.dumps(line) for line in lines) + "\n{not json\n" + json.dumps({"alt_text": "no image"}) + "\n"
    (root / "captions.jsonl").write_text(text)
    return root / "captions.jsonl"


def test_folder_loader_skips_and_counts_bad_images(tmp_path):
    from tipsv2_sdk.pretrain.data.folder import ImageCaptionFolder

    jsonl = _write_folder(tmp_path)
    folder = ImageCaptionFolder(jsonl)
    assert len(folder) == 9 and len(folder.skipped) == 2  # bad JSON and a line without an image
    result = train(tiny(tmp_path / "run", "data.source=folder", f"data.captions={jsonl}", "schedule.steps=3",
                        "data.batch_size=8",
                        "model.tokenizer_corpus=100"))
    # 3 steps x 8 examples over 9 records: each unreadable record is met at least once per epoch
    assert result.bad_images >= 2
    assert read_metrics(result.metrics_file)[-1]["bad_images"] == result.bad_images


def test_batches_are_the_same_for_any_world_size_and_workers(tmp_path):
    from tipsv2_sdk.pretrain import build
    from tipsv2_sdk.pretrain.data.collate import make_loader
    from tipsv2_sdk.testing import tiny_tokenizer

    cfg = tiny(tmp_path, "data.batch_size=4", "data.shapes_length=6")
    tok = tiny_tokenizer(tmp_path, max_length=32)
    spec = build.model_spec(cfg.model)
    one = build.micro_batches(cfg, build.build_dataset(cfg), tok, spec, 0, 1)
    halves = [build.micro_batches(cfg, build.build_dataset(cfg), tok, spec, r, 2) for r in range(2)]
    for k in (0, 1, 2):  # k=1 crosses the first epoch of 6 scenes
        whole = one[k]
        parts = [h[k] for h in halves]
        for key in ("global_crops", "local_crops", "alt_input_ids", "caption_input_ids", "index"):
            assert torch.equal(whole[key], torch.cat([p[key] for p in parts])), key
    assert sorted(one[0]["index"].tolist() + one[1]["index"].tolist())[:6] == list(range(6))
    loaded = next(iter(make_loader(one, start=2, num_workers=1)))
    assert torch.equal(loaded["global_crops"], one[2]["global_crops"])


def test_distillation_from_an_exported_model_resumes_exactly(run150, tmp_path):
    from safetensors.torch import load_file

    teacher_dir = run150[1].export_dir
    before = load_file(str(teacher_dir / "model.safetensors"))
    args = ("distill.enabled=true", f"distill.teacher={teacher_dir}", "model.width=16", "distill.head_prototypes=64",
            "distill.head_hidden=64", "distill.head_bottleneck=32", "schedule.steps=4", "checkpoint.every_steps=2")
    straight = train(tiny(tmp_path / "a", *args))
    assert straight.parameters["held"] > straight.parameters["trainable"]  # the frozen teacher is held, not trained
    student = tipsv2_sdk.load(straight.export_dir)
    assert student.embed_dim == 16 and student.tokenizer is not None
    import shutil

    shutil.copytree(tmp_path / "a" / "checkpoints" / "step_00000002", tmp_path / "b" / "checkpoints" / "step_00000002")
    train(tiny(tmp_path / "b", *args), resume=True)  # the frozen teacher is reloaded from its directory
    a = load_file(str(tmp_path / "a" / "checkpoints" / "step_00000004" / "objective.safetensors"))
    b = load_file(str(tmp_path / "b" / "checkpoints" / "step_00000004" / "objective.safetensors"))
    assert not any(k.startswith("teacher.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    after = load_file(str(teacher_dir / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)  # the teacher never changes
