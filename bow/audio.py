"""Audio in: any file soundfile reads -> float32 mono 16 kHz -> 1 s chunks.

Chunking decision (the paper does not say): the last, partial chunk is zero-padded to 1 s and
kept only if it holds at least ``min_tail`` seconds of audio (default 0.1 s), unless it is the
clip's only chunk. Most ESC-10 clips are 5.001 s long; without this rule each would gain a sixth
chunk holding 1 ms of audio and 999 ms of padding (~16% of all chunks), which would count as a
near-silent second of the clip in its histograms and head predictions. 4.5 s gives 5 chunks,
5.001 s gives 5, 0.3 s gives 1. ``min_tail=0`` keeps every partial chunk.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

SAMPLE_RATE = 16_000
CHUNK_SAMPLES = SAMPLE_RATE  # 1 s
MIN_TAIL_S = 0.1


class AudioError(ValueError):
    """A file that cannot be turned into audio; the message names the file and the problem."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def to_mono_16k(samples: np.ndarray, sample_rate: int, path="<array>") -> np.ndarray:
    """(frames,) or (frames, channels) float audio at any rate -> (samples,) float32 mono 16 kHz."""
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1, dtype=np.float32)
    if x.ndim != 1:
        raise AudioError(path, f"expected (frames,) or (frames, channels) audio, got shape {x.shape}")
    if x.size == 0:
        raise AudioError(path, "empty audio (0 samples)")
    if not np.isfinite(x).all():
        raise AudioError(path, f"{int((~np.isfinite(x)).sum())} non-finite (NaN or Inf) samples")
    if sample_rate != SAMPLE_RATE:
        x = AF.resample(torch.from_numpy(x), int(sample_rate), SAMPLE_RATE).numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


def read_audio(path: str | Path) -> np.ndarray:
    """Read any soundfile-readable file (WAV, FLAC, OGG, MP3) -> (samples,) float32 mono 16 kHz.

    Samples are in [-1, 1] whatever the file's sample format; channels are averaged.
    Raises AudioError (naming the file) for unreadable, empty or non-finite audio.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "no such file")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise AudioError(path, f"unreadable audio ({type(e).__name__}: {e})") from e
    return to_mono_16k(data, rate, path)


def n_chunks(n_samples: int, min_tail: float = MIN_TAIL_S) -> int:
    """Number of 1 s chunks for a clip of n_samples at 16 kHz (see the module docstring)."""
    full, tail = divmod(int(n_samples), CHUNK_SAMPLES)
    if tail and (full == 0 or tail >= min_tail * SAMPLE_RATE):
        full += 1
    return max(full, 1)


def chunk(audio: np.ndarray, min_tail: float = MIN_TAIL_S) -> np.ndarray:
    """(samples,) 16 kHz -> (n_chunks, 16000) float32, the last chunk zero-padded."""
    n = n_chunks(audio.shape[0], min_tail)
    out = np.zeros((n, CHUNK_SAMPLES), dtype=np.float32)
    flat = out.reshape(-1)
    m = min(audio.shape[0], flat.shape[0])
    flat[:m] = audio[:m]
    return out
