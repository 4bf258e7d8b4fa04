"""Brace patterns as img2dataset and WebDataset write them: ``shards/{00000..00099}.tar``.

``{a..b}`` is an inclusive integer range (zero-padded to the wider end when either end has a
leading zero, like bash), ``{a..b..step}`` a range with a step, ``{x,y,z}`` a list. Several
braces in one pattern multiply out, left to right; braces may nest.
"""
from __future__ import annotations

import re

from ..inputs import InputError

_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?:\.\.(-?\d+))?$")
MAX_EXPANSION = 10_000_000  # a typo such as {0..99999999999} must not eat the machine's memory


def has_braces(pattern: str) -> bool:
    """True when ``pattern`` holds a complete ``{…}`` group with a range or a comma list."""
    try:
        return _find_group(pattern) is not None
    except InputError:
        return False


def _find_group(pattern: str) -> tuple[int, int, list[str]] | None:
    """The first top-level expandable brace group: (start, end, alternatives), or None."""
    depth, start = 0, -1
    for i, ch in enumerate(pattern):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                body = pattern[start + 1 : i]
                alternatives = _alternatives(body, pattern)
                if alternatives is not None:
                    return start, i, alternatives
    return None


def _split_top(body: str) -> list[str]:
    parts, depth, current = [], 0, []
    for ch in body:
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        depth += ch == "{"
        depth -= ch == "}" and depth > 0
        current.append(ch)
    parts.append("".join(current))
    return parts


def _alternatives(body: str, pattern: str) -> list[str] | None:
    match = _RANGE.match(body)
    if match:
        first, last = int(match.group(1)), int(match.group(2))
        step = abs(int(match.group(3) or 1))
        if step == 0:
            raise InputError(f"brace range {{{body}}} in {pattern!r} has a step of 0")
        count = abs(last - first) // step + 1
        if count > MAX_EXPANSION:
            raise InputError(f"brace range {{{body}}} in {pattern!r} expands to {count} names (limit {MAX_EXPANSION})")
        ends = (match.group(1).lstrip("-"), match.group(2).lstrip("-"))
        padded = any(len(e) > 1 and e.startswith("0") for e in ends)
        width = max(len(match.group(1)), len(match.group(2))) if padded else 0
        direction = 1 if last >= first else -1
        return [str(n).zfill(width) for n in range(first, last + direction, step * direction)]
    parts = _split_top(body)
    return parts if len(parts) > 1 else None


def expand_braces(pattern: str) -> list[str]:
    """All names a brace pattern stands for, in order (a pattern without braces is itself)."""
    found = _find_group(pattern)
    if found is None:
        return [pattern]
    start, end, alternatives = found
    head, tail = pattern[:start], pattern[end + 1 :]
    out: list[str] = []
    for alternative in alternatives:
        for rest in expand_braces(alternative + tail):
            out.append(head + rest)
            if len(out) > MAX_EXPANSION:
                raise InputError(f"{pattern!r} expands to more than {MAX_EXPANSION} names")
    return out


__all__ = ["MAX_EXPANSION", "expand_braces", "has_braces"]
