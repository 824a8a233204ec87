"""Frame words: the classic bag of audio words beside the token families.

openXBOW's recipe (Schmitt & Schuller 2017) on the project's own parts. Every 10 ms frame of a
chunk is described by bow.audio.descriptors (47 descriptors: level, cepstra, band energies,
spectral shape; and their 47 deltas), standardised with the training frames' mean and std, and
assigned per stream to a k-means codebook: ``static`` (the 47 descriptors) and ``delta`` (their
deltas), D words each, as openXBOW's LLD and delta streams. A chunk's 100 frames give one
histogram per stream, weighted as the token families' (bow.bagofwords.model.AssignmentConfig:
hard, or soft over the K nearest words, each frame's weights summing to 1), so a chunk's frame
counts sum to 100 per stream. The chunk vector of the bag of words gains 2 D columns after the
families' (and level bins'), and the clip vector is their mean, as for every column.

Measured (``python -m benchmarks.bow_quality --arms "default;frames=0"``; README *Results*):
on ESC-10 the frame words lift the probe of the bag of words from 0.86 to 0.89 (the peers:
ComParE functionals 0.865, openXBOW-style 0.90). Fitting: k-means with 25 iterations and one
restart per stream on at most 256 D frames (seeded subsample; the codebooks of the families keep
100 iterations and 3 restarts: with 1000 words and 100 frames a chunk, more iterations cost
minutes and measured no better).

Decision: D = 256 words a stream (fit_codebooks --frame-codes; openXBOW uses 1,000). With the
statistics words the size barely moves the probe (3 k-means seeds, ESC-10 5-fold: 256 words
0.910, 500 0.913, 750 0.909, 1,000 0.908; fsd50k_mini mAP over 6 seeds: 0.775, 0.779, -,
0.780; FSDD 0.998, 1.000, -, 1.000); through the heads on fsd50k_mini 1,000 words keep +0.013
clip mAP (0.772 against 0.760 and 0.759). The search of 2 x 1,000 words was ~20 % of the
embed stage: the stage ran at 4.6x openSMILE's functionals with 1,000 words, 5.0x with 500,
5.6x with 256 (README *Results*), the issue's floor being 5x.

Statistics words (``stat_bins`` S > 0; the paper's title: "embeddings with statistics"): per
chunk 332 statistics of its 100 frames: the mean and the standard deviation of each of the 94
standardised descriptors (188), and the modulation spectrum of the 24 band energies: each band's
envelope over the chunk (mean removed, Hann window, DFT: 1 Hz bins at 100 frames a second) gives
the log10 share of its power in 1-2, 2-4, 4-8, 8-16, 16-32 and 32-50 Hz (144; rain, engines,
waves and fire differ there, a classic environmental-sound feature). Each statistic is assigned
to a one-dimensional codebook of S words: the quantiles (j + 1/2) / S, j = 0 .. S - 1, of that
statistic over the training chunks (equal-mass words, as the level bins). With soft assignment
a value between two neighbouring words is split between them linearly (weights (1 - t, t), t
its position between them; below the first or above the last word it counts for that word
alone), so the histogram keeps the value, not only its bin; with hard assignment it counts for
its nearest word. A chunk gains 332 S columns after the frame words, summing to 1 per
statistic; the clip mean is then the distribution of each statistic over the clip's seconds,
the ComParE functionals' idea (moments and percentiles of the descriptors) as a bag of words. A
window of timestamps gets the statistics of its own 100 frames. Default S = 8
(fit_codebooks --frame-stats; 0: none).

Measured (the probe of ../shared/FINDINGS.md, 3 k-means seeds, 2026-12-07; a research script
appended the statistics words to the default vector of the time, README *Results* has the
library's figures): ESC-10 5-fold 0.894 without; means and stds with S = 8 0.8975, S = 16
0.894, S = 16 of the 47 static descriptors only 0.8875; S = 8 with the modulation shares 0.911
(0.9125 / 0.9025 / 0.9175; fold 5 0.883 against 0.846), with absolute modulation powers instead
of shares 0.902. fsd50k_mini mAP 0.7505 without, means and stds S = 8 0.7567, S = 16 0.7593,
with the modulation shares (S = 8) 0.7732. Also tried: the frames' marginal histograms (16
quantile words per descriptor, no chunk statistic) 0.894 / 0.7535; with S = 16, the 10th
and 90th percentiles as well 0.8925 / 0.7639; 3-frame smoothing of the descriptors (ComParE's
``_sma``) ESC-10 0.879 (2 seeds).

Files: ``frames.npz`` in the codebook folder: ``mean``, ``std`` (94,) float32, ``<stream>``
(D, dim) float32 centroids, ``stat_words`` (332, S) float32 (with statistics words),
``config`` (JSON: streams, codebook parameters, scales, stat_bins).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bow.audio.descriptors import DIM, N_STATIC, NAMES, frame_descriptors
from bow.bagofwords.codebook import Codebook, CodebookConfig, CodebookError
from bow.config import narrow
from bow.io.stage import atomic_path

FRAMES = 100                                   # frames per 1 s chunk
STREAMS = {"static": slice(0, N_STATIC), "delta": slice(N_STATIC, DIM)}
KMEANS = {"niter": 25, "nredo": 1}             # the frame words' k-means (module docstring)
BATCH = 256                                    # chunks per descriptor call
BANDS = [i for i, name in enumerate(NAMES) if name.startswith("band")]   # the 24 band energies
# modulation bands: DFT bins of a 100-frame window, 1 Hz apart at 100 frames a second
MODULATION = ((1, 2), (2, 4), (4, 8), (8, 16), (16, 32), (32, 51))
N_STATS = 2 * DIM + len(MODULATION) * len(BANDS)   # 188 means and stds + 144 modulation shares
MOD_GROUP = 8                                  # windows per modulation product (fixed shape)
MOD_FLOOR = 1e-6                               # modulation power of a flat envelope (z^2)


def descriptors(logmel: torch.Tensor) -> np.ndarray:
    """(n, 96, 100) log-mel -> (n * 100, 94) float32 frame descriptors, chunk-major."""
    parts = [frame_descriptors(logmel[i:i + BATCH].float()).reshape(-1, DIM).numpy()
             for i in range(0, logmel.shape[0], BATCH)]
    return np.concatenate(parts) if parts else np.zeros((0, DIM), np.float32)


@functools.lru_cache(maxsize=1)
def _modulation_basis() -> np.ndarray:
    """(100, 100) float64: a Hann window times the cosines and sines of DFT bins 1 .. 50."""
    t, k = np.arange(FRAMES)[:, None], np.arange(1, FRAMES // 2 + 1)[None, :]
    angle = 2.0 * np.pi * t * k / FRAMES
    return np.hanning(FRAMES)[:, None] * np.concatenate([np.cos(angle), np.sin(angle)], 1)


def modulation_shares(bands: np.ndarray) -> np.ndarray:
    """(n, 100, 24) standardised band energies of n windows -> (n, 144) float64 log10 share of
    each modulation band (``MODULATION``) in each band's envelope power (its DFT over the
    window, mean removed, Hann-windowed; a flat envelope gives equal shares), band-major.
    Products of ``MOD_GROUP`` windows at a time, the last group zero-padded, so every window
    goes through the same shapes: the same bits in any batch."""
    n, t, b = bands.shape
    rows = np.zeros((-(-n // MOD_GROUP) * MOD_GROUP, b, t))
    rows[:n] = (bands - bands.sum(axis=1, keepdims=True) / t).transpose(0, 2, 1)
    basis = _modulation_basis()
    spectra = np.concatenate([rows[i:i + MOD_GROUP].reshape(-1, t) @ basis
                              for i in range(0, len(rows), MOD_GROUP)])[:n * b]
    half = basis.shape[1] // 2
    power = spectra[:, :half] ** 2 + spectra[:, half:] ** 2                  # bins 1 .. 50
    parts = np.stack([power[:, a - 1:z - 1].sum(1) for a, z in MODULATION], axis=1)
    shares = np.log10((parts + MOD_FLOOR / len(MODULATION)) /
                      (parts.sum(1, keepdims=True) + MOD_FLOOR))
    return shares.reshape(n, b * len(MODULATION))


def window_statistics(z: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """(F, 94) standardised descriptors, (n, 100) frame indices of n windows -> (n, 332)
    float64: the mean and standard deviation of each descriptor over the window's frames
    (float64 sums over the frames axis, added frame after frame: the same bits in any batch),
    then the modulation shares of its 24 band energies (``modulation_shares``)."""
    x = z[frames].astype(np.float64)                                   # (n, 100, 94)
    mean = x.sum(axis=1) / x.shape[1]
    spread = np.sqrt(np.square(x - mean[:, None]).sum(axis=1) / x.shape[1])
    return np.concatenate([mean, spread, modulation_shares(x[..., BANDS])], axis=1)


def stat_assign(values: np.ndarray, words: np.ndarray, hard: bool
                ) -> tuple[np.ndarray, np.ndarray]:
    """(n, c) statistics, (c, S) increasing words of each -> (n, 2 c) int64 column ids (column
    j's words at j S .. j S + S - 1) and float32 weights: each value split linearly between the
    two words around it, or wholly on its nearest word when ``hard`` (module docstring)."""
    n, c = values.shape
    s = words.shape[1]
    w, cols = words.astype(np.float64), np.arange(c)[None, :]
    i = np.clip((values[:, :, None] >= w[None]).sum(-1) - 1, 0, s - 2)    # (n, c) left word
    lo, hi = w[cols, i], w[cols, i + 1]
    gap = hi - lo
    t = np.where(gap > 0, np.clip((values - lo) / np.where(gap > 0, gap, 1.0), 0.0, 1.0),
                 (values >= hi).astype(np.float64))
    if hard:
        t = (t > 0.5).astype(np.float64)
    base = i + np.arange(c) * s
    ids = np.stack([base, base + 1], axis=2).reshape(n, 2 * c)
    weights = np.stack([1.0 - t, t], axis=2).reshape(n, 2 * c).astype(np.float32)
    return ids.astype(np.int64), weights


@dataclass
class FrameAssignment:
    """What a batch of chunks' frames got: ``z`` (F, 94) float32 standardised descriptors,
    ``ids`` and ``weights`` (F, S k) of each frame's words per stream (stream i's ids shifted
    by i D), ``hard`` (statistics words then count for their nearest word)."""
    z: np.ndarray
    ids: np.ndarray
    weights: np.ndarray
    hard: bool


class FrameWords:
    """Standardisation, one codebook per stream of frame descriptors and the statistics words:
    chunks -> frame histograms (``STREAMS`` order, D words each; then 332 x ``stat_bins``)."""

    def __init__(self, config: CodebookConfig, gpu: bool | str = "auto", stat_bins: int = 0):
        if stat_bins < 0 or stat_bins == 1:
            raise CodebookError(f"stat_bins must be 0 (none) or >= 2, got {stat_bins}")
        self.config, self.gpu, self.stat_bins = narrow(config, CodebookConfig), gpu, stat_bins
        self.codebooks = {s: Codebook(self.stream_config(s), gpu) for s in STREAMS}
        self.mean_ = self.std_ = self.stat_words_ = None

    def stream_config(self, stream: str) -> CodebookConfig:
        """Stream i's k-means: ``config`` with seed + i."""
        return dataclasses.replace(self.config, seed=self.config.seed + list(STREAMS).index(stream))

    @property
    def n_codes(self) -> int:
        return self.config.n_codes

    @property
    def word_width(self) -> int:
        """Columns of the frame words: D per stream."""
        return len(STREAMS) * self.n_codes

    @property
    def width(self) -> int:
        """Columns of a chunk's frame histograms: D per stream, then 332 x stat_bins."""
        return self.word_width + N_STATS * self.stat_bins

    def fit(self, logmel: torch.Tensor) -> "FrameWords":
        """Fit on (n, 96, 100) training log-mel: mean and std of all their frames, then each
        stream's k-means on at most D x max_points_per_centroid frames (what FAISS trains on).

        Up to that many frames, all of them in memory (FAISS takes every one). Above it the
        descriptors are computed ``BATCH`` chunks at a time, their float64 sums kept for the
        mean and std, and only a seeded uniform sample of that many frames (``config.seed``,
        the same for both streams) is kept and given to FAISS: memory is set by the sample,
        not by the corpus (all frames at once took n x 100 x 94 x 16 bytes: 48 GB for FSD50K's
        ~300,000 training chunks)."""
        n_frames = logmel.shape[0] * FRAMES
        cap = self.n_codes * self.config.max_points_per_centroid
        if n_frames <= cap:       # as before the sample existed: the same codebooks, bit for bit
            raw = descriptors(logmel)
            x = raw.astype(np.float64)
            self.mean_ = x.mean(0).astype(np.float32)
            std = x.std(0)
        else:
            raw = None
            keep = np.sort(np.random.default_rng(self.config.seed).choice(
                n_frames, cap, replace=False))
            total, squares, kept = np.zeros(DIM), np.zeros(DIM), []
            for i in range(0, logmel.shape[0], BATCH):
                d = descriptors(logmel[i:i + BATCH])
                total += d.sum(0, dtype=np.float64)
                squares += np.square(d, dtype=np.float64).sum(0)
                lo, hi = np.searchsorted(keep, [i * FRAMES, i * FRAMES + len(d)])
                kept.append(d[keep[lo:hi] - i * FRAMES])
            x = np.concatenate(kept)
            mean = total / n_frames
            self.mean_ = mean.astype(np.float32)
            std = np.sqrt(np.maximum(squares / n_frames - mean * mean, 0.0))
        self.std_ = np.where(std > 0, std, 1.0).astype(np.float32)
        z = self._standardise(x)
        del x
        for s, cols in STREAMS.items():
            self.codebooks[s].fit(np.ascontiguousarray(z[:, cols]))
        if self.stat_bins:
            self._fit_stat_words(logmel, raw)
        return self

    def _fit_stat_words(self, logmel: torch.Tensor, raw: np.ndarray | None) -> None:
        """Each statistic's words: its quantiles (j + 1/2) / S over the training chunks (their
        descriptors again, ``BATCH`` chunks at a time, unless ``raw`` holds them all)."""
        stats = []
        for i in range(0, logmel.shape[0], BATCH):
            d = raw[i * FRAMES:(i + BATCH) * FRAMES] if raw is not None else \
                descriptors(logmel[i:i + BATCH])
            stats.append(window_statistics(self._standardise(d),
                                           np.arange(len(d)).reshape(-1, FRAMES))
                         .astype(np.float32))
        levels = (np.arange(self.stat_bins) + 0.5) / self.stat_bins
        self.stat_words_ = np.quantile(np.concatenate(stats), levels, axis=0) \
            .T.astype(np.float32)                                      # (332, S)

    def _standardise(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean_) / self.std_).astype(np.float32)

    def words(self, logmel: torch.Tensor, k: int, distances: bool, weights, hard: bool = False
              ) -> FrameAssignment:
        """(n, 96, 100) log-mel -> each frame's standardised descriptors, the column ids of its
        k nearest words per stream and their weights ``weights(codebook, ids, dist)``
        (bow.bagofwords.model; ``dist`` None unless ``distances``): ``FrameAssignment``."""
        z = self._standardise(descriptors(logmel))
        ids, ws = [], []
        for i, (s, cols) in enumerate(STREAMS.items()):
            book = self.codebooks[s]
            stream_ids, dist = book.nearest(z[:, cols], k, distances)
            ids.append(stream_ids + i * self.n_codes)
            ws.append(weights(book, stream_ids, dist))
        return FrameAssignment(z, np.concatenate(ids, axis=1), np.concatenate(ws, axis=1), hard)

    def histograms(self, a: FrameAssignment, frames: np.ndarray) -> np.ndarray:
        """Frames' assignment, (n, 100) frame indices of n windows -> (n, width) float64: each
        window's frame-word histograms, then its statistics words (1 per statistic)."""
        counts = frame_histograms(a.ids, a.weights, frames, self.word_width)
        if not self.stat_bins:
            return counts
        ids, w = stat_assign(window_statistics(a.z, frames), self.stat_words_, a.hard)
        return np.concatenate([counts, window_counts(ids, w, N_STATS * self.stat_bins)], axis=1)

    # ----------------------------------------------------------------- files
    def params(self) -> dict:
        """The codebook parameters and each stream's distance scale (files and bundles)."""
        return {"codebook": dataclasses.asdict(self.config),
                "scales": {s: b.scale_ for s, b in self.codebooks.items()},
                "stat_bins": self.stat_bins}

    def arrays(self) -> dict[str, np.ndarray]:
        """mean, std, each stream's centroids and the statistics words, by name (files and
        bundles)."""
        return {"mean": self.mean_, "std": self.std_,
                **{s: np.ascontiguousarray(b.centroids_, np.float32)
                   for s, b in self.codebooks.items()},
                **({"stat_words": self.stat_words_} if self.stat_bins else {})}

    def save(self, path: str | Path) -> None:
        """``path`` (.npz): ``arrays`` and ``params`` (JSON, ``config``)."""
        with atomic_path(Path(path)) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, config=np.str_(json.dumps(self.params(), sort_keys=True)),
                         **self.arrays())

    @classmethod
    def from_arrays(cls, params: dict, arrays: dict[str, np.ndarray],
                    where: str) -> "FrameWords":
        """Rebuild from ``params`` and ``arrays``; CodebookError naming ``where`` when they do
        not fit together."""
        try:
            fw = cls(CodebookConfig(**params["codebook"]),
                     stat_bins=int(params.get("stat_bins", 0)))
            scales = {s: float(params["scales"][s]) for s in STREAMS}
            shapes = {"mean": (DIM,), "std": (DIM,),
                      **{s: (fw.n_codes, c.stop - c.start) for s, c in STREAMS.items()},
                      **({"stat_words": (N_STATS, fw.stat_bins)} if fw.stat_bins else {})}
            for name, shape in shapes.items():
                a = arrays[name]
                if a.shape != shape or a.dtype != np.float32 or not np.isfinite(a).all():
                    raise ValueError(f"{name} is {a.dtype} {a.shape}, expected finite float32 "
                                     f"{shape}")
        except (KeyError, TypeError, ValueError) as e:
            raise CodebookError(f"{where}: damaged frame words ({e})") from None
        if (arrays["std"] <= 0).any():
            raise CodebookError(f"{where}: frame words' std holds non-positive values")
        if fw.stat_bins and (np.diff(arrays["stat_words"], axis=1) < 0).any():
            raise CodebookError(f"{where}: statistics words not in increasing order")
        fw.mean_, fw.std_ = arrays["mean"], arrays["std"]
        fw.stat_words_ = arrays.get("stat_words")
        for s, book in fw.codebooks.items():
            book.centroids_, book.scale_ = arrays[s], scales[s]
        return fw

    @classmethod
    def load(cls, path: str | Path) -> "FrameWords":
        """Read ``save``'s file; CodebookError naming it when it is damaged."""
        try:
            with np.load(path, allow_pickle=False) as z:
                params = json.loads(str(z["config"]))
                arrays = {k: z[k] for k in z.files if k != "config"}
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise CodebookError(f"{path}: not a readable frame-words file ({e})") from None
        return cls.from_arrays(params, arrays, str(path))


def frame_histograms(ids: np.ndarray, weights: np.ndarray, frames: np.ndarray,
                     n_codes: int) -> np.ndarray:
    """Per-frame (F, k) ids and weights, (n, 100) frame indices of n windows -> (n, n_codes)
    float64 histograms, each window's frames added in order (so a window equal to a chunk
    gets the chunk's bits)."""
    return window_counts(ids[frames], weights[frames], n_codes)


def window_counts(ids: np.ndarray, weights: np.ndarray, width: int) -> np.ndarray:
    """(n, ...) column ids and their weights for n windows -> (n, width) float64 sums, each
    window's added in input order (np.bincount)."""
    n = len(ids)
    flat = (np.arange(n)[:, None] * width + ids.reshape(n, -1)).ravel()
    return np.bincount(flat, weights.reshape(n, -1).ravel(), n * width).reshape(n, width)
