"""Faults in real processes (issue 17): the store or weights a run ends with, after a process was
killed, are the bytes of an uninterrupted run.

1. a real loopback Dask cluster (``dask scheduler`` and two ``dask worker --nworkers 1
   --nthreads 1``): one worker's compute process is SIGKILLed mid-run; its nanny restarts it,
   the scheduler reruns its shards, and the store is the serial one, byte for byte;
2. ``--jobs 2``: a joblib worker process is SIGKILLed; the stage recovers (or fails with one
   ``embed: error:`` line and no traceback) and a rerun ends with the serial store;
3. the submitting process is SIGKILLed while the Dask workers compute: a rerun resumes from the
   finished shards and ends with the serial store;
4. pretrain_kwmlp SIGKILLed during an epoch: the rerun resumes from the last finished epoch and
   ends with the weights of an uninterrupted run.

Tiny models (random encoders of 32 hidden units on shape tokens with 16 level bins, D = 16,
soft assignment to the 3 nearest codes, the library's arm at toy sizes; every option explicit,
so the stages' defaults can change) on 24 generated clips of at most 2 s (41
chunks), one clip per shard, so the runs really split the work and a kill lands mid-run. The
store's reference runs serially in this process with two torch threads while the workers
compute with one (issue 23: a store must not depend on the thread count or the process); the
pretraining reference uses one thread, as its rerun does (training weights may move with the
thread count: README, Reliability). Kill points are found by polling for the files the stages
write, every 5 ms, as in test_crash_safety.py.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from bow.data.synth import make_default_dataset
from bow.runtime import torch_threads
from pipelines import embed, fit_codebooks, layout, pretrain_kwmlp, train_autoencoders

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
ENCODER = "random"
TRAIN = ["--encoder", ENCODER, "--tokens", "shape", "--hidden", "32", "--factor", "10",
         "--batch-size", "32", "--epochs", "1", "--steps-per-epoch", "5", "--max-val-tokens",
         "1000", "--seed", "0"]
CODEBOOKS = ["--encoder", ENCODER, "--n-codes", "16", "--niter", "5", "--nredo", "1",
             "--init", "kmeans++", "--level-bins", "16", "--seed", "0"]
EMBED = ["--encoder", ENCODER, "--assignment", "soft", "--neighbours", "3", "--weighting",
         "rank", "--shard-size", "1", "--batch-chunks", "64", "--precision", "fp32"]
N_CLIPS = 24


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _args(data: Path, artifacts: Path, *more: str) -> list[str]:
    return ["--data", str(data), "--artifacts", str(artifacts), "--device", "cpu",
            "--no-progress", *more]


STARTED: list[subprocess.Popen] = []     # the process groups this module started


def _start(argv: list[str], log: Path, track: bool = True) -> subprocess.Popen:
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=ENV, stdout=out, stderr=out,
                                start_new_session=True)
    if track:
        STARTED.append(proc)
    return proc


def _stop(procs) -> None:
    """SIGTERM the process groups of ``procs`` (each started in a session of its own), then
    SIGKILL those still there after 20 s."""
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


@pytest.fixture(autouse=True)
def no_stage_left_running():
    """A failed test leaves no stage process behind (the cluster has its own teardown)."""
    before = len(STARTED)
    yield
    _stop([p for p in STARTED[before:] if p.poll() is None])


def _stage(stage: str, args: list[str], log: Path) -> subprocess.Popen:
    return _start([sys.executable, "-m", f"pipelines.{stage}", *args], log)


def _finish(proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    assert proc.wait(timeout=timeout) == 0, log.read_text()[-3000:]


def _wait_until(ready, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Poll ``ready()`` every 5 ms while ``proc`` runs."""
    end = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the stage finished before the kill point"
        assert time.monotonic() < end, "kill point not reached"
        time.sleep(0.005)


def _store(art: Path) -> Path:
    return layout.bow_store(art, ENCODER)


def _shards(art: Path) -> int:
    return len(list(_store(art).parent.glob(f".{_store(art).name}.shards-*/shard-*.h5")))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_default_dataset(tmp_path_factory.mktemp("faults") / "data", n_dev=20, n_eval=4,
                                max_seconds=2.0)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """Models, and the store of an uninterrupted serial run, made in this process with two
    torch threads (the workers: one)."""
    art = tmp_path_factory.mktemp("reference")
    with torch_threads(2):
        train_autoencoders.main(_args(data, art, *TRAIN))
        fit_codebooks.main(_args(data, art, *CODEBOOKS))
        embed.main(_args(data, art, *EMBED))
    return art


