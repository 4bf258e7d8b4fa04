"""Weights fingerprints: one hash that tells two checkpoints apart by their tensors.

The fingerprint is a SHA-256 over every tensor of the checkpoint *in the form transformers writes
it* (``model.safetensors``): for each tensor, sorted by name, its name, safetensors dtype, shape and
raw little-endian bytes. Two consequences:

* It does not depend on how a model is loaded: the same files loaded in float32 or bfloat16, on
  CPU or GPU, have the same fingerprint. Different weights (even one changed value) differ.
* A model that exists only in memory (built from a config, trained, or modified after loading)
  is hashed in the form ``save_pretrained`` would write, so saving and reloading keeps its
  fingerprint.

``save_pretrained`` stores the value in ``weights_fingerprint.json`` next to the weights, with
the size, modification time and inode of every weights file; it is trusted only while all three
still match, so replacing ``model.safetensors`` by other weights is noticed and the files are
hashed again (about 1 s per GB).
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

FINGERPRINT_FILE = "weights_fingerprint.json"
ALGORITHM = "sha256-safetensors-tensors-v1"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
SHORT_LENGTH = 8
_CHUNK = 8 << 20
_MAX_HEADER = 100 << 20  # safetensors' own limit on the JSON header


def short_fingerprint(fingerprint: str, length: int = SHORT_LENGTH) -> str:
    """The first ``length`` hex digits, as shown in messages ("weights 1a2b3c4d")."""
    return fingerprint[:length]


def weights_fingerprint(source: Any) -> str:
    """The fingerprint (64 lowercase hex digits) of a checkpoint or a model.

    Args:
        source: a model directory (its stored fingerprint is used while it is current, otherwise
            its safetensors files are hashed), a ``.safetensors`` file or a list of shard files, a
            transformers model (hashed in the form ``save_pretrained`` writes), any other
            ``torch.nn.Module`` (its ``state_dict``), or a ``{name: tensor}`` mapping.
    """
    import torch

    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            return directory_fingerprint(path)
        return hash_safetensors_files([path])
    if isinstance(source, torch.nn.Module):
        return hash_tensors(saved_state_dict(source))
    if isinstance(source, Mapping):
        return hash_tensors(source)
    if isinstance(source, Iterable):
        return hash_safetensors_files([Path(p) for p in source])
    raise TypeError(f"cannot fingerprint a {type(source).__name__}: expected a directory, safetensors "
                    "file(s), a torch module or a mapping of tensors")


# ---------------------------------------------------------------------------- hashing
def _entry_header(name: str, dtype: str, shape: list[int], nbytes: int) -> bytes:
    # JSON escaping keeps names unambiguous; the byte count delimits the data that follows.
    return (json.dumps([name, dtype, list(shape), nbytes]) + "\n").encode()


def hash_safetensors_files(paths: Iterable[Path]) -> str:
    """Hash the tensors stored in one or more safetensors files (shards of one checkpoint)."""
    entries: dict[str, tuple[Path, dict[str, Any], int]] = {}
    for path in paths:
        header, data_start = read_safetensors_header(path)
        for name, info in header.items():
            if name == "__metadata__":
                continue
            if name in entries:
                raise ValueError(f"tensor {name!r} is stored twice ({entries[name][0]} and {path})")
            entries[name] = (path, info, data_start)
    if not entries:
        raise ValueError("no tensors to fingerprint")
    digest = hashlib.sha256(ALGORITHM.encode() + b"\n")
    handles: dict[Path, Any] = {}
    try:
        for name in sorted(entries):
            path, info, data_start = entries[name]
            begin, end = (int(v) for v in info["data_offsets"])
            digest.update(_entry_header(name, info["dtype"], info["shape"], end - begin))
            if path not in handles:
                handles[path] = open(path, "rb")
            handle = handles[path]
            handle.seek(data_start + begin)
            remaining = end - begin
            while remaining:
                chunk = handle.read(min(_CHUNK, remaining))
                if not chunk:
                    raise ValueError(f"{path} is truncated: tensor {name!r} runs past the end of the file")
                digest.update(chunk)
                remaining -= len(chunk)
    finally:
        for handle in handles.values():
            handle.close()
    return digest.hexdigest()


def read_safetensors_header(path: str | os.PathLike) -> tuple[dict[str, Any], int]:
    """The JSON header of a safetensors file and the offset where its tensor data starts."""
    path = Path(path)
    with open(path, "rb") as handle:
        raw = handle.read(8)
        if len(raw) < 8:
            raise ValueError(f"{path} is not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", raw)
        if length > _MAX_HEADER:
            raise ValueError(f"{path} is not a safetensors file (header length {length})")
        try:
            header = json.loads(handle.read(length))
        except ValueError:
            raise ValueError(f"{path} is not a safetensors file (unreadable header)") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a safetensors file (header is not a JSON object)")
    return header, 8 + length


_TORCH_TO_SAFETENSORS = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
    "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
    "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
}


def hash_tensors(tensors: Mapping[str, torch.Tensor]) -> str:
    """Hash in-memory tensors exactly as ``hash_safetensors_files`` hashes them once saved."""
    import torch

    if not tensors:
        raise ValueError("no tensors to fingerprint")
    digest = hashlib.sha256(ALGORITHM.encode() + b"\n")
    for name in sorted(tensors):
        tensor = tensors[name].detach()
        dtype = _TORCH_TO_SAFETENSORS.get(str(tensor.dtype).replace("torch.", ""))
        if dtype is None:
            raise ValueError(f"tensor {name!r} has dtype {tensor.dtype}, which safetensors cannot store")
        flat = tensor.to("cpu").contiguous().reshape(-1)
        raw = flat.view(torch.uint8).numpy() if flat.numel() else b""
        digest.update(_entry_header(name, dtype, list(tensor.shape), flat.numel() * flat.element_size()))
        digest.update(raw)
    return digest.hexdigest()


def saved_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors ``save_pretrained`` would write for ``module`` (names and layout as on disk).

    transformers 5 writes checkpoints in their original layout (for TIPSv2: fused ``qkv``,
    ``vision_encoder.*`` names), so the in-memory state dict is reverted the same way; any other
    module gives its plain ``state_dict``.
    """
    state = dict(module.state_dict())
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover - transformers is a core dependency
        return state
    if not isinstance(module, PreTrainedModel):
        return state
    from transformers.core_model_loading import revert_weight_conversion
    from transformers.modeling_utils import remove_tied_weights_from_state_dict

    for key in module._keys_to_ignore_on_save or ():
        state.pop(key, None)
    state = remove_tied_weights_from_state_dict(state, module)
    return dict(revert_weight_conversion(module, state))


