"""A transformers image processor for TIPS on the PIL backend (no torchvision needed).

transformers ships ``Tipsv2ImageProcessor`` on the torchvision backend only. This class does the
same thing (bilinear resize to a square, rescale to [0, 1], no mean/std) with PIL + numpy, and
round-trips through ``save_pretrained`` / ``from_pretrained``. It also carries the fields that
LLaVA-style code reads (``crop_size``, ``image_mean``, ``size``).
"""
from __future__ import annotations

from transformers.image_processing_backends import PilBackend
from transformers.image_utils import PILImageResampling


class Tipsv2PilImageProcessor(PilBackend):
    """Resize to ``size`` (bilinear, antialiased as PIL does), rescale by 1/255, no normalisation."""

    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BILINEAR
    size = {"height": 448, "width": 448}
    crop_size = {"height": 448, "width": 448}
    do_resize = True
    do_center_crop = False
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = False
    # Zero mean / unit std: the identity. LLaVA reads image_mean for its square-padding colour.
    image_mean = [0.0, 0.0, 0.0]
    image_std = [1.0, 1.0, 1.0]
    do_convert_rgb = True

    def to_dict(self) -> dict:
        # Saved under CLIP's type name: CLIP's processor with these settings does exactly the same
        # resize/rescale, has a PIL backend, and is known to every transformers install, so
        # AutoImageProcessor / AutoProcessor (and sentence-transformers) load our directories with no
        # custom code and no torchvision. This class reads the same file back unchanged.
        data = super().to_dict()
        data["image_processor_type"] = "CLIPImageProcessor"
        return data


def make_image_processor(image_size: int) -> Tipsv2PilImageProcessor:
    """The processor for a model that takes ``image_size`` x ``image_size`` inputs."""
    square = {"height": image_size, "width": image_size}
    return Tipsv2PilImageProcessor(size=square, crop_size=square)