def _models(reference: Path, art: Path) -> Path:
    for folder in (layout.autoencoders(reference, ENCODER), layout.codebooks(reference, ENCODER)):
        shutil.copytree(folder, art / folder.name, ignore=shutil.ignore_patterns(".lock"))
    return art


def _assert_serial_store(art: Path, reference: Path) -> None:
    store = _store(art)
    assert sha(store) == sha(_store(reference))
    assert sorted(p.name for p in store.parent.iterdir()) == [f".{store.name}.lock", store.name]


# --------------------------------------------------------------------------- Dask cluster
class Cluster:
    """``dask scheduler`` and two ``dask worker --nworkers 1 --nthreads 1`` on loopback."""

    def __init__(self, folder: Path):
        self.folder, self.procs, self.client = folder, [], None
        self.file = folder / "scheduler.json"
        self.log = folder / "cluster.log"

    def __enter__(self):
        try:
            return self._start()
        except BaseException:
            self.__exit__()
            raise

    def _start(self):
        from dask.distributed import Client
        dask = [sys.executable, "-m", "dask"]
        self.procs.append(_start([*dask, "scheduler", "--host", "127.0.0.1", "--port", "0",
                                  "--no-dashboard", "--scheduler-file", str(self.file)],
                                 self.log, track=False))
        end = time.monotonic() + 60
        while not self.file.exists():
            assert time.monotonic() < end, self.log.read_text()[-2000:]
            time.sleep(0.05)
        for _ in range(2):
            self.procs.append(_start([*dask, "worker", "--scheduler-file", str(self.file),
                                      "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
                                      "--local-directory", str(self.folder)], self.log,
                                     track=False))
        self.client = Client(scheduler_file=str(self.file), timeout=60)
        self.client.wait_for_workers(2, timeout=60)
        return self

    @property
    def address(self) -> str:
        return json.loads(self.file.read_text())["address"]

    def compute_pids(self) -> dict[str, int]:
        """{worker address: pid of its compute process (the nanny's child)}."""
        return self.client.run(os.getpid)

    def wait_restarted(self, victim: int, timeout: float = 60) -> dict[str, int]:
        """The compute pids, once two workers run and ``victim`` is not one of them."""
        end = time.monotonic() + timeout
        while True:
            with contextlib.suppress(Exception):      # a worker may be going away
                pids = self.compute_pids()
                if len(pids) == 2 and victim not in pids.values():
                    return pids
            assert time.monotonic() < end, self.log.read_text()[-3000:]
            time.sleep(0.1)

    def wait_idle(self, timeout: float = 60) -> None:
        """Until no task is on the scheduler's books and no worker thread still runs one (a
        task whose client died runs to its end: it still writes its shard)."""
        def busy(dask_worker):
            return len(dask_worker.state.executing)
        end = time.monotonic() + timeout
        while any(self.client.processing().values()) or any(self.client.run(busy).values()):
            assert time.monotonic() < end, "the cluster did not go idle"
            time.sleep(0.05)

    def __exit__(self, *exc):
        if self.client is not None:
            self.client.close()
        _stop(self.procs[::-1])             # only the processes this class started


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp("cluster")) as c:
        yield c


def test_a_killed_dask_worker_is_restarted_and_the_store_is_the_serial_one(
        data, reference, cluster, tmp_path):
    art = _models(reference, tmp_path / "art")
    victim = sorted(cluster.compute_pids().values())[0]
    log = tmp_path / "log"
    proc = _stage("embed", _args(data, art, *EMBED, "--scheduler", cluster.address), log)
    _wait_until(lambda: _shards(art) >= 3, proc)
    os.kill(victim, signal.SIGKILL)
    _finish(proc, log)
    _assert_serial_store(art, reference)
    cluster.wait_restarted(victim)           # the nanny started a new compute process


