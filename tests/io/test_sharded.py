"""bow.io.sharded when workers die (issue 17): ``--jobs`` reruns the unfinished shards once in a
fresh pool, a second death and Dask's KilledWorker end with WorkerLostError (a StoreError, so
one line on the command line), and every shard computes with torch on one thread.

The embedder kills its own process (SIGKILL) on one shard, as often as asked; tests with real
stages and a real cluster are in tests/system/test_faults.py.
"""
from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from bow.data.datasets import Clip
from bow.io import sharded
from bow.io.sharded import WorkerLostError, embed_to_store, run_shard, shard_dir
from bow.io.store import ClipFeatures, StoreError

VOCAB = ["a", "b"]


def _features(clip: Clip) -> ClipFeatures:
    i = int(clip.fname[4:])
    return ClipFeatures(clip.fname, "train", np.array([1, 0], np.uint8),
                        np.full((1 + i % 3, 4), i, np.uint16), np.full(4, i, np.float32))


class DyingEmbedder:
    """A picklable embed_shard that SIGKILLs its process on the shard holding ``victim``, the
    first ``deaths`` times (counted with files in ``marks``)."""

    def __init__(self, marks: Path, victim: str = "clip3", deaths: int = 1):
        self.marks, self.victim, self.deaths = marks, victim, deaths

    def __call__(self, group):
        if any(c.fname == self.victim for c in group):
            died = len(list(self.marks.glob("death-*")))
            if died < self.deaths:
                (self.marks / f"death-{died}").touch()
                os.kill(os.getpid(), signal.SIGKILL)
        return [_features(c) for c in group], []


def _clips(tmp_path, n=8):
    return [Clip(f"clip{i}", tmp_path / f"{i}.wav", "train", ("a",)) for i in range(n)]


def _embed(clips, embedder, out, **kw):
    embed_to_store(clips, embedder, out, vocabulary=VOCAB, kind="bow", config={},
                   fingerprint="0" * 64, upstream={}, shard_size=1, progress=False, **kw)


def test_worker_lost_error_is_a_store_error():
    from pipelines.cli import USER_ERRORS
    assert issubclass(WorkerLostError, StoreError) and issubclass(WorkerLostError, USER_ERRORS)


def test_every_shard_computes_on_one_torch_thread_and_restores_the_count(tmp_path):
    """In the thread that runs it (Dask and joblib run shards in threads of their own) and in
    threads it starts (the read-ahead decoders), whatever count the process had; the serial
    path too."""
    seen, before = [], torch.get_num_threads()

    def embed_shard(group):
        inner = threading.Thread(target=lambda: seen.append(("inner", torch.get_num_threads())))
        inner.start()
        inner.join()
        seen.append(("shard", torch.get_num_threads()))
        return [_features(c) for c in group], []

    def work():
        torch.set_num_threads(3)
        run_shard(embed_shard, _clips(tmp_path, 1), tmp_path / "s.h5")
        seen.append(("after", torch.get_num_threads()))
        todo = [(_clips(tmp_path, 1), tmp_path / "t.h5")]
        assert list(sharded._run_all(embed_shard, todo, 1, None)) == [1]   # serial path

    try:
        worker = threading.Thread(target=work)
        worker.start()
        worker.join()
    finally:
        torch.set_num_threads(before)
    assert seen == [("inner", 1), ("shard", 1), ("after", 3), ("inner", 1), ("shard", 1)]


@pytest.mark.slow
def test_a_dead_jobs_worker_is_replaced_and_the_store_is_the_serial_one(tmp_path):
    clips = _clips(tmp_path)
    _embed(clips, DyingEmbedder(tmp_path, deaths=0), tmp_path / "serial" / "x.h5")
    out = tmp_path / "jobs" / "x.h5"
    todo = [([c], shard_dir(out, "0" * 64) / f"shard-{i:05d}.h5") for i, c in enumerate(clips)]
    todo[0][1].parent.mkdir(parents=True)
    counts = list(sharded._run_all(DyingEmbedder(tmp_path, deaths=1), todo, 2, None))
    assert len(list(tmp_path.glob("death-*"))) == 1
    assert sum(counts) == len(clips)            # each shard reported once: the progress bar
    _embed(clips, DyingEmbedder(tmp_path, deaths=1), out, jobs=2)   # merges them
    assert out.read_bytes() == (tmp_path / "serial" / "x.h5").read_bytes()


@pytest.mark.slow
def test_a_second_death_ends_with_one_line_and_a_rerun_resumes(tmp_path):
    clips = _clips(tmp_path)
    out = tmp_path / "x.h5"
    with pytest.raises(WorkerLostError) as caught:
        _embed(clips, DyingEmbedder(tmp_path, deaths=2), out, jobs=2)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("a worker process died twice (")
    assert message.endswith("shards finished and are kept: run the command again to resume")
    done = len(list(shard_dir(out, "0" * 64).glob("shard-*.h5")))
    assert f"; {done} of 8 shards finished" in message and done < 8 and not out.exists()
    _embed(clips, DyingEmbedder(tmp_path, deaths=2), out, jobs=2)
    _embed(clips, DyingEmbedder(tmp_path, deaths=0), tmp_path / "serial.h5")
    assert out.read_bytes() == (tmp_path / "serial.h5").read_bytes()


@pytest.mark.slow
def test_dask_killed_worker_becomes_worker_lost_error(tmp_path):
    import dask
    import distributed  # noqa: F401  (its config defaults first: set() restores what it saw)
    clips = _clips(tmp_path, 4)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        # a dead worker counts against every shard the scheduler had given it, not only clip3's
        with pytest.raises(WorkerLostError, match=r"^Dask workers computing shard-0000\d.h5 died "
                           r"1 time \(more than distributed.scheduler.allowed-failures = 0; the "
                           r"last was tcp://127.0.0.1:\d+: see its log\); \d of 4 shards "
                           r"finished and are kept: run the command again to resume$"):
            _embed(clips, DyingEmbedder(tmp_path, deaths=9), tmp_path / "x.h5",
                   scheduler="local:1")
    assert not (tmp_path / "x.h5").exists()
