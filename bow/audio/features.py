"""Spectral front ends, batched over 1 s chunks, on any device (torchaudio's filterbanks).

LogMel (bag of words): (n, 16000) -> (n, 96, 100) log-mel in dB.
  96 mel bands (HTK scale) over 0-8 kHz, FFT size 2048, Hann window of 480 samples (30 ms)
  zero-padded to 2048, hop 160 (10 ms), power spectrum.
  Frames: centred (frame t is centred on sample 160 t, the chunk zero-padded on each side),
  which gives 101 frames for 16000 samples; the 101st, centred on the chunk's last sample,
  belongs to the next chunk and is dropped, leaving exactly 100 frames per 1 s chunk.
  Log floor: dB = 10 log10(max(power, 1e-10)), then clipped at the chunk's own maximum (over
  its 101 frames) minus ``top_db`` (80 dB). The floor is relative, per chunk, so digitally
  silent regions sit 80 dB below the chunk's peak instead of at an absolute -100 dB that would
  dominate the token variance (../shared/FINDINGS.md). An all-zero chunk is -100 dB everywhere.

MFCC (KW-MLP): (n, 16000) -> (n, 40, 98), configured like the authors' nnAudio front end:
  40 slaney-normalised slaney-scale mel bands, n_fft = window = 480 (periodic Hann), hop 160,
  no centring, power 2, dB with ref 1, amin 1e-10 and top_db 80 per chunk, DCT-II orthonormal.

PowerMel (Audio-MLP): (n, 16000) -> (n, 40, 98) LINEAR power mel, as the authors' nnAudio front
  end of their Audio-MLP package: the MFCC's mel stage (40 slaney-normalised slaney-scale bands
  over 0-8 kHz, n_fft = window = 480, periodic Hann, hop 160, no centring, power 2) with no
  logarithm and no per-chunk statistic, so chunks are independent.

All three compute what torchaudio's MelSpectrogram (+ AmplitudeToDB, + the DCT) compute on
(n, 1, samples) inputs, each chunk with its own top_db maximum so that a batch equals its items
one by one (torchaudio fed (n, samples) would share one maximum over the batch), with three
changes of arithmetic, not of result (tests/audio/test_features.py: on ESC-10, within 1e-4 dB of
torchaudio's float64 log-mel wherever a value is less than 40 dB below its chunk's peak; the
float32 FFT's rounding, amplified by B's cancellation, reaches 0.06 dB at values ~80 dB below
the peak, next to the floor; torchaudio's float32 log-mel: 0.003 dB):

* the power spectrum is re^2 + im^2 of the FFT (torchaudio: |X| then squared, a hypot and a
  square root per bin: 25 % of the log-mel's time);
* LogMel: a 2048-point DFT of a 480-sample window holds no more information than a 1024-point
  one. The power spectrum of a frame is the DFT of its autocorrelation, whose lags are -479 ..
  479; 1024 >= 959 samples of it on the 1024-point grid therefore determine it exactly, and
  the mel energies, linear in the 1025 power values of the 2048-point grid, are linear in the
  513 of the 1024-point grid: mel = P_1024 @ B with B = M A (``_mel_from_half_grid``,
  computed once in float64: A = cosine transform to the lags, then back to the 2048-point grid;
  M = torchaudio's filterbank). In exact arithmetic the same numbers, for a quarter of the FFT
  time (measured: 2048-point rfft 85 ms, 1024-point 23 ms per 16 chunks). B's leakage terms
  cancel (a band 80 dB below the frame's peak is the sum of terms far above it), so B is kept
  in float64 and used in the input's dtype: in float32 the FFT's own rounding dominates (a
  float64 matmul measured no closer to torchaudio's float64 log-mel), in float64 the result
  is torchaudio's to 1e-4 dB;
* the 480-sample windowed frames are cut directly (the 1568 zeros of each 2048-point frame
  are never transformed) and written into zeroed 1024-point frames, which the FFT takes as
  they are (the same bits as ``rfft(frames, n=1024)``, whose own padding copy took ~40 % of
  the FFT's time: 7.6 -> 4.3 ms per 16 chunks, measured 2026-12-07), and every
  (n, frames, bins) array stays time-major until the end.
Measured on one thread of the development machine (200 ESC-10 chunks, 16 a call, same process,
load 4-8): LogMel 2.9-3.1x, MFCC 1.4x faster than the torchaudio modules.

Threads: every ``forward`` runs with torch on one thread (bow.runtime.one_thread), so a chunk's
output depends on the chunk alone, not on the caller's thread count (issue 23): with 3 threads
MKL split the MFCC's (1568, 241) @ (241, 40) mel matmul otherwise and changed its bits. With one
thread the outputs of a chunk were also the same, bit for bit, in calls of 1, 3, 7, 16, 32 and
64 chunks (192 ESC-10 chunks, all three front ends; tests/audio/test_features.py).
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bow.audio.load import SAMPLE_RATE
from bow.environment import torchaudio
from bow.runtime import one_thread

HOP = 160
AMIN = 1e-10


def _to_db(power: torch.Tensor, top_db: float) -> torch.Tensor:
    """(n, frames, bands) power -> dB, floored at each chunk's maximum minus ``top_db``."""
    db = torch.log10(power.clamp_(min=AMIN)).mul_(10.0)
    peak = db.amax(dim=(1, 2), keepdim=True)
    return torch.maximum(db, peak - top_db)


