"""Fast encoding modes behind ``encode_images(..., precision=, compile=)`` and ``encode_texts``.

``precision="fp32"`` with ``compile=False`` (the default) runs the user's transformers model as is:
the exact path. Every other mode runs a *prepared copy* of one tower, so the user's model and its
weights are never changed:

``"bf16"``  the tower's weights and activations in bfloat16 end to end (SDPA attention in bf16,
            layer norms accumulate in fp32 inside their kernels; outputs are cast to fp32 only
            after the final norm). Fast where the hardware multiplies bf16 natively (CUDA, CPUs
            with AMX / AVX-512 BF16); elsewhere PyTorch emulates it and it is slower than fp32,
            which ``bf16_is_native`` tells and a warning says.
``"int8"``  CPU only: every ``nn.Linear`` of the tower uses dynamic int8 quantisation (per-channel
            int8 weights, activations quantised per batch; fbgemm / oneDNN kernels), everything
            else stays fp32. This is the fast mode of CPUs without native bf16.
``"auto"``  the fastest of the above for the device (``fastest_precision``).

``compile=True`` additionally runs the prepared tower through ``torch.compile`` (inductor) with a
compile cache kept on disk (``tipsv2_sdk.compile_cache``), so a second process skips most of the
compile.

Accuracy is checked, not assumed: the first time a mode is used on a model's tower, it encodes a
fixed probe next to fp32 and refuses the mode (``FastPathError``) if any CLS1, CLS2, patch or text
embedding falls below cosine ``COSINE_BAR`` (0.99).
"""
from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .errors import TipsV2Error

if TYPE_CHECKING:
    from .model import TipsV2, VisionTokens

PRECISIONS = ("fp32", "bf16", "int8")
COSINE_BAR = 0.99
_PROBE_TEXTS = (
    "a photo of a cat",
    "two red circles to the left of a large blue square",
    "a black ring",
    "a striped yellow star on a dark checkered background near the top right corner",
)


class FastPathError(TipsV2Error, ValueError):
    """A fast mode that cannot be used here: unknown name, wrong device, or below the accuracy bar."""


@dataclass(frozen=True)
class Mode:
    """One encoding mode: ``precision`` in ``PRECISIONS`` and whether to ``torch.compile``."""

    precision: str = "fp32"
    compile: bool = False

    @property
    def exact(self) -> bool:
        """The default path: the user's own fp32 model, untouched."""
        return self.precision == "fp32" and not self.compile


def check_precision(precision: str) -> str:
    """Validate a precision name (``"auto"`` allowed); raises ``FastPathError`` naming the choices."""
    if precision not in (*PRECISIONS, "auto"):
        raise FastPathError(f"precision={precision!r} is not one of {', '.join((*PRECISIONS, 'auto'))}")
    return precision


def make_mode(precision: str = "fp32", compile: bool = False, device: torch.device | str = "cpu") -> Mode:
    """Resolve ``"auto"`` and refuse combinations the device cannot run."""
    device = torch.device(device)
    precision = check_precision(precision)
    if precision == "auto":
        precision = fastest_precision(device)
    if precision == "int8" and device.type != "cpu":
        raise FastPathError(f"precision='int8' runs on CPU only (device {device}); use precision='bf16' on {device.type}")
    return Mode(precision, bool(compile))


def bf16_is_native(device: torch.device | str = "cpu") -> bool:
    """True where bf16 matrix multiplication runs in hardware (CUDA, AMX / AVX-512 BF16 CPUs)."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def fastest_precision(device: torch.device | str = "cpu") -> str:
    """``"bf16"`` where it is native, else ``"int8"`` on CPU, else ``"fp32"``."""
    device = torch.device(device)
    if bf16_is_native(device):
        return "bf16"
    return "int8" if device.type == "cpu" else "fp32"


def set_defaults(model: TipsV2, precision: str = "fp32", compile: bool = False, threads: int | None = None) -> None:
    """Store the mode that ``model.encode_*`` calls use when they leave it unset (validated now)."""
    make_mode(precision, compile, model.device)
    if threads is not None and int(threads) < 1:
        raise FastPathError(f"threads={threads} must be >= 1")
    model.__dict__["_encoding_defaults"] = (precision, bool(compile), threads)


def resolve(model: TipsV2, precision: str | None, compile: bool | None, threads: int | None) -> tuple[Mode, int | None]:
    """The mode and thread count of one ``encode_*`` call: its arguments, else the model's defaults."""
    default_precision, default_compile, default_threads = model.__dict__.get("_encoding_defaults", ("fp32", False, None))
    mode = make_mode(default_precision if precision is None else precision,
                     default_compile if compile is None else compile, model.device)
    return mode, default_threads if threads is None else threads


