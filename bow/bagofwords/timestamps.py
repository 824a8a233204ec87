"""Bag-of-words timestamp embeddings: code histograms of 1 s windows every 50 ms (HEAR).

A design of ours (the paper embeds 1 s chunks only; ``TimestampEmbedder``):
* Windows. The clip's log-mel L (96, 100 n) is its n chunks' log-mels side by side in time
  (the chunk vectors' own front end, per-chunk dB floor included). Window w is
  L[:, 5 w : 5 w + 100], the 1 s starting at 50 w ms, for w = 0 .. 20 (n - 1); its vector is
  the histogram of its 143 grid tokens, made exactly like a chunk's. So window 20 j is chunk j
  and its vector is the store's chunk vector j.
* Timestamps t_k = 50 k ms for k = 0 .. samples // 800 (0 to the clip's length, a hop of
  50 ms, the largest HEAR recommends). t_k gets the window centred on it, w = k - 10, which covers
  [t_k - 500, t_k + 500) ms, moved inside the clip where it would stick out (w clamped to
  0 .. 20 (n - 1)): the first and last half second repeat the first and last windows. Every
  timestamp embedding thus counts the 143 tokens of one 1 s window, on the scale of the chunk
  vectors and the clip vector.
* Cost. Embedding each window from scratch would encode 20 x 143 tokens per second of audio,
  20 times the cost of the chunk vectors. But the patches (8 x 10) and spectral envelopes
  (96 x 10) of window w lie on the 10-frame columns starting at frames 5 w + 10 i (i < 10):
  the columns starting every 5 frames are shared by all windows, so they are encoded and
  assigned once (twice as many as the chunk grid has) and each window gathers the code ids of
  its 10 columns; only the band envelopes (8 x 100) and the thumbnail span a whole window and
  are encoded per window. Frame words (bow.bagofwords.frames) are assigned once per frame of
  each chunk (their descriptors are a chunk's, deltas included) and window w adds up the words
  of its 100 frames, in order, and takes the statistics words of those frames' descriptors:
  window 20 j again gives chunk j's bits. Per second of audio at
  the paper's sizes (F = 10, 2048 hidden): patches 2 x 1.05, spectral envelopes 2 x 0.13,
  band envelopes 20 x 0.14, thumbnails 20 x 0.009 GFLOP: 5.4 GFLOP, 4.1 times the chunk
  vectors' 1.33 (from scratch: 26.6). benchmarks/hear_memory.py measures the time.

Memory. Clips are processed in pieces of at most ``piece_chunks`` chunks (a long clip in several
pieces, short clips several to a piece); a piece of timestamp windows also reads the chunk after
it (the windows starting in its last second end in the next one). Working memory is about
3 MB per chunk of a piece (STFT, log-mel, window copies, tokens; ~110 MB at 32 chunks, measured
on a 3-minute clip) plus the encoders' activations (2 x 4096 x hidden floats), whatever the
clips' lengths; what grows with a clip is its audio, its chunk or window counts (uint16) and
the output. The result does not depend on the pieces: every window and chunk sees
the same log-mel and tokens (the codes can differ in the last float bit with the batch size of
a matmul, so a code equidistant from two centroids to 1e-7 could change its id; not seen in
the tests).
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from bow.audio.features import HOP, LogMel
from bow.audio.load import CHUNK_SAMPLES, SAMPLE_RATE, n_chunks
from bow.bagofwords.model import BagOfWords, histograms
from bow.bagofwords.tokens import COUNTS, DIMS, FAMILIES, N_FRAMES, N_MELS, SHAPES, grid

HOP_FRAMES = 5                                       # log-mel frames between windows
WINDOW_HOP_MS = HOP_FRAMES * HOP * 1000 // SAMPLE_RATE      # 50 ms
HOP_SAMPLES = HOP_FRAMES * HOP                       # 800
WINDOWS_PER_CHUNK = N_FRAMES // HOP_FRAMES           # 20
COLUMN_FRAMES = SHAPES["patch"][1]                   # 10, also the spectral envelope's width
COLUMNS_PER_WINDOW = N_FRAMES // COLUMN_FRAMES       # 10
STRIDE = COLUMN_FRAMES // HOP_FRAMES                 # 2: window w uses columns w + 2 i
PATCH_ROWS = SHAPES["patch"][0]                      # 8 mel bands per patch
PIECE_CHUNKS = 32


def chunk_rows(audio: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Rows start..stop-1 of ``bow.audio.load.chunk(audio)`` (stop <= n_chunks), without the
    rest."""
    part = np.asarray(audio[start * CHUNK_SAMPLES:stop * CHUNK_SAMPLES], dtype=np.float32)
    out = np.zeros((stop - start, CHUNK_SAMPLES), dtype=np.float32)
    out.reshape(-1)[:part.shape[0]] = part
    return out


