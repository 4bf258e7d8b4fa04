"""TIPSv2 as a multimodal sentence-transformers (6.x) input module.

``TipsV2Module`` wraps transformers' ``Tipsv2Model`` (never a re-implementation) and speaks the
sentence-transformers module contract: ``modalities`` (text, image), ``preprocess`` (the SDK's
tokenizer, ``Tipsv2Tokenizer`` or SentencePiece, and PIL image pipeline, the very code
``TipsV2.encode_*`` uses),
``forward`` (``sentence_embedding`` + ``token_embeddings``), ``get_embedding_dimension`` and
``save`` / ``load`` (safetensors + JSON + the tokenizer files + the weights fingerprint; never pickle).

A saved module is also a complete HF-format TIPSv2 directory, so ``tipsv2_sdk.load`` reads it too.
Loading it with ``SentenceTransformer`` needs ``trust_remote_code=True`` because the module class
lives outside the ``sentence_transformers`` package (see docs/sentence_transformers.md).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from sentence_transformers.base.modules import InputModule

from .io import write_json

if TYPE_CHECKING:
    from .model import TipsV2

EMBEDDINGS = ("cls1", "cls2", "concat", "mean_patch")
CONFIG_FILE = "tipsv2_sentence_transformers.json"


class TipsV2Module(InputModule):
    """TIPSv2 text and vision towers as one sentence-transformers input module.

    Args:
        model: a loaded ``TipsV2`` (``tipsv2_sdk.load``); its weights are shared, not copied.
        embedding: what ``sentence_embedding`` holds for images: ``"cls1"`` (CLS token aligned with
            web alt-text; the default, as in ``zero_shot_classify``), ``"cls2"`` (the register
            token aligned with synthetic captions), ``"concat"`` ([unit CLS1, unit CLS2], twice the
            width; texts give [unit t, unit t] so cosine = mean of both CLS cosines) or
            ``"mean_patch"`` (mean of the unit patch tokens). Texts always use the text tower's
            mean-pooled output.
        image_size: square input size (a multiple of the patch size); ``None`` = the model's own.
        max_seq_length: maximum text tokens; ``None`` = the text tower's position limit.

    Outputs of ``forward``: ``sentence_embedding`` (raw; the pipeline's ``Normalize`` makes it
    unit length), ``token_embeddings`` (raw final-layer patch tokens for images, without CLS1/CLS2,
    or token states for texts) and an ``attention_mask`` that marks the valid rows of it.
    """

    config_keys = ["embedding", "image_size", "max_seq_length"]
    config_file_name = CONFIG_FILE
    save_in_root = True

    def __init__(
        self,
        model: TipsV2,
        embedding: str = "cls1",
        image_size: int | None = None,
        max_seq_length: int | None = None,
    ):
        super().__init__()
        if embedding not in EMBEDDINGS:
            raise ValueError(f"embedding={embedding!r} is not one of {', '.join(EMBEDDINGS)}")
        if model.tokenizer is None:
            raise ValueError(f"model {model.name!r} has no tokenizer; the sentence-transformers module needs both towers")
        self.tips = model
        self.model = model.hf_model  # registered as a sub-module: parameters train, .to() moves them
        self.tokenizer = model.tokenizer
        self.embedding = embedding
        self.image_size = model.check_image_size(image_size)
        limit = int(model.config.text_config.max_position_embeddings)
        self.max_seq_length = limit if max_seq_length is None else int(max_seq_length)
        if not 1 <= self.max_seq_length <= limit:
            raise ValueError(f"max_seq_length={self.max_seq_length} must lie in [1, {limit}] (the text position limit)")

    # ------------------------------------------------------------------ contract
    @property
    def modalities(self) -> list[str]:
        return ["text", "image"]

    def get_embedding_dimension(self) -> int:
        """Width of ``sentence_embedding``: D, or 2·D for ``embedding="concat"``."""
        width = int(self.model.config.vision_config.hidden_size)
        return 2 * width if self.embedding == "concat" else width

    # 5.x name of the same method, for code written against sentence-transformers 5.
    get_sentence_embedding_dimension = get_embedding_dimension

    def preprocess(self, inputs: Sequence[Any], prompt: str | None = None, **kwargs) -> dict[str, torch.Tensor]:
        """Texts → ``input_ids`` + ``attention_mask``; images → ``pixel_values`` in [0, 1].

        A batch must be all texts or all images (see ``classify_inputs`` for the rule that tells an
        image path from a text). ``prompt`` is prepended to texts only;
        ``max_length`` (from the trainer) caps the text length.
        """
        if not inputs:
            return {}
        modality, items = classify_inputs(inputs)
        if modality == "image":
            from .images import load_pixels

            pixels = np.stack([load_pixels(item, self.image_size) for item in items])
            return {"pixel_values": torch.from_numpy(pixels)}
        texts = [prompt + t for t in items] if prompt else list(items)
        length = self.max_seq_length
        if kwargs.get("max_length"):
            length = min(length, int(kwargs["max_length"]))
        ids, mask = self.tokenizer.encode(texts, max_length=length)
        # Cut to the longest text of the batch: padding is masked out, so results do not change.
        width = max(int(mask.sum(axis=1).max()), 1)
        return {"input_ids": torch.from_numpy(ids[:, :width]), "attention_mask": torch.from_numpy(mask[:, :width])}

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        if "pixel_values" in features:
            features.update(self._encode_images(features["pixel_values"]))
        elif "input_ids" in features:
            features.update(self._encode_texts(features["input_ids"], features["attention_mask"]))
        else:
            raise ValueError(f"TipsV2Module.forward needs 'pixel_values' or 'input_ids', got keys {sorted(features)}")
        return features

    def _encode_images(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        dtype = next(self.model.parameters()).dtype
        seq = self.model.vision_model(pixel_values=pixel_values.to(dtype)).last_hidden_state
        prefix = 1 + int(self.model.config.vision_config.num_register_tokens)  # CLS1 + CLS2
        cls1, cls2, patches = seq[:, 0], seq[:, 1], seq[:, prefix:]
        if self.embedding == "cls1":
            sentence = cls1
        elif self.embedding == "cls2":
            sentence = cls2
        elif self.embedding == "concat":
            # Each half unit length, so neither token dominates the cosine.
            sentence = torch.cat([F.normalize(cls1, dim=-1), F.normalize(cls2, dim=-1)], dim=-1)
        else:
            # Mean of unit patch vectors: the same as averaging TipsV2.encode_images(...).patches.
            sentence = F.normalize(patches, dim=-1).mean(dim=1)
        mask = torch.ones(patches.shape[:2], dtype=torch.long, device=patches.device)
        return {"sentence_embedding": sentence, "token_embeddings": patches, "attention_mask": mask}

    def _encode_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.model.text_model(input_ids=input_ids, attention_mask=attention_mask)
        pooled = out.pooler_output  # mean over the real tokens, as in TipsV2.encode_texts
        if self.embedding == "concat":
            unit = F.normalize(pooled, dim=-1)
            pooled = torch.cat([unit, unit], dim=-1)
        return {"sentence_embedding": pooled, "token_embeddings": out.last_hidden_state}

    # ------------------------------------------------------------------ persistence
    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        """Write the HF-format TIPSv2 files plus this module's JSON config into ``output_path``."""
        if not safe_serialization:
            raise ValueError("TipsV2Module saves weights as safetensors only (safe_serialization=False is not supported)")
        out = Path(output_path)
        out.mkdir(parents=True, exist_ok=True)
        # TipsV2.save_pretrained replaces its target directory, and the root also holds the
        # sentence-transformers files: build in a scratch folder, then move file by file.
        scratch = Path(tempfile.mkdtemp(prefix=".tipsv2-module.", dir=out))
        try:
            self.tips.save_pretrained(scratch / "model")
            for item in sorted((scratch / "model").iterdir()):
                os.replace(item, out / item.name)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        write_json(out / self.config_file_name, self.get_config_dict())

    @classmethod
    def load(
        cls,
        model_name_or_path: str,
        subfolder: str = "",
        token: bool | str | None = None,
        cache_folder: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        init_defaults: dict[str, Any] | None = None,
        **kwargs,
    ) -> "TipsV2Module":
        """Rebuild the module from a directory (or hub repo) written by ``save``."""
        from .loading import load_directory

        backend = kwargs.get("backend", "torch")
        if backend != "torch":
            raise ValueError(f"TipsV2Module runs on the torch backend only, not {backend!r}")
        hub = {"subfolder": subfolder, "token": token, "cache_folder": cache_folder, "revision": revision,
               "local_files_only": local_files_only}
        config = cls.load_config(model_name_or_path, **hub)
        for key, value in (init_defaults or {}).items():
            config.setdefault(key, value)
        unknown = sorted(set(config) - set(cls.config_keys))
        if unknown:
            raise ValueError(f"{CONFIG_FILE} in {model_name_or_path} has unknown keys {unknown}; expected {cls.config_keys}")
        directory = cls.load_dir_path(model_name_or_path, **hub)
        return cls(load_directory(directory), **config)

    def __repr__(self) -> str:
        return f"TipsV2Module({self.get_config_dict()}, model={self.tips.name!r})"


