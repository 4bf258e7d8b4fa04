"""Encoding throughput: the official reference forward, naive transformers and tipsv2-sdk's modes.

One process, the same random S/14 weights (speed does not depend on the values) in every
contender, 448 px, batch 16:

* **reference** — the official PyTorch image encoder's forward (google-deepmind/tips
  ``pytorch/image_encoder.py`` structure, rewritten in ``reference_vit.py``; the weights are mapped
  back to the official keys with the converter's rules, and its output is checked against ours);
* **naive transformers** — ``AutoImageProcessor`` + ``Tipsv2Model.get_image_features`` under
  ``torch.no_grad()``, as the transformers documentation shows (CLS1 only);
* **tipsv2-sdk** ``encode_images`` in every mode (fp32 exact, int8, bf16, each eager and compiled),
  returning CLS1, CLS2 and every patch, L2-normalised.

Contenders run interleaved (one pass of each per round, the order rotated every round) and the
table reports medians, so noise from other processes on the machine hits all of them alike. The
same run measures the CPU's matmul peaks (fp32 / bf16 / int8 GEMM microbenchmarks) to turn
images/s into a fraction of what the hardware can do, and every fast mode's cosine to fp32 on
CLS1, CLS2 and every patch of the benchmark batch. Texts: ``encode_texts`` vs the tokenizer
padded to 64 + ``get_text_features``. The decoding overlap row encodes JPEG files with decoding
ahead in worker threads vs in the calling thread.

    python benchmarks/encode.py                      # the table in docs/benchmarks.md (~30 min on 2 cores)
    python benchmarks/encode.py --write-docs         # ... and write it there, between the markers
    python benchmarks/encode.py --quick              # a 1-minute smoke run (224 px, batch 4, 1 round)
    python benchmarks/encode.py --device cuda --variant tipsv2-b14   # the GPU table (bf16 + SDPA + compile)
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_vit import reference_from_hf  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
START, END = "<!-- encode-benchmark:start -->", "<!-- encode-benchmark:end -->"


# ---------------------------------------------------------------------------------------------- FLOPs
def vision_flops(cfg, size: int) -> float:
    """Multiply-adds x 2 of one image through the vision tower (linear layers, attention, patch embedding)."""
    d, p = cfg.hidden_size, cfg.patch_size
    patches = (size // p) ** 2
    tokens = patches + 1 + cfg.num_register_tokens
    hidden = int(d * cfg.mlp_ratio)
    mlp = 3 * d * ((int(hidden * 2 / 3) + 7) // 8 * 8) if cfg.use_swiglu_ffn else 2 * d * hidden
    per_layer = 2 * tokens * (4 * d * d + mlp) + 4 * tokens * tokens * d
    return float(cfg.num_hidden_layers * per_layer + 2 * patches * 3 * p * p * d)


# ---------------------------------------------------------------------------------------------- peaks
def _best_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_peak(dtype: torch.dtype, n: int, repeats: int = 3) -> float:
    """GFLOP/s of an n x n x n ``F.linear`` in ``dtype`` (the best of ``repeats``).

    ``F.linear`` is what the towers' layers call; for bf16 on a CPU without native bf16 it goes
    through oneDNN's emulation, which is ~10x faster than the plain ``a @ b`` fallback, so it is
    the peak that the bf16 tower can actually reach here.
    """
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    return 2 * n**3 / _best_seconds(lambda: torch.nn.functional.linear(a, b), repeats) / 1e9


def int8_peak(n: int, repeats: int = 3) -> float:
    """GFLOP/s of a dynamically quantised int8 Linear (fbgemm/oneDNN), n x n x n."""
    from tipsv2_sdk.fast import _quantize_linears

    layer = _quantize_linears(torch.nn.Sequential(torch.nn.Linear(n, n)))
    x = torch.randn(n, n)
    with torch.inference_mode():
        return 2 * n**3 / _best_seconds(lambda: layer(x), repeats) / 1e9


# ---------------------------------------------------------------------------------------------- running
@dataclass
class Contender:
    name: str
    precision: str
    run: Callable[[], object]
    items: int
    group: str = "images"
    note: str = ""
    seconds: list[float] = field(default_factory=list)
    warmup_s: float = 0.0
    cosine: dict[str, float] | None = None
    compare: Callable[[object], dict[str, float]] | None = None  # warm-up output -> cosines to fp32

    @property
    def per_second(self) -> float:
        return self.items / statistics.median(self.seconds)


def interleaved(contenders: list[Contender], rounds: int) -> None:
    """One timed pass of every contender per round, starting one later each round; medians are reported."""
    for c in contenders:  # warm-up: allocations, oneDNN kernel choice, torch.compile
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the emulated-bf16 warning, once per prepared tower
            output = c.run()
        c.warmup_s = time.perf_counter() - start
        if c.compare is not None:  # the accuracy of exactly what is timed, without another pass
            c.cosine = c.compare(output)
        print(f"  warm-up {c.name} {c.precision} {c.note}: {c.warmup_s:.1f} s", file=sys.stderr, flush=True)
    for r in range(rounds):
        order = contenders[r % len(contenders):] + contenders[: r % len(contenders)]
        for c in order:
            start = time.perf_counter()
            c.run()
            c.seconds.append(time.perf_counter() - start)
        print(f"  round {r + 1}/{rounds}: " + ", ".join(f"{c.name} {c.seconds[-1]:.1f}s" for c in contenders),
              file=sys.stderr, flush=True)


def cosines(emb, ref) -> dict[str, float]:
    """Minimum cosine of CLS1, CLS2 and every patch between two sets of unit vectors.

    ``emb`` and ``ref`` are ImageEmbeddings or dicts with ``cls1`` / ``cls2`` / ``patches`` arrays
    (a missing key gives no entry). A contender timed on fewer images than the fp32 reference
    holds is compared on the images it encoded (the first ones of the same batch), never
    broadcast against the others.
    """
    out = {}
    for k in ("cls1", "cls2", "patches"):
        a = emb.get(k) if isinstance(emb, dict) else getattr(emb, k)
        b = ref.get(k) if isinstance(ref, dict) else getattr(ref, k)
        if a is None or b is None:
            continue
        n = min(len(a), len(b))
        a, b = np.asarray(a[:n]), np.asarray(b[:n])
        a, b = a.reshape(n, -1, a.shape[-1]), b.reshape(n, -1, b.shape[-1])
        out[k] = float((a * b).sum(-1).min())
    return out


def make_jpegs(directory: Path, count: int, seed: int = 0) -> list[Path]:
    """JPEG files of mixed sizes (380-900 px), as a user's folder would hold."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        h, w = int(rng.integers(380, 900)), int(rng.integers(380, 900))
        smooth = rng.random((h // 16 + 1, w // 16 + 1, 3))
        arr = np.kron(smooth, np.ones((16, 16, 1)))[:h, :w] * 255
        path = directory / f"img_{i:03d}.jpg"
        Image.fromarray(arr.astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------- the benchmark
def build(args):
    from transformers import AutoImageProcessor, Tipsv2Model

    import tipsv2_sdk as tips
    from tipsv2_sdk.model import TipsV2
    from tipsv2_sdk.registry import make_config
    from tipsv2_sdk.testing import tiny_tokenizer

    work = Path(tempfile.mkdtemp(prefix="tipsv2-bench-"))
    torch.manual_seed(0)
    model = TipsV2(Tipsv2Model(make_config(args.variant)).eval(), tiny_tokenizer(work / "tok"), name=args.variant)
    model.save_pretrained(work / "model")
    ours = tips.load(work / "model", device=args.device)
    naive = Tipsv2Model.from_pretrained(work / "model").eval().to(args.device)
    square = {"height": args.size, "width": args.size}  # the processor must feed the size the others run
    processor = AutoImageProcessor.from_pretrained(work / "model", size=square, crop_size=square)
    return work, ours, naive, processor


def image_contenders(args, ours, naive, processor) -> tuple[list[Contender], dict]:
    from tipsv2_sdk import fast

    size, n = args.size, args.batch
    pixels = torch.from_numpy(fast.probe_pixels(size, n, seed=1))
    tensors = list(pixels)
    pil = [Image.fromarray((p.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for p in pixels]
    reference = reference_from_hf(ours.hf_model.vision_model).to(args.device)
    flops = vision_flops(ours.vision_config, size)

    def run_reference():
        with torch.no_grad():
            return reference(pixels.to(args.device))

    def run_naive():
        inputs = processor(images=pil, return_tensors="pt").to(args.device)
        with torch.no_grad():
            feats = naive.get_image_features(**inputs).pooler_output
        return torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy()

    def ours_run(precision: str, compile_: bool, images=tensors, count=n):
        return lambda: ours.encode_images(images[:count], batch_size=args.batch, image_size=size, progress=False,
                                          precision=precision, compile=compile_)

    # Agreement before timing: the reference and naive transformers compute what we compute.
    exact = ours.encode_images(tensors, batch_size=args.batch, image_size=size, progress=False)
    c1, c2, pt = run_reference()
    unit = lambda t: torch.nn.functional.normalize(t.float(), dim=-1).cpu().numpy()  # noqa: E731
    agreement = {"reference_max_abs": float(max(np.abs(unit(c1) - exact.cls1).max(), np.abs(unit(c2) - exact.cls2).max(),
                                                np.abs(unit(pt) - exact.patches.reshape(n, -1, exact.patches.shape[-1])).max())),
                 "naive_max_abs": float(np.abs(run_naive() - exact.cls1).max())}
    # naive transformers gets the probes as 8-bit PIL images (its processor's input), hence the looser bound.
    assert agreement["reference_max_abs"] < 1e-3 and agreement["naive_max_abs"] < 1e-2, agreement

    rows = [Contender("official reference forward", "fp32", run_reference, n, note="naive attention, fused qkv"),
            Contender("naive transformers", "fp32", run_naive, n, note="CLS1 only"),
            Contender("tipsv2-sdk", "fp32", ours_run("fp32", False), n, note="exact (default)")]
    rows[0].compare = lambda out: cosines({"cls1": unit(out[0]), "cls2": unit(out[1]), "patches": unit(out[2])}, exact)
    rows[1].compare = lambda out: cosines({"cls1": out}, exact)
    auto = fast.fastest_precision(args.device)
    rows.append(Contender("tipsv2-sdk", "auto", ours_run("auto", False), n, note=f"eager; auto = {auto} here"))
    fast_modes = [("int8", False), ("int8", True), ("fp32", True)]
    if args.device != "cpu" or fast.bf16_is_native(args.device):
        fast_modes += [("bf16", False), ("bf16", True)]
    for precision, compile_ in fast_modes:
        rows.append(Contender("tipsv2-sdk", precision, ours_run(precision, compile_), n,
                              note="compiled" if compile_ else "eager"))
    if args.device == "cpu" and not fast.bf16_is_native(args.device):
        # Emulated bf16 is an order of magnitude slower: timed on 2 images so the run stays short.
        k = min(args.bf16_images, n)
        rows.append(Contender("tipsv2-sdk", "bf16", ours_run("bf16", False, count=k), k,
                              note=f"eager; no native bf16 on this CPU (emulated), timed on {k} image{'s' * (k > 1)}"))
    for row in rows[2:]:
        row.compare = lambda emb: cosines(emb, exact)  # on the row's own images: the first row.items of the batch
    for row in rows:
        row.flops = flops  # type: ignore[attr-defined]
    return rows, agreement


def decode_contenders(args, ours, work: Path) -> list[Contender]:
    """JPEG files through the fastest CPU mode, decoding ahead in 2 threads vs in the calling thread."""
    from tipsv2_sdk import fast

    paths = make_jpegs(work, args.batch)
    precision = fast.fastest_precision(args.device)
    rows = []
    for workers in (0, 2):
        rows.append(Contender(f"tipsv2-sdk, JPEG files, decode {'ahead (2 threads)' if workers else 'inline'}",
                              precision, lambda w=workers: ours.encode_images(paths, batch_size=args.batch // 2 or 1,
                                                                               image_size=args.size, progress=False,
                                                                               precision=precision, workers=w),
                              len(paths), group="decode", note=f"workers={workers}, batch {args.batch // 2 or 1}"))
    return rows


def text_contenders(args, ours, naive) -> list[Contender]:
    rng = np.random.default_rng(0)
    words = "a photo of small large red blue green yellow circle square star ring striped dotted near the".split()
    texts = [" ".join(rng.choice(words, int(rng.integers(3, 16)))) for _ in range(args.texts)]
    tokenizer = ours.tokenizer

    def run_naive():
        outs = []
        for start in range(0, len(texts), 64):
            ids, mask = tokenizer.encode(texts[start:start + 64], max_length=64)
            with torch.no_grad():
                feats = naive.get_text_features(input_ids=torch.from_numpy(ids).to(args.device),
                                                attention_mask=torch.from_numpy(mask).to(args.device)).pooler_output
            outs.append(torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy())
        return np.concatenate(outs)

    exact = ours.encode_texts(texts, batch_size=64)
    assert np.abs(run_naive() - exact).max() < 1e-4
    rows = [Contender("naive transformers (pad to 64)", "fp32", run_naive, len(texts), group="texts")]
    for precision in ("fp32", "int8") if args.device == "cpu" else ("fp32", "bf16"):
        row = Contender("tipsv2-sdk", precision, lambda p=precision: ours.encode_texts(texts, batch_size=64, precision=p),
                        len(texts), group="texts", note="length-sorted batches")
        row.cosine = {"text": float((ours.encode_texts(texts, batch_size=64, precision=precision) * exact).sum(-1).min())}
        rows.append(row)
    return rows


def table(args, rows: list[Contender], peaks: dict[str, float], agreement: dict) -> str:
    ref = next(r for r in rows if r.name.startswith("official reference"))
    naive_text = next(r for r in rows if r.group == "texts" and r.name.startswith("naive"))
    lines = [f"{args.variant} layout, random weights, {args.size} px, batch {args.batch}, {args.rounds} interleaved "
             f"rounds (medians); torch {torch.__version__}, {torch.get_num_threads()} threads, "
             f"{platform.processor() or platform.machine()}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
             f"device {args.device}.",
             "",
             f"GEMM peaks (square `F.linear`) measured in the same run: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 "
             f"{peaks['bf16']:.1f} GFLOP/s"
             f"{' (emulated by oneDNN: this CPU has no native bf16)' if peaks['bf16'] < peaks['fp32'] else ''}, "
             "int8 (dynamic, fbgemm) "
             f"{peaks['int8']:.0f} GFLOP/s. The reference agrees with the SDK's fp32 output to "
             f"{agreement['reference_max_abs']:.1e} (max abs, unit vectors), naive transformers to "
             f"{agreement['naive_max_abs']:.1e}.",
             "",
             "| contender | precision | mode | images/s | vs reference | GFLOP/s | % fp32 peak | % own peak "
             "| min cosine to fp32 (CLS1 / CLS2 / patches) |",
             "|---|---|---|---|---|---|---|---|---|"]
    from tipsv2_sdk import fast

    for r in (r for r in rows if r.group == "images"):
        gflops = r.flops * r.per_second / 1e9  # type: ignore[attr-defined]
        cos = " / ".join(f"{r.cosine[k]:.4f}" if k in r.cosine else "n/a" for k in ("cls1", "cls2", "patches")) \
            if r.cosine else "-"
        own = fast.fastest_precision(args.device) if r.precision == "auto" else r.precision
        lines.append(f"| {r.name} | {r.precision} | {r.note} | {r.per_second:.2f} | {r.per_second / ref.per_second:.2f}x "
                     f"| {gflops:.0f} | {100 * gflops / peaks['fp32']:.0f}% | {100 * gflops / peaks[own]:.0f}% "
                     f"({own}) | {cos} |")
    lines += ["", "| pipeline | precision | setting | images/s |", "|---|---|---|---|"]
    for r in (r for r in rows if r.group == "decode"):
        lines.append(f"| {r.name} | {r.precision} | {r.note} | {r.per_second:.2f} |")
    lines += ["", "| texts | precision | mode | texts/s | vs naive | min cosine to fp32 |", "|---|---|---|---|---|---|"]
    for r in (r for r in rows if r.group == "texts"):
        cos = f"{r.cosine['text']:.4f}" if r.cosine else "-"
        lines.append(f"| {r.name} | {r.precision} | {r.note or 'batch 64'} | {r.per_second:.1f} "
                     f"| {r.per_second / naive_text.per_second:.2f}x | {cos} |")
    compiled = [r for r in rows if r.note == "compiled"]
    if compiled:
        lines += ["", "First call (warm-up, includes compiling in this process): "
                  + ", ".join(f"{r.precision} compiled {r.warmup_s:.0f} s" for r in compiled) + "."]
    return "\n".join(lines)


def write_docs(text: str, path: Path = DOCS) -> None:
    """Replace the block between the markers in docs/benchmarks.md (the rest is hand-written)."""
    doc = path.read_text()
    if START not in doc or END not in doc:
        raise SystemExit(f"{path} has no {START} ... {END} block")
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{text}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="tipsv2-s14")
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16-images", type=int, default=2,
                        help="images the emulated-bf16 row is timed on (CPUs without native bf16 only; it is ~10x slower)")
    parser.add_argument("--quick", action="store_true", help="224 px, batch 4, 1 round, 64 texts")
    parser.add_argument("--write-docs", action="store_true", help="write the table into docs/benchmarks.md")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw timings as JSON")
    args = parser.parse_args()
    if args.quick:
        args.size, args.batch, args.rounds, args.texts = 224, 4, 1, 64
    torch.manual_seed(0)
    work, ours, naive, processor = build(args)
    print("# measuring matmul peaks", file=sys.stderr, flush=True)
    from tipsv2_sdk import fast

    native = fast.bf16_is_native(args.device)
    peaks = {"fp32": matmul_peak(torch.float32, 2048), "bf16": matmul_peak(torch.bfloat16, 2048 if native else 1024, 3 if native else 1),
             "int8": int8_peak(2048)}
    print("# agreement checks and warm-up", file=sys.stderr, flush=True)
    images, agreement = image_contenders(args, ours, naive, processor)
    rows = images + decode_contenders(args, ours, work) + text_contenders(args, ours, naive)
    interleaved(rows, args.rounds)
    text = table(args, rows, peaks, agreement)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"peaks": peaks, "agreement": agreement, "rows": [
            {"name": r.name, "precision": r.precision, "note": r.note, "group": r.group, "items": r.items,
             "seconds": r.seconds, "warmup_s": r.warmup_s, "cosine": r.cosine} for r in rows]}, indent=2))
    if args.write_docs:
        write_docs(text)


if __name__ == "__main__":
    main()
