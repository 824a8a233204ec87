"""Small feature stores for the head tests: from real ESC-10 / FSD50K-mini audio, or synthetic.

Two simple real-audio features per 1 s chunk (bow.audio.load.chunk, bow.audio.features.LogMel):
* ``logmel``: the mean log-mel over time, (96,) float32, a dense store (kind "logmel");
* ``counts``: for each of the 100 frames, the 4-band group (24 groups) holding its loudest mel
  band, counted: (24,) uint16 summing to 100, a count store (kind "bow"), standing in for the
  bag of words.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

from bow.audio.features import LogMel
from bow.audio.load import chunk, read_audio
from bow.data.datasets import load_dataset
from bow.io.store import ClipFeatures, merge, multi_hot, write_shard

N_GROUPS = 24


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny heads run fastest on one thread (and far faster than on two busy cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@lru_cache(maxsize=4)
def real_features(root: str, per_class_split: int, n_classes: int):
    """Per clip of a subset of the dataset at ``root`` (the first ``per_class_split`` clips of
    each of the first ``n_classes`` labels in each split; multi-label clips count for their
    first label): (clips, vocabulary, logmel means, band-group counts)."""
    data = load_dataset(root)
    keep_labels = set(sorted({c.labels[0] for c in data.clips})[:n_classes])
    taken: dict = {}
    clips = []
    for c in data.clips:
        key = (c.split, c.labels[0])
        if c.labels[0] in keep_labels and taken.get(key, 0) < per_class_split:
            taken[key] = taken.get(key, 0) + 1
            clips.append(c)
    logmel = LogMel()
    means, counts = [], []
    with torch.no_grad():
        for c in clips:
            spec = logmel(torch.from_numpy(chunk(read_audio(c.path)))).numpy()  # (n, 96, 100)
            means.append(spec.mean(axis=2).astype(np.float32))
            top = spec.argmax(axis=1) // (96 // N_GROUPS)                       # (n, 100)
            counts.append(np.stack([np.bincount(t, minlength=N_GROUPS) for t in top])
                          .astype(np.uint16))
    return clips, data.vocabulary, means, counts


def write_store(path: Path, clips, vocabulary, chunk_vectors, kind: str,
                shard_size: int = 16) -> Path:
    """Write clips with their (n_chunks, D) chunk vectors as a store (shards + merge)."""
    shards = []
    for s in range(0, len(clips), shard_size):
        items = [ClipFeatures(c.fname, c.split, multi_hot(c.labels, vocabulary), v,
                              v.mean(axis=0).astype(np.float32))
                 for c, v in zip(clips[s:s + shard_size], chunk_vectors[s:s + shard_size])]
        shard = path.parent / f".{path.name}.shard{s}.h5"
        write_shard(shard, items)
        shards.append(shard)
    merge(shards, path, vocabulary=list(vocabulary), kind=kind, config={"test": kind},
          fingerprint=f"test-{kind}-{len(clips)}", upstream={}, code_version="test")
    for shard in shards:
        shard.unlink()
    return path


def real_stores(root: Path, out_dir: Path, per_class_split: int = 2, n_classes: int = 4):
    """(logmel store, counts store) for a subset of the dataset at ``root``."""
    clips, vocabulary, means, counts = real_features(str(root), per_class_split, n_classes)
    return (write_store(out_dir / "logmel.h5", clips, vocabulary, means, "logmel"),
            write_store(out_dir / "bow.h5", clips, vocabulary, counts, "bow"))


class FakeClip:
    """The fields of bow.data.datasets.Clip that write_store uses."""

    def __init__(self, fname, split, labels):
        self.fname, self.split, self.labels = fname, split, labels


def synthetic_counts(n_clips: int, n_classes: int, splits, seed: int = 0, dim: int = 32,
                     chunks=(1, 4)):
    """Separable single-label count data: class k raises the rate of columns 2k and 2k + 1.

    Returns (clips, vocabulary, per-clip (n_chunks, dim) uint16 counts)."""
    rng = np.random.default_rng(seed)
    vocabulary = [f"class{k}" for k in range(n_classes)]
    clips, vectors = [], []
    for i in range(n_clips):
        k = i % n_classes
        rate = np.full(dim, 1.0)
        rate[2 * k:2 * k + 2] = 6.0
        n = int(rng.integers(chunks[0], chunks[1] + 1))
        vectors.append(rng.poisson(rate, size=(n, dim)).astype(np.uint16))
        clips.append(FakeClip(f"clip{i:04d}", splits[(i // n_classes) % len(splits)],
                              (vocabulary[k],)))
    return clips, vocabulary, vectors
