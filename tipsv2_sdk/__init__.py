"""tipsv2-sdk: embed, index, search, connect and train Google DeepMind's TIPSv2 encoders.

    import tipsv2_sdk as tips
    model = tips.load("tipsv2-tiny")
    emb = model.encode_images(["cat.jpg"])
    txt = model.encode_texts(["a photo of a cat"])

Attributes are imported on first use so ``import tipsv2_sdk`` (and ``tipsv2 --help``) stays fast.
"""
from __future__ import annotations

from .lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "load": "loading",
    "load_directory": "loading",
    "cache_dir": "loading",
    "list_models": "registry",
    "get_spec": "registry",
    "make_config": "registry",
    "ModelSpec": "registry",
    "TipsV2": "model",
    "ImageEmbeddings": "embeddings",
    "SkippedImage": "embeddings",
    "TipsTokenizer": "tokenizer",
    "TransformersTokenizer": "tokenizer",
    "weights_fingerprint": "fingerprint",
    "Tipsv2PilImageProcessor": "image_processor",
    "ImageLoadError": "errors",
    "UnknownModelError": "errors",
    "ModelUnavailableError": "errors",
    "CheckpointError": "errors",
    "TipsV2Error": "errors",
    "convert_official": "convert",
    "convert_official_dpt": "convert",
    "load_dense": "dense",
    "dense_names": "dense",
    "DenseModel": "dense_model",
    "DensePrediction": "dense",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


__all__ = sorted(_EXPORTS)
