"""`--ray`: score shards on a Ray cluster with Ray Data, one scorer actor per GPU.

The dataset is the list of shards (one row each); `map_batches` sends them, one at a time, to a
pool of stateful actors (`ActorPoolStrategy`, one GPU each), each of which loads the model once and
runs `runtime.data.shard_output.process_shard` on the shards it is given: the same reader, scoring
stream and atomic per-shard writers as a single process, so the outputs are the same files with the
same rows. The driver holds the output folder's lock (`runtime.lock`) for the whole job.
Shards, not pairs, are the unit handed out: a shard's verdicts are written once it is complete
(what makes resume and the atomic writes possible), a damaged shard is reported instead of failing
the job (Ray's own `read_webdataset` raises on a truncated tar), and an idle actor takes the next
shard, so every GPU stays busy while shards remain (use at least as many shards as GPUs).
Progress is aggregated on the driver: one bar of pairs, advanced by a shard's pairs when it
finishes (the actors' own progress within a shard is not shown), and a line per finished shard.
Each shard is one `score_stream` call, so `--workers` processes start once per shard in an actor
(seconds): worth it for img2dataset-sized shards (10,000 pairs), not for tiny ones.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict
from pathlib import Path

from runtime.data import progress
from runtime.data.records import Shard
from runtime.data.run import RunOptions
from runtime.data.shard_output import ShardOutput, ShardResult, process_shard, shards_total
from runtime.errors import InputError
from runtime.lock import output_lock
from runtime.launch.model import ScorerSpec, cached_loader


class ShardScorer:
    """A Ray Data actor: loads the scorer once, then processes one shard per batch row."""

    def __init__(self, spec: ScorerSpec, opts: RunOptions, fingerprint: str):
        self.get_scorer = cached_loader(spec)
        self.opts, self.fingerprint = opts, fingerprint

    def __call__(self, batch: dict) -> dict:
        results = []
        for path, fmt, meta in zip(batch["path"], batch["format"], batch["meta"]):
            shard = Shard(Path(path), str(fmt), Path(meta) if meta else None)
            results.append(process_shard(self.get_scorer, shard, self.opts, self.fingerprint))
        return {k: [asdict(r)[k] for r in results] for k in asdict(ShardResult("")).keys()}


def ray_module():
    """The `ray` module, or a one-line InputError saying how to install it."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise InputError("--ray needs Ray: pip install 'aitqe-edge[ray]'") from None
    return ray


def run_ray(spec: ScorerSpec, shards: list[Shard], output: ShardOutput, *,
            actors: int | None = None, address: str | None = None) -> int:
    """Score `shards` into `output` on the Ray cluster at `address` (default: RAY_ADDRESS, else a new
    local one) with `actors` scorer actors (default: one per GPU of the cluster); the exit code."""
    ray = ray_module()
    with output_lock(output.path, output.share):
        return _run(ray, spec, shards, output, actors, address)


def _run(ray, spec: ScorerSpec, shards: list[Shard], output: ShardOutput, actors: int | None,
         address: str | None) -> int:
    import numpy as np

    opts, fingerprint = output.opts, output.fingerprint
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        # A new local cluster's workers import this same code (not another installed copy).
        root = str(Path(__file__).resolve().parents[2])
        env = None if address else {"env_vars": {"PYTHONPATH": os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH")) if p)}}
        ray.init(address=address, runtime_env=env, log_to_driver=False, include_dashboard=False)
    on_gpu = spec.device != "cpu" and ray.cluster_resources().get("GPU", 0) > 0
    if actors is None:
        actors = int(ray.cluster_resources().get("GPU", 0)) if on_gpu else 1
    if actors < 1:
        raise InputError("--ray: the cluster has no GPU; pass --num-gpus N with --device cpu for N CPU actors")
    cpus = ray.cluster_resources().get("CPU", 1)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # ours instead: pairs, as a single process shows them
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its plan and "progress bars disabled" lines too
    items = [{"path": str(s.path), "format": s.format, "meta": str(s.meta) if s.meta else ""} for s in shards]
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items))).map_batches(
        ShardScorer, fn_constructor_kwargs={"spec": spec, "opts": opts, "fingerprint": fingerprint},
        compute=ray.data.ActorPoolStrategy(size=actors), batch_size=1, batch_format="numpy",
        num_gpus=1 if on_gpu else 0, num_cpus=1 if on_gpu else max(0.25, min(1.0, cpus / (actors + 1))))
    progress.say_demo(opts)
    bar = progress.bar(shards_total(shards), opts.quiet)
    try:
        for row in ds.iter_rows():  # as each shard finishes, on whichever actor
            result = ShardResult(**{k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()})
            bar.update(result.rows)
            output.add(result)
    finally:
        bar.close()
    return output.finish()
