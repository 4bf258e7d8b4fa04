"""Small helpers every evaluation shares: the model record, percentages, progress bars, skip lists."""
from __future__ import annotations

import math
from typing import Any


def model_record(model: Any) -> dict[str, Any]:
    """Name, whether it is trained, its weights fingerprint (when the model offers one) and image size."""
    record = {"name": model.name, "source": model.source, "trained": bool(model.meta.get("trained", True)),
              "image_size": model.image_size, "patch_size": model.patch_size}
    fingerprint = getattr(model, "weights_fingerprint", None)
    if isinstance(fingerprint, str):
        record["weights_fingerprint"] = fingerprint
    return record


def percent(value: float) -> float | None:
    """A fraction as a percentage rounded to 4 decimals; ``None`` for NaN (JSON has no NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(100.0 * float(value), 4)


def rounded(value: float, digits: int = 6) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(float(value), digits)


def progress_bar(total: int, unit: str, enabled: bool, desc: str | None = None):
    """A tqdm bar on stderr (stdout stays machine-readable)."""
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=total, unit=unit, desc=desc, disable=not enabled or total == 0, dynamic_ncols=True,
                file=sys.stderr)


def skipped_entry(source: Any, reason: str) -> dict[str, str]:
    return {"source": str(source), "reason": str(reason)}


__all__ = ["model_record", "percent", "rounded", "progress_bar", "skipped_entry"]
