"""Training material for the bag-of-words model: log-mel of clips, held-out clips, fingerprints.

``logmel_clips`` reads each clip (``bow.audio.load.read_audio``), cuts it into 1 s chunks
(``bow.audio.load.chunk``, default tail rule) and computes the (96, 100) log-mel of every chunk
(``bow.audio.features.LogMel``), kept as float16 (19.2 KB a chunk: about 5.5 GB for FSD50K's 80 h
of dev audio; pass ``max_clips`` to fit on a seeded subset instead). Clips that cannot be read
are returned as (fname, reason) and left out.

``clips_fingerprint`` identifies a clip list by each clip's name, split, labels, file size and
modification time (like make; hashing every audio byte of a large data set would cost minutes).
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from bow.audio.load import AudioError, chunk, read_audio
from bow.data.datasets import Clip
from bow.audio.features import LogMel
from bow.io.stage import digest


def clips_fingerprint(clips: list[Clip]) -> str:
    """SHA-256 of the clips' names, splits, labels, file sizes and modification times."""
    rows = []
    for c in clips:
        try:
            st = c.path.stat()
            rows.append([c.fname, c.split, list(c.labels), st.st_size, st.st_mtime_ns])
        except OSError:
            rows.append([c.fname, c.split, list(c.labels), "missing"])
    return digest(rows)


def subset(clips: list[Clip], max_clips: int | None, seed: int) -> list[Clip]:
    """A seeded random subset of at most ``max_clips`` clips, in dataset order (None: all)."""
    if max_clips is None or len(clips) <= max_clips:
        return list(clips)
    keep = np.random.default_rng(seed).choice(len(clips), size=max_clips, replace=False)
    return [clips[i] for i in sorted(keep)]


def holdout(clips: list[Clip], fraction: float, seed: int) -> tuple[list[Clip], list[Clip]]:
    """Split clips into (fit, held out): a seeded ``fraction`` of them, at least one each side."""
    if len(clips) < 2:
        raise ValueError(f"need at least 2 training clips to hold some out, got {len(clips)}")
    n_held = min(len(clips) - 1, max(1, round(fraction * len(clips))))
    held = set(np.random.default_rng(seed).choice(len(clips), size=n_held, replace=False))
    return ([c for i, c in enumerate(clips) if i not in held],
            [c for i, c in enumerate(clips) if i in held])


def logmel_clips(clips: list[Clip], device: str | torch.device = "cpu", batch_chunks: int = 256,
                 progress: bool = False, desc: str = "log-mel",
                 ) -> tuple[torch.Tensor, np.ndarray, list[tuple[str, str]]]:
    """Clips -> (n_chunks, 96, 100) float16 log-mel on ``device``, (n_clips_read + 1,) int64
    chunk offsets per clip read, and [(fname, reason)] for the clips that could not be read."""
    front = LogMel().to(device)
    parts, lengths, skipped, pending = [], [], [], []

    def flush():
        if pending:
            batch = torch.from_numpy(np.concatenate(pending)).to(device)
            with torch.no_grad():
                parts.extend(front(batch[i:i + batch_chunks]).half()
                             for i in range(0, batch.shape[0], batch_chunks))
            pending.clear()

    for clip in tqdm(clips, desc=desc, unit="clip", disable=not progress):
        try:
            chunks = chunk(read_audio(clip.path))
        except AudioError as e:
            skipped.append((clip.fname, str(e)))
            continue
        pending.append(chunks)
        lengths.append(chunks.shape[0])
        if sum(len(p) for p in pending) >= batch_chunks:
            flush()
    flush()
    logmel = torch.cat(parts) if parts else torch.empty(0, 96, 100, dtype=torch.float16,
                                                         device=device)
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)
    return logmel, offsets, skipped
