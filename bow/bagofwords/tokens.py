"""The four token families cut from a (n, 96, 100) log-mel batch.

Family              size (mel x frames)  grid tokens per chunk  dim
patch               8 x 10               120 (12 mel x 10 time)  80
band_envelope       8 x 100              12                      800
spectral_envelope   96 x 10              10                      960
thumbnail           96 x 100 -> 8 x 10   1                       80

Grid tokens (inference) tile the spectrogram without overlap; token order is mel-block major
(patch k covers mel rows 8 (k // 10) .. +8 and frames 10 (k % 10) .. +10). Each token is
flattened row-major (mel, then frame). The thumbnail is the whole spectrogram resized with
bicubic interpolation; antialiasing is on, as in an image resize, so every input value
contributes (without it a 12x downsampling would read only a few rows).

For autoencoder training the paper takes crops at random positions: ``sample`` draws patches
and envelopes at any offset (not only the grid). The thumbnail has one position per chunk, so
its samples are the chunks' thumbnails.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

N_MELS, N_FRAMES = 96, 100
FAMILIES = ("patch", "band_envelope", "spectral_envelope", "thumbnail")
SHAPES = {  # family -> (mel rows, frames) of one token
    "patch": (8, 10),
    "band_envelope": (8, 100),
    "spectral_envelope": (96, 10),
    "thumbnail": (8, 10),
}
DIMS = {f: h * w for f, (h, w) in SHAPES.items()}
COUNTS = {"patch": 120, "band_envelope": 12, "spectral_envelope": 10, "thumbnail": 1}
TOKENS_PER_CHUNK = sum(COUNTS.values())  # 143


def thumbnail(logmel: torch.Tensor) -> torch.Tensor:
    """(n, 96, 100) -> (n, 1, 80): the whole spectrogram resized to 8 x 10 (bicubic)."""
    small = F.interpolate(logmel.unsqueeze(1), size=SHAPES["thumbnail"], mode="bicubic",
                          align_corners=False, antialias=True)
    return small.reshape(logmel.shape[0], 1, DIMS["thumbnail"])


def grid(logmel: torch.Tensor, family: str) -> torch.Tensor:
    """(n, 96, 100) log-mel -> (n, COUNTS[family], DIMS[family]) tokens on the grid."""
    n, m, t = logmel.shape
    if (m, t) != (N_MELS, N_FRAMES):
        raise ValueError(f"expected (n, {N_MELS}, {N_FRAMES}) log-mel, got {tuple(logmel.shape)}")
    if family == "thumbnail":
        return thumbnail(logmel)
    h, w = SHAPES[family]
    x = logmel.reshape(n, m // h, h, t // w, w).permute(0, 1, 3, 2, 4)
    return x.reshape(n, COUNTS[family], h * w)


def sample(logmel: torch.Tensor, family: str, per_chunk: int,
           generator: torch.Generator | None = None,
           chunk_ids: torch.Tensor | None = None) -> torch.Tensor:
    """(n, 96, 100) -> (n * per_chunk, dim) tokens cropped at uniformly random positions.

    ``chunk_ids`` (m,), optional: crop from these chunks (repeats allowed) instead of from every
    chunk, -> (m * per_chunk, dim), without copying whole chunks.
    """
    dev = logmel.device
    ids = torch.arange(logmel.shape[0], device=dev) if chunk_ids is None else chunk_ids.to(dev)
    n = ids.shape[0]
    if family == "thumbnail":
        chunks = logmel if chunk_ids is None else logmel[ids]
        return thumbnail(chunks).reshape(n, -1).repeat_interleave(per_chunk, dim=0)
    h, w = SHAPES[family]
    windows = logmel.unfold(1, h, 1).unfold(2, w, 1)    # (n, 96-h+1, 100-w+1, h, w), a view
    rows = torch.randint(0, windows.shape[1], (n, per_chunk), generator=generator).to(dev)
    cols = torch.randint(0, windows.shape[2], (n, per_chunk), generator=generator).to(dev)
    chunk_ids = ids.unsqueeze(1).expand(n, per_chunk)
    return windows[chunk_ids, rows, cols].reshape(n * per_chunk, h * w)
