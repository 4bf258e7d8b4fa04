"""Helpers shared by the index commands: sizes, model references, shard outputs, report printing."""
from __future__ import annotations

import os
from pathlib import Path

import click

from tipsv2_sdk.cli.common import UserError, info

KIND_CHOICES = ("cls1", "cls2", "concat", "mean_patch", "patch", "both")
PATCH_SIZE = 14  # every TIPS / TIPSv2 model; the model checks its own again once loaded
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_bytes(value: str | None) -> int | None:
    """``"4G"``, ``"512M"``, ``"1000000"`` → bytes."""
    if value is None:
        return None
    text = value.strip().upper().removesuffix("B").removesuffix("I")
    unit = text[-1] if text and text[-1] in _UNITS else ""
    try:
        number = float(text[: len(text) - len(unit)])
    except ValueError:
        raise UserError(f"--memory-budget {value!r}: expected a size such as 512M or 4G") from None
    return int(number * _UNITS[unit])


def model_ref(name: str) -> str:
    """How to load the model again later: an absolute directory, or the registry name."""
    return os.path.abspath(name) if os.path.isdir(name) else name


def rank_device(device: str, shard: str | None, env) -> str:
    """Under ``--shard auto``, ``--device cuda`` means this rank's GPU (``LOCAL_RANK``), as torchrun expects."""
    if device == "cuda" and shard is not None and shard.strip().lower() == "auto" and "LOCAL_RANK" in env:
        return f"cuda:{int(env['LOCAL_RANK'])}"
    return device


def shard_out(out: Path, shard) -> Path:
    """``{shard}`` in OUT becomes the shard number, so one command line serves every rank."""
    if "{shard}" not in str(out):
        return out
    if shard is None:
        raise UserError(f"OUT {out} contains {{shard}} but no --shard is given")
    return Path(str(out).replace("{shard}", str(shard.index)))


def split_kinds(kind: str, patches: bool) -> tuple[str | None, bool]:
    if kind == "patch":
        return None, True
    if kind == "both":
        return "cls1", True
    return kind, patches


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 image``, ``2 images`` (``many`` for irregular plurals)."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def printable(path) -> str:
    """A path for human output: bytes that are not UTF-8 appear as ``\\xNN`` instead of breaking the terminal."""
    if isinstance(path, bytes):
        return path.decode("utf-8", "backslashreplace")
    return os.fsencode(os.fspath(path)).decode("utf-8", "backslashreplace") if path is not None else "-"


def image_size_option(func):
    """``--image-size N``: a positive multiple of 14 (the TIPS patch size), checked before any model loads."""
    def check(ctx, param, value):
        if value is not None and (value <= 0 or value % PATCH_SIZE):
            raise UserError(f"--image-size {value}: must be a positive multiple of the patch size {PATCH_SIZE}, "
                            f"e.g. {PATCH_SIZE * 16}")
        return value

    return click.option("--image-size", type=int, default=None, callback=check,
                        help="Square input size (multiple of 14); default: the model's.")(func)


def wait_option(func):
    """``--wait SECONDS``: how long a writer waits for another writer of the same index."""
    return click.option("--wait", "wait", type=click.FloatRange(0), default=0.0, show_default=True,
                        help="Seconds to wait while another process writes the index (0: fail at once).")(func)


def print_report(report) -> None:
    """Human-readable summary of a build report (notes on stderr)."""
    counts = ", ".join(f"{name} {n}" for name, n in report.counts.items())
    shard = f" (shard {report.shard})" if report.shard else ""
    images = "image" if all(n == 1 for n in report.counts.values()) and report.counts else "images"
    click.echo(f"{report.out}{shard}: +{report.added} added, -{report.removed} removed, {report.unchanged} unchanged "
               f"→ {counts} {images}; {report.seconds:.1f} s, {report.images_per_second:.1f} img/s")
    if report.resumed_chunks:
        click.echo(f"finished an interrupted build after {plural(report.resumed_chunks, 'finished chunk')}")
    manual = getattr(report, "manual", None) or {}
    if manual.get("kept") or manual.get("left_out"):
        parts = []
        if manual.get("kept"):
            parts.append(f"kept {plural(manual['kept'], 'image')} added with `index add`")
        if manual.get("left_out"):
            parts.append(f"left out {plural(manual['left_out'], 'image')} removed with `index remove`")
        info("; ".join(parts) + " (changes made by hand are kept; `index add` / `index remove` change them)")
    for note in getattr(report, "notes", None) or []:
        info(note)
    for row in getattr(report, "unreadable_sources", None) or []:
        info(f"not read: {printable(row['path'])}: {row['reason']}")
    if report.skipped:
        click.echo(f"skipped {plural(len(report.skipped), 'unreadable file')} "
                   f"(listed in {printable(Path(report.out) / 'skipped.jsonl')}):")
        for row in report.skipped:
            click.echo(f"  {printable(row['path'])}: {row['reason']}")


def warn_untrained(model) -> None:
    """The RANDOM WEIGHTS note on stderr for an untrained model."""
    if model.meta.get("trained") is False:
        info(f"RANDOM WEIGHTS: model {model.name} is not trained; rankings are meaningless.")


__all__ = ["KIND_CHOICES", "image_size_option", "model_ref", "parse_bytes", "plural", "print_report", "printable",
           "rank_device", "shard_out", "split_kinds", "wait_option", "warn_untrained"]
