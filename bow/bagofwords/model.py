"""Bag of audio words: log-mel chunks -> code ids -> histograms; count normalisation; masking.

Per 1 s chunk the 143 grid tokens (``bow.bagofwords.tokens``) are encoded by their family's
autoencoder and assigned to the nearest centroid of the family's codebook; the ids become four
histograms of length D, concatenated in ``bow.bagofwords.tokens.FAMILIES`` order (patch, band
envelope, spectral envelope, thumbnail) into one (4 D,) count vector that sums to 143.

Clip level: the clip vector is the MEAN of its chunk vectors (float32, sums to 143): it does not
grow with the clip's length, so short and long clips are on one scale, and it is what the
FINDINGS probe used. Stores keep raw counts (chunks: uint16); ``normalise`` (none, sqrt,
log1p; sqrt by default, measured to help in ../shared/FINDINGS.md) is applied where vectors
are consumed (the heads, the HEAR outputs); the heads' token masking is bow.heads.model's.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bow.bagofwords.autoencoder import ENCODE_BATCH, Autoencoder
from bow.bagofwords.codebook import Codebook
from bow.bagofwords.tokens import COUNTS, FAMILIES, TOKENS_PER_CHUNK, grid
from bow.config import choose

NORMALISATIONS = ("none", "sqrt", "log1p")


def family_codes(encoder: Autoencoder, logmel: torch.Tensor, family: str) -> torch.Tensor:
    """(n, 96, 100) log-mel -> (n * COUNTS[family], dim / F) codes of the family's grid tokens.

    Chunks go through in groups of about ``ENCODE_BATCH`` tokens, so one matmul sees ~4096.
    """
    per = max(1, ENCODE_BATCH // COUNTS[family])
    out = [encoder.encode(grid(logmel[i:i + per].to(encoder.device, torch.float32),
                               family).reshape(-1, encoder.dim))
           for i in range(0, logmel.shape[0], per)]
    return torch.cat(out) if out else torch.empty(0, encoder.bottleneck)


def histograms(ids: dict[str, np.ndarray], n_codes: int) -> np.ndarray:
    """{family: (n, COUNTS[family]) code ids} -> (n, 4 * n_codes) uint16 counts."""
    n = next(iter(ids.values())).shape[0]
    width = len(FAMILIES) * n_codes
    flat = [np.arange(n)[:, None] * width + f * n_codes
            + np.asarray(ids[family]).reshape(n, COUNTS[family])
            for f, family in enumerate(FAMILIES)]
    counts = np.bincount(np.concatenate(flat, axis=1).ravel(), minlength=n * width)
    return counts.reshape(n, width).astype(np.uint16)


def clip_vector(chunk_counts: np.ndarray) -> np.ndarray:
    """(n_chunks, 4 D) counts -> (4 D,) float32 mean over the clip's chunks."""
    return np.asarray(chunk_counts, dtype=np.float64).mean(axis=0).astype(np.float32)


def normalise(counts, method: str = "sqrt"):
    """Count normalisation where vectors are consumed: none, sqrt (default) or log1p, all
    mapping 0 to 0. A torch tensor gives a float tensor, anything else a float32 array."""
    choose("normalisation", method, NORMALISATIONS)
    if isinstance(counts, torch.Tensor):
        x = counts.float()
        return x if method == "none" else getattr(torch, method)(x)
    x = np.asarray(counts, dtype=np.float32)
    return x if method == "none" else getattr(np, method)(x)


class BagOfWords:
    """The four encoders and codebooks: (n, 96, 100) log-mel -> (n, 4 D) uint16 counts."""

    def __init__(self, encoders: dict[str, Autoencoder], codebooks: dict[str, Codebook]):
        self.encoders = encoders
        self.codebooks = codebooks

    @property
    def n_codes(self) -> int:
        sizes = {self.codebooks[f].n_codes for f in FAMILIES}
        if len(sizes) != 1:
            raise ValueError(f"the four codebooks must have the same number of codes, got {sizes}")
        return sizes.pop()

    def code_ids(self, logmel: torch.Tensor) -> dict[str, np.ndarray]:
        """(n, 96, 100) -> {family: (n, COUNTS[family]) int64 code ids}."""
        n = logmel.shape[0]
        return {f: self.codebooks[f].assign(
                    family_codes(self.encoders[f], logmel, f).cpu().numpy()).reshape(n, COUNTS[f])
                for f in FAMILIES}

    def transform(self, logmel: torch.Tensor) -> np.ndarray:
        """(n, 96, 100) log-mel -> (n, 4 D) uint16 counts, each row summing to 143."""
        counts = histograms(self.code_ids(logmel), self.n_codes)
        assert counts.shape[0] == 0 or (counts.sum(1) == TOKENS_PER_CHUNK).all()
        return counts

    @classmethod
    def load(cls, autoencoders: str | Path, codebooks: str | Path,
             device: str | torch.device = "cpu") -> "BagOfWords":
        """Read ``<family>.pt`` from the autoencoder folder and ``<family>.npz`` from the other."""
        return cls({f: Autoencoder.load(Path(autoencoders) / f"{f}.pt", device) for f in FAMILIES},
                   {f: Codebook.load(Path(codebooks) / f"{f}.npz") for f in FAMILIES})