# ---------------------------------------------------------------------------- directories
def weights_files(directory: str | os.PathLike) -> list[Path]:
    """The safetensors files of a model directory (one file, or the shards of its index)."""
    directory = Path(directory)
    index = directory / WEIGHTS_INDEX_FILE
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        return [directory / name for name in sorted(set(weight_map.values()))]
    single = directory / WEIGHTS_FILE
    return [single] if single.is_file() else []


def file_states(paths: Iterable[Path]) -> dict[str, list[int]]:
    """``{file name: [size, mtime_ns, inode]}``; any change means the file may hold other bytes."""
    states = {}
    for path in paths:
        stat = os.stat(path)  # follows the hub cache's symlinks to the blob itself
        states[Path(path).name] = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
    return states


def stored_fingerprint(directory: str | os.PathLike) -> str | None:
    """The fingerprint saved in ``directory``, or ``None`` if absent or no longer current."""
    directory = Path(directory)
    record_path = directory / FINGERPRINT_FILE
    files = weights_files(directory)
    if not record_path.is_file() or not files:
        return None
    try:
        record = json.loads(record_path.read_text())
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("algorithm") != ALGORITHM:
        return None
    if record.get("files") != file_states(files):
        return None
    value = record.get("fingerprint")
    return value if isinstance(value, str) and len(value) == 64 else None


def directory_fingerprint(directory: str | os.PathLike) -> str:
    """The fingerprint of a model directory: stored if current, else hashed from its files."""
    directory = Path(directory)
    stored = stored_fingerprint(directory)
    if stored is not None:
        return stored
    files = weights_files(directory)
    if not files:
        raise FileNotFoundError(f"{directory} has no {WEIGHTS_FILE} (or {WEIGHTS_INDEX_FILE}) to fingerprint")
    return hash_safetensors_files(files)


def write_fingerprint(directory: str | os.PathLike) -> str:
    """Hash the weights files of ``directory`` and store the result in ``weights_fingerprint.json``."""
    from .io import write_json

    directory = Path(directory)
    files = weights_files(directory)
    if not files:
        raise FileNotFoundError(f"{directory} has no {WEIGHTS_FILE} (or {WEIGHTS_INDEX_FILE}) to fingerprint")
    value = hash_safetensors_files(files)
    write_json(directory / FINGERPRINT_FILE, {"algorithm": ALGORITHM, "fingerprint": value,
                                              "files": file_states(files)})
    return value


# ---------------------------------------------------------------------------- a loaded model
def _versions(module: torch.nn.Module) -> tuple[int, ...]:
    """In-place change counters of every parameter: any optimiser step or ``copy_`` bumps one.

    Buffers are left out: ``.to()`` replaces them with fresh tensors (counter 0), and TIPSv2's
    buffers (position ids, sinusoidal tables) are not part of the checkpoint.
    """
    out = []
    for tensor in module.parameters():
        try:
            out.append(tensor._version)
        except RuntimeError:  # inference tensors keep no counter (and cannot be changed in place)
            out.append(-1)
    return tuple(out)


class ModelFingerprint:
    """The fingerprint of one model object, computed once and recomputed only when needed.

    A model loaded from a directory is identified by those files (whatever dtype or device it was
    loaded to) as long as its tensors are unchanged in memory and the files are still the ones it
    was loaded from; otherwise its tensors are hashed as ``save_pretrained`` would write them.
    """

    def __init__(self, module: torch.nn.Module, weights_dir: str | os.PathLike | None = None):
        self._dir = Path(weights_dir) if weights_dir is not None else None
        files = weights_files(self._dir) if self._dir is not None else []
        self._files_at_load = file_states(files) if files else None
        self._versions_at_load = _versions(module)
        self._cache: tuple[tuple[int, ...], str] | None = None

    def value(self, module: torch.nn.Module) -> str:
        versions = _versions(module)
        if self._cache is not None and self._cache[0] == versions:
            return self._cache[1]
        value = None
        if self._files_at_load is not None and versions == self._versions_at_load:
            files = weights_files(self._dir)
            if files and file_states(files) == self._files_at_load:
                value = directory_fingerprint(self._dir)
        if value is None:
            value = hash_tensors(saved_state_dict(module))
        self._cache = (versions, value)
        return value


__all__ = [
    "FINGERPRINT_FILE", "ALGORITHM", "weights_fingerprint", "short_fingerprint", "hash_safetensors_files",
    "hash_tensors", "saved_state_dict", "weights_files", "stored_fingerprint", "directory_fingerprint",
    "write_fingerprint", "ModelFingerprint",
]
