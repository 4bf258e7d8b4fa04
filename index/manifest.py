"""``manifest.json``: what an index directory holds, which model made it, and how it was built.

The manifest is the commit point of every save: all other files are written first under new
names, then the manifest is atomically replaced. A reader therefore always sees a complete index.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tipsv2_sdk.io import write_json
from .errors import IndexFormatError, IndexMismatchError, IndexNotFoundError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 64 * 2**20  # a manifest is a few KB; refuse to read a huge file as one
_MANIFEST_FILE = re.compile(r"^manifest(-[0-9]{6,12})?\.json$")
INDEX_TYPES = ("global", "patch")
GLOBAL_KINDS = ("cls1", "cls2", "concat", "mean_patch")
STORE_DTYPES = ("float16", "float32")

# Config keys that change with the transformers version, the load path or runtime switches but
# not with the embeddings a model computes; they must not change the hash.
_VOLATILE_KEYS = frozenset(
    {
        "transformers_version", "_name_or_path", "dtype", "torch_dtype", "architectures", "return_dict",
        "output_hidden_states", "output_attentions", "id2label", "label2id", "problem_type",
        "chunk_size_feed_forward", "is_encoder_decoder", "out_features", "out_indices", "stage_names",
        "use_cache", "tie_word_embeddings", "_commit_hash",
    }
)


def _hf_config(model: Any) -> Any:
    """The transformers config of a ``TipsV2`` wrapper, an HF model, or a config itself."""
    if hasattr(model, "to_dict") and not hasattr(model, "config"):
        return model
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise TypeError(f"cannot read a transformers config from {type(model).__name__}")
    return config


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in sorted(value.items()) if k not in _VOLATILE_KEYS and not k.startswith("_attn")}
    if isinstance(value, (list, tuple)):
        return [_stable(v) for v in value]
    return value


def config_hash(model: Any) -> str:
    """A 16-hex-digit hash of the model's config (architecture and sizes, not the weights).

    Keys that vary between transformers versions or load paths are left out, so a model and its
    saved-and-reloaded copy hash alike.
    """
    data = _stable(_hf_config(model).to_dict())
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def model_dim(model: Any, kind: str) -> int:
    """Embedding width for ``kind``: the vision width, doubled for ``concat``."""
    dim = getattr(model, "embed_dim", None)
    if dim is None:
        dim = int(_hf_config(model).vision_config.hidden_size)
    return 2 * int(dim) if kind == "concat" else int(dim)


def weights_fingerprint(model: Any) -> str | None:
    """The model's weights fingerprint (``TipsV2.weights_fingerprint``), or ``None`` where it has none."""
    value = getattr(model, "weights_fingerprint", None)
    return value if isinstance(value, str) and value else None


def model_identity(model: Any, kind: str = "cls1") -> dict[str, Any]:
    """``{"name", "config_hash", "dim", "weights_fingerprint"}`` of a model for the embedding ``kind``."""
    return {"name": getattr(model, "name", None), "config_hash": config_hash(model), "dim": model_dim(model, kind),
            "weights_fingerprint": weights_fingerprint(model)}


