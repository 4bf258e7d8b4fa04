"""Index benchmark: recall against exact search, speed and memory of the global and patch indexes.

Synthetic data shaped like image embeddings rather than uniform noise: 768-d unit vectors around
cluster centres, with a decaying spectrum (a few directions carry most of the variance) under a
random rotation. Patch data: images come in groups that share a pool of "objects", so the patches
of related images are similar and MaxSim rankings are meaningful.

Global index (``GlobalIndex``, built and saved through the library): for each size, the automatic
choice with the default memory budget, the automatic choice with a budget of 1/8 of the flat
index, and alternatives; recall@10 against FAISS ``IndexFlatIP`` on the float32 vectors, queries
per second (one batch), build time (add + train + index + atomic save) and FAISS bytes per vector
(the index file, i.e. what search keeps in RAM; the float16 stored vectors stay on disk,
memory-mapped, and only re-ranked candidates are read from them).

Patch index (``PatchIndex``): recall@10 of two-stage MaxSim (token ANN + exact re-ranking) against
exhaustive MaxSim, p50/p95 latency per query image, memory.

    python benchmarks/index.py --quick      # under a minute: small sizes, smoke run
    python benchmarks/index.py              # full run (sizes below; --time-cap bounds it)
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


# ---------------------------------------------------------------------------------------- data
def _rotation(d: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q.astype(np.float32)


class EmbeddingLike:
    """Clustered unit vectors with a power-law spectrum, generated in chunks (bounded memory)."""

    def __init__(self, d: int = 768, clusters: int = 2000, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.d = d
        self.scale = ((np.arange(d) + 1.0) ** -0.5).astype(np.float32)  # decaying spectrum
        self.centres = rng.normal(size=(clusters, d)).astype(np.float32)
        self.rotation = _rotation(d, seed + 1)

    def sample(self, n: int, seed: int, spread: float = 0.7) -> np.ndarray:
        rng = np.random.default_rng(seed)
        out = np.empty((n, self.d), np.float32)
        for start in range(0, n, 50_000):
            m = min(50_000, n - start)
            z = self.centres[rng.integers(len(self.centres), size=m)]
            z = (z + spread * rng.normal(size=(m, self.d)).astype(np.float32)) * self.scale
            x = z @ self.rotation
            out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out


def scenes(n_images: int, grid: int, d: int, seed: int = 0, per_group: int = 30, pool: int = 24) -> np.ndarray:
    """(n, grid*grid, d) unit patch vectors of synthetic scenes.

    Images come in groups of ``per_group`` sharing a pool of ``pool`` objects; each image shows
    8 of its group's objects, so images overlap more or less and MaxSim gives graded rankings
    (a top-10 is not just "the group"). Objects cover 4x4-patch blocks, so neighbouring patches
    are alike, as in photographs (this is what makes patch pooling viable).
    """
    rng = np.random.default_rng(seed)
    space = EmbeddingLike(d, clusters=4 * n_images // per_group + 64, seed=seed)
    objects = space.sample(len(space.centres), seed + 2, spread=0.3)
    groups = rng.integers(len(objects), size=(-(-n_images // per_group), pool))
    block = 4 if grid % 4 == 0 else 1
    nb = grid // block
    out = np.empty((n_images, grid * grid, d), np.float16)
    for i in range(n_images):
        shown = rng.choice(groups[i // per_group], size=8, replace=False)
        layout = shown[rng.integers(8, size=(nb, nb))].repeat(block, 0).repeat(block, 1).ravel()
        x = objects[layout] + 0.04 * rng.normal(size=(grid * grid, d)).astype(np.float32)
        out[i] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


# ---------------------------------------------------------------------------------------- helpers
def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / len(t) for f, t in zip(found, truth)]))


def exact_topk(base: np.ndarray, queries: np.ndarray, k: int, chunk: int = 100_000) -> np.ndarray:
    """Exact top-``k`` ids by inner product, scanning ``base`` in chunks (no second copy of it)."""
    import faiss

    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for start in range(0, len(base), chunk):
        s, i = faiss.knn(queries, np.ascontiguousarray(base[start : start + chunk]), k, metric=faiss.METRIC_INNER_PRODUCT)
        s, i = np.concatenate([best_s, s], 1), np.concatenate([best_i, i + start], 1)
        keep = np.argsort(-s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(s, keep, 1), np.take_along_axis(i, keep, 1)
    return best_i


def index_file_bytes(path: Path, pattern: str) -> int:
    return sum(f.stat().st_size for f in path.glob(pattern))


class Clock:
    """Wall-clock budget shared by all sections."""

    def __init__(self, cap_s: float):
        self.start = time.perf_counter()
        self.cap = cap_s

    def left(self) -> float:
        return self.cap - (time.perf_counter() - self.start)


# ---------------------------------------------------------------------------------------- global
def bench_global(n: int, nq: int, d: int, configs, workdir: Path, clock: Clock) -> list[dict]:
    from tipsv2_sdk.index import GlobalIndex

    # ~50 vectors per cluster at every size, so IVF lists never line up with the clusters
    space = EmbeddingLike(d, clusters=max(2000, n // 50), seed=1)
    t = time.perf_counter()
    base = space.sample(n, seed=10)
    queries = space.sample(nq, seed=11)
    truth = exact_topk(base, queries, 10)
    print(f"# global n={n}: data + exact ground truth (chunked) {time.perf_counter() - t:.1f}s; "
          f"peak RSS so far {peak_rss_gib():.1f} GiB (float32 vectors {base.nbytes / 2**30:.1f} GiB)", flush=True)
    rows = []
    for label, kwargs, variants in configs:
        if clock.left() < 30:
            rows.append({"n": n, "config": label, "skipped": "time cap"})
            print(_global_line(rows[-1]), flush=True)
            continue
        path = workdir / f"g{n}-{len(rows)}"
        t = time.perf_counter()
        index = GlobalIndex.create(path, dim=d, **kwargs)
        index.add(base)
        index.save()
        build = time.perf_counter() - t
        faiss_bytes = index_file_bytes(path, "index-*.faiss") + index_file_bytes(path, "index-*.ivfdata")
        for suffix, search_kw in variants:
            index.search(queries[:10], 10, **search_kw)  # warm-up
            t = time.perf_counter()
            res = index.search(queries, 10, **search_kw)
            qps = nq / (time.perf_counter() - t)
            rows.append({
                "n": n, "config": label + suffix, "factory": index.factory, "recall@10": recall_at(res.ids, truth),
                "qps": qps, "build_s": build, "bytes_per_vector": faiss_bytes / n,
                "flat_fraction": faiss_bytes / (4 * d * n),
                "expected_recall": index.manifest.choice.get("expected_recall"),
                "search": {**index.manifest.search_params, **search_kw}, "peak_rss_gib": peak_rss_gib(),
            })
            print(_global_line(rows[-1]), flush=True)
        shutil.rmtree(path, ignore_errors=True)
    if clock.left() >= 30 and AUTOFAISS_LIMIT_S > 0:
        row = autofaiss_limited(base, queries, truth, 4 * d * n // 8, workdir / f"af{n}", min(AUTOFAISS_LIMIT_S, clock.left()))
        if row is not None:
            rows.append(row)
            print(_global_line(row), flush=True)
    return rows


AUTOFAISS_LIMIT_S = 1800.0  # wall-clock limit of the autofaiss contender (--autofaiss-limit)


def peak_rss_gib(children: bool = False) -> float:
    """Peak resident memory of this process (or of its finished children) so far, GiB."""
    import resource

    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 2**20  # Linux reports KiB


def autofaiss_limited(base, queries, truth, budget: int, workdir: Path, limit_s: float) -> dict | None:
    """``bench_autofaiss`` in a forked child stopped after ``limit_s`` seconds (its own index
    choice may train for hours on one core); a stopped run becomes a row saying so. The child's
    peak RSS is its own (the vectors are shared copy-on-write with the parent)."""
    import json
    import multiprocessing as mp

    out = workdir.with_suffix(".json")

    def child() -> None:
        row = bench_autofaiss(base, queries, truth, budget, workdir)
        if row is not None:
            row["peak_rss_gib"] = peak_rss_gib()
        out.write_text(json.dumps(row))

    proc = mp.get_context("fork").Process(target=child)
    t = time.perf_counter()
    proc.start()
    proc.join(limit_s)

    def stopped(reason: str) -> dict:  # the contender's row when it produced none
        shutil.rmtree(workdir, ignore_errors=True)
        return {"n": len(base), "config": "autofaiss build_index, budget = flat/8", "skipped": reason}

    if proc.is_alive():
        proc.terminate()
        proc.join()
        return stopped(f"build did not finish within {limit_s:.0f} s on one core")
    if proc.exitcode:  # killed (e.g. by the kernel's OOM killer) or crashed: say so, never drop the row
        how = f"killed by signal {-proc.exitcode}" if proc.exitcode < 0 else f"exited with status {proc.exitcode}"
        hint = " (SIGKILL: most likely out of memory)" if proc.exitcode == -9 else ""
        return stopped(f"{how}{hint} after {time.perf_counter() - t:.0f} s")
    row = json.loads(out.read_text()) if out.exists() else None
    if row is not None and "skipped" not in row:
        row["build_s"] = row.get("build_s", time.perf_counter() - t)
    return row


def bench_autofaiss(base: np.ndarray, queries: np.ndarray, truth: np.ndarray, budget: int, workdir: Path) -> dict | None:
    """autofaiss ``build_index`` on the same vectors with the same memory budget (None if not installed).

    autofaiss pins numpy<2, so it is installed without its dependencies (``pip install --no-deps
    autofaiss embedding-reader fire six``) and is never a dependency of the package.
    """
    try:
        from autofaiss import build_index
    except ImportError:
        print("# autofaiss not installed: its row is skipped", flush=True)
        return None
    import logging

    import faiss

    n, d = base.shape
    workdir.mkdir(parents=True, exist_ok=True)
    # autofaiss 2.18 builds OPQ matrices with keyword arguments (OPQMatrix(d, M=..., d2=...)) that
    # faiss >= 1.10's SWIG wrapper no longer accepts; a positional shim for the length of the call
    # keeps its own index choice intact.
    original = faiss.OPQMatrix
    faiss.OPQMatrix = lambda d_in, M=1, d2=-1: original(d_in, M, d2)  # noqa: E731
    t = time.perf_counter()
    try:
        index, infos = build_index(
            embeddings=np.ascontiguousarray(base, np.float32), index_path=str(workdir / "knn.index"),
            index_infos_path=str(workdir / "infos.json"), save_on_disk=True, metric_type="ip",
            max_index_memory_usage=f"{max(1, budget // 1024)}K", current_memory_available="8G",
            nb_cores=1, verbose=logging.INFO,  # its stage timings go to the log
        )
    except Exception as exc:  # a crash of the contender is reported as its row, not the end of the run
        print(f"# autofaiss failed: {type(exc).__name__}: {exc}", flush=True)
        return {"n": n, "config": "autofaiss build_index, budget = flat/8", "skipped": f"failed: {type(exc).__name__}"}
    finally:
        faiss.OPQMatrix = original
    build = time.perf_counter() - t
    faiss_bytes = (workdir / "knn.index").stat().st_size
    index.search(queries[:10], 10)  # warm-up
    t = time.perf_counter()
    _, ids = index.search(queries, 10)
    qps = len(queries) / (time.perf_counter() - t)
    params = {"autofaiss": (infos or {}).get("index_param", "")}
    shutil.rmtree(workdir, ignore_errors=True)
    return {
        "n": n, "config": "autofaiss build_index, budget = flat/8", "factory": (infos or {}).get("index_key", "?"),
        "recall@10": recall_at(ids, truth), "qps": qps, "build_s": build, "bytes_per_vector": faiss_bytes / n,
        "flat_fraction": faiss_bytes / (4 * d * n), "expected_recall": None, "search": params,
    }


def _global_line(r: dict) -> str:
    if "skipped" in r:
        return f"| {r['n']:,} | {r['config']} | skipped ({r['skipped']}) | | | | | | |"
    params = ", ".join(f"{k}={v}" for k, v in sorted(r["search"].items()) if v is not None)
    return (f"| {r['n']:,} | {r['config']} | `{r['factory']}` ({params}) | {r['recall@10']:.3f} | {r['qps']:.0f} | "
            f"{r['build_s']:.1f} | {r['bytes_per_vector']:.0f} | 1/{1 / r['flat_fraction']:.1f} | "
            f"{r.get('peak_rss_gib', float('nan')):.1f} |")


def global_configs(n: int, d: int, quick: bool, only: str | None = None):
    """(label, GlobalIndex.create arguments, [(label suffix, search arguments), ...])."""
    flat_bytes = 4 * d * n
    budget = {"memory_budget": flat_bytes // 8}
    configs = [
        ("exact (Flat)", {"factory": "Flat"}, [("", {})]),
        ("auto, budget = flat/8", budget, [("", {})] if quick else [("", {}), (", no re-ranking", {"rerank": 1})]),
    ]
    if not quick:
        configs.append(("IVF-Flat", {"factory": f"IVF{_pow2(4 * np.sqrt(n))},Flat"}, [("", {})]))
    configs.append(("auto, default budget (2 GiB)", {}, [("", {})]))  # HNSW up to 1M: slowest to build
    if only:  # --global-configs flat,auto8,ivfflat,default
        keys = {"flat": "exact (Flat)", "auto8": "auto, budget = flat/8", "ivfflat": "IVF-Flat",
                "default": "auto, default budget (2 GiB)"}
        by_label = {c[0]: c for c in configs}
        configs = [by_label[keys[k.strip()]] for k in only.split(",")]  # in the order given
    return configs


def _pow2(x: float) -> int:
    return int(2 ** round(np.log2(max(x, 16))))


# ---------------------------------------------------------------------------------------- patch
def bench_patch(n_images: int, grid: int, d: int, nq: int, kwargs: dict, workdir: Path, clock: Clock) -> dict:
    from tipsv2_sdk.index import PatchIndex

    p = grid * grid
    t = time.perf_counter()
    x = scenes(n_images, grid, d, seed=5)
    print(f"# patch {n_images} images x {p} patches: data {time.perf_counter() - t:.1f}s", flush=True)
    path = workdir / f"p{n_images}"
    t = time.perf_counter()
    index = PatchIndex.create(path, dim=d, grid=(grid, grid), **kwargs)
    for start in range(0, n_images, 256):
        index.add(x[start : start + 256].astype(np.float32).reshape(-1, grid, grid, d))
    index.save()
    build = time.perf_counter() - t
    rng = np.random.default_rng(9)
    picks = rng.choice(n_images, size=nq, replace=False)
    hits, lat, exact_lat = 0, [], []
    for q in picks:
        query = x[q].astype(np.float32) + 0.02 * rng.normal(size=(p, d)).astype(np.float32)
        t = time.perf_counter()
        exact = index.search_maxsim(query, k=10, exhaustive=True)
        exact_lat.append(time.perf_counter() - t)
        t = time.perf_counter()
        fast = index.search_maxsim(query, k=10)
        lat.append(time.perf_counter() - t)
        hits += len(set(exact.ids[0].tolist()) & set(fast.ids[0].tolist()))
        if clock.left() < 10:
            break
    done = len(lat)
    faiss_bytes = index_file_bytes(path, "index-*.faiss")
    stored = index_file_bytes(path, "vectors-*.npy")
    row = {
        "config": ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "auto", "images": n_images,
        "patches": index.manifest.num_vectors // n_images, "vectors": index.manifest.num_vectors, "factory": index.factory,
        "queries": done, "recall@10": hits / (10 * done), "p50_ms": 1000 * float(np.percentile(lat, 50)),
        "p95_ms": 1000 * float(np.percentile(lat, 95)), "exhaustive_p50_ms": 1000 * float(np.median(exact_lat)),
        "build_s": build, "faiss_bytes": faiss_bytes, "stored_bytes": stored,
        "faiss_bytes_per_vector": faiss_bytes / max(index.manifest.num_vectors, 1),
    }
    print(_patch_line(row), flush=True)
    shutil.rmtree(path, ignore_errors=True)
    return row


def bench_patch_regions(n_images: int, grid: int, d: int, nq: int, region: int, workdir: Path,
                        factory: str | None = None) -> dict:
    """Patch index at scale, streamed: ``scenes`` images generated and added 256 at a time (never
    the whole collection in float32), queries = a ``region`` x ``region`` window of patch tokens of
    an indexed image with noise, so that exhaustive MaxSim ground truth (one pass over the stored
    vectors for all queries) stays affordable. recall@10 counts a found image whose exact MaxSim
    is within 1e-3 of the true 10th best as found (ties)."""
    from tipsv2_sdk.index import PatchIndex
    from tipsv2_sdk.index.maxsim import maxsim_exhaustive_many
    from tipsv2_sdk.index.synthetic import patch_collection

    coll = patch_collection("scenes", n_images, grid, d, seed=5)
    path = workdir / f"pr{n_images}"
    t = time.perf_counter()
    index = PatchIndex.create(path, dim=d, grid=(grid, grid), factory=factory)
    for start in range(0, n_images, 256):
        index.add(coll.make(start, start + 256))
    index.save()
    build = time.perf_counter() - t
    print(f"# patch {n_images} x {grid}x{grid} at d={d}: built in {build:.0f}s, `{index.factory}`, "
          f"{index.manifest.search_params}; peak RSS {peak_rss_gib():.1f} GiB", flush=True)
    rng = np.random.default_rng(9)
    queries = []
    for q in rng.choice(n_images, size=nq, replace=False).tolist():
        r0, c0 = rng.integers(0, grid - region + 1, size=2)
        win = coll.make(q, q + 1)[0, r0 : r0 + region, c0 : c0 + region].reshape(-1, d)
        win = win + 0.02 * rng.normal(size=win.shape).astype(np.float32)
        queries.append((win / np.linalg.norm(win, axis=1, keepdims=True)).astype(np.float32))
    t = time.perf_counter()
    truth_s, truth_i = maxsim_exhaustive_many(queries, index.store.iter_sorted(index._block()), 10)
    exhaustive_s = time.perf_counter() - t
    lat, hits = [], []
    for q, ts, ti in zip(queries, truth_s, truth_i):
        t = time.perf_counter()
        res = index.search_maxsim(q, k=10)
        lat.append(time.perf_counter() - t)
        found = res.ids[0].tolist()
        got = sum(1 for i, sc in zip(found, res.scores[0].tolist()) if i in set(ti.tolist()) or sc >= ts[-1] - 1e-3)
        hits.append(min(got, 10) / 10)
    n_vec = index.manifest.num_vectors
    row = {
        "images": n_images, "patches": grid * grid, "vectors": n_vec, "factory": index.factory, "d": d,
        "region": region, "queries": nq, "recall@10": float(np.mean(hits)),
        "p50_ms": 1000 * float(np.percentile(lat, 50)), "p95_ms": 1000 * float(np.percentile(lat, 95)),
        "exhaustive_ms": 1000 * exhaustive_s / nq, "build_s": build,
        "faiss_bytes_per_vector": (index_file_bytes(path, "index-*.faiss") + index_file_bytes(path, "pooled-*")) / n_vec,
        "stored_bytes_per_vector": index_file_bytes(path, "vectors-*.npy") / n_vec, "peak_rss_gib": peak_rss_gib(),
        "search": dict(index.manifest.search_params),
    }
    print(f"| {n_images:,} x {grid}x{grid} = {n_vec:,} (d={d}) | `{index.factory}` | {region}x{region} region + noise | "
          f"{nq} | {row['recall@10']:.3f} | {row['p50_ms']:.0f} / {row['p95_ms']:.0f} | {row['exhaustive_ms']:.0f} | "
          f"{build:.0f} | {row['faiss_bytes_per_vector']:.0f} | {row['stored_bytes_per_vector']:.0f} | "
          f"{row['peak_rss_gib']:.1f} |", flush=True)
    shutil.rmtree(path, ignore_errors=True)
    return row


def _patch_line(r: dict) -> str:
    return (f"| {r['images']:,} x {r['patches']} = {r['vectors']:,} ({r['config']}) | `{r['factory']}` | "
            f"{r['queries']} | "
            f"{r['recall@10']:.3f} | {r['p50_ms']:.0f} / {r['p95_ms']:.0f} | {r['exhaustive_p50_ms']:.0f} | "
            f"{r['build_s']:.1f} | {r['faiss_bytes'] / 2**20:.1f} MiB ({r['faiss_bytes_per_vector']:.0f} B/vec) | "
            f"{r['stored_bytes'] / 2**20:.0f} MiB |")


# ---------------------------------------------------------------------------------------- main
def machine() -> str:
    import faiss

    from machine_info import cpu_name

    cpu = cpu_name()
    return (f"{cpu}, {os.cpu_count()} logical CPUs; Python {platform.python_version()}, "
            f"faiss {faiss.__version__}, numpy {np.__version__}")


def main() -> None:
    global AUTOFAISS_LIMIT_S
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes; finishes in under a minute")
    parser.add_argument("--global-sizes", default=None, help="comma-separated collection sizes")
    parser.add_argument("--queries", type=int, default=None)
    parser.add_argument("--patch-images", type=int, default=None)
    parser.add_argument("--patch-grid", type=int, default=None, help="patches per side (32 = 448 px at /14)")
    parser.add_argument("--patch-queries", type=int, default=None)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--time-cap", type=float, default=None, help="seconds for the whole run")
    parser.add_argument("--global-configs", default=None, help="subset of flat,auto8,ivfflat,default")
    parser.add_argument("--autofaiss-limit", type=float, default=1800.0, help="seconds (0: skip autofaiss)")
    parser.add_argument("--skip-patch", action="store_true")
    parser.add_argument("--patch-regions", default=None,
                        help="images,grid,dim,region[,queries]: only the streamed patch-at-scale run with region queries")
    parser.add_argument("--patch-factory", default=None, help="FAISS factory for --patch-regions (default: automatic)")
    parser.add_argument("--threads", type=int, default=1, help="FAISS threads (1: fair on a shared machine)")
    args = parser.parse_args()
    import faiss

    faiss.omp_set_num_threads(args.threads)
    AUTOFAISS_LIMIT_S = args.autofaiss_limit
    quick = args.quick
    sizes = [int(s) for s in (args.global_sizes or ("20000" if quick else "100000,1000000")).split(",")]
    nq = args.queries or (100 if quick else 1000)
    clock = Clock(args.time_cap or (50 if quick else 900))
    print(f"machine: {machine()}; FAISS threads: {args.threads}")
    workdir = Path(tempfile.mkdtemp(prefix="tipsv2-index-bench-"))
    if args.patch_regions:
        spec = [int(v) for v in args.patch_regions.split(",")]
        print("\n| images x grid = vectors | FAISS index | query | queries | recall@10 (two-stage vs exhaustive) | "
              "p50 / p95 ms | exhaustive ms/query | build s | FAISS B/vec | stored B/vec | peak RSS GiB |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        try:
            bench_patch_regions(spec[0], spec[1], spec[2], spec[4] if len(spec) > 4 else 20, spec[3], workdir,
                                args.patch_factory)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        print(f"\ntotal {time.perf_counter() - clock.start:.0f}s")
        return
    try:
        # The first global size, then the patch index, then the larger sizes: under a time cap
        # the most informative rows come first.
        images = args.patch_images or (300 if quick else 2000)
        grid = args.patch_grid or (8 if quick else 16)
        header = ("\n| vectors | configuration | FAISS index (search params) | recall@10 | QPS | build s | "
                  "bytes/vector | of flat | peak RSS GiB |\n|---|---|---|---|---|---|---|---|---|")
        print(header)
        bench_global(sizes[0], nq, args.dim, global_configs(sizes[0], args.dim, quick, args.global_configs), workdir, clock)
        print("\n| images x patches = vectors | FAISS index | queries | recall@10 (two-stage vs exhaustive) | "
              "p50 / p95 ms | exhaustive p50 ms | build s | FAISS memory | stored fp16 |")
        print("|---|---|---|---|---|---|---|---|---|")
        for kwargs in () if args.skip_patch else ({}, {"pooling": 2}):
            if clock.left() < 20:
                print(f"| {kwargs or 'auto'}: skipped (time cap) |")
                continue
            bench_patch(images, grid, args.dim, args.patch_queries or (10 if quick else 30), kwargs, workdir, clock)
        if sizes[1:]:
            print(header)
        for n in sizes[1:]:
            bench_global(n, nq, args.dim, global_configs(n, args.dim, quick, args.global_configs), workdir, clock)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\ntotal {time.perf_counter() - clock.start:.0f}s")


if __name__ == "__main__":
    main()
