"""Two runs on the same artifacts: the second one stops at once with a clear message.

Each stage holds an exclusive lock on the folder it writes and shared locks on the folders it
reads (bow.io.stage.locked). A second stage that would write the same folder, or read a folder
being written, exits with status 1 and one line naming the folder, the holder's pid and
command, and what to do; the first run is not disturbed. Different outputs (e.g. two stores)
lock different folders, and a killed holder's lock disappears with it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bow.bagofwords.model import load_encoder
from bow.bagofwords.tokens import FAMILIES
from bow.data.synth import make_default_dataset
from bow.io.stage import LockedError, locked, read_fingerprint
from bow.io.store import lock_dir
from pipelines import embed, fit_codebooks

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _wait_for(condition, proc, timeout=300.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, "the process ended first"
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


@pytest.mark.slow
def test_a_second_run_on_the_same_folder_fails_fast(tmp_path):
    data = make_default_dataset(tmp_path / "data", n_dev=12, n_eval=2, max_seconds=1.5)
    art = tmp_path / "art"
    argv = [sys.executable, "-m", "pipelines.train_autoencoders", "--data", str(data),
            "--artifacts", str(art), "--device", "cpu", "--encoder", "trained", "--hidden", "32",
            "--batch-size", "32", "--epochs", "2", "--steps-per-epoch", "5"]
    first = subprocess.Popen(argv, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    out = art / "autoencoders-trained"
    try:
        _wait_for(lambda: any(out.glob(".checkpoints-*/patch.pt")), first)  # inside its lock
        first.send_signal(signal.SIGSTOP)        # paused, it keeps the lock: no timing race
        second = subprocess.run(argv, cwd=ROOT, env=ENV, capture_output=True, text=True,
                                timeout=300)
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=300) == 0
    err = second.stderr.strip().splitlines()[-1]
    assert second.returncode == 1 and "Traceback" not in second.stderr
    assert err.startswith(f"train_autoencoders: error: {out}: another stage is running on "
                          f"this folder (pid {first.pid}: ")
    assert "pipelines.train_autoencoders" in err and "another --artifacts folder" in err
    assert read_fingerprint(out) is not None     # the first run finished undisturbed
    for family in FAMILIES:
        load_encoder(out / f"{family}.pt")


def test_readers_and_writers_exclude_each_other(tmp_path, capsys):
    art = tmp_path / "art"
    data = tmp_path / "data"          # never read: the locks are taken first
    common = ["--data", str(data), "--artifacts", str(art), "--device", "cpu"]
    with locked(art / "autoencoders", "train_autoencoders"):     # a writer of the models
        with pytest.raises(SystemExit) as exit_:
            fit_codebooks.main(common + ["--n-codes", "16"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 1
    assert err.startswith(f"fit_codebooks: error: {art / 'autoencoders'}: another stage is "
                          f"writing this folder (pid {os.getpid()}")
    (art / "codebooks").mkdir()
    store = art / "stores" / "bow.h5"
    with locked(lock_dir(store), "train_heads", shared=True):    # a reader of the store
        with pytest.raises(SystemExit) as exit_:
            embed.main(common)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 1 and "another stage is reading this folder" in err
    assert "so embed cannot rewrite it now" in err


def test_lock_granularity(tmp_path):
    with locked(tmp_path / "stores" / ".bow.h5.lock"), locked(tmp_path / "codebooks"):
        with locked(tmp_path / "stores" / ".kwmlp.h5.lock"):  # another output: allowed
            pass
        with pytest.raises(LockedError, match="another stage is running on this folder"):
            with locked(tmp_path / "codebooks"):
                pass
    with locked(tmp_path / "autoencoders", shared=True), \
            locked(tmp_path / "autoencoders", shared=True):      # two readers
        with pytest.raises(LockedError, match="another stage is reading this folder"):
            with locked(tmp_path / "autoencoders"):
                pass
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    try:
        if not os.access(readonly, os.W_OK):     # (root can write anywhere)
            with locked(readonly, shared=True):  # nobody can write it: no lock needed
                pass
    finally:
        readonly.chmod(0o755)


HOLD = """
import sys, time
from bow.io.stage import locked
with locked(sys.argv[1]):
    open(sys.argv[2], "w").close()
    time.sleep(600)
"""


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    marker = tmp_path / "holding"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "out"), str(marker)],
                              cwd=ROOT, env=ENV)
    _wait_for(marker.exists, holder, timeout=60)
    with pytest.raises(LockedError, match=f"pid {holder.pid}"):
        with locked(tmp_path / "out"):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with locked(tmp_path / "out"):
        pass