def classify_inputs(inputs: Sequence[Any]) -> tuple[str, list[Any]]:
    """The modality of a batch and its unwrapped items: ``("text" | "image", items)``.

    Images: PIL images, ``pathlib.Path`` objects, uint8 HWC arrays, CHW tensors in [0, 1], and
    strings that sentence-transformers itself reads as image paths: ending in .jpg, .jpeg, .png,
    .gif, .bmp, .tiff or .webp **and** naming an existing file. Every other string is a text.
    ``{"image": x}`` / ``{"text": s}`` force the modality. Image URLs and data URIs are refused
    (nothing is downloaded). A batch mixing texts and images raises a ``ValueError``.
    """
    from PIL import Image
    from sentence_transformers.base.modality import is_image_url_or_path

    kinds: list[str] = []
    items: list[Any] = []
    for i, item in enumerate(inputs):
        if isinstance(item, dict) and len(item) == 1 and next(iter(item)) in ("text", "image"):
            kind, item = next(iter(item.items()))
            if kind == "text" and not isinstance(item, str):
                raise ValueError(f"input #{i}: {{'text': ...}} must hold a str, not {type(item).__name__}")
        elif isinstance(item, str):
            kind = "image" if is_image_url_or_path(item) else "text"
            if kind == "image" and (item.startswith(("http://", "https://", "data:"))):
                raise ValueError(f"input #{i} ({item[:80]!r}) is an image URL: images are never downloaded; "
                                 "pass a local file, a PIL image or an array")
        elif isinstance(item, (os.PathLike, Image.Image, np.ndarray, torch.Tensor)):
            kind = "image"
        else:
            raise ValueError(f"input #{i} is a {type(item).__name__}: expected a text (str) or an image "
                             "(PIL image, image file path, uint8 HWC array or CHW tensor in [0, 1])")
        kinds.append(kind)
        items.append(item)
    if not kinds:
        return "text", []
    if len(set(kinds)) > 1:
        first_text, first_image = kinds.index("text"), kinds.index("image")
        raise ValueError(f"this batch mixes texts (e.g. input #{first_text}) and images (e.g. input #{first_image}); "
                         "TIPSv2 encodes one modality per batch: encode texts and images in separate calls")
    return kinds[0], items


