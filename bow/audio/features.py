"""Spectral front ends over torchaudio, batched over 1 s chunks, on any device.

LogMel (bag of words): (n, 16000) -> (n, 96, 100) log-mel in dB.
  96 mel bands (HTK scale) over 0-8 kHz, FFT size 2048, Hann window of 480 samples (30 ms)
  zero-padded to 2048, hop 160 (10 ms), power spectrum.
  Frames: centred (frame t is centred on sample 160 t, the chunk zero-padded by 1024 samples on
  each side), which gives 101 frames for 16000 samples; the 101st, centred on the chunk's last
  sample, belongs to the next chunk and is dropped, leaving exactly 100 frames per 1 s chunk.
  Log floor: dB = 10 log10(max(power, 1e-10)), then clipped at the chunk's own maximum minus
  ``top_db`` (80 dB). The floor is relative, per chunk, so digitally silent regions sit 80 dB
  below the chunk's peak instead of at an absolute -100 dB that would dominate the token
  variance (../shared/FINDINGS.md). An all-zero chunk is -100 dB everywhere.

MFCC (KW-MLP): (n, 16000) -> (n, 40, 98), configured like the authors' nnAudio front end:
  40 slaney-normalised slaney-scale mel bands, n_fft = window = 480 (periodic Hann), hop 160,
  no centring, power 2, dB with ref 1, amin 1e-10 and top_db 80 per chunk, DCT-II orthonormal.

PowerMel (Audio-MLP): (n, 16000) -> (n, 40, 98) LINEAR power mel, as the authors' nnAudio front
  end of their Audio-MLP package: the MFCC's mel stage (40 slaney-normalised slaney-scale bands
  over 0-8 kHz, n_fft = window = 480, periodic Hann, hop 160, no centring, power 2) with no
  logarithm and no per-chunk statistic, so chunks are independent.

torchaudio's AmplitudeToDB takes the top_db maximum over everything but the last three
dimensions, so a (n, mel, time) batch would share one maximum. Both modules therefore run on
(n, 1, samples) so each chunk gets its own maximum, and a batch equals its items one by one.
"""
from __future__ import annotations

import torch
import torchaudio.transforms as T
from torch import nn

from bow.audio.load import SAMPLE_RATE

HOP = 160


class LogMel(nn.Module):
    """(n, 16000) float waveform chunks -> (n, 96, 100) log-mel, dB."""

    def __init__(self, n_mels: int = 96, n_fft: int = 2048, win_length: int = 480,
                 hop_length: int = HOP, f_min: float = 0.0, f_max: float = 8000.0,
                 top_db: float = 80.0):
        super().__init__()
        self.mel = T.MelSpectrogram(
            sample_rate=SAMPLE_RATE, n_fft=n_fft, win_length=win_length, hop_length=hop_length,
            f_min=f_min, f_max=f_max, n_mels=n_mels, power=2.0, center=True, pad_mode="constant",
        )
        self.to_db = T.AmplitudeToDB(stype="power", top_db=top_db)

    def forward(self, chunks: torch.Tensor) -> torch.Tensor:
        n_frames = chunks.shape[-1] // self.mel.hop_length
        spec = self.mel(chunks.unsqueeze(1))              # (n, 1, mels, frames + 1)
        return self.to_db(spec)[:, 0, :, :n_frames]


class MFCC(nn.Module):
    """(n, 16000) float waveform chunks -> (n, 40, 98) MFCC as in the authors' KW-MLP package."""

    def __init__(self, n_mfcc: int = 40, n_mels: int = 40, n_fft: int = 480,
                 hop_length: int = HOP, top_db: float = 80.0):
        super().__init__()
        self.mfcc = T.MFCC(
            sample_rate=SAMPLE_RATE, n_mfcc=n_mfcc, dct_type=2, norm="ortho", log_mels=False,
            melkwargs=dict(n_fft=n_fft, win_length=n_fft, hop_length=hop_length, n_mels=n_mels,
                           f_min=0.0, f_max=SAMPLE_RATE / 2, center=False, power=2.0,
                           norm="slaney", mel_scale="slaney"),
        )
        self.mfcc.amplitude_to_DB.top_db = top_db

    def forward(self, chunks: torch.Tensor) -> torch.Tensor:
        return self.mfcc(chunks.unsqueeze(1))[:, 0]


class PowerMel(nn.Module):
    """(n, 16000) float waveform chunks -> (n, 40, 98) linear power mel (Audio-MLP)."""

    def __init__(self, n_mels: int = 40, n_fft: int = 480, hop_length: int = HOP):
        super().__init__()
        self.mel = T.MelSpectrogram(
            sample_rate=SAMPLE_RATE, n_fft=n_fft, win_length=n_fft, hop_length=hop_length,
            f_min=0.0, f_max=SAMPLE_RATE / 2, n_mels=n_mels, center=False, power=2.0,
            norm="slaney", mel_scale="slaney")

    def forward(self, chunks: torch.Tensor) -> torch.Tensor:
        return self.mel(chunks)
