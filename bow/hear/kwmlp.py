"""HEAR 2021 API for KW-MLP: a thin wrapper over bow.kwmlp.embed (the authors' procedure).

    model = load_model("../shared/kwmlp/kwmlp.pth")   # or artifacts/kwmlp/best.pth
    emb, ts = get_timestamp_embeddings(audio, model)   # (n, T, 64), (n, T) ms, T = samples // 160
    scene = get_scene_embeddings(audio, model)         # (n, 1024)

Timestamp embeddings every 10 ms and the scene embedding are those of the authors' HEAR
package (bow.kwmlp.embed reproduces its golden outputs); each clip of a batch is embedded as if
alone. Memory: clips are handed to bow.kwmlp.embed in groups of at most ``group_chunks`` 1 s
chunks (256; a longer clip alone), whose encoder sees ``batch_chunks`` chunks at a time, so
working memory is bounded whatever the batch; what grows with a clip is its audio (with the
padded copies bow.kwmlp.embed makes), its (100 s - 2, 64) token sequence (25.6 KB per second)
and the output: 20 minutes add about 0.4 GiB (benchmarks/hear_memory.py).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bow.audio.load import CHUNK_SAMPLES, SAMPLE_RATE
from bow.hear import check_audio
from bow.kwmlp.embed import PAD_END, PAD_FRONT, KWMLPEmbedder, n_timestamps, timestamps_ms
from bow.kwmlp.model import KWMLP, load_checkpoint
from bow.kwmlp.scene import N_STEPS

GROUP_CHUNKS = 256


class KWMLPModel(nn.Module):
    """A KW-MLP encoder with the HEAR attributes. ``group_chunks`` bounds the 1 s chunks of the
    clips handed to bow.kwmlp.embed at once, ``batch_chunks`` those per encoder call (None:
    bow.kwmlp.embed's default)."""

    sample_rate = SAMPLE_RATE

    def __init__(self, encoder: KWMLP, group_chunks: int = GROUP_CHUNKS,
                 batch_chunks: int | None = None):
        super().__init__()
        self.encoder = encoder.eval()
        self.group_chunks, self.batch_chunks = group_chunks, batch_chunks
        self.timestamp_embedding_size = int(encoder.to_patch_embed[1].out_features)
        self.scene_embedding_size = N_STEPS * self.timestamp_embedding_size

    def embedder(self, device) -> KWMLPEmbedder:
        batch = {} if self.batch_chunks is None else {"batch_chunks": self.batch_chunks}
        return KWMLPEmbedder(self.encoder, device=device, **batch)


def load_model(model_file_path: str = "") -> KWMLPModel:
    """A checkpoint in the authors' format (``{"model_state_dict": ...}``): their kwmlp.pth or
    pipelines.pretrain_kwmlp's best.pth. Raises bow.kwmlp.model.CheckpointError for other files."""
    if not model_file_path:
        raise ValueError("bow.hear.kwmlp needs a checkpoint: the authors' kwmlp.pth or "
                         "artifacts/kwmlp/best.pth from python -m pipelines.pretrain_kwmlp")
    return KWMLPModel(load_checkpoint(model_file_path))


def clip_groups(n_samples: int, n: int, group_chunks: int) -> list[list[int]]:
    """Clip indices in groups of at most ``group_chunks`` padded chunks (one clip at least)."""
    per = max(1, -(-(n_samples + PAD_FRONT + PAD_END) // CHUNK_SAMPLES))  # as pad_and_chunk
    size = max(1, group_chunks // per)
    return [list(range(i, min(n, i + size))) for i in range(0, n, size)]


def _embed(audio: torch.Tensor, model):
    """Yield (clip index, bow.kwmlp.embed.ClipEmbedding) for every clip of the batch; ``model``:
    KWMLPModel or bow.hear.audiomlp's AudioMLPModel (``embedder(device)``, ``group_chunks``)."""
    audio = check_audio(audio)
    clips = audio.detach().to("cpu", torch.float32).numpy()
    embedder = model.embedder(audio.device)
    for group in clip_groups(clips.shape[1], clips.shape[0], model.group_chunks):
        yield from zip(group, embedder.embed([clips[i] for i in group]))


def get_timestamp_embeddings(audio: torch.Tensor, model) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, samples) -> (n, T, timestamp_embedding_size) float32 embeddings (64 for KW-MLP) and
    (n, T) float32 timestamps (ms); ``model`` as in ``_embed``."""
    n, samples = check_audio(audio).shape
    out = torch.empty(n, n_timestamps(samples), model.timestamp_embedding_size)
    for i, clip in _embed(audio, model):
        out[i] = torch.from_numpy(clip.frames)
    ts = torch.from_numpy(np.tile(timestamps_ms(samples), (n, 1)))
    return out.to(audio.device), ts.to(audio.device)


def get_scene_embeddings(audio: torch.Tensor, model) -> torch.Tensor:
    """(n, samples) -> (n, scene_embedding_size) float32 scene embeddings (1024 for KW-MLP)."""
    n, _ = check_audio(audio).shape
    out = torch.empty(n, model.scene_embedding_size)
    for i, clip in _embed(audio, model):
        out[i] = torch.from_numpy(clip.scene)
    return out.to(audio.device)