def _mel_fbank(n_fft: int, f_min: float, f_max: float, n_mels: int, norm: str | None,
               mel_scale: str) -> torch.Tensor:
    """torchaudio's (n_fft // 2 + 1, n_mels) mel filterbank."""
    return torchaudio().functional.melscale_fbanks(n_fft // 2 + 1, f_min, f_max, n_mels,
                                                   SAMPLE_RATE, norm=norm, mel_scale=mel_scale)


def _frames(chunks: torch.Tensor, win: int, pad: int, window: torch.Tensor,
            n_fft: int) -> torch.Tensor:
    """(n, samples) -> (n, frames, n_fft) windowed frames, hop ``HOP``, ``pad`` zeros each side
    of the chunk, each frame's ``win`` samples followed by n_fft - win zeros (module docstring)."""
    x = F.pad(chunks, (pad, pad)) if pad else chunks
    frames = x.unfold(-1, win, HOP)
    if n_fft == win:
        return frames * window
    out = chunks.new_zeros(frames.shape[:-1] + (n_fft,))
    torch.mul(frames, window, out=out[..., :win])
    return out


def _power(frames: torch.Tensor) -> torch.Tensor:
    """(..., n_fft) frames -> (..., n_fft // 2 + 1) power spectrum, re^2 + im^2."""
    spec = torch.fft.rfft(frames)
    return spec.real.square() + spec.imag.square()


def _cos_2pi(m: np.ndarray, n: int) -> np.ndarray:
    """cos(2 pi m / n) of integers m, float64, from a table of n values at m mod n: the argument
    reduced exactly instead of np.cos of 2 pi m / n for products m up to ~10^6 (LogMel's matrix
    moved by at most 3e-14 of values up to 2), and faster (building LogMel, once per process:
    62 -> 32 ms, measured 2026-12-07)."""
    return np.cos(2 * np.pi * np.arange(n) / n)[np.mod(m, n)]