def test_a_killed_submitter_resumes_from_the_finished_shards(data, reference, cluster, tmp_path):
    art = _models(reference, tmp_path / "art")
    args, log = _args(data, art, *EMBED, "--scheduler", cluster.address), tmp_path / "log"
    proc = _stage("embed", args, log)
    _wait_until(lambda: _shards(art) >= 3, proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    cluster.wait_idle()
    done = _shards(art)                      # usually < 24: the scheduler drops the rest
    assert done >= 3 and not _store(art).exists()
    _finish(_stage("embed", args, log), log)
    _assert_serial_store(art, reference)


# --------------------------------------------------------------------------- --jobs 2
def _loky_workers(pid: int) -> list[int]:
    import psutil
    with contextlib.suppress(psutil.Error):
        return [p.pid for p in psutil.Process(pid).children(recursive=True)   # not the
                if "popen_loky" in " ".join(p.cmdline())]                       # resource tracker
    return []


def test_a_killed_jobs_worker_recovers_or_fails_cleanly_and_a_rerun_ends_the_same(
        data, reference, tmp_path):
    art = _models(reference, tmp_path / "art")
    args, log = _args(data, art, *EMBED, "--jobs", "2", "--threads", "1"), tmp_path / "log"
    proc = _stage("embed", args, log)
    _wait_until(lambda: _shards(art) >= 3 and _loky_workers(proc.pid), proc)
    os.kill(_loky_workers(proc.pid)[0], signal.SIGKILL)
    code = proc.wait(timeout=300)
    text = log.read_text()
    if code != 0:                            # a clear one-line error, no traceback
        assert code == 1 and "Traceback" not in text, text[-3000:]
        assert text.strip().splitlines()[-1].startswith("embed: error: "), text[-3000:]
        _finish(_stage("embed", args, log), log)
    _assert_serial_store(art, reference)


# --------------------------------------------------------------------------- pretrain_kwmlp
WORDS = {"low": 300.0, "mid": 900.0, "high": 2200.0}
PRETRAIN = ["--depth", "1", "--epochs", "4", "--warmup-epochs", "1", "--batch-size", "4",
            "--seed", "0", "--train-splits", "train", "--val-splits", "val", "--test-splits",
            "test", "--threads", "1"]


@pytest.fixture(scope="module")
def keywords(tmp_path_factory):
    """labels.csv layout: 3 words (tones with noise) x 12 clips of 1 s: 8 train, 2 val, 2 test."""
    root = tmp_path_factory.mktemp("keywords")
    (root / "audio").mkdir()
    rng = np.random.default_rng(0)
    rows = ["fname,labels,split"]
    t = np.arange(16000) / 16000
    for word, freq in WORDS.items():
        for i in range(12):
            wave = 0.3 * np.sin(2 * np.pi * freq * (1 + 0.05 * rng.standard_normal()) * t)
            wave += 0.05 * rng.standard_normal(16000)
            sf.write(root / "audio" / f"{word}{i}.wav", wave.astype(np.float32), 16000)
            rows.append(f"{word}{i}.wav,{word},{'train' if i < 8 else 'val' if i < 10 else 'test'}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def _saves(path: Path, work) -> list[float]:
    """Run ``work()`` and return when ``path`` was written (polled every 2 ms by a thread)."""
    saves, stop = [], threading.Event()

    def poll():
        while True:
            with contextlib.suppress(FileNotFoundError):
                mtime = path.stat().st_mtime_ns
                if not saves or mtime != saves[-1][1]:
                    saves.append((time.monotonic(), mtime))
            if stop.is_set():
                return
            time.sleep(0.002)

    watcher = threading.Thread(target=poll)
    watcher.start()
    try:
        work()
    finally:
        stop.set()
        watcher.join()
    return [t for t, _ in saves]


def test_pretrain_kwmlp_killed_in_an_epoch_resumes_to_the_same_weights(keywords, tmp_path):
    ref, art, log = tmp_path / "ref", tmp_path / "art", tmp_path / "log"
    with torch_threads(1):                   # the uninterrupted run, in this process
        saves = _saves(layout.kwmlp(ref) / "last.pt",
                       lambda: pretrain_kwmlp.main(_args(keywords, ref, *PRETRAIN)))
    epoch = (saves[-1] - saves[0]) / max(len(saves) - 1, 1)
    proc = _stage("pretrain_kwmlp", _args(keywords, art, *PRETRAIN), log)
    _wait_until((layout.kwmlp(art) / "last.pt").exists, proc)
    time.sleep(epoch / 2)                    # aim at the middle of epoch 2
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    state = torch.load(layout.kwmlp(art) / "last.pt", weights_only=True)
    assert 1 <= state["epoch"] < 4
    print(f"epoch {epoch:.3f} s; killed with epoch {state['epoch']} saved")
    _finish(_stage("pretrain_kwmlp", _args(keywords, art, *PRETRAIN), log), log)
    for name in ("best.pth", "last.pt"):
        a = torch.load(layout.kwmlp(ref) / name, weights_only=True)["model_state_dict"]
        b = torch.load(layout.kwmlp(art) / name, weights_only=True)["model_state_dict"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    hist = [json.loads((layout.kwmlp(d) / "best.json").read_text())["history"]
            for d in (ref, art)]
    assert hist[0] == hist[1]
