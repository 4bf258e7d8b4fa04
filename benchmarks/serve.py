"""Load test of ``tipsv2 serve``: latency percentiles and throughput under concurrent clients.

One ``tipsv2 serve`` process (the embedded ``tipsv2-tiny`` model, OMP_NUM_THREADS=1 per request,
``--workers`` threads) over an index of generated images (global + patch). Client threads on
loopback, each with its own keep-alive connection, send back-to-back requests for a fixed time per
cell, for three workloads:

* **text** — ``POST /v1/search`` text → images;
* **region** — ``POST /v1/search`` with an uploaded image, a box on it and ``regions`` (box → regions);
* **knn-service** — ``POST /knn-service`` as clip-retrieval's ``ClipClient`` posts it (text, 10 results).

Every cell runs twice: on the idle index, then while ``tipsv2 index add`` runs against the served
index over and over (each add publishes a new generation the server switches to without restart).
Any non-200 answer or broken connection counts as an error. The table goes to stdout (and with
``--write-docs`` into docs/serve.md between the markers).

    nice -n 5 python benchmarks/serve.py                 # the table in docs/serve.md (~5 min on 2 cores)
    nice -n 5 python benchmarks/serve.py --write-docs    # ... and write it there
    python benchmarks/serve.py --quick                   # a 1-minute smoke run
"""
from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parents[1] / "docs" / "serve.md"
START, END = "<!-- serve-benchmark:start -->", "<!-- serve-benchmark:end -->"
TEXTS = ["a red circle", "two blue squares", "a green triangle", "a yellow square and a circle",
         "a purple shape on the left", "three small objects", "an orange circle at the top", "a photo"]


def machine() -> str:
    from machine_info import cpu_name

    cpu = cpu_name()
    return f"{cpu}, {os.cpu_count()} logical CPUs (shared with other work); Python {platform.python_version()}"


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "tipsv2_sdk.cli.app", *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(root: Path, images: int, batches: int, per_batch: int) -> tuple[Path, list[Path]]:
    """Render the images, build the served index; render the folders later ``add`` runs index."""
    from tipsv2_sdk.index.samples import render_samples

    render_samples(root / "images", count=images)
    extra = []
    for n in range(batches):
        render_samples(root / f"extra{n}", count=per_batch, seed=100 + n)
        extra.append(root / f"extra{n}")
    index = root / "served"
    subprocess.run(cli("index", "build", str(root / "images"), str(index), "--model", "tipsv2-tiny", "--patches",
                       "-q"), check=True, env=one_thread())
    return index, extra


def one_thread() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"tipsv2 serve exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/indices-list")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit("tipsv2 serve did not come up")


def workloads(index_name: str, query_images: list[Path]) -> dict[str, tuple[str, list[bytes]]]:
    """Per workload: the path and a list of request bodies cycled through."""
    encoded = [base64.b64encode(p.read_bytes()).decode() for p in query_images]
    boxes = [[8, 8, 60, 60], [40, 30, 100, 90], [0, 50, 56, 112]]
    text = [json.dumps({"index": index_name, "text": t, "k": 10}).encode() for t in TEXTS]
    region = [json.dumps({"index": index_name, "image": e, "box": b, "regions": True, "k": 10}).encode()
              for e in encoded for b in boxes]
    knn = [json.dumps({"text": t, "image": None, "image_url": None, "embedding_input": None, "deduplicate": True,
                       "use_safety_model": True, "use_violence_detector": True, "indice_name": index_name,
                       "use_mclip": False, "aesthetic_score": 9, "aesthetic_weight": 0.5, "modality": "image",
                       "num_images": 10, "num_result_ids": 10}).encode() for t in TEXTS]
    return {"text": ("/v1/search", text), "region": ("/v1/search", region), "knn-service": ("/knn-service", knn)}


