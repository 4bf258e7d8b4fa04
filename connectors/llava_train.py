"""LLaVA's own training entry point with TIPSv2 towers registered.

    python -m tipsv2_sdk.connectors.llava_train --vision_tower tipsv2-l14@336 <LLaVA train.py flags>
    torchrun --nproc_per_node 8 -m tipsv2_sdk.connectors.llava_train --deepspeed zero2.json ...

Everything after the module name goes to ``llava.train.train.train()`` unchanged, except
``--attn_implementation <name>``, which is passed as the argument LLaVA's ``train_mem.py`` sets
(``flash_attention_2`` there; default here: transformers' choice).
"""
from __future__ import annotations

import sys
from collections.abc import Sequence


def _pop_option(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
            del argv[i : i + 2]
            return value
        if arg.startswith(name + "="):
            del argv[i]
            return arg.split("=", 1)[1]
    return None


def main(argv: Sequence[str] | None = None) -> None:
    """Register the TIPSv2 tower (and the transformers-5 shims) with LLaVA, then run its ``train()``."""
    try:
        import llava  # noqa: F401
    except ImportError:
        raise SystemExit(
            "llava-torch is not installed: pip install --no-deps llava-torch==1.2.2.post1 (plus deepspeed for training)"
        ) from None
    from .llava_original import register_with_llava

    args = list(sys.argv[1:] if argv is None else argv)
    attn = _pop_option(args, "--attn_implementation")
    register_with_llava()
    from llava.train.train import train

    sys.argv = [sys.argv[0], *args]  # LLaVA parses sys.argv with HfArgumentParser
    train(attn_implementation=attn)


if __name__ == "__main__":
    main()
