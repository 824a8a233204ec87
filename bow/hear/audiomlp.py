"""HEAR 2021 API for the Audio-MLP autoencoder: a thin wrapper over bow.audiomlp.embed (the
authors' procedure).

    model = load_model("../shared/audiomlp/audiomae.pth")  # or artifacts/audiomlp/best.pth
    emb, ts = get_timestamp_embeddings(audio, model)   # (n, T, 8), (n, T) ms, T = samples // 160
    scene = get_scene_embeddings(audio, model)         # (n, 1584)

Timestamp embeddings every 10 ms and the scene embedding are those of the authors' HEAR
package (bow.audiomlp.embed reproduces its golden outputs); each clip of a batch is embedded as
if alone. Our own checkpoints carry their input scaling, which the model applies. Memory:
clips go to bow.audiomlp.embed in groups of at most ``group_chunks`` 1 s chunks (256; a longer
clip alone), ``batch_chunks`` chunks per encoder call, as bow.hear.kwmlp does; what grows with
a clip is its audio, its (100 s - 2, 8) frame sequence (3.2 KB per second) and the output.
The two embedding functions are bow.hear.kwmlp's, which work on any model with an ``embedder``.
"""
from __future__ import annotations

from torch import nn

from bow.audio.load import SAMPLE_RATE
from bow.audiomlp.embed import SCENE_STEPS, AudioMLPEmbedder
from bow.audiomlp.model import AudioMLPEncoder, load_checkpoint
from bow.audiomlp.scaling import InputScaling
from bow.hear.kwmlp import GROUP_CHUNKS, get_scene_embeddings, get_timestamp_embeddings

__all__ = ["load_model", "get_timestamp_embeddings", "get_scene_embeddings"]


class AudioMLPModel(nn.Module):
    """An Audio-MLP encoder and its input scaling with the HEAR attributes. ``group_chunks``
    bounds the 1 s chunks of the clips embedded at once, ``batch_chunks`` those per encoder call
    (None: bow.audiomlp.embed's default)."""

    sample_rate = SAMPLE_RATE

    def __init__(self, encoder: AudioMLPEncoder, scaling: InputScaling | None = None,
                 group_chunks: int = GROUP_CHUNKS, batch_chunks: int | None = None):
        super().__init__()
        self.encoder = encoder.eval()
        self.scaling = (scaling or InputScaling("power")).eval()
        self.group_chunks, self.batch_chunks = group_chunks, batch_chunks
        self.timestamp_embedding_size = int(encoder.embed_dim)
        self.scene_embedding_size = SCENE_STEPS * self.timestamp_embedding_size

    def embedder(self, device) -> AudioMLPEmbedder:
        batch = {} if self.batch_chunks is None else {"batch_chunks": self.batch_chunks}
        return AudioMLPEmbedder(self.encoder, self.scaling, device=device, **batch)


def load_model(model_file_path: str = "") -> AudioMLPModel:
    """The authors' ``audiomae.pth`` or pipelines.pretrain_audiomlp's ``best.pth``. Raises
    bow.audiomlp.model.CheckpointError for other files."""
    if not model_file_path:
        raise ValueError("bow.hear.audiomlp needs a checkpoint: the authors' audiomae.pth or "
                         "artifacts/audiomlp/best.pth from python -m pipelines.pretrain_audiomlp")
    return AudioMLPModel(*load_checkpoint(model_file_path))
