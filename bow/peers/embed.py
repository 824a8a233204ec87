"""Clips -> the ``opensmile`` store's rows: openSMILE's functionals of every clip and 1 s chunk.

``embed_clip(audio)`` gives a clip's (n_chunks, 6373) chunk rows (the functionals of each chunk
of ``bow.audio.load.chunk``, so they join the other stores row by row), its (6373,) clip vector
(the functionals of the whole clip, not the mean of its chunks) and the number of non-finite
values openSMILE returned, which are stored as 0 (bow.peers.opensmile: none were seen on any
signal of 60 ms or more) so that heads never see NaN; the store keeps that count per clip in
``/clips/nonfinite``. ``ShardEmbedder`` is the shard worker of bow.io.sharded.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from bow.audio.load import AudioError, read_audio
from bow.audio.readahead import read_ahead
from bow.data.datasets import Clip
from bow.io.store import ClipFeatures, multi_hot
from bow.peers.opensmile import OpenSmileError, chunk_functionals, finite, functionals

NONFINITE = "nonfinite"   # /clips/nonfinite: values openSMILE gave as NaN or inf, stored as 0


def embed_clip(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(samples,) 16 kHz -> (n_chunks, 6373) float32 chunk functionals, (6373,) float32 clip
    functionals, and how many of their values were non-finite (set to 0)."""
    chunks, n_chunks = finite(chunk_functionals(audio))
    clip, n_clip = finite(functionals(audio))
    return chunks, clip, n_chunks + n_clip


@dataclass
class ShardEmbedder:
    """list[Clip] -> ([ClipFeatures], [(fname, reason)]) for bow.io.sharded; picklable.

    Clips are decoded one ahead in a thread (bow.audio.readahead); a clip that cannot be read,
    or on which openSMILE fails, is skipped with the reason."""
    vocabulary: list[str]
    decode_threads: int = 1

    def __call__(self, clips: list[Clip]):
        items, skipped = [], []
        for clip, audio in read_ahead(clips, read_audio, self.decode_threads):
            if isinstance(audio, AudioError):
                skipped.append((clip.fname, str(audio)))
                continue
            try:
                chunks, vector, bad = embed_clip(audio)
            except OpenSmileError as e:
                skipped.append((clip.fname, f"{clip.path}: {e}"))
                continue
            items.append(ClipFeatures(fname=clip.fname, split=clip.split,
                                      labels=multi_hot(clip.labels, self.vocabulary),
                                      chunks=chunks, clip=vector, per_clip={NONFINITE: bad}))
        return items, skipped


def nonfinite_counts(path: str | Path) -> tuple[int, int]:
    """(values, clips): the non-finite openSMILE values a store holds as 0, and in how many
    clips."""
    with h5py.File(path, "r") as f:
        if f"clips/{NONFINITE}" not in f:
            return 0, 0
        counts = f[f"clips/{NONFINITE}"][()]
    return int(counts.sum()), int((counts > 0).sum())
