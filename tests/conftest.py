"""Shared fixtures: the real recordings in ../shared, generated signals, and device parametrisation.

Tests that need ../shared skip with a clear message when it is absent (a user's clone) and
fail when the environment variable CI is "true".
"""
from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
IN_CI = os.environ.get("CI", "").lower() == "true"

DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")])]


def need_shared(*parts: str) -> Path:
    """Path under ../shared; skip if it is missing (fail under CI=true)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        message = f"{path} is missing: these tests need the shared data beside the checkout"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return need_shared()


@pytest.fixture(scope="session")
def esc10_dir() -> Path:
    return need_shared("data", "esc10")


@pytest.fixture(scope="session")
def fsdd_dir() -> Path:
    return need_shared("data", "fsdd")


@pytest.fixture(scope="session")
def fsd50k_mini_dir() -> Path:
    return need_shared("data", "fsd50k_mini")


@pytest.fixture(scope="session")
def kwmlp_dir() -> Path:
    return need_shared("kwmlp")


@pytest.fixture(scope="session")
def audiomlp_dir() -> Path:
    return need_shared("audiomlp")


@pytest.fixture(scope="session")
def opensmile_package():
    """The optional opensmile package (the openSMILE peer); skip without it (fail under CI)."""
    from bow.peers import opensmile
    if not opensmile.available():
        message = f"{opensmile.MISSING}; the openSMILE peer's tests need it"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return opensmile.require()


@pytest.fixture
def without_opensmile(monkeypatch):
    """A machine without the opensmile package, simulated: importing it fails, nothing cached."""
    from bow.peers import opensmile
    monkeypatch.setitem(sys.modules, "opensmile", None)
    monkeypatch.setattr(opensmile, "_SMILES", {})


@pytest.fixture(scope="session")
def esc10_task(esc10_dir, tmp_path_factory):
    """ESC-10 (400 clips, 5 folds) exported with the default rules."""
    from pipelines import export_hear_task
    out = tmp_path_factory.mktemp("tasks") / "esc10"
    export_hear_task.run(esc10_dir, out, progress=False)
    return out


@pytest.fixture(scope="session")
def fsdd_task(fsdd_dir, tmp_path_factory):
    """FSDD (train/val/test), 60 clips of each split."""
    from pipelines import export_hear_task
    out = tmp_path_factory.mktemp("tasks") / "fsdd"
    export_hear_task.run(fsdd_dir, out, export_hear_task.ExportHearTaskConfig(
        clips_per_split=60), progress=False)
    return out


def linked_dataset(root: Path, clips, split_of=None, broken=None) -> Path:
    """A labels.csv-layout data set in ``root`` whose audio/ links to ``clips`` (no copies).

    ``split_of(k, clip)`` gives row k's split (default: the clip's own); ``broken = (label,
    split, row)`` adds a corrupt ``broken.wav`` at that data row (None: at the end).
    """
    (root / "audio").mkdir(parents=True)
    rows = []
    for k, clip in enumerate(clips):
        os.symlink(clip.path, root / "audio" / clip.path.name)
        rows.append([clip.path.name, ",".join(clip.labels),
                     split_of(k, clip) if split_of else clip.split])
    if broken:
        label, split, row = broken
        (root / "audio" / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
        rows.insert(len(rows) if row is None else row, ["broken.wav", label, split])
    with open(root / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["fname", "labels", "split"]] + rows)
    return root


def sine(freq: float, seconds: float, rate: int = 16_000, amplitude: float = 0.5) -> np.ndarray:
    """(samples,) float32 sine."""
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def counting(monkeypatch):
    """Count the heads trained through bow.heads.points (sweep points)."""
    from bow.heads import points
    calls = []
    real = points.run_protocol

    def run_protocol(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)
    monkeypatch.setattr(points, "run_protocol", run_protocol)
    return calls


def check_counts(store) -> None:
    """A bag-of-words store's chunk vectors: per family, D code counts summing to the family's
    token count (weights with soft assignment), then (shape tokens) L level counts doing the
    same, then (frame words) one histogram of D_f per stream summing to the 100 frames, then
    (statistics words) S words per chunk statistic, summing to 1 each."""
    from bow.bagofwords.frames import N_STATS
    from bow.bagofwords.tokens import COUNTS, FAMILIES
    config = store.attrs["config"]
    d, levels = config["n_codes"], config.get("level_bins", 0)
    frames, streams = config.get("frame_codes", 0), config.get("frame_streams", [])
    stat_bins = config.get("frame_stat_bins", 0)
    chunks = np.asarray(store.chunks, np.float64)
    base = len(FAMILIES) * (d + levels)
    stats_at = base + len(streams) * frames
    assert chunks.shape[1] == stats_at + N_STATS * stat_bins and (chunks >= 0).all()
    for i in range(len(streams)):
        block = chunks[:, base + i * frames:base + (i + 1) * frames]
        np.testing.assert_allclose(block.sum(1), 100, rtol=1e-5)
    if stat_bins:
        stats = chunks[:, stats_at:].reshape(len(chunks), N_STATS, stat_bins)
        np.testing.assert_allclose(stats.sum(2), 1, rtol=1e-5)
    for f, family in enumerate(FAMILIES):
        np.testing.assert_allclose(chunks[:, f * d:(f + 1) * d].sum(1), COUNTS[family],
                                   rtol=1e-5)
        if levels:
            block = chunks[:, len(FAMILIES) * d + f * levels:len(FAMILIES) * d +
                           (f + 1) * levels]
            assert (block.sum(1) == COUNTS[family]).all()
