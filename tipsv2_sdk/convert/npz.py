"""Read official ``.npz`` checkpoints without unpickling and without loading every array twice.

Shapes are read from each member's ``.npy`` header, so a checkpoint is checked completely before
any large array is read; arrays are then read one at a time while they are copied into the model.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from types import TracebackType

import numpy as np

from ..errors import CheckpointError

# Floating dtypes the reference checkpoints may use; they are converted to float32 on load.
_FLOAT_KINDS = ("f",)


class NpzCheckpoint:
    """A read-only view of one ``.npz`` file: key names, shapes, and arrays on demand."""

    def __init__(self, path: str | os.PathLike, role: str):
        """Open ``path``; ``role`` ("vision" or "text") only serves error messages."""
        self.path = Path(path)
        self.role = role
        if not self.path.is_file():
            raise FileNotFoundError(f"{role} checkpoint not found: {self.path}")
        try:
            self._npz = np.load(self.path, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise CheckpointError(f"{role} checkpoint {self.path} is not a readable .npz file: {exc}") from None
        if not isinstance(self._npz, np.lib.npyio.NpzFile):
            raise CheckpointError(f"{role} checkpoint {self.path} holds a single array, not an .npz archive of weights")
        self._shapes: dict[str, tuple[int, ...]] = {}

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> "NpzCheckpoint":
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._npz.close()

    # ------------------------------------------------------------------ access
    @property
    def name(self) -> str:
        return self.path.name

    def keys(self) -> list[str]:
        return list(self._npz.files)

    def __contains__(self, key: str) -> bool:
        return key in self._npz.files

    def shape(self, key: str) -> tuple[int, ...]:
        """The array's shape, read from its header (the data is not read)."""
        if key not in self._shapes:
            self._shapes[key] = self._read_header(key)
        return self._shapes[key]

    def array(self, key: str) -> np.ndarray:
        """The array as float32 (the dtype of every parameter of the converted model)."""
        try:
            value = self._npz[key]
        except ValueError as exc:  # object arrays would need pickle, which is refused
            raise CheckpointError(f"{self.role} checkpoint {self.path}: cannot read {key!r}: {exc}") from None
        if value.dtype.kind not in _FLOAT_KINDS:
            raise CheckpointError(
                f"{self.role} checkpoint {self.path}: {key!r} has dtype {value.dtype}, expected floating point"
            )
        return value.astype(np.float32, copy=False)

    def _read_header(self, key: str) -> tuple[int, ...]:
        member = f"{key}.npy"
        zip_file = getattr(self._npz, "zip", None)
        if zip_file is None or member not in zip_file.namelist():
            return tuple(self.array(key).shape)
        with zip_file.open(member) as handle:
            try:
                version = np.lib.format.read_magic(handle)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
                else:  # format 3.0 headers have no public reader; read the array itself
                    return tuple(self.array(key).shape)
            except ValueError as exc:
                raise CheckpointError(f"{self.role} checkpoint {self.path}: corrupt entry {key!r}: {exc}") from None
        if np.dtype(dtype).kind not in _FLOAT_KINDS:
            raise CheckpointError(
                f"{self.role} checkpoint {self.path}: {key!r} has dtype {np.dtype(dtype)}, expected floating point"
            )
        return tuple(int(s) for s in shape)