def build_sentence_transformer(
    model: TipsV2,
    out_dir: str | os.PathLike | None = None,
    embedding: str = "cls1",
    image_size: int | None = None,
):
    """A ``SentenceTransformer`` made of ``TipsV2Module`` + ``Normalize`` (sentence and token
    embeddings), cosine similarity; saved to ``out_dir`` (atomically) when given."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize

    from .hf_utils import quiet_transformers
    from .io import atomic_directory

    module = TipsV2Module(model, embedding=embedding, image_size=image_size)
    st = SentenceTransformer(
        modules=[module, Normalize(), Normalize(module_input_name="token_embeddings")],
        device=str(model.device),
        similarity_fn_name="cosine",
    )
    if out_dir is not None:
        with atomic_directory(out_dir) as tmp, quiet_transformers():
            st.save(os.fspath(tmp))
    return st


def load_sentence_transformer(path: str | os.PathLike, **kwargs):
    """Load a directory written by ``TipsV2.to_sentence_transformer`` / ``SentenceTransformer.save``.

    Equivalent to ``SentenceTransformer(path, trust_remote_code=True, **kwargs)``, but it first
    checks ``modules.json`` and trusts nothing except this module and built-in module types.
    """
    import json

    from sentence_transformers import SentenceTransformer

    modules_file = Path(path) / "modules.json"
    if not modules_file.is_file():
        raise FileNotFoundError(f"{path} is not a saved SentenceTransformer directory: modules.json is missing")
    ours = f"{TipsV2Module.__module__}.{TipsV2Module.__name__}"
    for entry in json.loads(modules_file.read_text()):
        kind = entry.get("type", "")
        if kind != ours and not kind.startswith("sentence_transformers."):
            raise ValueError(f"{modules_file} references module type {kind!r}; only {ours} and sentence_transformers.* are trusted")
    return SentenceTransformer(os.fspath(path), trust_remote_code=True, **kwargs)


__all__ = ["TipsV2Module", "EMBEDDINGS", "classify_inputs", "build_sentence_transformer", "load_sentence_transformer"]
