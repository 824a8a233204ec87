"""Frame descriptors of a log-mel chunk: the low-level descriptors of the classic tools.

(n, 96, 100) log-mel (dB, bow.audio.features.LogMel) -> (n, 100, 94) float32: per 10 ms frame
47 descriptors and their deltas, all computed from the mel spectrum (no second pass over the
audio, so they cost ~1 % of the embedding):

  level        1   10 log10 of the frame's mean mel power (dB)
  cepstra     13   c1..c13 of the DCT-II (orthonormal) of the frame's dB over the 96 bands
  bands       24   dB of the mean power of 24 groups of 4 adjacent mel bands
  shape        9   of the mel power as a distribution over the band index b = 0..95:
                   centroid, spread, skewness, kurtosis, entropy (/ log 96), flatness
                   (geometric / arithmetic mean, dB), 85 % roll-off, slope of the dB over b,
                   flux (RMS of the dB change from the previous frame; 0 on the first)
  deltas      47   of all the above over the frames: (sum_k k (x[t + k] - x[t - k])) / 10, k = 1, 2,
                   edges repeated (torchaudio.functional.compute_deltas's formula, window 5)

This is ComParE's low-level-descriptor idea (energies, cepstra, band energies, spectral shape,
deltas) on the project's own front end; voicing descriptors (F0, HNR, jitter) are left out:
they need the waveform and a pitch tracker.

Decision: everything is elementwise or a reduction along one chunk's own axis (the cepstra too,
as a product and sum, not a matmul; the deltas by their formula, not a convolution), so a
chunk's descriptors are the same bits in any batch: BLAS and convolution kernels may round by
the batch's size (bow.bagofwords.encoder), and stores must not depend on how they were batched.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from bow.environment import torchaudio

N_CEPSTRA, N_BANDS, BAND_WIDTH = 13, 24, 4
NAMES = (["level"] + [f"c{i}" for i in range(1, N_CEPSTRA + 1)] +
         [f"band{i}" for i in range(N_BANDS)] +
         ["centroid", "spread", "skewness", "kurtosis", "entropy", "flatness", "rolloff",
          "slope", "flux"])
N_STATIC = len(NAMES)                          # 47
DIM = 2 * N_STATIC                             # 94
LN10 = 2.302585092994046


@functools.lru_cache(maxsize=2)
def _dct(n_mels: int) -> torch.Tensor:
    """(n_mels, N_CEPSTRA) orthonormal DCT-II rows c1..c13 (c0 is the level)."""
    return torchaudio().functional.create_dct(N_CEPSTRA + 1, n_mels, "ortho")[:, 1:].contiguous()


def _deltas(x: torch.Tensor) -> torch.Tensor:
    """(n, t, d) -> (n, t, d) deltas over t, window 5, edges repeated (module docstring)."""
    t = x.shape[1]
    p = F.pad(x.transpose(1, 2), (2, 2), mode="replicate").transpose(1, 2)
    return ((p[:, 3:t + 3] - p[:, 1:t + 1]) + 2.0 * (p[:, 4:t + 4] - p[:, 0:t])) / 10.0


def _shape(power: torch.Tensor, db: torch.Tensor) -> torch.Tensor:
    """(n, t, m) mel power and dB -> (n, t, 9) spectral shape (module docstring)."""
    m = power.shape[-1]
    b = torch.arange(m, dtype=power.dtype)
    q = power / power.sum(-1, keepdim=True)
    centroid = (q * b).sum(-1)
    dev = b - centroid.unsqueeze(-1)
    var = (q * dev.square()).sum(-1)
    spread = var.sqrt()
    skew = (q * dev.pow(3)).sum(-1) / spread.pow(3).clamp(min=1e-6)
    kurt = (q * dev.pow(4)).sum(-1) / var.square().clamp(min=1e-6)
    entropy = -(q * q.clamp(min=1e-12).log()).sum(-1) / torch.log(torch.tensor(float(m)))
    flatness = 10.0 * (power.log().mean(-1) - power.mean(-1).log()) / LN10
    rolloff = (q.cumsum(-1) < 0.85).sum(-1).to(power.dtype)
    bc = b - b.mean()
    slope = ((db - db.mean(-1, keepdim=True)) * bc).sum(-1) / bc.square().sum()
    flux = torch.zeros_like(centroid)
    flux[:, 1:] = (db[:, 1:] - db[:, :-1]).square().mean(-1).sqrt()
    return torch.stack([centroid, spread, skew, kurt, entropy, flatness, rolloff, slope, flux],
                       dim=-1)


def frame_descriptors(logmel: torch.Tensor) -> torch.Tensor:
    """(n, 96, 100) log-mel dB -> (n, 100, 94) float32 descriptors and deltas per frame
    (float32 arithmetic: dB values are within 80 dB of each chunk's peak, bow.audio.features)."""
    db = logmel.float().transpose(1, 2).contiguous()              # (n, t, m)
    n, t, m = db.shape
    power = torch.exp(db * (LN10 / 10.0))
    level = 10.0 * power.mean(-1).log10()
    cepstra = (db.unsqueeze(-1) * _dct(m)).sum(-2)
    bands = 10.0 * power.reshape(n, t, N_BANDS, m // N_BANDS).mean(-1).log10()
    static = torch.cat([level.unsqueeze(-1), cepstra, bands, _shape(power, db)], dim=-1)
    return torch.cat([static, _deltas(static)], dim=-1)
