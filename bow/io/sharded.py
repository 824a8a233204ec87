"""Embed a clip list into a store shard by shard: resumable, and the unit of parallel work.

The clips are cut into shards of ``shard_size`` in dataset order. Each finished shard is an
HDF5 file under ``.<store>.shards-<fingerprint>/`` (written atomically), so a run killed at any
point redoes at most the shards in flight; the shards are then merged, in order, into the store
and deleted. Since the shard contents depend only on the clips and the config, the merged store
is the same, byte for byte, whether the shards were computed at once, across restarts (a run
killed with SIGKILL and started again), or on several workers. The caller holds the store's
lock (``bow.io.store.lock_dir``) for the whole call: shard folders and temporary files of this
store left by killed runs (of any configuration) are then deleted once the store is complete
(``remove_leftovers``).

Where shards run:
* ``jobs=1``: in this process;
* ``jobs=N``: N local worker processes (joblib's loky backend). If a worker process dies
  (killed, out of memory), the shards not finished yet run once more in a fresh pool; a second
  death ends the run with ``WorkerLostError``;
* ``scheduler="tcp://host:8786"``: the workers of a Dask cluster (dask.distributed), which must
  see the same filesystem: each writes its shards beside the final store, and this process
  merges them. ``scheduler="local:N"`` starts a LocalCluster of N single-thread workers. A
  worker process that dies is restarted by its nanny and the scheduler runs its shards again;
  a shard whose workers died more often than ``distributed.scheduler.allowed-failures`` ends
  the run with ``WorkerLostError``.
``WorkerLostError`` is a ``StoreError``: the command line shows it as one line saying how many
shards finished; they are kept, so running the command again resumes from them.
``embed_shard`` must be picklable for the last two (e.g. an object holding file paths that loads
its models on first use in each worker).

Threads: every shard computes with torch on one thread (``bow.runtime.one_thread``, whatever
thread count the process or the command line set), the serial path included, so the parallelism
is across processes: ``--jobs`` or Dask workers. Its cost, measured with ``python -m
benchmarks.embed_speed`` (first ESC-10 clips, end to end; the code before this rule and after
it in alternating runs, two rounds; shared 2-core machine at load 6-11 from other jobs), audio-s
per second, J x T = J processes started with T torch threads:

  default bag of words, 400 clips   before: 1x1 154 / 142, 1x2 49 / 52, 2x1 104 / 78
                                    after:  1x1 193 / 156, 1x2 187 / 139, 2x1 82 / 89
  paper's MLP encoders, 200 clips   before: 1x1 16.4 / 22.3, 1x2 17.0 / 10.3, 2x1 21.6 / 14.2
                                    after:  1x1 26.5 / 20.2, 1x2 25.7 / 18.8, 2x1 17.2 / 14.2

Before, one process of two threads was ~3x slower than one thread with the default model and no
faster with the paper's; now it computes as one thread does. On a machine with idle cores use
``--jobs`` (each worker process holds torch and the models: ~1 GB).

What is guaranteed (issues 17 and 23; tests/system/test_faults.py, test_crash_safety.py,
test_scale.py, test_threads.py): a shard's file depends only on its clips, the models and the
config, so the merged store has the same bytes however often a shard was started (a worker or
the submitting process killed and the run started again, a shard computed twice by Dask),
wherever it ran and whatever thread count the process had, provided every process computes
alike: the same library builds (torch, its BLAS, h5py's zlib) on the same kind of CPU. A
token's code and code ids do not depend on the batch or faiss's search path
(bow.bagofwords.encoder, bow.bagofwords.nearest). The kernel thread count is part of the
store's fingerprint and config (``kernel_threads``). Not covered: workers on another CPU kind
or with other library builds (their kernels may round differently, and a token at a near tie
between two codes could move), and GPU or reduced ``precision`` runs.
"""
from __future__ import annotations

import contextlib
import dataclasses
import shutil
from pathlib import Path
from typing import Callable

