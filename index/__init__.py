"""FAISS global and patch-level indexes over TIPSv2 embeddings (installed as ``tipsv2_sdk.index``)."""
