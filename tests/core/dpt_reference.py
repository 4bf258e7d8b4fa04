"""A reference forward of the official TIPSv2 DPT decoders that reads the official weights as they are.

Written for the tests from the structure of the official PyTorch code (google-deepmind/tips,
``pytorch/decoders.py`` and ``pytorch/image_encoder.py`` at commit 4db271d3): intermediate blocks
after the final norm, readout projection with tanh-approximated GELU, 1x1 projections, resizing
(transposed convs x4 and x2, identity, 3x3 stride-2 conv with padding 1), 3x3 convs to the fusion
width, four pre-activation residual fusion blocks from the coarsest map up (2x bilinear upsampling
with aligned corners), a 3x3 project conv without activation, a dense head, and depth by bin
classification (ReLU, + min depth, normalise, expectation over linearly spaced bins).

Nothing here is transformers code or our converter: decoder weights are used in their Flax layout
(NHWC activations, HWIO kernels, dense kernels (in, out)), and the transposed conv is computed the
way ``jax.lax.conv_transpose`` defines it (input dilated by the stride, padded by k - 1, correlated
with the unflipped kernel). Vision weights are used in the official PyTorch layout (fused qkv).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

STAGES = 4


# ---------------------------------------------------------------------- random official weights
def random_vision(width: int, depth: int, grid: int, seed: int, patch: int = 14, mlp_ratio: int = 4) -> dict:
    """Random weights with the official vision keys and shapes (GELU MLP, one register token)."""
    rng = np.random.default_rng(seed)

    def normal(*shape, scale=1.0, loc=0.0):
        return (loc + scale * rng.standard_normal(shape)).astype(np.float32)

    d, hidden = width, width * mlp_ratio
    w = {
        "cls_token": normal(1, 1, d), "register_tokens": normal(1, 1, d), "mask_token": normal(1, d, scale=0.1),
        "pos_embed": normal(1, 1 + grid * grid, d, scale=0.5),
        "patch_embed.proj.weight": normal(d, 3, patch, patch, scale=1 / math.sqrt(3 * patch * patch)),
        "patch_embed.proj.bias": normal(d, scale=0.1),
        "norm.weight": normal(d, scale=0.1, loc=1.0), "norm.bias": normal(d, scale=0.1),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        w.update({
            b + "norm1.weight": normal(d, scale=0.1, loc=1.0), b + "norm1.bias": normal(d, scale=0.1),
            b + "attn.qkv.weight": normal(3 * d, d, scale=1 / math.sqrt(d)), b + "attn.qkv.bias": normal(3 * d, scale=0.1),
            b + "attn.proj.weight": normal(d, d, scale=1 / math.sqrt(d)), b + "attn.proj.bias": normal(d, scale=0.1),
            b + "ls1.gamma": normal(d, scale=0.1, loc=0.5),
            b + "norm2.weight": normal(d, scale=0.1, loc=1.0), b + "norm2.bias": normal(d, scale=0.1),
            b + "mlp.fc1.weight": normal(hidden, d, scale=1 / math.sqrt(d)), b + "mlp.fc1.bias": normal(hidden, scale=0.1),
            b + "mlp.fc2.weight": normal(d, hidden, scale=1 / math.sqrt(hidden)), b + "mlp.fc2.bias": normal(d, scale=0.1),
            b + "ls2.gamma": normal(d, scale=0.1, loc=0.5),
        })
    return w


def random_decoder(head: str, width: int, neck: tuple[int, ...], fusion: int, out: int, seed: int,
                   dpt_prefix: str = "decoder/dpt/", head_prefix: str = "decoder/") -> dict:
    """Random weights with the official Scenic decoder keys (``/``-separated, HWIO kernels)."""
    rng = np.random.default_rng(seed)

    def kernel(*shape):
        fan_in = int(np.prod(shape[:-1]))
        return (rng.standard_normal(shape) / math.sqrt(fan_in)).astype(np.float32)

    def bias(n):
        return (0.1 * rng.standard_normal(n)).astype(np.float32)

    p, w = dpt_prefix + "reassemble_blocks/", {}
    for i, ch in enumerate(neck):
        w[f"{p}readout_projects_{i}/kernel"], w[f"{p}readout_projects_{i}/bias"] = kernel(2 * width, width), bias(width)
        w[f"{p}out_projection_{i}/kernel"], w[f"{p}out_projection_{i}/bias"] = kernel(1, 1, width, ch), bias(ch)
        w[f"{dpt_prefix}convs_{i}/kernel"] = kernel(3, 3, ch, fusion)
    for i, k in ((0, 4), (1, 2)):
        w[f"{p}resize_layers_{i}/kernel"], w[f"{p}resize_layers_{i}/bias"] = kernel(k, k, neck[i], neck[i]), bias(neck[i])
    w[f"{p}resize_layers_3/kernel"], w[f"{p}resize_layers_3/bias"] = kernel(3, 3, neck[3], neck[3]), bias(neck[3])
    for i in range(STAGES):
        block = f"{dpt_prefix}fusion_blocks_{i}/"
        for unit in range(1 if i == 0 else 2):
            for conv in ("conv1", "conv2"):
                w[f"{block}PreActResidualConvUnit_{unit}/{conv}/kernel"] = kernel(3, 3, fusion, fusion)
        w[f"{block}Conv_0/kernel"], w[f"{block}Conv_0/bias"] = kernel(1, 1, fusion, fusion), bias(fusion)
    w[f"{dpt_prefix}project/kernel"], w[f"{dpt_prefix}project/bias"] = kernel(3, 3, fusion, fusion), bias(fusion)
    w[f"{head_prefix}{head}/kernel"], w[f"{head_prefix}{head}/bias"] = kernel(fusion, out), bias(out)
    return w


# ---------------------------------------------------------------------- the encoder (official PyTorch layout)
def _t(array) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array), dtype=torch.float64)


def _layer_norm(x: torch.Tensor, w: dict, name: str) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], _t(w[f"{name}.weight"]), _t(w[f"{name}.bias"]), eps=1e-6)


def _linear(x: torch.Tensor, w: dict, name: str) -> torch.Tensor:
    return x @ _t(w[f"{name}.weight"]).T + _t(w[f"{name}.bias"])


def vit_features(w: dict, pixels: np.ndarray, blocks: list[int], heads: int, patch: int = 14):
    """``[(cls (B, D), patches (B, h, w, D))]`` after the final norm for the given 0-based blocks."""
    x = _t(pixels)
    b, _, height, width = x.shape
    x = F.conv2d(x, _t(w["patch_embed.proj.weight"]), _t(w["patch_embed.proj.bias"]), stride=patch)
    d, h, wd = x.shape[1:]
    x = torch.cat([_t(w["cls_token"]).expand(b, -1, -1), x.flatten(2).transpose(1, 2)], dim=1)
    pos = _t(w["pos_embed"])
    grid = math.isqrt(pos.shape[1] - 1)
    if (h, wd) != (grid, grid):  # bilinear, antialiased, to an output size (interpolate_offset = 0), in float32
        plane = pos[:, 1:].reshape(1, grid, grid, d).permute(0, 3, 1, 2).float()
        plane = F.interpolate(plane, size=(h, wd), mode="bilinear", antialias=True).double()
        pos = torch.cat([pos[:, :1], plane.permute(0, 2, 3, 1).reshape(1, h * wd, d)], dim=1)
    x = x + pos
    registers = _t(w["register_tokens"])
    x = torch.cat([x[:, :1], registers.expand(b, -1, -1), x[:, 1:]], dim=1)
    outputs = []
    depth = 1 + max(int(k.split(".")[1]) for k in w if k.startswith("blocks."))
    for i in range(depth):
        p = f"blocks.{i}."
        y = _layer_norm(x, w, p + "norm1")
        qkv = _linear(y, w, p + "attn.qkv").reshape(b, -1, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // heads), dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(b, -1, d)
        x = x + _t(w[p + "ls1.gamma"]) * _linear(y, w, p + "attn.proj")
        y = _layer_norm(x, w, p + "norm2")
        y = _linear(F.gelu(_linear(y, w, p + "mlp.fc1")), w, p + "mlp.fc2")
        x = x + _t(w[p + "ls2.gamma"]) * y
        if i in blocks:
            outputs.append(x)
    outputs = [_layer_norm(o, w, "norm") for o in outputs]
    skip = 1 + registers.shape[1]
    return [(o[:, 0], o[:, skip:].reshape(b, h, wd, d)) for o in outputs]


# ---------------------------------------------------------------------- Flax-layout building blocks (NHWC)
def flax_conv(x: torch.Tensor, kernel, bias=None, stride: int = 1, pad: int = 0) -> torch.Tensor:
    """Cross-correlation of NHWC ``x`` with an HWIO kernel, summed offset by offset."""
    k = _t(kernel)
    kh, kw = k.shape[:2]
    x = F.pad(x, (0, 0, pad, pad, pad, pad))
    oh, ow = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
    out = 0
    for dy in range(kh):
        for dx in range(kw):
            window = x[:, dy:dy + stride * (oh - 1) + 1:stride, dx:dx + stride * (ow - 1) + 1:stride, :]
            out = out + window @ k[dy, dx]
    return out + _t(bias) if bias is not None else out


def flax_conv_transpose(x: torch.Tensor, kernel, bias, stride: int) -> torch.Tensor:
    """``lax.conv_transpose`` (VALID, no kernel flip): dilate by the stride, pad k - 1, correlate."""
    k = np.asarray(kernel).shape[0]
    b, h, w, c = x.shape
    dilated = x.new_zeros(b, (h - 1) * stride + 1, (w - 1) * stride + 1, c)
    dilated[:, ::stride, ::stride] = x
    return flax_conv(dilated, kernel, bias, pad=k - 1)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def _resize(x: torch.Tensor, size=None, scale=None, align_corners=False) -> torch.Tensor:
    y = F.interpolate(x.permute(0, 3, 1, 2), size=size, scale_factor=scale, mode="bilinear",
                      align_corners=align_corners)
    return y.permute(0, 2, 3, 1)


def _unit(x: torch.Tensor, dec: dict, name: str) -> torch.Tensor:
    y = flax_conv(torch.relu(x), dec[f"{name}/conv1/kernel"], pad=1)
    return flax_conv(torch.relu(y), dec[f"{name}/conv2/kernel"], pad=1) + x


def dpt_forward(dec: dict, features, head: str) -> torch.Tensor:
    """The decoder's head output (B, h', w', out) from ``vit_features``; ``dec`` has normalised keys."""
    rb = "reassemble_blocks/"
    maps = []
    for i, (cls, x) in enumerate(features):
        b, h, w, d = x.shape
        flat = x.reshape(b, h * w, d)
        cat = torch.cat([flat, cls[:, None].expand(-1, h * w, -1)], dim=-1)
        x = gelu_tanh(cat @ _t(dec[f"{rb}readout_projects_{i}/kernel"]) + _t(dec[f"{rb}readout_projects_{i}/bias"]))
        x = flax_conv(x.reshape(b, h, w, d), dec[f"{rb}out_projection_{i}/kernel"], dec[f"{rb}out_projection_{i}/bias"])
        resize = f"{rb}resize_layers_{i}/"
        if i in (0, 1):
            x = flax_conv_transpose(x, dec[resize + "kernel"], dec[resize + "bias"], stride=4 if i == 0 else 2)
        elif i == 3:
            x = flax_conv(x, dec[resize + "kernel"], dec[resize + "bias"], stride=2, pad=1)
        maps.append(flax_conv(x, dec[f"convs_{i}/kernel"], pad=1))
    out = None
    for i in range(STAGES):
        block = f"fusion_blocks_{i}/"
        if i == 0:
            out = _unit(maps[-1], dec, block + "PreActResidualConvUnit_0")
        else:
            residual = maps[-(i + 1)]
            if residual.shape != out.shape:
                residual = _resize(residual, size=out.shape[1:3])
            out = _unit(out + _unit(residual, dec, block + "PreActResidualConvUnit_0"), dec,
                        block + "PreActResidualConvUnit_1")
        out = _resize(out, scale=2, align_corners=True)
        out = flax_conv(out, dec[block + "Conv_0/kernel"], dec[block + "Conv_0/bias"])
    out = flax_conv(out, dec["project/kernel"], dec["project/bias"], pad=1)  # no activation after it
    return out @ _t(dec[f"{head}/kernel"]) + _t(dec[f"{head}/bias"])


