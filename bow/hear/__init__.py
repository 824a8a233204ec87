"""HEAR 2021 common API modules (https://hearbenchmark.com), one per embedding:

* ``bow.hear.kwmlp``: KW-MLP, from the authors' ``kwmlp.pth`` or our own pretraining
  (``artifacts/kwmlp/best.pth``);
* ``bow.hear.audiomlp``: the Audio-MLP autoencoder's encoder, from the authors' ``audiomae.pth``
  or our own pretraining (``artifacts/audiomlp/best.pth``);
* ``bow.hear.bow``: the bag-of-words model, from a single-file bundle (``bow.bagofwords.bundle``,
  written by ``python -m pipelines.export_bundle``);
* ``bow.hear.opensmile``: the openSMILE peer (ComParE_2016; the optional ``opensmile`` package),
  which needs no model file: ``load_model()``.

Each has ``load_model(model_file_path)`` -> a torch Module with ``sample_rate``,
``timestamp_embedding_size`` and ``scene_embedding_size``; ``get_timestamp_embeddings(audio,
model)`` -> ((n, T, size) float32, (n, T) float32 ms); ``get_scene_embeddings(audio, model)``
-> (n, size) float32. ``audio`` is (n, samples) float in [-1, 1] at 16 kHz on the model's
device; the results come back on that device. All are thin wrappers over the library
(bow.kwmlp.embed, bow.audiomlp.embed, bow.bagofwords.embed, bow.peers.opensmile) and validate
with ``hear-validator``.
"""
from __future__ import annotations

import torch


def check_audio(audio) -> torch.Tensor:
    """The HEAR input: a (n, samples) floating-point torch tensor, else a clear ValueError."""
    if not isinstance(audio, torch.Tensor):
        raise ValueError(f"audio must be a torch.Tensor of shape (n, samples), got "
                         f"{type(audio).__name__}")
    if audio.ndim != 2 or not audio.is_floating_point():
        raise ValueError(f"audio must be a (n, samples) floating-point tensor at 16 kHz, got "
                         f"{audio.dtype} of shape {tuple(audio.shape)}")
    return audio