from bow import __version__
from bow.data.clips import clips_fingerprint
from bow.data.datasets import Clip, Dataset, load_dataset
from bow.io.stage import file_digest, locked, remove_temporaries, stage_fingerprint
from bow.io.store import ClipFeatures, StoreError, lock_dir, merge, store_fingerprint, write_shard
from bow.progress import progress as progress_bar
from bow.runtime import KERNEL_THREADS, one_thread

EmbedShard = Callable[[list[Clip]], tuple[list[ClipFeatures], list[tuple[str, str]]]]


class WorkerLostError(StoreError):
    """Worker processes died while computing shards (killed, out of memory) more often than a
    run retries; the finished shards are kept, so running the command again resumes."""


def _lost(what: str, todo) -> WorkerLostError:
    done = sum(path.exists() for _, path in todo)
    return WorkerLostError(f"{what}; {done} of {len(todo)} shards finished and are kept: run "
                           "the command again to resume")


def shard_dir(out_path: Path, fingerprint: str) -> Path:
    return out_path.parent / f".{out_path.name}.shards-{fingerprint[:16]}"


def remove_leftovers(out_path: str | Path) -> None:
    """Delete the shard folders and temporary files that runs on ``out_path`` left behind.

    Call while holding the store's lock, once the store is complete."""
    out_path = Path(out_path)
    for d in out_path.parent.glob(f".{out_path.name}.shards-*"):
        shutil.rmtree(d, ignore_errors=True)
    remove_temporaries(out_path.parent, out_path.name)


def split_shards(clips: list[Clip], shard_size: int) -> list[list[Clip]]:
    return [clips[i:i + shard_size] for i in range(0, len(clips), shard_size)]


def run_shard(embed_shard: EmbedShard, clips: list[Clip], path: Path) -> int:
    """Compute one shard unless its file already exists; return its number of clips.

    The shard computes with torch on one thread in the calling thread (Dask and joblib run
    shards in threads of their own), threads it starts included (bow.audio.readahead's decoders
    take torch's count when they start), whatever the process set (module docstring)."""
    if not path.exists():
        with one_thread():
            items, skipped = embed_shard(clips)
        write_shard(path, items, skipped)
    return len(clips)


def _run_all(embed_shard, todo, jobs, scheduler):
    """Yield the clip count of each shard in ``todo`` [(clips, path)] as it finishes."""
    if scheduler:
        yield from _run_dask(embed_shard, todo, scheduler)
    elif jobs > 1:
        yield from _run_jobs(embed_shard, todo, jobs)
    else:
        for group, path in todo:
            yield run_shard(embed_shard, group, path)


def _run_dask(embed_shard, todo, scheduler):
    from dask.distributed import Client, KilledWorker, LocalCluster, as_completed
    if scheduler.startswith("local:"):
        cluster = LocalCluster(n_workers=int(scheduler[6:]), threads_per_worker=1,
                               processes=True, dashboard_address=None)
        client = Client(cluster)
    else:
        cluster, client = None, Client(scheduler)
    try:
        futures = {client.submit(run_shard, embed_shard, group, path, pure=False): path
                   for group, path in todo}
        try:
            for future in as_completed(futures):
                yield future.result()
        except KilledWorker as e:     # the scheduler reruns a dead worker's shards, up to a limit
            name = {f.key: p.name for f, p in futures.items()}.get(e.task, "a shard")
            worker = getattr(e.last_worker, "address", e.last_worker)
            deaths = e.allowed_failures + 1
            raise _lost(f"Dask workers computing {name} died {deaths} time"
                        f"{'s' if deaths > 1 else ''} (more than "
                        f"distributed.scheduler.allowed-failures = {e.allowed_failures}; the "
                        f"last was {worker}: see its log)", todo) from None
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _run_jobs(embed_shard, todo, jobs):
    from joblib import Parallel, delayed
    from joblib.externals.loky.process_executor import TerminatedWorkerError
    counted = set()
    for attempt in range(2):            # a worker died: the rest once more, in a fresh pool
        left = [(group, path) for group, path in todo if not path.exists()]
        try:
            for n, path in Parallel(n_jobs=jobs, return_as="generator_unordered")(
                    delayed(_counted)(embed_shard, group, path) for group, path in left):
                counted.add(path)
                yield n
            return
        except TerminatedWorkerError:
            for group, path in todo:    # finished in the dead pool, but not reported
                if path.exists() and path not in counted:
                    counted.add(path)
                    yield len(group)
            if attempt:
                raise _lost("a worker process died twice (killed, or out of memory?)",
                            todo) from None


