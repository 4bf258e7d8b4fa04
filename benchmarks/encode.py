"""Encoding throughput: tipsv2-sdk `encode_images` / `encode_texts` vs naive transformers use.

B/14 layout with random weights (the speed does not depend on the values), 448 px, batch 1 and
16, fp32 and bf16 (autocast). Both contenders run in the same process on the same inputs, and the
table reports their ratio, so machine noise largely cancels.

"Naive transformers use" is what the transformers documentation shows: the image processor
loaded with AutoImageProcessor from the model directory, then `model.get_image_features(...)`
under `torch.no_grad()`, one call per batch, then L2 normalisation; texts through the tokenizer
and `get_text_features`.

    python benchmarks/encode.py                  # full table (several minutes on 2 cores)
    python benchmarks/encode.py --quick          # S/14 layout, fewer images: a smoke run
"""
from __future__ import annotations

import argparse
import contextlib
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def make_images(directory: Path, count: int, seed: int = 0) -> list[Path]:
    """JPEG files of mixed sizes, as a user's folder would hold."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        h, w = int(rng.integers(380, 900)), int(rng.integers(380, 900))
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        path = directory / f"img_{i:03d}.jpg"
        Image.fromarray(arr).save(path, quality=90)
        paths.append(path)
    return paths


def naive_images(hf_model, processor, paths, batch_size: int, bf16: bool) -> np.ndarray:
    outs = []
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    for start in range(0, len(paths), batch_size):
        images = [Image.open(p).convert("RGB") for p in paths[start : start + batch_size]]
        inputs = processor(images=images, return_tensors="pt")
        with torch.no_grad(), ctx:
            feats = hf_model.get_image_features(**inputs).pooler_output
        outs.append(torch.nn.functional.normalize(feats.float(), dim=-1).numpy())
    return np.concatenate(outs)


def naive_texts(hf_model, tokenizer, texts, batch_size: int) -> np.ndarray:
    outs = []
    for start in range(0, len(texts), batch_size):
        inputs = tokenizer(texts[start : start + batch_size], padding="max_length", max_length=64,
                           truncation=True, return_tensors="pt")
        with torch.no_grad():
            feats = hf_model.get_text_features(**inputs).pooler_output
        outs.append(torch.nn.functional.normalize(feats, dim=-1).numpy())
    return np.concatenate(outs)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up: first-call allocations and oneDNN kernel selection
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="tipsv2-b14")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="S/14, 8 images, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.variant, args.images, args.texts, args.repeats = "tipsv2-s14", 8, 64, 1

    from transformers import AutoImageProcessor, Tipsv2Model, Tipsv2Tokenizer

    import tipsv2_sdk as tips
    from tipsv2_sdk.model import TipsV2
    from tipsv2_sdk.registry import make_config
    from tipsv2_sdk.testing import tiny_tokenizer

    work = Path(tempfile.mkdtemp(prefix="tipsv2-bench-"))
    torch.manual_seed(0)
    model = TipsV2(Tipsv2Model(make_config(args.variant)).eval(), tiny_tokenizer(work / "tok"), name=args.variant)
    model.save_pretrained(work / "model")
    ours = tips.load(work / "model")
    hf_model = Tipsv2Model.from_pretrained(work / "model").eval()
    processor = AutoImageProcessor.from_pretrained(work / "model")
    tokenizer = Tipsv2Tokenizer.from_pretrained(work / "model")
    paths = make_images(work, args.images)
    texts = [f"a photo of {i} small red circles next to a large blue square" for i in range(args.texts)]

    print(f"# encode benchmark: {args.variant} layout, random weights, 448 px, {args.images} JPEGs "
          f"(380-900 px), torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print("| input | batch | precision | tipsv2-sdk (items/s) | naive transformers (items/s) | speed-up |")
    print("|---|---|---|---|---|---|")
    for bf16 in (False, True):
        for batch in (1, 16):
            t_ours = timed(lambda: ours.encode_images(paths, batch_size=batch, progress=False, with_patches=False,
                                                      autocast=bf16), args.repeats)
            t_naive = timed(lambda: naive_images(hf_model, processor, paths, batch, bf16), args.repeats)
            a = ours.encode_images(paths[:2], progress=False, autocast=bf16).cls1
            b = naive_images(hf_model, processor, paths[:2], 2, bf16)
            assert np.abs(a - b).max() < (5e-2 if bf16 else 1e-4), "the two paths disagree"
            n = len(paths)
            print(f"| images | {batch} | {'bf16' if bf16 else 'fp32'} | {n / t_ours:.2f} | {n / t_naive:.2f} "
                  f"| {t_naive / t_ours:.2f}x |", flush=True)
    for batch in (1, 64):
        t_ours = timed(lambda: ours.encode_texts(texts, batch_size=batch), args.repeats)
        t_naive = timed(lambda: naive_texts(hf_model, tokenizer, texts, batch), args.repeats)
        print(f"| texts | {batch} | fp32 | {len(texts) / t_ours:.1f} | {len(texts) / t_naive:.1f} "
              f"| {t_naive / t_ours:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