def text_width(longest: int, mode: Mode, limit: int) -> int:
    """Token columns of a text batch: its longest text; compiled towers round up to a multiple of 8.

    Padding is masked out of attention and pooling, so the width does not change the embeddings;
    rounding only bounds how many distinct shapes a compiled tower sees.
    """
    width = max(longest, 1)
    if mode.compile:
        width = min(-(-width // 8) * 8, limit)
    return width


@contextlib.contextmanager
def num_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)``, restoring the caller's setting after.

    ``None`` leaves whatever the user set (``torch.set_num_threads``, ``OMP_NUM_THREADS``) alone.
    """
    if threads is None:
        yield
        return
    if int(threads) < 1:
        raise FastPathError(f"threads={threads} must be >= 1")
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------- prepared towers
def _weights_stamp(module: nn.Module) -> tuple:
    """Changes when the source weights are updated in place, replaced or moved (so copies go stale)."""
    return tuple((id(p), p._version, p.data_ptr(), p.dtype, p.device) for p in module.parameters())


def prepare_tower(source: nn.Module, precision: str, device: torch.device, *, vision: bool) -> nn.Module:
    """A frozen copy of ``source`` (a transformers tower) converted to ``precision``.

    The copy uses SDPA attention (or xFormers for the vision tower on CUDA when installed, see
    ``tipsv2_sdk.attention``); the source module is not modified.
    """
    from .attention import choose_attention

    tower = copy.deepcopy(source).eval().requires_grad_(False)
    if precision == "bf16":
        tower.to(torch.bfloat16)
    implementation = choose_attention(device, vision=vision)
    if tower.config._attn_implementation != implementation:
        tower.set_attn_implementation(implementation)
    if precision == "int8":
        tower = _quantize_linears(tower)
    return tower


def _quantize_linears(tower: nn.Module) -> nn.Module:
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao; the eager dynamic path still ships.
        warnings.simplefilter("ignore")
        return quantize_dynamic(tower, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)


class _Tower:
    """A prepared tower plus the state that decides when to rebuild it."""

    def __init__(self, module: nn.Module, run: Callable, stamp: tuple, dtype: torch.dtype):
        self.module = module
        self.run = run
        self.stamp = stamp
        self.dtype = dtype


def _cached_tower(model: TipsV2, kind: str, mode: Mode) -> _Tower:
    source = model.hf_model.vision_model if kind == "vision" else model.hf_model.text_model
    cache: dict = model.__dict__.setdefault("_fast_towers", {})
    key = (kind, mode, str(model.device))
    stamp = _weights_stamp(source)
    entry = cache.get(key)
    if entry is not None and entry.stamp == stamp:
        return entry
    if mode.precision == "bf16" and not bf16_is_native(model.device):
        warnings.warn(f"precision='bf16' on {model.device}: this processor has no native bf16 matrix instructions "
                      "(AVX-512 BF16 / AMX), so PyTorch emulates them and bf16 runs slower than fp32 here; "
                      "precision='int8' (or 'auto') is the fast mode on this CPU", RuntimeWarning, stacklevel=5)
    module = prepare_tower(source, mode.precision, model.device, vision=kind == "vision")
    dtype = torch.bfloat16 if mode.precision == "bf16" else torch.float32
    if mode.precision != "fp32":  # an fp32 copy computes exactly what the source does
        _verify(model, kind, module, dtype, mode)
    run = module
    if mode.compile:
        from .compile_cache import compiled

        run = compiled(module, model, kind, mode)
    entry = _Tower(module, run, stamp, dtype)
    cache[key] = entry
    return entry


def clear(model: TipsV2) -> None:
    """Drop every prepared copy of ``model``'s towers (they are rebuilt on the next fast call)."""
    model.__dict__.pop("_fast_towers", None)


# ---------------------------------------------------------------------------------------- running
def vision_runner(model: TipsV2, mode: Mode) -> Callable[[torch.Tensor], VisionTokens]:
    """``pixels (B, 3, H, W) in [0, 1] -> VisionTokens`` for ``mode`` (the model's own path if exact)."""
    if mode.exact:
        return model.vision_tokens
    tower = _cached_tower(model, "vision", mode)

    def run(pixels: torch.Tensor) -> VisionTokens:
        from .compile_cache import mark_dynamic_batch

        pixels = pixels.to(device=model.device, dtype=tower.dtype)
        if mode.compile:
            mark_dynamic_batch(pixels)
        with _attention_kernels(model.device):
            seq = tower.run(pixel_values=pixels).last_hidden_state
        return split_tokens(model, seq, pixels.shape[-2], pixels.shape[-1])

    return run


def text_runner(model: TipsV2, mode: Mode) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``(input_ids, attention_mask) -> raw pooled text embeddings`` for ``mode``."""
    if mode.exact:
        return model.text_features
    tower = _cached_tower(model, "text", mode)

    def run(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        from .compile_cache import mark_dynamic_batch

        input_ids, attention_mask = input_ids.to(model.device), attention_mask.to(model.device)
        if mode.compile:
            mark_dynamic_batch(input_ids, attention_mask)
        with _attention_kernels(model.device):
            return tower.run(input_ids=input_ids, attention_mask=attention_mask).pooler_output

    return run


def split_tokens(model: TipsV2, seq: torch.Tensor, height: int, width: int) -> VisionTokens:
    """The final-norm sequence (B, prefix + h*w, D) as CLS1, CLS2 and the (B, h, w, D) patch grid."""
    from .model import VisionTokens

    p, patch = model.num_prefix_tokens, model.patch_size
    return VisionTokens(cls1=seq[:, 0], cls2=seq[:, 1],
                        patches=seq[:, p:].reshape(seq.shape[0], height // patch, width // patch, -1))


def _attention_kernels(device: torch.device):
    from .attention import sdpa_kernels

    return sdpa_kernels(device)


# ---------------------------------------------------------------------------------------- accuracy check
def probe_pixels(size: int, count: int = 2, seed: int = 0) -> np.ndarray:
    """Deterministic image-like probes (smooth colour fields with hard-edged shapes), (count, 3, size, size)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    images = []
    for _ in range(count):
        channels = []
        for _c in range(3):
            fx, fy, phase = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 2 * np.pi)
            channels.append(0.5 + 0.35 * np.sin(2 * np.pi * (fx * xx + fy * yy) + phase))
        img = np.stack(channels)
        for _shape in range(4):
            cx, cy, r = rng.uniform(0.15, 0.85), rng.uniform(0.15, 0.85), rng.uniform(0.05, 0.2)
            colour = rng.uniform(0, 1, 3).astype(np.float32)[:, None]
            inside = ((xx - cx) ** 2 + (yy - cy) ** 2 < r * r) if rng.random() < 0.5 else (
                (abs(xx - cx) < r) & (abs(yy - cy) < r))
            img[:, inside] = colour
        images.append(np.clip(img, 0.0, 1.0))
    return np.stack(images).astype(np.float32)


