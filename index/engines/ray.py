"""The Ray engine: Ray Data reads the chunks' inputs, an actor pool embeds them.

The job's chunks become a Ray dataset (one row and one block per chunk). A ``map_batches`` stage
of Ray tasks reads each chunk's records (``sources.read_chunk``: tar members, parquet cells; file
paths pass through and are decoded by the actor's threads). A second ``map_batches`` stage runs
on a ``ray.data.ActorPoolStrategy`` pool: each actor loads the model once (one GPU per actor
when the cluster has GPUs), embeds whole chunks with ``chunks.embed_inputs`` (the local engine's
function, so batches and bytes are the same) and writes them to the work area. The driver only
commits finished chunks to the journal, in order.

A task that fails (an actor process dies, a node is lost) is retried by Ray. A chunk's files are
named by its number and written atomically, so a retried chunk replaces its own files and can
never add or drop rows. The work area must be on storage every node can write (as the inputs
must be readable from every node).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from tipsv2_sdk.errors import TipsV2Error

from .chunks import ChunkJob, ChunkSpec, OnDone, embed_inputs

# Fault injection for tests and drills: when set to a folder, an actor exits hard right after
# writing chunk N if the file ``crash-after-chunk-N`` exists there (deleting it first, so the
# crash happens once and the retried task succeeds).
FAULT_ENV = "TIPSV2_RAY_FAULT_DIR"
RETRIES = 3  # restarts per actor and retries per chunk: enough for lost workers, finite for a chunk
# that kills its actor every time


class EngineError(TipsV2Error, RuntimeError):
    """The Ray engine cannot run (Ray missing, cluster unreachable, a worker failing for good)."""


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data is the [data] part of ray
    except ImportError:
        raise EngineError("--engine ray needs Ray Data: pip install 'tipsv2-sdk[ray]'") from None
    return ray


@contextlib.contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[Any]:
    """Use the running Ray (tests, ``ray job submit``), connect to ``address``, or start a local one
    with this machine's cores; a Ray started here is shut down on exit."""
    ray = _ray()
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
        try:
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=num_cpus or os.cpu_count() or 1, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {address!r}" if address else "a local Ray"
            raise EngineError(f"could not start or reach {where}: {exc}") from None
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def _injected_crash(chunk: int) -> None:
    folder = os.environ.get(FAULT_ENV)
    if not folder:
        return
    try:
        os.unlink(os.path.join(folder, f"crash-after-chunk-{chunk}"))  # claim it: crash once
    except FileNotFoundError:
        return
    os._exit(1)


def read_stage(batch: dict[str, np.ndarray], sources: dict[str, Any]) -> dict[str, np.ndarray]:
    """Ray Data task: read the records of each chunk row into one binary payload."""
    from ..sources import SourceOptions, read_chunk

    options = SourceOptions.from_dict(sources)
    payloads = [read_chunk(json.loads(str(job))["records"], options).to_bytes() for job in batch["job"]]
    return {"chunk": np.asarray(batch["chunk"], dtype=np.int64), "job": batch["job"],
            "payload": np.array(payloads, dtype=object)}


class ChunkEmbedder:
    """Ray actor: one model, reused for every chunk the pool hands it."""

    def __init__(self, model_ref: str, identity: dict[str, str | None], spec: dict[str, Any], work_dir: str,
                 device: str, threads: int):
        import torch

        from tipsv2_sdk.cli.common import load_model

        from ..journal import WorkArea

        torch.set_num_threads(max(1, threads))
        if device == "auto":
            import ray

            device = "cuda" if ray.get_gpu_ids() else "cpu"
        self.model = load_model(model_ref, device=device)
        found = model_identity(self.model)
        for key, expected in identity.items():
            if expected is not None and found.get(key) != expected:
                raise EngineError(f"the model {model_ref!r} loaded on a Ray worker has {key} {found.get(key)} "
                                  f"but the driver's has {expected}; every node must see the same model")
        self.spec = ChunkSpec.from_dict(spec)
        self.work = WorkArea(work_dir)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ..sources import ChunkInputs

        chunks, images = [], []
        for chunk, job, payload in zip(batch["chunk"], batch["job"], batch["payload"]):
            ids = json.loads(str(job))["ids"]
            arrays, skipped = embed_inputs(self.model, ChunkInputs.from_bytes(payload), ids, self.spec)
            self.work.write_chunk(int(chunk), arrays, skipped)
            _injected_crash(int(chunk))
            chunks.append(int(chunk))
            images.append(len(ids))
        return {"chunk": np.asarray(chunks, dtype=np.int64), "images": np.asarray(images, dtype=np.int64)}


