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

Files: ``frames.npz`` in the codebook folder: ``mean``, ``std`` (94,) float32, ``<stream>``
(D, dim) float32 centroids, ``config`` (JSON: streams, codebook parameters, scales).
"""
from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

import numpy as np
import torch

from bow.audio.descriptors import DIM, N_STATIC, frame_descriptors
from bow.bagofwords.codebook import Codebook, CodebookConfig, CodebookError
from bow.config import narrow
from bow.io.stage import atomic_path

FRAMES = 100                                   # frames per 1 s chunk
STREAMS = {"static": slice(0, N_STATIC), "delta": slice(N_STATIC, DIM)}
KMEANS = {"niter": 25, "nredo": 1}             # the frame words' k-means (module docstring)
BATCH = 256                                    # chunks per descriptor call


def descriptors(logmel: torch.Tensor) -> np.ndarray:
    """(n, 96, 100) log-mel -> (n * 100, 94) float32 frame descriptors, chunk-major."""
    parts = [frame_descriptors(logmel[i:i + BATCH].float()).reshape(-1, DIM).numpy()
             for i in range(0, logmel.shape[0], BATCH)]
    return np.concatenate(parts) if parts else np.zeros((0, DIM), np.float32)


class FrameWords:
    """Standardisation and one codebook per stream of frame descriptors: chunks -> frame
    histograms (``STREAMS`` order, D words each)."""

    def __init__(self, config: CodebookConfig, gpu: bool | str = "auto"):
        self.config, self.gpu = narrow(config, CodebookConfig), gpu
        self.codebooks = {s: Codebook(self.stream_config(s), gpu) for s in STREAMS}
        self.mean_ = self.std_ = None

    def stream_config(self, stream: str) -> CodebookConfig:
        """Stream i's k-means: ``config`` with seed + i."""
        return dataclasses.replace(self.config, seed=self.config.seed + list(STREAMS).index(stream))

    @property
    def n_codes(self) -> int:
        return self.config.n_codes

    @property
    def width(self) -> int:
        """Columns of a chunk's frame histograms: D per stream."""
        return len(STREAMS) * self.n_codes

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
            x = descriptors(logmel).astype(np.float64)
            self.mean_ = x.mean(0).astype(np.float32)
            std = x.std(0)
        else:
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
        return self

    def _standardise(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean_) / self.std_).astype(np.float32)

    def words(self, logmel: torch.Tensor, k: int, distances: bool, weights
              ) -> tuple[np.ndarray, np.ndarray]:
        """(n, 96, 100) log-mel -> (n * 100, S k) int64 column ids of each frame's k nearest
        words per stream (stream i's shifted by i D) and their (n * 100, S k) float32 weights,
        ``weights(codebook, ids, dist)`` (bow.bagofwords.model; ``dist`` None unless
        ``distances``)."""
        z = self._standardise(descriptors(logmel))
        ids, ws = [], []
        for i, (s, cols) in enumerate(STREAMS.items()):
            book = self.codebooks[s]
            stream_ids, dist = book.nearest(z[:, cols], k, distances)
            ids.append(stream_ids + i * self.n_codes)
            ws.append(weights(book, stream_ids, dist))
        return np.concatenate(ids, axis=1), np.concatenate(ws, axis=1)

    # ----------------------------------------------------------------- files
    def params(self) -> dict:
        """The codebook parameters and each stream's distance scale (files and bundles)."""
        return {"codebook": dataclasses.asdict(self.config),
                "scales": {s: b.scale_ for s, b in self.codebooks.items()}}

    def arrays(self) -> dict[str, np.ndarray]:
        """mean, std and each stream's centroids, by name (files and bundles)."""
        return {"mean": self.mean_, "std": self.std_,
                **{s: np.ascontiguousarray(b.centroids_, np.float32)
                   for s, b in self.codebooks.items()}}

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
            fw = cls(CodebookConfig(**params["codebook"]))
            scales = {s: float(params["scales"][s]) for s in STREAMS}
            shapes = {"mean": (DIM,), "std": (DIM,),
                      **{s: (fw.n_codes, c.stop - c.start) for s, c in STREAMS.items()}}
            for name, shape in shapes.items():
                a = arrays[name]
                if a.shape != shape or a.dtype != np.float32 or not np.isfinite(a).all():
                    raise ValueError(f"{name} is {a.dtype} {a.shape}, expected finite float32 "
                                     f"{shape}")
        except (KeyError, TypeError, ValueError) as e:
            raise CodebookError(f"{where}: damaged frame words ({e})") from None
        if (arrays["std"] <= 0).any():
            raise CodebookError(f"{where}: frame words' std holds non-positive values")
        fw.mean_, fw.std_ = arrays["mean"], arrays["std"]
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
    n = frames.shape[0]
    flat = (np.arange(n)[:, None, None] * n_codes + ids[frames]).ravel()
    weights = np.broadcast_to(weights[frames], ids[frames].shape).ravel()
    return np.bincount(flat, weights, n * n_codes).reshape(n, n_codes)   # in input order