def now_iso() -> str:
    """Current UTC time, ISO-8601 with seconds."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class IndexManifest:
    """Contents of ``manifest.json``. Field meanings are documented in docs/index.md."""

    type: str  # "global" | "patch"
    kind: str  # cls1 | cls2 | concat | mean_patch | patch
    dim: int
    model_name: str | None = None
    config_hash: str | None = None
    weights_fingerprint: str | None = None  # of the model the vectors came from (None: not recorded)
    dtype: str = "float16"  # stored vectors
    metric: str = "ip"
    normalization: str = "l2"
    count: int = 0  # live rows (images for a patch index)
    num_vectors: int = 0  # vectors in the FAISS index
    factory: str | None = None  # FAISS factory string actually built
    factory_auto: bool = True
    choice: dict[str, Any] = field(default_factory=dict)
    search_params: dict[str, Any] = field(default_factory=dict)
    memory_budget: int | None = None
    created: str = field(default_factory=now_iso)
    updated: str = field(default_factory=now_iso)
    next_id: int = 0
    built_count: int = 0  # live rows when the FAISS index was last (re)built
    patch: dict[str, Any] | None = None
    files: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "manifest") -> "IndexManifest":
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise IndexFormatError(f"{source}: format_version {version!r} is not supported (expected {FORMAT_VERSION})")
        from .validation import check_manifest_fields

        if data.get("type") not in INDEX_TYPES:
            raise IndexFormatError(f"{source}: unknown index type {data.get('type')!r}")
        kinds = ("patch",) if data["type"] == "patch" else GLOBAL_KINDS
        if data.get("kind") not in kinds:
            raise IndexFormatError(f"{source}: kind {data.get('kind')!r} is not one of {', '.join(kinds)}")
        if data.get("dtype", "float16") not in STORE_DTYPES:
            raise IndexFormatError(f"{source}: dtype {data.get('dtype')!r} is not one of {', '.join(STORE_DTYPES)}")
        check_manifest_fields(data, source)
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            manifest = cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise IndexFormatError(f"{source}: {exc}") from None
        if manifest.type not in INDEX_TYPES:
            raise IndexFormatError(f"{source}: unknown index type {manifest.type!r}")
        return manifest

    def save(self, directory: str | os.PathLike, name: str = MANIFEST_NAME) -> None:
        """Atomically write ``directory/name`` (``manifest.json``: the commit point of a save)."""
        write_json(Path(directory) / name, self.to_dict())

    def summary(self) -> dict[str, Any]:
        """The user-facing fields (no internal file table)."""
        out = self.to_dict()
        out.pop("files", None)
        return out


def new_manifest(
    index_type: str,
    path: str | os.PathLike,
    *,
    model: Any = None,
    dim: int | None = None,
    kind: str,
    model_name: str | None = None,
    cfg_hash: str | None = None,
    factory: str | None = None,
    memory_budget: int | None = None,
    dtype: str = "float16",
    overwrite: bool = False,
) -> IndexManifest:
    """The manifest of a new index at ``path`` (``IndexExistsError`` if one is there, unless ``overwrite``)."""
    from .errors import IndexExistsError

    path = Path(path)
    exists = (path / MANIFEST_NAME).exists()
    if exists and not overwrite:
        raise IndexExistsError(f"an index already exists at {path}; open it, or pass overwrite=True")
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a directory")
    if model is not None:
        dim = model_dim(model, "cls1" if kind == "patch" else kind) if dim is None else dim
        model_name = getattr(model, "name", None) if model_name is None else model_name
        cfg_hash = config_hash(model) if cfg_hash is None else cfg_hash
        fingerprint = weights_fingerprint(model)
    else:
        fingerprint = None
    if dim is None or int(dim) <= 0:
        raise ValueError("the vector width is unknown: pass model= or dim=")
    if dtype not in STORE_DTYPES:
        raise ValueError(f"dtype must be 'float16' or 'float32', not {dtype!r}")
    auto = factory is None or factory == "auto"
    # Replacing an index: keep counting generations so no new file can take an old one's name.
    gen = read_manifest(path).files.get("gen", 0) if exists else 0
    return IndexManifest(
        type=index_type, kind=kind, dim=int(dim), model_name=model_name, config_hash=cfg_hash,
        weights_fingerprint=fingerprint, dtype=dtype,
        factory=None if auto else factory, factory_auto=auto, memory_budget=memory_budget, files={"gen": int(gen)},
    )


def manifest_file(gen: int) -> str:
    """The immutable manifest name of generation ``gen`` of one index (``manifest-000007.json``)."""
    return f"manifest-{int(gen):06d}.json"


def read_manifest(path: str | os.PathLike, name: str = MANIFEST_NAME) -> IndexManifest:
    """Read ``path/name`` (default ``manifest.json``); ``IndexNotFoundError`` if there is none."""
    path = Path(path)
    if not isinstance(name, str) or not _MANIFEST_FILE.match(name):
        raise IndexFormatError(f"index {path}: {name!r} is not a manifest file name")
    file = path / name
    if name == MANIFEST_NAME and not file.is_file():
        raise IndexNotFoundError(f"no index at {path} (missing {MANIFEST_NAME})")
    from .validation import member

    member(path, name, "manifest")
    try:
        if file.stat().st_size > MAX_MANIFEST_BYTES:
            raise IndexFormatError(f"{file} is too large to be a manifest ({file.stat().st_size} bytes)")
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise IndexFormatError(f"cannot read {file}: {exc}") from None
    if not isinstance(data, dict):
        raise IndexFormatError(f"{file} does not hold a JSON object")
    return IndexManifest.from_dict(data, source=str(file))


def check_model(
    manifest: IndexManifest,
    model: Any = None,
    *,
    kind: str | None = None,
    dim: int | None = None,
    path: str | os.PathLike | None = None,
) -> None:
    """Raise ``IndexMismatchError`` when ``model`` / ``kind`` / ``dim`` differ from what the index was built with.

    The message names both sides, e.g. ``index ./idx was built with model 'a' (config 1f.., dim 768)
    but the query model is 'b' (config 9c.., dim 1024)``.
    """
    where = f"index {path}" if path is not None else "the index"
    if kind is not None and kind != manifest.kind:
        raise IndexMismatchError(f"{where} holds {manifest.kind!r} embeddings, not {kind!r}")
    if dim is not None and int(dim) != manifest.dim:
        raise IndexMismatchError(f"{where} holds {manifest.dim}-d vectors but the query side is {int(dim)}-d")
    if model is None:
        return
    vector_kind = "cls1" if manifest.kind == "patch" else manifest.kind
    ident = model_identity(model, vector_kind)
    built = (manifest.model_name, manifest.config_hash, manifest.dim)
    given = (ident["name"], ident["config_hash"], ident["dim"])
    differs = [
        label
        for label, a, b in zip(("name", "config hash", "dim"), built, given)
        if a is not None and b is not None and a != b
    ]
    if differs:
        raise IndexMismatchError(
            f"{where} was built with model {built[0]!r} (config {built[1]}, dim {built[2]}, kind {manifest.kind}) "
            f"but the model given is {given[0]!r} (config {given[1]}, dim {given[2]}); "
            f"{', '.join(differs)} differ"
        )
    theirs, ours = manifest.weights_fingerprint, ident["weights_fingerprint"]
    if theirs and ours and theirs != ours:
        raise IndexMismatchError(
            f"{where} was built with model {manifest.model_name!r} weights {theirs} but the model given is "
            f"{ident['name']!r} weights {ours}: same architecture, different weights; "
            "use the model the index was built with, or build a new index"
        )


__all__ = [
    "FORMAT_VERSION",
    "IndexManifest",
    "check_model",
    "config_hash",
    "manifest_file",
    "model_dim",
    "model_identity",
    "new_manifest",
    "read_manifest",
    "weights_fingerprint",
]