def cosine_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of matching rows (last axis), in float32."""
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1, eps=1e-12)


@torch.inference_mode()
def accuracy(model: TipsV2, kind: str, tower: nn.Module, dtype: torch.dtype) -> dict[str, float]:
    """Minimum cosine to fp32 on the probe: ``{"cls1", "cls2", "patches"}`` or ``{"text"}``."""
    if kind == "vision":
        size = model.image_size
        pixels = torch.from_numpy(probe_pixels(size)).to(model.device)
        want = model.vision_tokens(pixels)
        with _attention_kernels(model.device):
            seq = tower(pixel_values=pixels.to(dtype)).last_hidden_state
        got = split_tokens(model, seq, size, size)
        return {"cls1": float(cosine_rows(got.cls1, want.cls1).min()),
                "cls2": float(cosine_rows(got.cls2, want.cls2).min()),
                "patches": float(cosine_rows(got.patches, want.patches).min())}
    tokens = model.tokenize(list(_PROBE_TEXTS))
    want = model.text_features(tokens["input_ids"], tokens["attention_mask"])
    with _attention_kernels(model.device):
        got = tower(input_ids=tokens["input_ids"].to(model.device),
                    attention_mask=tokens["attention_mask"].to(model.device)).pooler_output
    return {"text": float(cosine_rows(got, want).min())}


def _verify(model: TipsV2, kind: str, tower: nn.Module, dtype: torch.dtype, mode: Mode) -> None:
    if kind == "text" and model.tokenizer is None:
        return  # nothing to probe with; encode_texts refuses a model without a tokenizer anyway
    scores = accuracy(model, kind, tower, dtype)
    worst = min(scores, key=scores.get)
    if scores[worst] < COSINE_BAR:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
        raise FastPathError(
            f"precision={mode.precision!r} is not accurate enough for {model.name}'s {kind} tower: minimum cosine "
            f"to fp32 {scores[worst]:.4f} on {worst} (< {COSINE_BAR}; {shown}); use precision='fp32'"
            + ("" if mode.precision == "bf16" else " or 'bf16'")
        )
    model.__dict__.setdefault("_fast_accuracy", {})[(kind, mode.precision)] = scores


def measured_accuracy(model: TipsV2) -> dict[tuple[str, str], dict[str, float]]:
    """The probe cosines of every mode checked on ``model`` so far: ``{(tower, precision): scores}``."""
    return dict(model.__dict__.get("_fast_accuracy", {}))


__all__ = ["COSINE_BAR", "FastPathError", "Mode", "PRECISIONS", "accuracy", "bf16_is_native", "check_precision",
           "clear", "fastest_precision", "make_mode", "measured_accuracy", "num_threads", "prepare_tower",
           "probe_pixels", "split_tokens", "text_runner", "vision_runner"]
