"""What every SDK model wrapping one transformers module shares: device, dtype, moves, size checks."""
from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import torch

W = TypeVar("W", bound="WrappedModel")


class WrappedModel:
    """Mixin for classes holding ``self.hf_model`` and exposing ``image_size`` / ``patch_size``."""

    hf_model: "torch.nn.Module"
    image_size: int
    patch_size: int

    @property
    def device(self) -> "torch.device":
        return next(self.hf_model.parameters()).device

    @property
    def dtype(self) -> "torch.dtype":
        return next(self.hf_model.parameters()).dtype

    def to(self: W, device: "str | torch.device | None" = None, dtype: "torch.dtype | None" = None) -> W:
        """Move (and optionally cast) the wrapped module in place; returns ``self``."""
        self.hf_model.to(device=device, dtype=dtype)
        return self

    def check_image_size(self, image_size: int | None) -> int:
        """Resolve ``None`` to the model's size and refuse sizes that are not multiples of the patch."""
        size = self.image_size if image_size is None else int(image_size)
        if size <= 0 or size % self.patch_size:
            raise ValueError(f"image_size={size} is not a positive multiple of the patch size {self.patch_size}")
        return size
