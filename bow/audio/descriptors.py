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

Decision: chunks are computed in groups of ``GROUP``, the last one zero-padded, on one torch
thread, so every operation sees the same shapes whatever the batch (the deltas by their
formula, not a convolution): a chunk's descriptors are the same bits in any batch. BLAS kernels
may round by a matrix's size (bow.bagofwords.encoder), and torch's elementwise kernels compute
the last elements of a tensor (and of each thread's share) on a scalar path whose exp, log and
pow may differ from the vector path in the last bit (measured: the kurtosis of the last frames
of a batch's last chunk, computed batch-wise); stores must not depend on how they were batched.
One chunk at a time gave the same bits but cost 3x more in Python overhead.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from bow.environment import torchaudio
from bow.runtime import one_thread

N_CEPSTRA, N_BANDS, BAND_WIDTH = 13, 24, 4
NAMES = (["level"] + [f"c{i}" for i in range(1, N_CEPSTRA + 1)] +
         [f"band{i}" for i in range(N_BANDS)] +
         ["centroid", "spread", "skewness", "kurtosis", "entropy", "flatness", "rolloff",
          "slope", "flux"])
N_STATIC = len(NAMES)                          # 47
DIM = 2 * N_STATIC                             # 94
LN10 = 2.302585092994046


@functools.lru_cache(maxsize=2)
def _projections(n_mels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame linear maps, (n_mels, 15) float32 of the dB: c1..c13 (orthonormal DCT-II, c0
    being the level), the slope over the band index and the mean; (n_mels, 5 + 24) float64 of
    the power: its sums weighted by u^0..u^4, u = (b - c) / c the band index centred and scaled
    to [-1, 1] (raw moments, in float64: they cancel for peaked spectra), and by each group of
    4 bands."""
    b = torch.arange(n_mels, dtype=torch.float64)
    bc = b - b.mean()
    dct = torchaudio().functional.create_dct(N_CEPSTRA + 1, n_mels, "ortho")[:, 1:].double()
    of_db = torch.cat([dct, (bc / bc.square().sum())[:, None],
                       torch.full((n_mels, 1), 1.0 / n_mels, dtype=torch.float64)], dim=1)
    groups = torch.zeros(n_mels, N_BANDS, dtype=torch.float64)
    groups[torch.arange(n_mels), torch.arange(n_mels) // (n_mels // N_BANDS)] = 1.0
    u = bc / bc.max()
    of_power = torch.cat([torch.stack([u ** j for j in range(5)], dim=1), groups], dim=1)
    return of_db.float().contiguous(), of_power.contiguous()


def _deltas(x: torch.Tensor) -> torch.Tensor:
    """(n, t, d) -> (n, t, d) deltas over t, window 5, edges repeated (module docstring)."""
    t = x.shape[1]
    p = F.pad(x.transpose(1, 2), (2, 2), mode="replicate").transpose(1, 2)
    return ((p[:, 3:t + 3] - p[:, 1:t + 1]) + 2.0 * (p[:, 4:t + 4] - p[:, 0:t])) / 10.0


GROUP = 16       # chunks per computation, the last group zero-padded (module docstring)


@one_thread()
def frame_descriptors(logmel: torch.Tensor) -> torch.Tensor:
    """(n, 96, 100) log-mel dB -> (n, 100, 94) float32 descriptors and deltas per frame
    (float32 arithmetic: dB values are within 80 dB of each chunk's peak, bow.audio.features).
    In groups of ``GROUP`` chunks, each through the same operations on the same shapes."""
    n, m, t = logmel.shape
    out = torch.empty(n, t, DIM)
    group = torch.zeros(GROUP, m, t)
    for i in range(0, n, GROUP):
        k = min(GROUP, n - i)
        group[:k] = logmel[i:i + k]
        group[k:] = 0.0
        out[i:i + k] = _group(group)[:k]
    return out


def _group(logmel: torch.Tensor) -> torch.Tensor:
    """(GROUP, 96, 100) log-mel dB -> (GROUP, 100, 94). The spectral moments come from the raw
    moments of the band index (one matmul), the entropy and flatness from the dB directly
    (log q = dB ln 10 / 10 - log S): a few passes over the spectrum instead of one per
    statistic."""
    db = logmel.transpose(1, 2).contiguous()                       # (g, t, m)
    m = db.shape[2]
    of_db, of_power = _projections(m)
    power = torch.exp(db * (LN10 / 10.0))
    a, p = db @ of_db, power.double() @ of_power                   # (g, t, 15), (g, t, 29)
    total = p[..., 0]
    mu = p[..., 1] / total
    m2, m3, m4 = (p[..., j] / total for j in (2, 3, 4))
    mu2 = mu * mu
    var = (m2 - mu2).clamp(min=1e-12)
    skew = ((m3 - 3.0 * mu * m2 + 2.0 * mu2 * mu) / (var * var.sqrt())).float()
    kurt = ((m4 - 4.0 * mu * m3 + 6.0 * mu2 * m2 - 3.0 * mu2 * mu2) / (var * var)).float()
    half = (m - 1) / 2.0                                           # u = (b - half) / half
    centroid, spread = (half + half * mu).float(), (half * var.sqrt()).float()
    p, total = p.float(), total.float()
    log_total = torch.log(total)
    weighted_db = (power * db).sum(-1) / total                     # sum q dB
    entropy = (log_total - weighted_db * (LN10 / 10.0)) / math.log(m)
    level = 10.0 * (log_total - math.log(m)) / LN10
    flatness = a[..., N_CEPSTRA + 1] - level                       # dB of geometric / arithmetic
    rolloff = (power.cumsum(-1) < 0.85 * total.unsqueeze(-1)).sum(-1).float()
    flux = torch.zeros_like(total)
    flux[:, 1:] = (db[:, 1:] - db[:, :-1]).square().mean(-1).sqrt()
    bands = 10.0 * torch.log10(p[..., 5:] / (m // N_BANDS))
    static = torch.cat([level.unsqueeze(-1), a[..., :N_CEPSTRA], bands,
                        torch.stack([centroid, spread, skew, kurt, entropy, flatness, rolloff,
                                     a[..., N_CEPSTRA], flux], dim=-1)], dim=-1)
    return torch.cat([static, _deltas(static)], dim=-1)
