"""Training material for the bag-of-words model: the log-mel of clips, split into fit and held out.

``logmel_clips`` reads each clip (``bow.audio.load.read_audio``), cuts it into 1 s chunks
(``bow.audio.load.chunk``, default tail rule) and computes the (96, 100) log-mel of every chunk
(``bow.audio.features.LogMel``), kept as float16 (19.2 KB a chunk: about 5.5 GB for FSD50K's 80 h
of dev audio; fit on a seeded subset of the clips instead, ``max_clips``). Clips that cannot be
read are returned as (fname, reason) and left out.

``training_logmel`` holds out a seeded fraction of the readable clips (whole clips, so chunks of
one recording never sit on both sides) for validation.
"""
from __future__ import annotations

import numpy as np
import torch

from bow.audio.features import LogMel
from bow.audio.load import AudioError, chunk, read_audio
from bow.data.clips import holdout
from bow.data.datasets import Clip
from bow.io.stage import InputError
from bow.progress import progress as progress_bar


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

    for clip in progress_bar(clips, desc=desc, unit="clip", enabled=progress):
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


def _split_held_out(logmel: torch.Tensor, offsets: np.ndarray, held: np.ndarray):
    """(n, 96, 100) log-mel of clips (clip i: rows offsets[i]:offsets[i+1]) -> (the rows of the
    clips not ``held``, those of the ``held`` ones), in clip order. The first is ``logmel``'s
    own memory, compacted in place (no second copy of the training log-mel)."""
    val = [logmel[offsets[i]:offsets[i + 1]] for i in np.flatnonzero(held)]
    val = torch.cat(val) if val else logmel[:0].clone()
    dst = 0
    for i in np.flatnonzero(~held):
        start, n = int(offsets[i]), int(offsets[i + 1] - offsets[i])
        if start != dst:
            logmel[dst:dst + n] = logmel[start:start + n].clone()
        dst += n
    return logmel[:dst], val


def training_logmel(clips: list[Clip], val_fraction: float, seed: int,
                    device: str | torch.device = "cpu", progress: bool = False):
    """Clips -> (fit log-mel (n, 96, 100), held-out log-mel (m, 96, 100), summary dict with the
    clip and chunk counts and the skipped clips). InputError with fewer than 2 readable clips."""
    logmel, offsets, skipped = logmel_clips(clips, device, progress=progress,
                                            desc="log-mel train")
    bad = {fname for fname, _ in skipped}
    readable = [c for c in clips if c.fname not in bad]
    if len(readable) < 2:
        raise InputError(f"{len(readable)} readable clip(s) in the training split(s) "
                         f"({len(skipped)} skipped); need 2 to train and validate")
    fit_clips, val_clips = holdout(readable, val_fraction, seed)
    held = {c.fname for c in val_clips}
    logmel, val = _split_held_out(logmel, offsets, np.array([c.fname in held for c in readable]))
    summary = {"fit_clips": len(fit_clips), "val_clips": len(val_clips),
               "fit_chunks": int(logmel.shape[0]), "val_chunks": int(val.shape[0]),
               "skipped": skipped}
    return logmel, val, summary
