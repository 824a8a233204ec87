"""Stages killed with SIGKILL and started again end with the same bytes as an uninterrupted run.

Real subprocesses (``python -m pipelines.<stage>``) are killed at deterministic points, found by
polling for the files the stage writes (a training checkpoint, a finished model file, the n-th
store shard, the store's temporary file during a merge). After every kill each file under a
final name must load completely (no half-written file ever carries a final name); the stage is
then started again, and its outputs are compared byte for byte with an uninterrupted run with
the same options and thread count (one torch thread; the uninterrupted runs are made in this
process, which also checks that a stage's bytes do not depend on the process).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from bow.bagofwords.tokens import FAMILIES
from bow.data.synth import make_default_dataset
from bow.io.stage import load_torch
from bow.runtime import torch_threads
from pipelines import embed, embed_kwmlp, fit_codebooks, train_autoencoders

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
TEMPORARY = re.compile(r"^\..+\.tmp-\d+$")
ARM = ["--encoder", "trained"]    # the kind with training checkpoints to kill between
TRAIN = [*ARM, "--hidden", "64", "--batch-size", "64", "--epochs", "3", "--steps-per-epoch",
         "20", "--patience", "9", "--max-val-tokens", "2000"]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Stage:
    """One stage's command line on one artifacts folder, run as a subprocess."""

    def __init__(self, stage: str, args: list[str], log: Path):
        self.argv = [sys.executable, "-m", f"pipelines.{stage}", *args]
        self.log = log

    def start(self) -> subprocess.Popen:
        out = open(self.log, "ab")
        return subprocess.Popen(self.argv, cwd=ROOT, env=ENV, stdout=out, stderr=out)

    def run(self) -> None:
        proc = self.start()
        assert proc.wait(timeout=600) == 0, self.log.read_text()[-3000:]

    def kill_when(self, ready, timeout: float = 300) -> None:
        """Start the stage and SIGKILL it as soon as ``ready()`` holds (polled every 5 ms)."""
        proc = self.start()
        end = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, f"finished before the kill point: {self.log.read_text()}"
            assert time.monotonic() < end, "kill point not reached"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL


def exists(folder: Path, pattern: str):
    return lambda: any(folder.glob(pattern))


def check_final_files(root: Path) -> int:
    """Load every file under a final name below ``root`` in full; return how many."""
    n = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if TEMPORARY.match(path.name) or path.name == ".lock":
            continue
        if path.suffix in (".pt", ".pth"):
            load_torch(path)
        elif path.suffix == ".h5":
            with h5py.File(path, "r") as f:
                f.visititems(lambda _, obj: obj[()] if isinstance(obj, h5py.Dataset) else None)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                [z[k] for k in z.files]
        elif path.suffix == ".npy":
            np.load(path, allow_pickle=False)
        n += 1
    return n


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_default_dataset(tmp_path_factory.mktemp("crash") / "data", n_dev=20, n_eval=4,
                                max_seconds=2.0)


def _args(data: Path, artifacts: Path, *more: str) -> list[str]:
    return ["--data", str(data), "--artifacts", str(artifacts), "--device", "cpu", *more]


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """Uninterrupted runs, in this process: autoencoders, codebooks, bag-of-words store."""
    art = tmp_path_factory.mktemp("reference")
    with torch_threads(1):     # like the subprocesses
        train_autoencoders.main(_args(data, art, *TRAIN))
        fit_codebooks.main(_args(data, art, *ARM, "--n-codes", "16", "--niter", "5"))
        embed.main(_args(data, art, *ARM, "--shard-size", "2"))
    return art


def test_train_autoencoders_resumes_to_the_same_models(data, reference, tmp_path):
    art = tmp_path / "art"
    stage = Stage("train_autoencoders", _args(data, art, *TRAIN), tmp_path / "log")
    out = art / "autoencoders-trained"
    kill_points = [exists(out, ".checkpoints-*/patch.pt"),        # inside the first family
                   exists(out, "band_envelope.pt"),               # between families
                   exists(out, ".checkpoints-*/thumbnail.pt")]    # inside the last family
    for ready in kill_points:
        stage.kill_when(ready)
        assert check_final_files(art) > 0
        assert not (out / "fingerprint.json").exists()
    stage.run()
    for name in [f"{f}.pt" for f in FAMILIES] + ["history.json", "config.json",
                                                 "fingerprint.json"]:
        assert sha(out / name) == sha(reference / "autoencoders-trained" / name), name
    assert not list(out.glob(".checkpoints-*")) and not list(out.glob(".*.tmp-*"))