def _counted(embed_shard, clips, path):
    return run_shard(embed_shard, clips, path), path


def embed_to_store(clips: list[Clip], embed_shard: EmbedShard, out_path: str | Path, *,
                   vocabulary: list[str], kind: str, config, fingerprint: str, upstream: dict,
                   shard_size: int = 256, extra_skipped: list[tuple[str, str]] = (),
                   progress: bool = True, jobs: int = 1, scheduler: str | None = None) -> None:
    """Embed ``clips`` with ``embed_shard`` into the store ``out_path`` (see module docstring).

    ``config`` (a dict) is written in the store with ``kernel_threads`` added (the callers put
    it in ``fingerprint`` too). ``extra_skipped`` lists clips rejected before embedding (e.g.
    labels outside the vocabulary); they are recorded in the store's skipped table.
    """
    out_path = Path(out_path)
    tmp_dir = shard_dir(out_path, fingerprint)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    shards = split_shards(clips, shard_size)
    paths = [tmp_dir / f"shard-{i:05d}.h5" for i in range(len(shards))]
    pre = tmp_dir / "rejected.h5"
    write_shard(pre, [], list(extra_skipped))
    todo = [(group, path) for group, path in zip(shards, paths) if not path.exists()]
    bar = progress_bar(total=len(clips), initial=len(clips) - sum(len(g) for g, _ in todo),
               desc=f"embed {out_path.name}", unit="clip", enabled=progress)
    for n in _run_all(embed_shard, todo, jobs, scheduler):
        bar.update(n)
    bar.close()
    merge([pre] + paths, out_path, vocabulary=vocabulary, kind=kind,
          config={**config, "kernel_threads": KERNEL_THREADS},
          fingerprint=fingerprint, upstream=upstream, code_version=__version__)
    remove_leftovers(out_path)


def embed_with_checkpoint(stage: str, kind: str, data: Path, checkpoint: Path, own: Path,
                          out: Path, config, prepare: Callable[[Dataset], tuple[dict, object]],
                          **store_options) -> Path:
    """The embed stage of a model read from a checkpoint (KW-MLP, Audio-MLP), writing ``out``.
    Locks: exclusive on the store, shared on ``own`` (the model's pretraining folder) when the
    checkpoint is in it. Fingerprint: ``config`` without its ``checkpoint`` path, the
    checkpoint's SHA-256, the clips and the kernel thread count; a store that has it is kept.
    Else ``prepare(dataset)`` -> (the resolved config written in the store, the shard
    embedder), then ``embed_to_store`` (``store_options``: shard_size, progress, jobs,
    scheduler)."""
    with contextlib.ExitStack() as locks:
        if own.is_dir() and checkpoint.resolve().parent == own.resolve():
            locks.enter_context(locked(own, stage, shared=True))
        locks.enter_context(locked(lock_dir(out), stage))
        dataset = load_dataset(data)
        inputs = {"checkpoint_sha256": file_digest(checkpoint),
                  "clips": clips_fingerprint(dataset.clips), "invalid": dataset.invalid,
                  "kernel_threads": KERNEL_THREADS}
        fingerprint = stage_fingerprint(dataclasses.replace(config, checkpoint=None), inputs)
        if store_fingerprint(out) == fingerprint:
            remove_leftovers(out)
            return out
        resolved, embedder = prepare(dataset)
        embed_to_store(dataset.clips, embedder, out, vocabulary=dataset.vocabulary, kind=kind,
                       config=resolved, fingerprint=fingerprint,
                       upstream={"checkpoint_sha256": inputs["checkpoint_sha256"]},
                       extra_skipped=dataset.invalid, **store_options)
    return out