def normalise_keys(dec: dict) -> dict:
    """Drop the optional ``decoder/`` and ``dpt/`` levels of a Scenic key (as the official loader does)."""
    out = {}
    for key, value in dec.items():
        for prefix in ("decoder/", "dpt/"):
            key = key[len(prefix):] if key.startswith(prefix) else key
        out[key.replace("/out_conv/", "/Conv_0/")] = value
    return out


def reference(task: str, vision: dict, decoder: dict, pixels: np.ndarray, blocks: list[int], heads: int,
              min_depth: float = 0.001, max_depth: float = 10.0) -> np.ndarray:
    """Depth (B, h, w), normals (B, 3, h, w) or segmentation logits (B, C, h, w), as float64 numpy."""
    dec = normalise_keys(decoder)
    head = next(k.split("/")[0] for k in dec if k.startswith(("pixel_", "segmentation_head")))
    out = dpt_forward(dec, vit_features(vision, pixels, blocks, heads), head)
    if task == "depth":
        probs = torch.relu(out) + min_depth
        probs = probs / probs.sum(dim=-1, keepdim=True)
        bins = torch.linspace(min_depth, max_depth, out.shape[-1]).double()  # a float32 buffer in the reference
        return (probs @ bins).numpy()
    return out.permute(0, 3, 1, 2).numpy()
