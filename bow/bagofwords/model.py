"""Bag of audio words: log-mel chunks -> code ids -> histograms; count normalisation.

Per 1 s chunk the 143 grid tokens (``bow.bagofwords.tokens``) are encoded by their family's
encoder (bow.bagofwords.encoder: an autoencoder or PCA) and assigned to the family's codebook;
the assignments become four histograms of length D, concatenated in
``bow.bagofwords.tokens.FAMILIES`` order (patch, band envelope, spectral envelope, thumbnail)
into one (4 D,) count vector that sums to 143. With shape tokens and level bins
(bow.bagofwords.levels) four histograms of L level bins follow, one per family in the same
order: (4 (D + L),), summing to 2 x 143.

Assignment (``AssignmentConfig``): ``hard``, the paper's, counts each token once for its
nearest code (uint16 counts). ``soft`` spreads each token's unit weight over its K nearest codes
(float32 counts, still summing to 143 per chunk), like openXBOW's multi-assignment: a token
between two codes no longer flips its whole count on a rounding error, and a chunk's vector
gains the information of which codes are near. Weights w_k (k = 1..K, nearest first, squared
distances d_k) by ``weighting``: ``rank`` (1 / k) / Z, the harmonic weights of the ranks (K = 3:
6/11, 3/11, 2/11; no distances: nothing to fit or tune per dataset); ``softmax``
exp(-(d_k - d_1) / s) / Z, with s the codebook's mean squared distance of its training points
to their centroid; ``uniform`` 1 / K. K = 1 is hard assignment, to the bit (tests).

Default soft, K = 3, rank weights (the paper: hard). Measured with shape tokens + level bins,
PCA encoders, D = 256 (``python -m benchmarks.bow_quality``, README *Results*: linear probe,
mean over 3 k-means seeds): ESC-10 5-fold hard 0.868, K = 2 0.863, K = 3 0.858, K = 5 0.852
(the seeds' sd ~0.005-0.011: within noise); FSDD test hard 0.964, K = 3 0.981; fsd50k_mini mAP
hard 0.673, K = 3 0.701 (with the project's heads 0.696 and 0.714). Soft assignment helps where
a clip has few chunks (FSDD: about one) and with the heads, and is within ESC-10's noise. A
distance softmax was worse on ESC-10 (K = 3: 0.821): the nearest distances are very skewed (flat
tokens sit exactly on a code), so one temperature suits no token well.

Clip level: the clip vector is the MEAN of its chunk vectors (float32): it does not grow with
the clip's length, so short and long clips are on one scale, and it is what the FINDINGS probe
used. Stores keep raw counts; ``normalise`` (none, sqrt, log1p; sqrt by default, measured to
help in ../shared/FINDINGS.md) is applied where vectors are consumed (the heads, the HEAR
outputs); the heads' token masking is bow.heads.model's.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bow.bagofwords.autoencoder import Autoencoder
from bow.bagofwords.codebook import Codebook, CodebookError
from bow.bagofwords.encoder import ENCODE_BATCH, TokenEncoder
from bow.bagofwords.frames import FRAMES, FrameAssignment, FrameWords
from bow.bagofwords.levels import LevelBins, token_levels
from bow.bagofwords.pca import PCAEncoder
from bow.bagofwords.tokens import COUNTS, DIMS, FAMILIES, grid
from bow.config import ConfigError, choose, option
from bow.io.stage import ArtifactError, load_torch
from bow.runtime import numpy_one_thread

NORMALISATIONS = ("none", "sqrt", "log1p")
ASSIGNMENTS = ("hard", "soft")
WEIGHTINGS = ("softmax", "rank", "uniform")
FRAMES_FILE = "frames.npz"
ENCODER_FILES = {cls.format: cls for cls in (Autoencoder, PCAEncoder)}


@dataclass(frozen=True)
class AssignmentConfig:
    """How tokens become counts (module docstring). Paper: hard."""
    assignment: str = option("soft", "soft: each token's weight is spread over its K nearest "
                             "codes (measured better, see README); hard: it counts for its "
                             "nearest code (the paper's)")
    neighbours: int = option(3, "soft assignment: K nearest codes per token")
    weighting: str = option("rank", "soft assignment weights: rank (1/k, normalised), "
                            "softmax of the squared distances over the codebook's scale, or "
                            "uniform")

    def __post_init__(self):
        choose("assignment", self.assignment, ASSIGNMENTS)
        choose("weighting", self.weighting, WEIGHTINGS)
        if self.neighbours < 1:
            raise ConfigError(f"neighbours must be >= 1, got {self.neighbours}")

    @property
    def k(self) -> int:
        """Codes per token: 1 for hard assignment."""
        return self.neighbours if self.assignment == "soft" else 1

    @property
    def distances(self) -> bool:
        """Whether the weights need the distances (softmax), not only the order."""
        return self.k > 1 and self.weighting == "softmax"


def load_encoder(path: str | Path, device: str | torch.device = "cpu") -> TokenEncoder:
    """An encoder of any kind written by its ``save``; ArtifactError naming the file else."""
    blob = load_torch(path, "bow encoder")
    kind = blob.get("format") if isinstance(blob, dict) else None
    if kind not in ENCODER_FILES:
        raise ArtifactError(f"{path}: not a bow encoder file (format {kind!r}, expected one "
                            f"of {sorted(ENCODER_FILES)}; written by "
                            "pipelines.train_autoencoders?)")
    try:
        return ENCODER_FILES[kind].from_blob(blob, device)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
        raise ArtifactError(f"{path}: damaged or mismatched bow encoder ({detail})") from None


def soft_weights(dist: np.ndarray | None, scale: float | None, weighting: str,
                 shape: tuple[int, int] | None = None) -> np.ndarray:
    """(m, K) squared distances, nearest first -> (m, K) float32 weights summing to 1. The
    rank and uniform weightings need only ``shape`` (then ``dist`` may be None)."""
    shape = dist.shape if dist is not None else shape
    if shape[1] == 1:
        return np.ones(shape, np.float32)
    if weighting == "uniform":
        return np.full(shape, 1.0 / shape[1], np.float32)
    if weighting == "rank":
        w = 1.0 / np.arange(1, shape[1] + 1)
        return np.broadcast_to((w / w.sum()).astype(np.float32), shape).copy()
    if not scale or not np.isfinite(scale):
        raise CodebookError("softmax weights need the codebook's distance scale (a codebook "
                            "written before soft assignment existed: fit it again)")
    d = dist.astype(np.float64)
    w = np.exp(-(d - d[:, :1]) / scale)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def family_codes(encoder: TokenEncoder, logmel: torch.Tensor, family: str) -> torch.Tensor:
    """(n, 96, 100) log-mel -> (n * COUNTS[family], dim / F) codes of the family's grid tokens.

    Chunks go through in groups of about ``ENCODE_BATCH`` tokens, so one matmul sees ~4096.
    """
    per = max(1, ENCODE_BATCH // COUNTS[family])
    out = [encoder.encode(grid(logmel[i:i + per].to(encoder.device, torch.float32),
                               family).reshape(-1, encoder.dim))
           for i in range(0, logmel.shape[0], per)]
    return torch.cat(out) if out else torch.empty(0, encoder.bottleneck)


def histograms(words: dict[str, dict], n: int, n_codes: int, n_levels: int = 0) -> np.ndarray:
    """Per family {"ids": (n * COUNTS, K), "weights": (n * COUNTS, K) or None, "levels":
    (n * COUNTS,) or None}, tokens of chunk i first -> (n, 4 (n_codes + n_levels)) counts:
    uint16 when every token has one code of weight 1, else float32 (module docstring)."""
    hard = all(w["weights"] is None for w in words.values())
    width = len(FAMILIES) * (n_codes + n_levels)
    out = np.zeros(n * width, np.float64 if not hard else np.int64)
    for f, family in enumerate(FAMILIES):
        ids, weights, levels = (words[family][k] for k in ("ids", "weights", "levels"))
        rows = np.repeat(np.arange(n) * width, COUNTS[family])        # (n * COUNTS,)
        flat = (rows[:, None] + f * n_codes + ids).ravel()
        # bincount adds in input order, as np.add.at (the same bits), 10x faster; families'
        # (and levels') columns are disjoint, so each bin gets one family's sum
        out += np.bincount(flat, None if weights is None else weights.ravel(), len(out))
        if n_levels:
            base = len(FAMILIES) * n_codes + f * n_levels
            out += np.bincount(rows + base + levels, minlength=len(out))
    return out.reshape(n, width).astype(np.uint16 if hard else np.float32)


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
    """The four encoders, codebooks (and level bins, frame words): (n, 96, 100) log-mel ->
    count vectors."""

    def __init__(self, encoders: dict[str, TokenEncoder], codebooks: dict[str, Codebook],
                 levels: dict[str, LevelBins] | None = None,
                 assignment: AssignmentConfig = AssignmentConfig(),
                 frames: FrameWords | None = None):
        self.encoders, self.codebooks, self.levels = encoders, codebooks, levels
        self.assignment, self.frames = assignment, frames

    @property
    def n_codes(self) -> int:
        sizes = {self.codebooks[f].n_codes for f in FAMILIES}
        if len(sizes) != 1:
            raise ValueError(f"the four codebooks must have the same number of codes, got {sizes}")
        return sizes.pop()

    @property
    def n_levels(self) -> int:
        return self.levels[FAMILIES[0]].n_bins if self.levels else 0

    @property
    def n_frame_columns(self) -> int:
        """Columns of the frame words and statistics words (bow.bagofwords.frames)."""
        return self.frames.width if self.frames else 0

    @property
    def width(self) -> int:
        """Length of a chunk vector: 4 (D + L) + frame columns."""
        return len(FAMILIES) * (self.n_codes + self.n_levels) + self.n_frame_columns

    def weights(self, codebook: Codebook, ids: np.ndarray, dist: np.ndarray | None
                ) -> np.ndarray | None:
        """(m, K) ids of ``codebook``'s K nearest codes and their squared distances (None
        unless the weighting needs them) -> (m, K) float32 weights by the assignment config
        (None for hard assignment)."""
        a = self.assignment
        return None if a.assignment == "hard" else \
            soft_weights(dist, codebook.scale_, a.weighting, ids.shape)

    def frame_words(self, logmel: torch.Tensor) -> FrameAssignment:
        """(n, 96, 100) log-mel -> its frames' descriptors and word ids and weights (ones for
        hard assignment), with the bag's assignment."""
        hard = self.assignment.assignment == "hard"
        return self.frames.words(logmel, self.assignment.k, self.assignment.distances,
                                 lambda cb, ids, d: (np.ones(ids.shape, np.float32) if hard
                                                     else self.weights(cb, ids, d)), hard)

    def with_frames(self, counts: np.ndarray, logmel: torch.Tensor) -> np.ndarray:
        """Family counts (n, 4 (D + L)) -> (n, width) with the frame histograms appended, in
        the families' dtype (hard assignment: whole counts, uint16)."""
        if not self.frames:
            return counts
        frames = self.frames.histograms(self.frame_words(logmel),
                                        np.arange(logmel.shape[0] * FRAMES).reshape(-1, FRAMES))
        return np.concatenate([counts, frames.astype(counts.dtype)], axis=1)

    def words(self, family: str, tokens: torch.Tensor) -> dict:
        """(m, dim) raw tokens of ``family`` -> {"ids": (m, K) int64 codes, "weights": (m, K)
        float32 or None (hard), "levels": (m,) int64 level bins or None}."""
        codes = self.encoders[family].encode(tokens).cpu().numpy()
        ids, dist = self.codebooks[family].nearest(codes, self.assignment.k,
                                                   self.assignment.distances)
        weights = self.weights(self.codebooks[family], ids, dist)
        levels = None
        if self.levels:
            levels = self.levels[family].assign(token_levels(torch.as_tensor(tokens).float()))
        return {"ids": ids, "weights": weights, "levels": levels}

    def transform(self, logmel: torch.Tensor) -> np.ndarray:
        """(n, 96, 100) log-mel -> (n, width) counts (uint16 hard, float32 soft), each chunk's
        code counts summing to 143 (its level counts to 143, its frame counts to 100)."""
        n = logmel.shape[0]
        words = {}
        with numpy_one_thread():
            for f in FAMILIES:
                per = max(1, ENCODE_BATCH // COUNTS[f])
                parts = [self.words(f, grid(logmel[i:i + per].float(), f).reshape(-1, DIMS[f]))
                         for i in range(0, n, per)]
                words[f] = {k: (np.concatenate([p[k] for p in parts]) if parts and
                                parts[0][k] is not None else None) for k in parts[0]} \
                    if parts else {"ids": np.zeros((0, 1), np.int64), "weights": None,
                                   "levels": None}
            return self.with_frames(histograms(words, n, self.n_codes, self.n_levels), logmel)

    @classmethod
    def load(cls, encoders: str | Path, codebooks: str | Path,
             device: str | torch.device = "cpu",
             assignment: AssignmentConfig = AssignmentConfig()) -> "BagOfWords":
        """Read ``<family>.pt`` from the encoder folder, ``<family>.npz`` (and
        ``<family>.levels.json`` when the codebooks have level bins, ``frames.npz`` when they
        have frame words) from the other."""
        codebooks = Path(codebooks)
        books = {f: Codebook.load(codebooks / f"{f}.npz") for f in FAMILIES}
        level_files = [codebooks / f"{f}.levels.json" for f in FAMILIES]
        levels = {f: LevelBins.load(p) for f, p in zip(FAMILIES, level_files)} \
            if all(p.is_file() for p in level_files) else None
        frames = FrameWords.load(codebooks / FRAMES_FILE) \
            if (codebooks / FRAMES_FILE).is_file() else None
        return cls({f: load_encoder(Path(encoders) / f"{f}.pt", device) for f in FAMILIES},
                   books, levels, assignment, frames)
