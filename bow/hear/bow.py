"""HEAR 2021 API for the bag-of-words model: a thin wrapper over bow.bagofwords.embed/timestamps.

    model = load_model("artifacts/bundles/bow.npz")     # python -m pipelines.export_bundle
    emb, ts = get_timestamp_embeddings(audio, model)     # (n, T, width), (n, T) ms, every 50 ms
    scene = get_scene_embeddings(audio, model)   # (n, width): 4 (D + L) + 2 D_f + 332 S

The scene embedding is the clip vector of the feature store (mean of the 1 s chunks' code
counts). The timestamp embedding at t (0, 50, 100, ... ms up to the clip's length) is the code
histogram of the 1 s window centred on t, moved inside the clip at its ends; the window at the
middle of chunk j is chunk j itself. See bow.bagofwords.timestamps for the design, its cost
(4.1 times the chunk vectors') and memory (pieces of ``piece_chunks`` chunks); the scene
embedding is computed exactly as the store's clip vectors (bow.bagofwords.embed). Both are raw
counts unless the bundle says otherwise (its ``normalise``: sqrt or log1p,
bow.bagofwords.model.normalise). The encoders run on the audio's device (built from the bundle on
first use of each device); code assignment (FAISS) runs on the CPU.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bow.audio.load import SAMPLE_RATE
from bow.bagofwords.bundle import Bundle, read
from bow.bagofwords.embed import BagOfWordsEmbedder
from bow.bagofwords.model import BagOfWords, normalise
from bow.bagofwords.timestamps import PIECE_CHUNKS, TimestampEmbedder, timestamps_ms
from bow.hear import check_audio


class BagOfWordsModel(nn.Module):
    """A bundle with the HEAR attributes; ``piece_chunks`` bounds the chunks processed at once."""

    sample_rate = SAMPLE_RATE

    def __init__(self, bundle: Bundle, piece_chunks: int = PIECE_CHUNKS):
        super().__init__()
        self.bundle = bundle
        self.piece_chunks = piece_chunks
        self.timestamp_embedding_size = bundle.width
        self.scene_embedding_size = self.timestamp_embedding_size
        self._bags: dict[str, BagOfWords] = {}
        self._embedders: dict[str, BagOfWordsEmbedder] = {}

    def bag(self, device: str | torch.device) -> BagOfWords:
        """The model with its encoders on ``device`` (built once per device)."""
        key = str(torch.device(device))
        if key not in self._bags:
            self._bags[key] = self.bundle.bag(device)
        return self._bags[key]

    def embedder(self, device: str | torch.device) -> BagOfWordsEmbedder:
        """The chunk embedder of ``bag(device)`` (built once per device: 0.5 ms, 4 % of a call
        on one 5 s clip)."""
        key = str(torch.device(device))
        if key not in self._embedders:
            self._embedders[key] = BagOfWordsEmbedder(self.bag(device), device)
        return self._embedders[key]


def load_model(model_file_path: str = "") -> BagOfWordsModel:
    """A bundle written by ``python -m pipelines.export_bundle`` (bow.bagofwords.bundle); raises
    bow.bagofwords.bundle.BundleError naming the file and the problem for anything else."""
    if not model_file_path:
        raise ValueError("bow.hear.bow needs a bundle: write one with "
                         "python -m pipelines.export_bundle (artifacts/bundles/bow.npz)")
    return BagOfWordsModel(read(model_file_path))


def _clips(audio: torch.Tensor) -> list[np.ndarray]:
    return list(check_audio(audio).detach().to("cpu", torch.float32).numpy())


def get_timestamp_embeddings(audio: torch.Tensor, model: BagOfWordsModel
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, samples) -> (n, T, width) float32 embeddings and (n, T) float32 timestamps (ms),
    T = samples // 800 + 1."""
    clips = _clips(audio)
    ts = timestamps_ms(audio.shape[1])
    out = torch.empty(len(clips), len(ts), model.timestamp_embedding_size)
    embedder = TimestampEmbedder(model.bag(audio.device), model.piece_chunks, audio.device)
    for i, emb, _ in embedder.timestamp_embeddings(clips):
        out[i] = torch.from_numpy(normalise(emb, model.bundle.normalise))
    return out.to(audio.device), torch.from_numpy(np.tile(ts, (len(clips), 1))).to(audio.device)


def get_scene_embeddings(audio: torch.Tensor, model: BagOfWordsModel) -> torch.Tensor:
    """(n, samples) -> (n, width) float32 clip vectors (the bundle's width)."""
    vectors = model.embedder(audio.device).clip_vectors(_clips(audio))
    return torch.from_numpy(normalise(vectors, model.bundle.normalise)).to(audio.device)