def n_windows(n_samples: int) -> int:
    """Number of 1 s windows (every 50 ms) of a clip: 20 (n_chunks - 1) + 1."""
    return WINDOWS_PER_CHUNK * (n_chunks(n_samples) - 1) + 1


def timestamps_ms(n_samples: int) -> np.ndarray:
    """(samples // 800 + 1,) float32 timestamps 0, 50, 100, ... ms up to the clip's length."""
    return (np.arange(n_samples // HOP_SAMPLES + 1) * WINDOW_HOP_MS).astype(np.float32)


def timestamp_windows(n_samples: int) -> np.ndarray:
    """(T,) int64 the window of each timestamp: centred on it, clamped inside the clip."""
    k = np.arange(n_samples // HOP_SAMPLES + 1)
    return np.clip(k - WINDOWS_PER_CHUNK // 2, 0, n_windows(n_samples) - 1)


def plan(lengths: list[int], piece_chunks: int) -> list[list[tuple[int, int, int]]]:
    """Chunk counts of clips -> pieces, each a list of (clip, start, stop) chunk ranges holding
    at most ``piece_chunks`` chunks in all, in clip and time order."""
    if piece_chunks < 1:
        raise ValueError(f"piece_chunks must be at least 1, got {piece_chunks}")
    pieces, current, size = [], [], 0
    for i, n in enumerate(lengths):
        for a in range(0, n, piece_chunks):
            b = min(n, a + piece_chunks)
            if current and size + b - a > piece_chunks:
                pieces.append(current)
                current, size = [], 0
            current.append((i, a, b))
            size += b - a
    if current:
        pieces.append(current)
    return pieces


def column_tokens(logmel: torch.Tensor, n_columns: int) -> dict[str, torch.Tensor]:
    """(96, frames) log-mel -> patches (C * 12, 80) and spectral envelopes (C, 960) of the
    ``n_columns`` 10-frame columns starting every 5 frames, each flattened (mel, frame)."""
    cols = logmel.unfold(1, COLUMN_FRAMES, HOP_FRAMES)[:, :n_columns]      # (96, C, 10)
    cols = cols.permute(1, 0, 2).contiguous()                              # (C, 96, 10)
    return {"patch": cols.reshape(-1, DIMS["patch"]),
            "spectral_envelope": cols.reshape(n_columns, DIMS["spectral_envelope"])}


def window_tokens(logmel: torch.Tensor, n_win: int) -> dict[str, torch.Tensor]:
    """(96, frames) log-mel -> band envelopes (W * 12, 800) and thumbnails (W, 80) of the
    ``n_win`` 100-frame windows starting every 5 frames (bow.bagofwords.tokens.grid on each
    window)."""
    wins = logmel.unfold(1, N_FRAMES, HOP_FRAMES)[:, :n_win].permute(1, 0, 2).contiguous()
    return {f: grid(wins, f).reshape(-1, DIMS[f]) for f in ("band_envelope", "thumbnail")}


def window_words(words: dict[str, dict], n_win: int, n_col: int) -> dict[str, dict]:
    """Assignments (bow.bagofwords.model.BagOfWords.words) of the column tokens (patch
    (C * 12, ...), spectral envelope (C, ...)) and window tokens (band envelope (W * 12, ...),
    thumbnail (W, ...)) -> the same per window, window w's tokens first (its columns w + 2 i,
    i < 10), for bow.bagofwords.model.histograms."""
    cols = np.arange(n_win)[:, None] + STRIDE * np.arange(COLUMNS_PER_WINDOW)[None]

    def gather(family, x):
        if x is None or family in ("band_envelope", "thumbnail"):
            return x
        per_column = COUNTS["patch"] // COLUMNS_PER_WINDOW if family == "patch" else 1
        x = x.reshape(n_col, per_column, *x.shape[1:])[cols]      # (W, 10, per, ...)
        return x.reshape(n_win * COLUMNS_PER_WINDOW * per_column, *x.shape[3:])

    return {f: {k: gather(f, v) for k, v in w.items()} for f, w in words.items()}


class TimestampEmbedder:
    """Clips (any lengths, 16 kHz) -> window counts with a ``BagOfWords`` whose encoders are on
    ``device``; ``piece_chunks`` bounds the chunks processed at once."""

    def __init__(self, bag: BagOfWords, piece_chunks: int = PIECE_CHUNKS,
                 device: str | torch.device = "cpu"):
        self.bag, self.piece_chunks = bag, piece_chunks
        self.device = torch.device(device)
        self.front = LogMel().to(self.device)

    @torch.inference_mode()
    def _logmel(self, rows: np.ndarray) -> torch.Tensor:
        return self.front(torch.from_numpy(rows).to(self.device))

    @torch.inference_mode()
    def _piece_windows(self, audios, lengths, piece) -> list[np.ndarray]:
        """One piece -> per range (clip, start, stop): (windows, width) counts."""
        rows = [chunk_rows(audios[i], a, min(b + 1, lengths[i])) for i, a, b in piece]
        logmel = self._logmel(np.concatenate(rows))
        tokens: dict[str, list[torch.Tensor]] = {f: [] for f in FAMILIES}
        sizes, offset = [], 0
        for (i, a, b), r in zip(piece, rows):
            m = r.shape[0]
            flat = logmel[offset:offset + m].permute(1, 0, 2).reshape(N_MELS, m * N_FRAMES)
            offset += m
            n_win = WINDOWS_PER_CHUNK * (b - a) - (WINDOWS_PER_CHUNK - 1) * (b == lengths[i])
            n_col = n_win + STRIDE * (COLUMNS_PER_WINDOW - 1)
            for f, t in (column_tokens(flat, n_col) | window_tokens(flat, n_win)).items():
                tokens[f].append(t)
            sizes.append((n_win, n_col))
        words = {f: self.bag.words(f, torch.cat(tokens[f])) for f in FAMILIES}
        out, used = [], dict.fromkeys(FAMILIES, 0)
        for n_win, n_col in sizes:
            per = {"patch": n_col * N_MELS // PATCH_ROWS, "spectral_envelope": n_col,
                   "band_envelope": n_win * COUNTS["band_envelope"], "thumbnail": n_win}
            part = {f: {k: None if v is None else v[used[f]:used[f] + per[f]]
                        for k, v in words[f].items()} for f in FAMILIES}
            used = {f: used[f] + per[f] for f in FAMILIES}
            out.append(histograms(window_words(part, n_win, n_col), n_win, self.bag.n_codes,
                                  self.bag.n_levels))
        if self.bag.frames:
            assigned = self.bag.frame_words(logmel)
            starts = np.cumsum([0] + [r.shape[0] * N_FRAMES for r in rows])
            for j, (n_win, _) in enumerate(sizes):
                frames = starts[j] + HOP_FRAMES * np.arange(n_win)[:, None] + np.arange(N_FRAMES)
                counts = self.bag.frames.histograms(assigned, frames)
                out[j] = np.concatenate([out[j], counts.astype(out[j].dtype)], axis=1)
        return out

    def window_counts(self, audios: list[np.ndarray]) -> Iterator[tuple[int, np.ndarray]]:
        """List of (samples_i,) -> yields (i, (n_windows_i, width) counts) per clip, in order,
        as soon as the clip is done (uint16 with hard assignment, float32 with soft)."""
        lengths = [n_chunks(len(a)) for a in audios]
        width = self.bag.width
        dtype = np.uint16 if self.bag.assignment.assignment == "hard" else np.float32
        pending: dict[int, np.ndarray] = {}
        for piece in plan(lengths, self.piece_chunks):
            for (i, a, b), counts in zip(piece, self._piece_windows(audios, lengths, piece)):
                if i not in pending:
                    pending[i] = np.empty((n_windows(len(audios[i])), width), dtype=dtype)
                w0 = WINDOWS_PER_CHUNK * a
                pending[i][w0:w0 + counts.shape[0]] = counts
                if b == lengths[i]:
                    yield i, pending.pop(i)

    def timestamp_embeddings(self, audios: list[np.ndarray]
                             ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """List of (samples_i,) -> yields (i, (T_i, width) float32 counts, (T_i,) ms) per clip."""
        for i, counts in self.window_counts(audios):
            rows = timestamp_windows(len(audios[i]))
            yield i, counts[rows].astype(np.float32), timestamps_ms(len(audios[i]))
