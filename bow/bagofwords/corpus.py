"""Training material for the bag-of-words model: the log-mel of clips, split into fit and held out.

``logmel_clips`` reads each clip (``bow.audio.load.read_audio``), cuts it into 1 s chunks
(``bow.audio.load.chunk``, default tail rule) and computes the (96, 100) log-mel of every chunk
(``bow.audio.features.LogMel``), kept as float16: 19.2 KB a chunk, so memory grows with the corpus.
Clips that cannot be read are returned as (fname, reason) and left out.

``sampled_logmel`` does the same in one streaming pass but keeps only a seeded sample of at most
``sample_chunks`` chunks (bow.bagofwords.sampling: bottom-k of a hash of (seed, fname, chunk
index), the same sample whatever the clip order): memory is 19.2 KB per sampled chunk
(``SAMPLE_CHUNKS`` = 320,000: 6.1 GB), whatever the corpus size, and the log-mel is computed
only for chunks that enter the sample (kept on the host in blocks allocated as they fill, moved
to the device at the end). The
rows come out in corpus order (clip order, then chunk order), so a sample that covers the corpus
is exactly ``logmel_clips``'s output.

``training_logmel`` holds out a seeded fraction of the readable clips (whole clips, so chunks of
one recording never sit on both sides) for validation, from the sampled rows.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

from bow.audio.features import LogMel
from bow.audio.load import AudioError, chunk, read_audio
from bow.bagofwords.sampling import BottomK, RowStore, chunk_keys, permute_rows_
from bow.config import ConfigError
from bow.data.clips import holdout
from bow.data.datasets import Clip
from bow.io.stage import InputError
from bow.progress import progress as progress_bar

SAMPLE_CHUNKS = 320_000     # >= FSD50K's train split (<= ~297,000 chunks), 6.1 GB of log-mel
CHUNK_BYTES = 96 * 100 * 2  # one float16 (96, 100) log-mel chunk
SAMPLE_HELP = ("fit on a seeded sample of at most this many 1 s chunks, drawn in one pass over "
               "the training clips (19.2 KB of log-mel each: the default 320,000 = 6.1 GB covers "
               "FSD50K's train split and 1.5 percent of AudioSet's chunks)")


def check_sample_chunks(value: int) -> None:
    """ConfigError unless ``value`` is a positive number of chunks."""
    if not isinstance(value, int) or value < 1:
        raise ConfigError(f"sample_chunks must be a positive number of chunks, got {value!r}")


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


def sampled_logmel(clips: list[Clip], sample_chunks: int, seed: int,
                   device: str | torch.device = "cpu", batch_chunks: int = 256,
                   progress: bool = False, desc: str = "log-mel sample"):
    """Clips -> a seeded sample of at most ``sample_chunks`` chunks in one pass: (m, 96, 100)
    float16 log-mel on ``device`` in corpus order, (m,) int64 index into ``clips`` of each row,
    [(fname, reason)] for the clips that could not be read, and a dict describing the sample
    (sample_chunks, chunks_seen, sampled, digest: SHA-256 of the sorted sampled (fname, chunk
    index) pairs)."""
    front = LogMel().to(device)
    chooser = BottomK(sample_chunks)
    rows = RowStore((96, 100), torch.float16)   # on the host, grows with the slots used
    pending: dict[int, np.ndarray] = {}      # slot -> (16000,) audio of an admitted chunk
    skipped = []

    def flush():
        if not pending:
            return
        slots = list(pending)
        audio = torch.from_numpy(np.stack([pending[s] for s in slots])).to(device)
        with torch.no_grad():
            for i in range(0, len(slots), batch_chunks):
                rows.put(np.array(slots[i:i + batch_chunks]),
                         front(audio[i:i + batch_chunks]).half().cpu())
        pending.clear()

    for number, clip in enumerate(progress_bar(clips, desc=desc, unit="clip", enabled=progress)):
        try:
            chunks = chunk(read_audio(clip.path))
        except AudioError as e:
            skipped.append((clip.fname, str(e)))
            continue
        for i, slot in chooser.offer(number, chunk_keys(clip.fname, len(chunks), seed)):
            pending[slot] = chunks[i]         # a slot taken again: the newer chunk wins
        if len(pending) >= batch_chunks:
            flush()
    flush()
    order = chooser.order()
    permute_rows_(rows, order)
    logmel = rows.take(len(order)).to(device)
    clip_of, index = chooser.clip[order], chooser.index[order]
    h = hashlib.sha256()                      # of the set: sorted, so clip order does not count
    for fname, i in sorted((clips[c].fname, i) for c, i in zip(clip_of.tolist(), index.tolist())):
        h.update(f"{fname}\t{i}\n".encode())
    info = {"sample_chunks": sample_chunks, "chunks_seen": chooser.seen,
            "sampled": int(len(order)), "digest": h.hexdigest()}
    return logmel, clip_of, skipped, info


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
                    device: str | torch.device = "cpu", progress: bool = False,
                    sample_chunks: int = SAMPLE_CHUNKS):
    """Clips -> (fit log-mel (n, 96, 100), held-out log-mel (m, 96, 100), summary dict with the
    clip and chunk counts, the skipped clips and the sample), from a seeded sample of at most
    ``sample_chunks`` chunks (``sampled_logmel``). InputError with fewer than 2 readable clips."""
    logmel, clip_of, skipped, sample = sampled_logmel(clips, sample_chunks, seed, device,
                                                      progress=progress, desc="log-mel train")
    bad = {fname for fname, _ in skipped}
    readable = [i for i, c in enumerate(clips) if c.fname not in bad]
    if len(readable) < 2:
        raise InputError(f"{len(readable)} readable clip(s) in the training split(s) "
                         f"({len(skipped)} skipped); need 2 to train and validate")
    fit_clips, val_clips = holdout([clips[i] for i in readable], val_fraction, seed)
    held = {c.fname for c in val_clips}
    offsets = np.searchsorted(clip_of, np.array(readable + [len(clips)]), side="left")
    logmel, val = _split_held_out(logmel, offsets,
                                  np.array([clips[i].fname in held for i in readable]))
    summary = {"fit_clips": len(fit_clips), "val_clips": len(val_clips),
               "fit_chunks": int(logmel.shape[0]), "val_chunks": int(val.shape[0]),
               "sample": sample, "skipped": skipped}
    return logmel, val, summary
