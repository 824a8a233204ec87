"""Level bins: what shape tokens leave out (each token's mean level, dB), as a small histogram.

With ``tokens="shape"`` the encoders see each token minus its own mean (bow.bagofwords.encoder);
the means, the tokens' levels, are binned per family into L bins whose edges are the training
levels' quantiles j / L, j = 1 .. L - 1 (equal-mass bins: each bin holds 1 / L of the training
tokens, so the histogram spends its resolution where the levels are, whatever their range or
unit; 16 bins by default). A chunk's level histogram of a family counts its tokens per bin, so
it sums to the family's token count, like the family's code histogram.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from bow.bagofwords.tokens import grid
from bow.io.stage import atomic_path
from bow.runtime import one_thread


class LevelError(ValueError):
    """Levels that cannot make bins, or a level-bins file that cannot be read."""


@one_thread()
def token_levels(tokens: torch.Tensor) -> torch.Tensor:
    """(..., dim) tokens -> (...,) their means, with torch on one thread (bow.runtime.one_thread:
    a reduction's summation order may follow the thread count)."""
    return tokens.mean(dim=-1)


class LevelBins:
    """``n_bins`` equal-mass bins of a family's token levels. Learned: edges_ (n_bins - 1,)."""

    def __init__(self, family: str, n_bins: int = 16):
        if n_bins < 2:
            raise LevelError(f"level bins need n_bins >= 2, got {n_bins}")
        self.family, self.n_bins = family, n_bins

    def fit(self, logmel: torch.Tensor, batch: int = 512) -> "LevelBins":
        """Edges from the levels of the family's grid tokens of (n, 96, 100) log-mel."""
        levels = torch.cat([token_levels(grid(logmel[i:i + batch].float(), self.family)).ravel()
                            for i in range(0, logmel.shape[0], batch)]).double().cpu().numpy()
        if levels.size < self.n_bins:
            raise LevelError(f"{levels.size} {self.family} tokens cannot make {self.n_bins} "
                             "level bins")
        self.edges_ = np.quantile(levels, np.arange(1, self.n_bins) / self.n_bins)
        return self

    def assign(self, levels) -> np.ndarray:
        """(...,) levels -> (...,) int64 bins in 0 .. n_bins - 1."""
        levels = levels.cpu().numpy() if isinstance(levels, torch.Tensor) else levels
        return np.searchsorted(self.edges_, np.asarray(levels, np.float64), side="right")

    def save(self, path: str | Path) -> None:
        """family, n_bins and edges -> ``path`` (JSON)."""
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps({"family": self.family, "n_bins": self.n_bins,
                                       "edges": self.edges_.tolist()}, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "LevelBins":
        try:
            info = json.loads(Path(path).read_text())
            bins = cls(info["family"], int(info["n_bins"]))
            bins.edges_ = np.asarray(info["edges"], np.float64)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise LevelError(f"{path}: not a readable level-bins file ({e})") from None
        if bins.edges_.shape != (bins.n_bins - 1,) or not np.isfinite(bins.edges_).all():
            raise LevelError(f"{path}: {bins.edges_.shape[0]} edges for {bins.n_bins} bins")
        return bins
