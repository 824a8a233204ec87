"""Audio in: any file soundfile reads -> float32 mono 16 kHz -> 1 s chunks.

Reading (``read_audio``) decisions, one per kind of awkward input:

* Sample formats: integer PCM is scaled to [-1, 1) by soundfile (8-bit unsigned:
  (x - 128) / 128, 16-bit: x / 2**15, 24-bit: x / 2**23, 32-bit: x / 2**31). Float and double
  files are passed through as stored, not clipped: values beyond +-1 stay as they are.
* Channels are averaged (any number: stereo, 5.1, ...).
* Any sample rate whose resampling kernel stays small (every common rate, 8-192 kHz) is
  resampled to 16 kHz with torchaudio's windowed-sinc resampler (its defaults). Rates whose
  kernel would be huge (e.g. 44101 Hz, coprime with 16000) raise AudioError rather than use
  gigabytes of memory.
* Long files are read in blocks of ``READ_BLOCK`` frames, mixed down and resampled piece by
  piece with enough context on each side that the result equals one resample of the whole
  signal (to float rounding, ~1e-7): memory stays ~ the 16 kHz output, whatever the length.
* All-silent audio is valid audio: it is returned (and embedded) like any other.
* Audio shorter than one 30 ms analysis window (even one sample) is valid: ``chunk`` zero-pads
  it into one 1 s chunk.
* Truncated files: when libsndfile can still read a file whose data stops early (a WAV cut
  short: libsndfile trusts the bytes present, not the header's frame count), the frames present
  are the audio. When a decoder reports an error (a FLAC stream that loses sync, an OGG whose
  pages are cut), the file raises AudioError: we never return audio up to a decode error.
* AudioError, naming the file and the problem, for: no such file, an empty (0-byte) file,
  anything libsndfile does not recognise as audio (a text file named .wav, a broken header),
  a decode error, 0 frames of audio, and NaN or Inf samples.

Chunking decision (the paper does not say): the last, partial chunk is zero-padded to 1 s and
kept only if it holds at least ``min_tail`` seconds of audio (default 0.1 s), unless it is the
clip's only chunk. Most ESC-10 clips are 5.001 s long; without this rule each would gain a sixth
chunk holding 1 ms of audio and 999 ms of padding (~16% of all chunks), which would count as a
near-silent second of the clip in its histograms and head predictions. 4.5 s gives 5 chunks,
5.001 s gives 5, 0.3 s gives 1. ``min_tail=0`` keeps every partial chunk.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from bow.environment import torchaudio

SAMPLE_RATE = 16_000
CHUNK_SAMPLES = SAMPLE_RATE  # 1 s
MIN_TAIL_S = 0.1
READ_BLOCK = 1 << 18         # frames read (and checked) at a time
RESAMPLE_PIECE = 1 << 18     # input samples resampled at a time (rounded to the rate's period)
MAX_KERNEL = 1 << 22         # largest resampling kernel (elements) accepted, 16 MiB in float32
_LOWPASS_WIDTH, _ROLLOFF = 6, 0.99  # torchaudio's resample defaults, used for the context size


class AudioError(ValueError):
    """A file that cannot be turned into audio; the message names the file and the problem."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class _Resampler:
    """Resample a mono signal given block by block to 16 kHz, equal to one call on the whole.

    torchaudio's resampler (rates reduced by their gcd to ``o`` -> ``n``) computes output frame
    k (samples k*n .. k*n + n - 1) from the input around sample k*o, within ``width`` samples.
    The signal is seen as zero-extended on both sides (as torchaudio pads it); pieces start at
    multiples of ``o`` and carry ``ctx >= width`` samples of context each side, so their output
    frames are exactly those of the whole signal.
    """

    def __init__(self, orig_rate: int, path="<array>"):
        g = math.gcd(int(orig_rate), SAMPLE_RATE)
        self.o, self.n = int(orig_rate) // g, SAMPLE_RATE // g
        width = math.ceil(_LOWPASS_WIDTH * self.o / (min(self.o, self.n) * _ROLLOFF))
        if self.n * (2 * width + self.o) > MAX_KERNEL:
            raise AudioError(path, f"unsupported sample rate {orig_rate} Hz (resampling it to "
                                   f"{SAMPLE_RATE} Hz needs a {self.n}x{2 * width + self.o} "
                                   "kernel); convert the file to a common rate")
        self.resample = torchaudio().transforms.Resample(int(orig_rate), SAMPLE_RATE,
                                                         dtype=torch.float32)
        self.ctx = (width // self.o + 1) * self.o
        self.piece = max(1, RESAMPLE_PIECE // self.o) * self.o
        self.pending = [np.zeros(self.ctx, np.float32)]  # left context (zeros) + unprocessed
        self.n_pending = self.ctx
        self.n_in = 0
        self.out: list[np.ndarray] = []

    def _run(self, segment: np.ndarray, n_out: int) -> np.ndarray:
        y = self.resample(torch.from_numpy(segment)).numpy()
        start = self.ctx // self.o * self.n
        return y[start:start + n_out]

    def push(self, x: np.ndarray) -> None:
        """Add (samples,) float32 input; resample every piece that has its right context."""
        self.pending.append(x)
        self.n_pending += x.shape[0]
        self.n_in += x.shape[0]
        span = 2 * self.ctx + self.piece
        if self.n_pending < span:
            return
        buf = np.concatenate(self.pending)
        start = 0
        while buf.shape[0] - start >= span:
            self.out.append(self._run(buf[start:start + span], self.piece // self.o * self.n))
            start += self.piece
        self.pending = [buf[start:]]
        self.n_pending = buf.shape[0] - start

    def finish(self) -> np.ndarray:
        """(ceil(n_in * 16000 / rate),) float32: the resampled signal."""
        total = -(-self.n_in * self.n // self.o)
        done = sum(y.shape[0] for y in self.out)
        tail = np.concatenate(self.pending + [np.zeros(self.ctx, np.float32)])
        self.out.append(self._run(tail, total - done))
        return np.concatenate(self.out)


class _Mono16k:
    """Accumulate (frames, channels) blocks -> mono, checked, 16 kHz."""

    def __init__(self, rate: int, path="<array>"):
        self.path = path
        self.rate = int(rate)
        if self.rate <= 0:
            raise AudioError(path, f"invalid sample rate {rate} Hz")
        self.resampler = None if self.rate == SAMPLE_RATE else _Resampler(rate, path)
        self.blocks: list[np.ndarray] = []
        self.n_in = 0

    def push(self, block: np.ndarray) -> None:
        finite = np.isfinite(block)
        if not finite.all():
            first = self.n_in + int(np.argmin(finite.all(axis=1)))
            raise AudioError(self.path, f"non-finite (NaN or Inf) samples, the first at frame "
                                        f"{first} ({first / self.rate:.3f} s)")
        mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
        mono = np.ascontiguousarray(mono, dtype=np.float32)
        self.n_in += mono.shape[0]
        if self.resampler is None:
            self.blocks.append(mono)
        else:
            self.resampler.push(mono)

    def finish(self) -> np.ndarray:
        if self.n_in == 0:
            raise AudioError(self.path, "empty audio (0 samples)")
        if self.resampler is not None:
            return self.resampler.finish()
        return np.concatenate(self.blocks)


def to_mono_16k(samples: np.ndarray, sample_rate: int, path="<array>") -> np.ndarray:
    """(frames,) or (frames, channels) float audio at any rate -> (samples,) float32 mono 16 kHz.

    Raises AudioError for empty or non-finite audio and unsupported rates (see module docstring).
    """
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise AudioError(path, f"expected (frames,) or (frames, channels) audio, "
                               f"got shape {x.shape}")
    mono = _Mono16k(sample_rate, path)
    mono.push(x)
    return mono.finish()


def _detail(e: Exception) -> str:
    """libsndfile's own message without the path it repeats, else the exception's text."""
    return str(getattr(e, "error_string", "") or e).strip()


def read_audio(path: str | Path) -> np.ndarray:
    """Read any soundfile-readable file (WAV, FLAC, OGG, MP3) -> (samples,) float32 mono 16 kHz.

    Integer samples are scaled to [-1, 1); channels are averaged; blocks are resampled as they
    are read. Raises AudioError naming the file and the problem (see the module docstring).
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "not a file (a directory)" if path.is_dir() else "no such file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        f = sf.SoundFile(str(path))
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise AudioError(path, f"unreadable audio: libsndfile cannot open it "
                               f"({_detail(e)})") from e
    with f:
        mono = _Mono16k(f.samplerate, path)
        while True:
            try:
                block = f.read(READ_BLOCK, dtype="float32", always_2d=True)
            except (RuntimeError, OSError) as e:  # LibsndfileError is a RuntimeError
                raise AudioError(path, f"corrupt or truncated audio data: decoding failed after "
                                       f"{mono.n_in} frames ({_detail(e)})") from e
            if block.shape[0] == 0:
                break
            mono.push(block)
    return mono.finish()


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
