"""Helpers shared by the index commands: sizes, model references, shard outputs, report printing."""
from __future__ import annotations

import os
from pathlib import Path

import click

from ...cli.common import UserError, info

KIND_CHOICES = ("cls1", "cls2", "concat", "mean_patch", "patch", "both")
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


def print_report(report) -> None:
    counts = ", ".join(f"{name} {n}" for name, n in report.counts.items())
    shard = f" (shard {report.shard})" if report.shard else ""
    click.echo(f"{report.out}{shard}: +{report.added} added, -{report.removed} removed, {report.unchanged} unchanged "
               f"→ {counts} images; {report.seconds:.1f} s, {report.images_per_second:.1f} img/s")
    if report.resumed_chunks:
        click.echo(f"resumed an interrupted build after {report.resumed_chunks} finished chunks")
    if report.skipped:
        click.echo(f"skipped {len(report.skipped)} unreadable files (listed in {Path(report.out) / 'skipped.jsonl'}):")
        for row in report.skipped:
            click.echo(f"  {row['path']}: {row['reason']}")



def warn_untrained(model) -> None:
    """The RANDOM WEIGHTS note on stderr for an untrained model."""
    if model.meta.get("trained") is False:
        info(f"RANDOM WEIGHTS: model {model.name} is not trained; rankings are meaningless.")


__all__ = ["KIND_CHOICES", "model_ref", "parse_bytes", "print_report", "rank_device", "shard_out", "split_kinds",
           "warn_untrained"]