def client(port: int, path: str, bodies: list[bytes], seed: int, until: float, out: dict) -> None:
    """Back-to-back requests until ``until``; latencies (s) of 200 answers, errors, generations seen."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    n = seed
    while time.monotonic() < until:
        body = bodies[n % len(bodies)]
        n += 1
        start = time.perf_counter()
        try:
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            elapsed = time.perf_counter() - start
            if resp.status != 200:
                out["errors"] += 1
                out["messages"].add(f"{resp.status} {data[:200]!r}")
                continue
            out["latencies"].append(elapsed)
            if path == "/v1/search":
                out["generations"].add(json.loads(data)["generation"])
        except (OSError, http.client.HTTPException) as exc:
            out["errors"] += 1
            out["messages"].add(type(exc).__name__)
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.close()


def cell(port: int, path: str, bodies: list[bytes], clients: int, seconds: float) -> dict:
    out = {"latencies": [], "errors": 0, "messages": set(), "generations": set()}
    until = time.monotonic() + seconds
    threads = [threading.Thread(target=client, args=(port, path, bodies, 7919 * i, until, out)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    lat = np.asarray(out["latencies"]) * 1000
    p50, p95, p99 = np.percentile(lat, [50, 95, 99]) if len(lat) else (float("nan"),) * 3
    return {"requests": len(lat) + out["errors"], "errors": out["errors"], "qps": len(lat) / wall, "p50": p50,
            "p95": p95, "p99": p99, "messages": sorted(out["messages"]), "generations": out["generations"]}


class Adder:
    """``tipsv2 index add`` of one folder after another into the served index, until stopped."""

    def __init__(self, index: Path, folders: list[Path]):
        self.index, self.folders = index, folders
        self.done, self.failed, self.stop = 0, [], threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self):
        for folder in self.folders:
            if self.stop.is_set():
                return
            res = subprocess.run(cli("index", "add", str(self.index), str(folder), "-q"), capture_output=True,
                                 text=True, env=one_thread())
            if res.returncode == 0:
                self.done += 1
            else:
                self.failed.append(res.stderr.strip().splitlines()[-1:] or [str(res.returncode)])

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def table(rows: list[dict], header: str) -> str:
    lines = [header, "",
             "| workload | clients | while `index add` runs | requests | errors | QPS | p50 ms | p95 ms | p99 ms | p95 / p50 |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['workload']} | {r['clients']} | {'yes' if r['adding'] else 'no'} | {r['requests']} | "
                     f"{r['errors']} | {r['qps']:.1f} | {r['p50']:.0f} | {r['p95']:.0f} | {r['p99']:.0f} | "
                     f"{r['p95'] / r['p50']:.2f} |")
    return "\n".join(lines)


def write_docs(text: str) -> None:
    doc = DOCS.read_text(encoding="utf-8")
    if START not in doc or END not in doc:
        raise SystemExit(f"{DOCS} has no {START} ... {END} markers")
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    from tipsv2_sdk.io import atomic_write

    with atomic_write(DOCS, "w") as fh:
        fh.write(f"{head}{START}\n{text}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="images in the served index")
    parser.add_argument("--clients", default="1,4,8", help="concurrent client threads per cell")
    parser.add_argument("--seconds", type=float, default=7.0, help="duration of each cell")
    parser.add_argument("--workers", type=int, default=4, help="tipsv2 serve --workers")
    parser.add_argument("--write-docs", action="store_true", help="write the table into docs/serve.md")
    parser.add_argument("--quick", action="store_true", help="60 images, 1 and 4 clients, 3 s cells")
    args = parser.parse_args()
    if args.quick:
        args.images, args.clients, args.seconds = 60, "1,4", 3.0
    levels = [int(c) for c in args.clients.split(",")]
    header = f"machine: {machine()}"
    print(header, flush=True)
    with tempfile.TemporaryDirectory(prefix="tipsv2-serve-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        index, extra = prepare(root, args.images, batches=12, per_batch=30)
        print(f"built {args.images} images in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        port = free_port()
        server = subprocess.Popen(cli("serve", str(index), "--port", str(port), "--workers", str(args.workers),
                                      "-m", "tipsv2-tiny"), env=one_thread())
        rows = []
        try:
            wait_ready(port, server)
            loads = workloads(index.name, sorted((root / "images").glob("*.png"))[:4])
            for name, (path, bodies) in loads.items():  # warm-up: first calls load tokenizers, caches
                cell(port, path, bodies, 1, 1.0)
            first_gen = cell(port, *loads["text"], 1, 0.5)["generations"]
            for adding in (False, True):
                adder = Adder(index, extra) if adding else None
                if adder:
                    adder.__enter__()
                    time.sleep(1.0)  # let the first add start writing
                try:
                    for name, (path, bodies) in loads.items():
                        for clients in levels:
                            r = cell(port, path, bodies, clients, args.seconds)
                            rows.append({"workload": name, "clients": clients, "adding": adding, **r})
                            print(f"{name:12s} clients={clients} adding={adding} {r['qps']:.1f} q/s "
                                  f"p50={r['p50']:.0f} p95={r['p95']:.0f} ms errors={r['errors']} {r['messages'][:2]}",
                                  file=sys.stderr, flush=True)
                finally:
                    if adder:
                        adder.__exit__()
            last_gen = cell(port, *loads["text"], 1, 0.5)["generations"]
        finally:
            server.terminate()
            server.wait(30)
    errors = sum(r["errors"] for r in rows)
    worst = max(r["p95"] / r["p50"] for r in rows)
    seen = sorted(set().union(*(r["generations"] for r in rows if r["adding"])))
    summary = (f"{sum(r['requests'] for r in rows)} requests, {errors} errors; worst p95 / p50 {worst:.2f}; "
               f"{args.images} images, `--workers {args.workers}`, {args.seconds:.0f} s per cell; "
               f"{adder.done} `index add` runs of 30 images completed during the second half "
               f"({len(adder.failed)} failed), the server answered from generations {seen[0] if seen else '-'}–"
               f"{seen[-1] if seen else '-'} meanwhile (generation {min(first_gen)} before, {max(last_gen)} after)")
    text = table(rows, header) + "\n\n" + summary + "\n\nCommand: `nice -n 5 python benchmarks/serve.py --write-docs`"
    print(text)
    if args.write_docs:
        write_docs(text)


if __name__ == "__main__":
    main()
