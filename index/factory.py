"""Automatic choice of a FAISS index by collection size and memory budget (autofaiss-style).

The rules, for ``n`` unit vectors of width ``d`` searched by inner product:

* ``n <= FLAT_MAX`` and the vectors fit the budget → ``Flat``: exact, nothing to train.
* global vectors, ``n <= HNSW_MAX`` and the graph fits → ``HNSW32``: fastest at high recall, but
  4·d bytes per vector plus the graph, and no removal (the index is rebuilt instead).
* otherwise → IVF with product-quantised codes, ``IVF{K}[_HNSW32],PQ{m}x8``. ``K`` ≈ 4·√n (a
  power of two); ``m`` is the largest code size ≤ ``d/8`` bytes (``d/16`` for patches) that fits
  the budget. Searches probe ``K/8`` lists and re-rank ``8·k`` candidates exactly from the stored
  vectors, so the codes only have to shortlist well.
* OPQ: a rotation before PQ. With exact re-ranking it did not pay at ``m = d/8`` in our benchmark
  (same recall after re-ranking, ~20x the training time), so it is used only when the budget
  forces smaller codes (``m < d/8``) on a global collection large enough to train it (``OPQ_MIN``);
  never for patch indexes, whose hits are re-ranked by exact MaxSim anyway.

The expected recall figures are what benchmarks/index.py measured on clustered synthetic data
(docs/index_benchmarks.md); they are estimates, not guarantees.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

DEFAULT_MEMORY_BUDGET = 2 * 2**30  # bytes of RAM the FAISS index may take
FLAT_MAX = 50_000
HNSW_MAX = 1_000_000
OPQ_MIN = 200_000  # OPQ pays for its training time only on large collections
HNSW_M = 32
PQ_CHOICES = (192, 128, 96, 64, 48, 32, 24, 16, 8, 4)


@dataclass
class IndexChoice:
    """A FAISS factory string and what it is expected to cost and deliver."""

    factory: str
    reason: str
    expected_recall: float  # recall@10 against exact search, after re-ranking
    bytes_per_vector: float  # RAM of the FAISS index per vector (codes + ids + graph)
    memory_bytes: int  # bytes_per_vector * n
    train_size: int  # vectors used for training (0 = no training)
    search_params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def nlist_for(n: int) -> int:
    """IVF list count: the power of two nearest 4·√n, at most 65536, and small enough that lists
    hold 100 vectors on average (short lists make the coarse quantizer the recall bottleneck)."""
    target = 4.0 * math.sqrt(max(n, 1))
    nlist = int(min(65536, 2 ** round(math.log2(target))))
    while nlist > 1 and nlist * 100 > n:
        nlist //= 2
    return nlist


def pq_bits_for(n: int) -> int:
    """Bits per PQ sub-code: 8, unless too few vectors exist to train 256 centroids per sub-space."""
    bits = 8
    while bits > 1 and (1 << bits) * 8 > n:
        bits -= 1
    return bits


def train_size_for(nlist: int, n: int, pq: bool) -> int:
    """Training sample: ~64 vectors per list (at least 2^14 when PQ codebooks are trained too)."""
    want = 64 * nlist
    if pq:
        want = max(want, 16384)
    return int(min(n, want))


def _pq_m(d: int, allowed_bytes: float, cap: int) -> int:
    for m in PQ_CHOICES:
        if m <= cap and m <= allowed_bytes and d % m == 0:
            return m
    for m in PQ_CHOICES:  # widths with no exact divisor: OPQ projects to a multiple of m
        if m <= cap and m <= allowed_bytes:
            return m
    return 4


def ivfpq_factory(n: int, d: int, m: int, opq: bool | None = None) -> str:
    """``[OPQ{m}_{d'},]IVF{K}[_HNSW32],PQ{m}x8`` for ``n`` vectors of width ``d``."""
    nlist = nlist_for(n)
    coarse = f"IVF{nlist}_HNSW32" if nlist >= 1024 else f"IVF{nlist}"
    use_opq = (n >= OPQ_MIN and m < d // 8) if opq is None else opq
    bits = pq_bits_for(n)
    if use_opq or d % m:
        d_out = d if d % m == 0 else m * max(1, d // m)
        return f"OPQ{m}_{d_out},{coarse},PQ{m}x{bits}"
    return f"{coarse},PQ{m}x{bits}"


def _pq_recall(m: int, d: int) -> float:
    # Measured with re-ranking (docs/index_benchmarks.md); more bytes per dimension, better shortlist.
    ratio = m / d
    if ratio >= 1 / 8:
        return 0.97
    if ratio >= 1 / 16:
        return 0.95
    return 0.85


def choose_factory(
    n: int,
    dim: int,
    *,
    memory_budget: int | None = None,
    purpose: str = "global",
    pq: int | None = None,
) -> IndexChoice:
    """Pick a FAISS factory string for ``n`` vectors of width ``dim``.

    Args:
        n: number of vectors to index.
        dim: vector width.
        memory_budget: bytes the index may use in RAM (default ``DEFAULT_MEMORY_BUDGET``).
        purpose: ``"global"`` (one vector per image) or ``"patch"`` (token vectors re-ranked by
            exact MaxSim, so a coarser shortlist suffices and HNSW's memory never pays).
        pq: force product quantisation with this many code bytes per vector.
    """
    if purpose not in ("global", "patch"):
        raise ValueError(f"purpose must be 'global' or 'patch', not {purpose!r}")
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else int(memory_budget)
    n = max(int(n), 1)
    flat_bytes = 4 * dim + 16
    if pq is None and n <= FLAT_MAX and flat_bytes * n <= budget:
        return IndexChoice(
            "Flat", f"{n} vectors <= {FLAT_MAX}: exact search is cheap", 1.0, flat_bytes, flat_bytes * n, 0, {"rerank": 1}
        )
    hnsw_bytes = 4 * dim + 2 * HNSW_M * 4 * 1.1 + 16
    if pq is None and purpose == "global" and n <= HNSW_MAX and hnsw_bytes * n <= budget:
        return IndexChoice(
            f"HNSW{HNSW_M}",
            f"{n} vectors: HNSW graph fits the {budget / 2**30:.1f} GiB budget",
            0.97,
            hnsw_bytes,
            int(hnsw_bytes * n),
            0,
            {"efSearch": 128, "rerank": 1},
        )
    nlist = nlist_for(n)
    cap = max(4, dim // 8) if purpose == "global" else max(4, dim // 16)
    allowed = budget / n - 8 - 4 * dim * nlist / n  # ids and centroids come out of the budget too
    m = int(pq) if pq is not None else _pq_m(dim, allowed, cap)
    # Patch hits are re-ranked by exact MaxSim: OPQ's long training never pays there.
    factory = ivfpq_factory(n, dim, m, opq=None if purpose == "global" else False)
    per_vector = m * pq_bits_for(n) / 8 + 8 + 4 * dim * nlist / n
    if pq is not None:
        reason = f"PQ requested ({m} bytes per vector)"
    elif flat_bytes * n > budget:
        reason = f"{n} vectors: exact/HNSW would need {flat_bytes * n / 2**30:.1f} GiB > budget; {m}-byte PQ codes"
    else:
        reason = f"{n} vectors: compressed {m}-byte PQ codes with exact re-ranking"
    nprobe = max(1, nlist // 8)
    return IndexChoice(
        factory,
        reason,
        _pq_recall(m, dim) if purpose == "global" else 0.9,
        per_vector,
        int(per_vector * n),
        train_size_for(nlist, n, pq=True),
        # Patch vectors of one object are near-duplicates: PQ needs a longer shortlist there.
        {"nprobe": nprobe, "rerank": 8 if purpose == "global" else 16},
    )


def describe_factory(factory: str, dim: int, n: int) -> IndexChoice:
    """Cost estimate for an explicit factory string (``--index-type`` override)."""
    import faiss

    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise ValueError(f"invalid FAISS factory string {factory!r}: {str(exc).splitlines()[-1]}") from None
    params: dict[str, Any] = {"rerank": 1}
    train = 0
    ivf = _ivf_or_none(index)
    if ivf is not None:
        per_vector = ivf.code_size + 8 + 4 * dim * ivf.nlist / max(n, 1)
        train = train_size_for(ivf.nlist, n, pq="PQ" in factory)
        params["nprobe"] = max(1, ivf.nlist // 8)
        if "PQ" in factory or "SQ" in factory:
            params["rerank"] = 8
        recall = 0.9
    elif "HNSW" in factory:
        match = re.search(r"HNSW(\d+)", factory)
        links = int(match.group(1)) if match else HNSW_M
        per_vector = _storage_bytes(index, dim) + 2 * links * 4 * 1.1 + 16
        params["efSearch"] = 128
        recall = 0.95
        train = n if not index.is_trained else 0
    else:
        per_vector = _storage_bytes(index, dim) + 16
        recall = 1.0 if factory.strip() == "Flat" else 0.9
        train = 0 if index.is_trained else min(n, 65536)
    return IndexChoice(factory, "explicit factory string", recall, per_vector, int(per_vector * n), train, params)


def _ivf_or_none(index):
    import faiss

    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def _storage_bytes(index, dim: int) -> float:
    import faiss

    inner = faiss.downcast_index(index)
    storage = getattr(inner, "storage", None)
    try:
        return float((storage if storage is not None else index).sa_code_size())
    except RuntimeError:
        return 4.0 * dim


__all__ = ["IndexChoice", "choose_factory", "describe_factory", "ivfpq_factory", "nlist_for", "DEFAULT_MEMORY_BUDGET"]