def model_identity(model) -> dict[str, str | None]:
    """What must agree between the driver's model and each worker's: config and (when known) weights."""
    from ..manifest import config_hash

    return {"config_hash": config_hash(model), "weights_fingerprint": getattr(model, "weights_fingerprint", None)}


class RayEngine:
    """Embed a job's chunks on a Ray cluster (see the module docstring)."""

    name = "ray"

    def __init__(self, model, model_ref: str | None, *, address: str | None = None, actors: int | None = None,
                 device: str = "auto", progress: bool = False):
        if not model_ref:
            raise EngineError("the Ray engine loads the model on every worker: give it by registry name or "
                              "directory (model_ref), not only as a Python object")
        if actors is not None and actors < 1:
            raise EngineError(f"--ray-actors must be >= 1, not {actors}")
        self.model_ref, self.identity = model_ref, model_identity(model)
        self.address, self.actors, self.device, self.progress = address, actors, device, progress

    def _pool(self, ray) -> tuple[int, dict[str, float]]:
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
        if gpus and self.device in ("auto", "cuda"):
            return self.actors or gpus, {"num_gpus": 1, "num_cpus": 1}
        # One CPU is left to the read tasks, so they can never be starved by the actors.
        actors = self.actors or max(1, cpus - 1)
        return actors, {"num_gpus": 0, "num_cpus": max(1, (cpus - 1) // actors) if cpus > 1 else 1}

    def run(self, job: ChunkJob, on_done: OnDone) -> None:
        """Run every chunk of ``job``; ``on_done(chunk, images)`` is called as each one is written."""
        if not job.chunks:
            return
        with ray_session(self.address) as ray:
            ray.data.DataContext.get_current().enable_progress_bars = self.progress
            actors, resources = self._pool(ray)
            device = self.device if not resources["num_gpus"] else "auto"
            rows = [{"chunk": c, "job": json.dumps({"ids": ids, "records": records})} for c, ids, records in job.chunks]
            env = {FAULT_ENV: os.environ[FAULT_ENV]} if os.environ.get(FAULT_ENV) else None
            data = ray.data.from_items(rows, override_num_blocks=len(rows))
            data = data.map_batches(read_stage, batch_size=1, batch_format="numpy", num_cpus=1,
                                    fn_kwargs={"sources": job.sources.to_dict()})
            with warnings.catch_warnings():
                # Ray Data's own default is to restart actors and retry their tasks forever; a finite
                # budget needs the (deprecated but still the only) remote-args route.
                warnings.simplefilter("ignore", DeprecationWarning)
                data = data.map_batches(
                    ChunkEmbedder, batch_size=1, batch_format="numpy",
                    compute=ray.data.ActorPoolStrategy(size=min(actors, len(rows))),
                    fn_constructor_kwargs=dict(model_ref=self.model_ref, identity=self.identity,
                                               spec=job.spec.to_dict(), work_dir=os.path.abspath(job.work_dir),
                                               device=device, threads=int(resources["num_cpus"])),
                    runtime_env={"env_vars": env} if env else None,
                    max_restarts=RETRIES, max_task_retries=RETRIES, **resources)
            try:
                for row in data.iter_rows():
                    on_done(int(row["chunk"]), int(row["images"]))
            except ray.exceptions.RayError as exc:
                cause = getattr(exc, "cause", None) or exc
                if isinstance(cause, TipsV2Error):
                    raise cause from None
                raise EngineError(f"the Ray job failed: {type(cause).__name__}: {cause}".splitlines()[0]) from None


__all__ = ["ChunkEmbedder", "EngineError", "FAULT_ENV", "RayEngine", "ray_session", "read_stage"]
