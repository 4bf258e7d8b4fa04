"""FAISS global and patch-level indexes over TIPSv2 embeddings (installed as ``tipsv2_sdk.index``).

    from tipsv2_sdk.index import GlobalIndex, PatchIndex, merge_indexes

Names are imported on first use, so importing this package does not import faiss.
"""
from __future__ import annotations

from tipsv2_sdk.lazy import lazy_exports

_EXPORTS = {
    "GlobalIndex": "global_index",
    "SearchResult": "global_index",
    "PatchIndex": "patch_index",
    "RegionHit": "patch_index",
    "box_to_cells": "patch_index",
    "pack_ids": "patch_index",
    "unpack_ids": "patch_index",
    "pool_patches": "patch_index",
    "ID_SHIFT": "patch_index",
    "IndexManifest": "manifest",
    "read_manifest": "manifest",
    "check_model": "manifest",
    "config_hash": "manifest",
    "model_identity": "manifest",
    "IndexChoice": "factory",
    "choose_factory": "factory",
    "describe_factory": "factory",
    "DEFAULT_MEMORY_BUDGET": "factory",
    "maxsim_scores": "maxsim",
    "maxsim_exhaustive": "maxsim",
    "merge_indexes": "merge",
    "open_index": "merge",
    "gpu_available": "gpu",
    "IndexMismatchError": "errors",
    "IndexNotFoundError": "errors",
    "IndexExistsError": "errors",
    "IndexFormatError": "errors",
    "UnknownIdError": "errors",
    "DuplicateIdError": "errors",
    "BoxError": "errors",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


__all__ = sorted(_EXPORTS)
