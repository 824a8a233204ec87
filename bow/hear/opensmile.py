"""HEAR 2021 API for the openSMILE peer: ComParE_2016 features (bow.peers.opensmile).

    model = load_model()                                # no model file: openSMILE has no weights
    emb, ts = get_timestamp_embeddings(audio, model)    # (n, T, 130), (n, T) ms
    scene = get_scene_embeddings(audio, model)          # (n, 6373)

Needs the optional ``opensmile`` package (``pip install "bow-audio[opensmile]"``; audEERING's
licence allows research use only): ``load_model`` raises bow.peers.opensmile.OpenSmileMissing
without it. ``load_model`` takes no file (``model_file_path`` "" or omitted, as hear-validator
and the kit call it without ``--model``); a path given is refused, not ignored.

* Scene embedding: the ComParE_2016 functionals of each clip (6,373), as in the store's clip
  vectors.
* Timestamp embeddings: openSMILE's 65 low-level descriptors and their 65 deltas per 10 ms
  frame (130), stamped at the centre of the 60 ms span openSMILE gives each frame (its start +
  30 ms; the spectral, energy and MFCC descriptors use 20 ms windows from the same start):
  T = (samples - 960) // 160 + 1 frames, or 2 below 1,280 samples.
* Clips shorter than 60 ms (openSMILE's longest window) are zero-padded to 60 ms; NaN or inf
  from openSMILE (none seen on 60 ms or more) become 0. Every clip is processed on its own on the
  CPU (~50 ms of openSMILE set-up per clip and feature level), the result moved to the audio's
  device.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bow.audio.load import SAMPLE_RATE
from bow.hear import check_audio
from bow.peers import opensmile


class OpenSmileModel(nn.Module):
    """openSMILE ComParE_2016 with the HEAR attributes (no parameters)."""

    sample_rate = SAMPLE_RATE
    scene_embedding_size = opensmile.N_FUNCTIONALS
    timestamp_embedding_size = opensmile.FRAME_DIM

    def __init__(self):
        super().__init__()
        self.opensmile_version = opensmile.version()


def load_model(model_file_path: str = "") -> OpenSmileModel:
    """The openSMILE peer; ``model_file_path`` must be empty (openSMILE needs no file)."""
    if model_file_path:
        raise ValueError(f"bow.hear.opensmile needs no model file (got {model_file_path!r}): "
                         "call load_model() or leave --model out")
    return OpenSmileModel()


def _clips(audio: torch.Tensor) -> np.ndarray:
    return check_audio(audio).detach().to("cpu", torch.float32).numpy()


def get_timestamp_embeddings(audio: torch.Tensor, model: OpenSmileModel
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, samples) -> (n, T, 130) float32 LLDs and deltas, (n, T) float32 frame centres (ms)."""
    clips = _clips(audio)
    n, samples = clips.shape
    starts = opensmile.HOP_MS * np.arange(opensmile.n_frames(samples), dtype=np.float32)
    out = np.empty((n, len(starts), model.timestamp_embedding_size), np.float32)
    for i, clip in enumerate(clips):
        frames, got = opensmile.frames(clip)
        if not np.array_equal(got, starts):
            raise RuntimeError(f"openSMILE gave clip {i} of the batch {len(got)} frames at "
                               f"{got[:3]}... ms; expected {len(starts)} from 0 every 10 ms")
        out[i] = opensmile.finite(frames)[0]
    ts = np.tile(starts + np.float32(opensmile.FRAME_MS / 2), (n, 1))
    return torch.from_numpy(out).to(audio.device), torch.from_numpy(ts).to(audio.device)


def get_scene_embeddings(audio: torch.Tensor, model: OpenSmileModel) -> torch.Tensor:
    """(n, samples) -> (n, 6373) float32 ComParE_2016 functionals of each clip."""
    clips = _clips(audio)
    out = np.empty((clips.shape[0], model.scene_embedding_size), np.float32)
    for i, clip in enumerate(clips):
        out[i] = opensmile.finite(opensmile.functionals(clip))[0]
    return torch.from_numpy(out).to(audio.device)