def _mel_from_half_grid(fbank: np.ndarray, win: int, n_fft: int, n_small: int) -> np.ndarray:
    """(n_fft // 2 + 1, mels) filterbank on the n_fft grid -> (n_small // 2 + 1, mels) matrix B
    with P_n_fft @ fbank = P_n_small @ B for the power spectra of any ``win``-sample frame
    (module docstring); float64."""
    if n_small < 2 * win - 1:
        raise ValueError(f"a {n_small}-point grid cannot hold the {2 * win - 1} lags")
    lags = np.arange(-(win - 1), win)
    k = np.arange(n_small // 2 + 1)
    weight = np.where((k == 0) | (k == n_small // 2), 1.0, 2.0) / n_small
    to_lags = _cos_2pi(np.outer(lags, k), n_small) * weight                # (lags, small)
    big = np.arange(n_fft // 2 + 1)
    to_big = _cos_2pi(np.outer(big, lags), n_fft)                           # (big, lags)
    return to_lags.T @ (to_big.T @ fbank)          # 10x fewer products than (to_big @ to_lags)


@functools.lru_cache(maxsize=4)
def _log_mel_matrix(n_mels: int, n_fft: int, win: int, f_min: float, f_max: float
                    ) -> tuple[np.ndarray, int]:
    """LogMel's float64 (bins, n_mels) matrix on the smallest FFT grid that holds a ``win``
    frame's lags, and that grid's size. Computed once per process and parameters: it took
    ~0.15 s, 65 % of a HEAR call on one 5 s clip when every call built its front end."""
    fbank = _mel_fbank(n_fft, f_min, f_max, n_mels, None, "htk").double().numpy()
    n_small = min(1 << int(np.ceil(np.log2(2 * win - 1))), n_fft)
    fb = fbank if n_small == n_fft else _mel_from_half_grid(fbank, win, n_fft, n_small)
    fb.flags.writeable = False
    return fb, n_small


class LogMel(nn.Module):
    """(n, 16000) float waveform chunks -> (n, 96, 100) log-mel, dB."""

    def __init__(self, n_mels: int = 96, n_fft: int = 2048, win_length: int = 480,
                 hop_length: int = HOP, f_min: float = 0.0, f_max: float = 8000.0,
                 top_db: float = 80.0):
        super().__init__()
        if hop_length != HOP:
            raise ValueError(f"hop_length must be {HOP}")
        self.n_fft, self.win, self.top_db = n_fft, win_length, top_db
        fb, self.n_small = _log_mel_matrix(n_mels, n_fft, win_length, f_min, f_max)
        # kept in float64, used in the input's dtype (module docstring)
        self.register_buffer("fbank", torch.from_numpy(fb.copy()), persistent=False)
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)

    @one_thread()
    def forward(self, chunks: torch.Tensor) -> torch.Tensor:
        n_frames = chunks.shape[-1] // HOP
        frames = _frames(chunks, self.win, self.win // 2, self.window, self.n_small)
        power = _power(frames)                                          # (n, frames + 1, bins)
        n, f, bins = power.shape
        mel = power.reshape(n * f, bins) @ self.fbank.to(power.dtype)
        return _to_db(mel.reshape(n, f, -1), self.top_db)[:, :n_frames].transpose(1, 2)


class MFCC(nn.Module):
    """(n, 16000) float waveform chunks -> (n, 40, 98) MFCC as in the authors' KW-MLP package."""

    def __init__(self, n_mfcc: int = 40, n_mels: int = 40, n_fft: int = 480,
                 hop_length: int = HOP, top_db: float = 80.0):
        super().__init__()
        if hop_length != HOP:
            raise ValueError(f"hop_length must be {HOP}")
        self.n_fft, self.top_db = n_fft, top_db
        fbank = _mel_fbank(n_fft, 0.0, SAMPLE_RATE / 2, n_mels, "slaney", "slaney")
        self.register_buffer("fbank", fbank, persistent=False)
        dct = torchaudio().functional.create_dct(n_mfcc, n_mels, "ortho")
        self.register_buffer("dct", dct, persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    @one_thread()
    def forward(self, chunks: torch.Tensor) -> torch.Tensor:
        frames = _frames(chunks, self.n_fft, 0, self.window, self.n_fft)  # (n, 98, 480)
        power = _power(frames)                                           # (n, 98, 241)
        n, f, bins = power.shape
        db = _to_db((power.reshape(n * f, bins) @ self.fbank).reshape(n, f, -1), self.top_db)
        return (db.reshape(n * f, -1) @ self.dct).reshape(n, f, -1).transpose(1, 2)


class PowerMel(nn.Module):
    """(n, 16000) float waveform chunks -> (n, 40, 98) linear power mel (Audio-MLP)."""

    def __init__(self, n_mels: int = 40, n_fft: int = 480, hop_length: int = HOP):
        super().__init__()
        if hop_length != HOP:
            raise ValueError(f"hop_length must be {HOP}")
        self.n_fft = n_fft
        fbank = _mel_fbank(n_fft, 0.0, SAMPLE_RATE / 2, n_mels, "slaney", "slaney")
        self.register_buffer("fbank", fbank, persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    @one_thread()
    def forward(self, chunks: torch.Tensor) -> torch.Tensor:
        power = _power(_frames(chunks, self.n_fft, 0, self.window, self.n_fft))  # (n, 98, 241)
        return (power @ self.fbank).transpose(1, 2)
