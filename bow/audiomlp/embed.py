"""Audio-MLP embeddings computed as the authors' HEAR-2021 package computes them.

Per clip, (samples,) float32 at 16 kHz (steps 1, 2, 4, 5 are KW-MLP's: bow.kwmlp.embed):
  1. zero-pad 80 samples in front and 240 at the end;
  2. zero-pad to a whole number of seconds (at least one) and cut into 1 s chunks;
  3. each chunk -> (40, 98) LINEAR power mel (bow.audio.features.PowerMel) -> the checkpoint's
     input scaling (bow.audiomlp.scaling; "power", the identity, for the authors' file) ->
     encoder -> (98, 8) frame embeddings (after the bottleneck's activation; no LayerNorm is
     added, unlike KW-MLP);
  4. each chunk's frames get one replicated frame on each side, the chunks are concatenated and
     the first and last frame of the whole sequence dropped: (100 k - 2, 8);
  5. timestamps 10, 20, ..., 10 n ms with n = samples // 160; the timestamp embeddings are the
     first n frames: (n, 8);
  6. scene embedding: the scene algorithm of bow.kwmlp.scene with 198 steps (KW-MLP's has 16) on
     the WHOLE sequence of step 4, before the truncation of step 5: (1584,) feature-major. A
     sequence of fewer than 198 frames (a clip shorter than ~1.2 s: 98 frames for one chunk) is
     zero-padded to 198; a longer one is halved by linear interpolation floor(log2(T / 198))
     times, then interpolated once to 198 unless T / 198 was a power of two.

Batches hold clips of any lengths: the chunks of all clips go through the encoder together,
``batch_chunks`` at a time, and are split back per clip; every step works chunk by chunk, so a
batch gives what its clips give one by one (tests/audiomlp: bit for bit on CPU).

Chunk vectors for the feature store: row j of a clip is the scene algorithm (198 steps) on the
timestamp frames centred in second j, for j < bow.audio.load.n_chunks(len(audio)), as KW-MLP's
(bow.kwmlp.embed.chunk_vectors): the same 1584-d shape and algorithm as the clip vector, the
rows aligned with every other store's 1 s chunks. A second holds at most 100 frames, so a row
is its frames, zero-padded to 198 steps per feature (the padded columns are constant; heads
standardise only columns that vary).

``ShardEmbedder`` is the unit of work of bow.io.sharded for the Audio-MLP store (as KW-MLP's).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bow.audio.features import PowerMel
from bow.audiomlp.model import AudioMLPEncoder, FastEncoder, load_checkpoint
from bow.audiomlp.scaling import InputScaling
from bow.kwmlp.embed import (
    CPU_BATCH_CHUNKS,
    ClipEmbedding,
    FrameShardEmbedder,
    chunk_vectors,
    chunks_to_sequence,
    n_timestamps,
    pad_and_chunk,
    timestamps_ms,
)
from bow.kwmlp.scene import scene_embeddings
from bow.runtime import check_precision, encoder_precision, one_thread

SCENE_STEPS = 198


class AudioMLPEmbedder:
    """Clips (any lengths, 16 kHz) -> timestamp and scene embeddings with an Audio-MLP encoder.

    ``scaling``: the encoder's input scaling (None: "power", the authors' checkpoint).
    ``fast``: bow.audiomlp.model.FastEncoder (default) or the module itself. ``batch_chunks``:
    1 s chunks per encoder call. ``precision``: fp32, bf16 or (CUDA) tf32 (bow.runtime).
    """

    def __init__(self, encoder: AudioMLPEncoder, scaling: InputScaling | None = None,
                 scene_algorithm: str = "iterative", batch_chunks: int = CPU_BATCH_CHUNKS,
                 device: str | torch.device = "cpu", precision: str = "fp32",
                 fast: bool = True):
        self.device = torch.device(device)
        check_precision(precision, self.device)
        self.encoder = encoder.eval().to(self.device)
        self.scaling = (scaling or InputScaling("power")).eval().to(self.device)
        self.fast = FastEncoder(self.encoder) if fast else None
        self.scene_algorithm, self.batch_chunks = scene_algorithm, batch_chunks
        self.precision = precision
        self.mel = PowerMel().to(self.device)

    @property
    def embed_dim(self) -> int:
        return self.encoder.embed_dim

    @torch.inference_mode()
    @one_thread()
    def encode_chunks(self, chunks: torch.Tensor) -> torch.Tensor:
        """(k, 16000) -> (k, 98, embed_dim) frame embeddings, on CPU; torch on one thread
        (bow.runtime.one_thread)."""
        out = []
        for i in range(0, chunks.shape[0], self.batch_chunks):
            x = self.scaling(self.mel(chunks[i:i + self.batch_chunks].to(self.device)))
            with encoder_precision(self.precision, self.device):
                y = self.fast(x) if self.fast else self.encoder(x)
            out.append(y.float().cpu())
        return torch.cat(out)

    def sequences(self, audios: list[np.ndarray]) -> list[torch.Tensor]:
        """List of (samples_i,) -> list of whole (100 k_i - 2, embed_dim) sequences (steps
        1-4)."""
        chunked = [pad_and_chunk(torch.as_tensor(np.asarray(a, dtype=np.float32)))
                   for a in audios]
        frames = self.encode_chunks(torch.cat(chunked)).split([c.shape[0] for c in chunked])
        return [chunks_to_sequence(f) for f in frames]

    def embed(self, audios: list[np.ndarray]) -> list[ClipEmbedding]:
        """List of (samples_i,) -> per clip: frames, timestamps and the scene embedding."""
        seqs = self.sequences(audios)
        scenes = scene_embeddings(seqs, self.scene_algorithm, SCENE_STEPS)
        return [ClipEmbedding(seq[:n_timestamps(len(a))].numpy(), timestamps_ms(len(a)),
                              s.numpy()) for seq, a, s in zip(seqs, audios, scenes)]

    def scenes(self, audios: list[np.ndarray], batch_clips: int = 32) -> np.ndarray:
        """List of clips -> (n, 198 embed_dim) scene embeddings, ``batch_clips`` at a time."""
        out = []
        for i in range(0, len(audios), batch_clips):
            seqs = self.sequences(audios[i:i + batch_clips])
            out.append(scene_embeddings(seqs, self.scene_algorithm, SCENE_STEPS).numpy())
        return np.concatenate(out) if out else np.zeros((0, SCENE_STEPS * self.embed_dim),
                                                        np.float32)

    def chunk_vectors(self, frames: np.ndarray, timestamps: np.ndarray,
                      n_samples: int) -> np.ndarray:
        """(T, embed_dim) frames of a clip -> (n_chunks(n_samples), 198 embed_dim)."""
        return chunk_vectors(frames, timestamps, n_samples, self.scene_algorithm, SCENE_STEPS)


@dataclass
class ShardEmbedder(FrameShardEmbedder):
    """Audio-MLP's shard worker for bow.io.sharded (bow.kwmlp.embed.FrameShardEmbedder)."""

    def load(self, batch_chunks: int) -> AudioMLPEmbedder:
        encoder, scaling = load_checkpoint(self.checkpoint)
        return AudioMLPEmbedder(encoder, scaling, self.scene_algorithm, batch_chunks,
                                self.device, self.precision)
