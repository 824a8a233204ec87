"""Bag-of-words count vectors of whole clips: one batching scheme for the store and for HEAR.

Per clip: 1 s chunks (``bow.audio.load.chunk``, default tail rule) -> log-mel
(``bow.audio.features.LogMel``) -> ``BagOfWords.transform`` -> (n_chunks, 4 D) uint16 counts,
and the clip vector, their mean (``bow.bagofwords.model.clip_vector``): the store's chunk and
clip vectors (pipelines.embed) and the HEAR scene embedding (bow.hear.bow) alike.

Batching (``BagOfWordsEmbedder.pooled``): the chunks of consecutive clips are pooled into batches of
exactly ``batch_chunks`` (the last may be smaller), so short clips fill whole batches and memory
holds at most one batch, one clip and the clips read ahead, whatever the clips' lengths. The first
batches of a call are smaller (``FIRST_BATCH`` chunks, doubling up to ``batch_chunks``) so that
computing starts while the reader thread decodes the next clips instead of after a whole batch is
decoded (measured: 0.12 s of a 1.4 s run of 100 ESC-10 clips on one thread was that wait, once per
shard). The counts of a clip do not depend on its neighbours (chunks are independent), except that a
matmul's batch composition can move a code in its last float bit, so one scheme for every path keeps
the store and HEAR outputs identical. On the CPU the log-mel of a batch is computed ``LOGMEL_BATCH``
chunks at a time: the same bytes, 2x faster than 256 at once on one thread (the STFT's frames stay
in cache) and ~500 MB less memory.

``ShardEmbedder`` is the unit of work of bow.io.sharded for the bag-of-words store: a list of
clips -> ClipFeatures and skipped clips; picklable (each process loads the encoders and
codebooks from their folders on first use); clips are decoded ahead in threads
(bow.audio.readahead: 1 on the CPU, more to feed a GPU) while the model computes.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from bow.audio.features import LogMel
from bow.audio.load import AudioError, chunk, read_audio
from bow.audio.readahead import default_threads, read_ahead
from bow.bagofwords.model import AssignmentConfig, BagOfWords, clip_vector
from bow.data.datasets import Clip
from bow.io.store import ClipFeatures, multi_hot
from bow.runtime import check_precision, encoder_precision, resolve_device

K = TypeVar("K")
BATCH_CHUNKS = 256  # 1 s chunks per log-mel and encoding batch
LOGMEL_BATCH = 16   # chunks per log-mel call on the CPU (see the module docstring)
FIRST_BATCH = 16    # chunks in the first batch of a ``pooled`` call, doubling after each


class BagOfWordsEmbedder:
    """(n, 16000) chunks -> (n, width) counts with a ``BagOfWords`` whose encoders are on
    ``device``, ``batch_chunks`` at a time; ``precision`` (bow.runtime): fp32, or tf32 / bf16
    for the encoders on CUDA."""

    def __init__(self, bag: BagOfWords, device: str | torch.device = "cpu",
                 batch_chunks: int = BATCH_CHUNKS, precision: str = "fp32"):
        self.device = torch.device(device)
        check_precision(precision, self.device)
        self.bag, self.batch_chunks, self.precision = bag, batch_chunks, precision
        self.front = LogMel().to(self.device)

    @torch.inference_mode()
    def counts(self, chunks: np.ndarray) -> np.ndarray:
        """(n, 16000) chunks -> (n, width) counts (bow.bagofwords.model), in one batch."""
        x = torch.from_numpy(chunks).to(self.device)
        step = LOGMEL_BATCH if self.device.type == "cpu" else len(x)
        logmel = torch.cat([self.front(x[i:i + step]) for i in range(0, len(x), step)])
        with encoder_precision(self.precision, self.device):
            return self.bag.transform(logmel)

    def pooled(self, items: Iterable[tuple[K, np.ndarray]]) -> Iterator[tuple[K, np.ndarray]]:
        """(key, (n_i, 16000) chunks) in order -> (key, (n_i, width) counts) in the same order,
        chunks pooled across items into batches of ``batch_chunks``."""
        waiting: deque = deque()                # keys whose count rows are not all done
        parts, n_parts = [], 0                  # chunks given, not yet embedded
        rows = np.zeros((0, 0))                 # count rows done, not yet handed out
        size = min(FIRST_BATCH, self.batch_chunks)

        def embed(flat: np.ndarray, n: int, size: int) -> np.ndarray:
            done = [self.counts(flat[j:j + size]) for j in range(0, n, size)]
            return np.concatenate([rows] + done) if len(rows) else np.concatenate(done)

        for key, chunks in items:
            waiting.append((key, len(chunks)))
            parts.append(chunks)
            n_parts += len(chunks)
            if n_parts >= size:
                flat = parts[0] if len(parts) == 1 else np.concatenate(parts)
                n = n_parts // size * size
                rows = embed(flat, n, size)
                parts, n_parts = ([flat[n:]] if n < n_parts else []), n_parts - n
                size = min(2 * size, self.batch_chunks)
            while waiting and waiting[0][1] <= len(rows):
                key, n = waiting.popleft()
                yield key, rows[:n].copy()
                rows = rows[n:]
        if n_parts:
            rows = embed(parts[0] if len(parts) == 1 else np.concatenate(parts), n_parts, size)
        for key, n in waiting:
            yield key, rows[:n].copy()
            rows = rows[n:]

    def clip_vectors(self, audios: list[np.ndarray]) -> np.ndarray:
        """List of (samples_i,) 16 kHz -> (len, 4 D) float32 clip vectors, as in the store."""
        out = np.zeros((len(audios), self.bag.width), dtype=np.float32)
        for i, counts in self.pooled((i, chunk(a)) for i, a in enumerate(audios)):
            out[i] = clip_vector(counts)
        return out


def _read_chunks(path) -> np.ndarray:
    """(n_chunks, 16000) float32 chunks of a file (bow.audio.load defaults)."""
    return chunk(read_audio(path))


class ShardEmbedder:
    """list[Clip] -> ([ClipFeatures], [(fname, reason)]) for bow.io.sharded (module docstring)."""

    def __init__(self, autoencoders: Path, codebooks: Path, vocabulary: list[str],
                 device: str = "cpu", batch_chunks: int = BATCH_CHUNKS, precision: str = "fp32",
                 decode_threads: int | None = None,
                 assignment: AssignmentConfig = AssignmentConfig()):
        self.autoencoders, self.codebooks, self.vocabulary = autoencoders, codebooks, vocabulary
        self.assignment = assignment
        self.device, self.batch_chunks = device, batch_chunks
        self.precision, self.decode_threads = precision, decode_threads
        check_precision(precision, device)
        self._embedder = None

    def __getstate__(self):
        return {**self.__dict__, "_embedder": None}

    def embedder(self) -> BagOfWordsEmbedder:
        if self._embedder is None:
            dev = resolve_device(self.device)
            self._embedder = BagOfWordsEmbedder(
                BagOfWords.load(self.autoencoders, self.codebooks, dev, self.assignment), dev,
                self.batch_chunks, self.precision)
        return self._embedder

    def __call__(self, clips: list[Clip]):
        skipped = []
        threads = self.decode_threads
        if threads is None:
            threads = default_threads(torch.device(self.device).type)

        def readable():
            for clip, chunks in read_ahead(clips, _read_chunks, threads):
                if isinstance(chunks, AudioError):
                    skipped.append((clip.fname, str(chunks)))
                else:
                    yield clip, chunks

        items = [ClipFeatures(fname=clip.fname, split=clip.split,
                              labels=multi_hot(clip.labels, self.vocabulary),
                              chunks=counts, clip=clip_vector(counts), sparse=True)
                 for clip, counts in self.embedder().pooled(readable())]
        return items, skipped
