"""Errors raised by the index library. Each names the thing that is wrong.

All subclass ``tipsv2_sdk.errors.TipsV2Error``, so the command line reports them as user errors.
"""
from __future__ import annotations

from tipsv2_sdk.errors import TipsV2Error


class IndexMismatchError(TipsV2Error, ValueError):
    """An index was opened or merged with a model, kind or shard that does not match it."""


class IndexNotFoundError(TipsV2Error, FileNotFoundError):
    """A directory holds no index (no ``manifest.json``)."""


class IndexExistsError(TipsV2Error, FileExistsError):
    """``create`` was pointed at a directory that already holds an index."""


class IndexFormatError(TipsV2Error, ValueError):
    """An index directory is damaged or written by an unknown format version."""


class MissingFileError(IndexFormatError):
    """A file named by a manifest is not there (deleted by a newer generation, or lost)."""


class IndexLockedError(TipsV2Error, RuntimeError):
    """Another live process holds the writer lock of an index directory."""


class IndexWriteError(TipsV2Error, OSError):
    """Writing an index failed (disk full, read-only, ...); the published generation is unchanged.

    ``IndexWriteError(errno, message)``; ``str()`` is the message alone (no ``[Errno n]`` prefix).
    """

    def __str__(self) -> str:
        return self.strerror if self.strerror else super().__str__()


class QueryError(TipsV2Error, ValueError):
    """A search query is malformed (e.g. an empty text)."""


class UnknownIdError(TipsV2Error, KeyError):
    """An id or path is not in the index."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class DuplicateIdError(TipsV2Error, ValueError):
    """An id or path would appear twice in one index."""


class BoxError(TipsV2Error, ValueError):
    """A query box is malformed or lies outside its image."""


__all__ = [
    "IndexMismatchError",
    "IndexNotFoundError",
    "IndexExistsError",
    "IndexFormatError",
    "MissingFileError",
    "IndexLockedError",
    "IndexWriteError",
    "QueryError",
    "UnknownIdError",
    "DuplicateIdError",
    "BoxError",
]