def test_embed_resumes_to_the_same_store(data, reference, tmp_path):
    art = tmp_path / "art"
    for folder in ("autoencoders-trained", "codebooks-trained"):
        shutil.copytree(reference / folder, art / folder, ignore=shutil.ignore_patterns(".lock"))
    stage = Stage("embed", _args(data, art, *ARM, "--shard-size", "2"), tmp_path / "log")
    stores = art / "stores"
    for ready in (exists(stores, ".bow-trained.h5.shards-*/shard-00001.h5"),
                  exists(stores, ".bow-trained.h5.shards-*/shard-00006.h5")):
        stage.kill_when(ready)
        check_final_files(art)
        assert not (stores / "bow-trained.h5").exists()
    stage.run()
    assert sha(stores / "bow-trained.h5") == sha(reference / "stores" / "bow-trained.h5")
    assert sorted(p.name for p in stores.iterdir()) == [".bow-trained.h5.lock", "bow-trained.h5"]


def test_embed_kwmlp_resumes_to_the_same_store(data, kwmlp_dir, tmp_path):
    args = ["--checkpoint", str(kwmlp_dir / "kwmlp.pth"), "--shard-size", "2",
            "--batch-clips", "2"]
    with torch_threads(1):     # like the subprocesses
        embed_kwmlp.main(_args(data, tmp_path / "ref", *args))
    art = tmp_path / "art"
    stage = Stage("embed_kwmlp", _args(data, art, *args), tmp_path / "log")
    stage.kill_when(exists(art / "stores", ".kwmlp.h5.shards-*/shard-00002.h5"))
    check_final_files(art)
    stage.run()
    assert sha(art / "stores/kwmlp.h5") == sha(tmp_path / "ref/stores/kwmlp.h5")


MERGE = """
import sys
from pathlib import Path
from bow.io.store import merge
folder = Path(sys.argv[1])
merge(sorted(folder.glob("shard-*.h5")), folder / "store.h5", vocabulary=["a", "b"], kind="bow",
      config={"x": 1}, fingerprint="f" * 64, upstream={}, code_version="0")
"""


def test_a_merge_killed_at_any_point_leaves_no_store(tmp_path):
    from bow.io.sharded import remove_leftovers
    from bow.io.store import ClipFeatures, merge, read, write_shard
    rng = np.random.default_rng(0)
    for s in range(80):
        items = [ClipFeatures(f"c{s}_{i}", "train", np.array([1, 0], np.uint8),
                              rng.integers(0, 9, (20, 256)).astype(np.uint16),
                              rng.random(256).astype(np.float32)) for i in range(10)]
        write_shard(tmp_path / f"shard-{s:05d}.h5", items, [(f"bad{s}", "unreadable")])
    out = tmp_path / "store.h5"
    start = time.monotonic()
    merge(sorted(tmp_path.glob("shard-*.h5")), tmp_path / "reference.h5",
          vocabulary=["a", "b"], kind="bow", config={"x": 1}, fingerprint="f" * 64,
          upstream={}, code_version="0")
    seconds = time.monotonic() - start
    argv = [sys.executable, "-c", MERGE, str(tmp_path)]
    for fraction in (0.0, 0.3, 0.6):         # of an uninterrupted merge's time
        proc = subprocess.Popen(argv, cwd=ROOT, env=ENV)
        while not list(tmp_path.glob(".store.h5.tmp-*")):
            assert proc.poll() is None, "the merge ended before the kill point"
            time.sleep(0.002)
        time.sleep(fraction * seconds)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        assert not out.exists() and list(tmp_path.glob(".store.h5.tmp-*"))
        remove_leftovers(out)                 # what the next run of the stage does first
        assert not list(tmp_path.glob(".store.h5.tmp-*"))
    subprocess.run(argv, cwd=ROOT, env=ENV, check=True)
    assert sha(out) == sha(tmp_path / "reference.h5")
    assert len(read(out)) == 800 and len(read(out).skipped) == 80
