"""KW-MLP embeddings computed as the authors' HEAR-2021 package computes them.

Per clip, (samples,) float32 at 16 kHz:
  1. zero-pad 80 samples in front and 240 at the end (so frame k is centred on 10 k ms);
  2. zero-pad to a whole number of seconds (at least one) and cut into 1 s chunks;
  3. each chunk -> (40, 98) MFCC (bow.audio.features.MFCC, dB floor per chunk) -> encoder -> (98,
  64)
     tokens -> LayerNorm(64) without affine parameters (the package replaces the classifier by a
     freshly initialised LayerNorm: weight 1, bias 0);
  4. each chunk's 98 frames get one replicated frame on each side (100 frames, 10 ms apart),
     the chunks are concatenated in time, and the first and last frame of the whole sequence are
     dropped;
  5. timestamps: n = int((t_ms - 30) / 10 + 1) for the padded length t_ms of step 1, at
     10, 20, ..., 10 n ms; the timestamp embeddings are those first n frames: (n, 64).
     Evaluated exactly, n = samples // 160 (a float evaluation gives 399 for a 4 s clip, whose
     reference has 400);
  6. scene embedding: bow.kwmlp.scene (``iterative`` in the package) on the WHOLE sequence of step
  4,
     100 k - 2 frames, before the truncation of step 5 (so frames of the zero padding count):
     (1024,). This is what reproduces golden_public.npz (relative error ~1e-5); the truncated
     frames give errors of the order of the values themselves, except where n = 100 k - 2.

Batches hold clips of any lengths: each clip is padded on its own, the chunks of all clips go
through the encoder together (``batch_chunks`` at a time) and are split back per clip, so a
batch gives what its clips give one by one.

Chunk vectors for the feature store (``chunk_vectors``), a decision of ours, not the package's:
row j of a clip is the scene algorithm applied to the timestamp frames centred in second j of
the clip, timestamps in [1000 j, 1000 j + 1000) ms (99 frames for the first second, 100 for a
full later one, fewer in a partial last one), for j < bow.audio.load.n_chunks(len(audio)), so the
rows align with bow.audio.load.chunk(audio) and its 0.1 s tail rule. Frames centred in a dropped
short tail belong to no chunk row (they still count in the clip's frames and scene embedding). This
reuses the clip's own forward pass, so each row sees the same context the timestamp embeddings saw,
and gives each 1 s row the same 1024-d shape and algorithm as the clip-level vector. A row with
no frame (a clip shorter than 10 ms) is all zeros.

``ShardEmbedder`` is the unit of work of bow.io.sharded for the KW-MLP store: a list of clips
-> ClipFeatures (timestamp frames, chunk rows, scene embedding) and skipped clips; picklable
(each process loads the checkpoint on first use); clips are decoded ahead in threads
(bow.audio.readahead) and embedded ``batch_clips`` at a time.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bow.audio.features import MFCC
from bow.audio.load import CHUNK_SAMPLES, SAMPLE_RATE, n_chunks, read_audio
from bow.audio.readahead import default_threads, read_batches
from bow.data.datasets import Clip
from bow.io.store import ClipFeatures, multi_hot
from bow.kwmlp.model import KWMLP, KWMLPEncoder, load_checkpoint
from bow.kwmlp.scene import N_STEPS, scene_embeddings
from bow.runtime import check_precision, encoder_precision, one_thread

PAD_FRONT = 80
PAD_END = 240
FRAME_HOP_MS = 10
CPU_BATCH_CHUNKS, GPU_BATCH_CHUNKS = 32, 512   # measured fastest: see KWMLPEmbedder


def n_timestamps(n_samples: int) -> int:
    """Number of timestamp frames of a clip of ``n_samples`` at 16 kHz (the package's rule).

    int((t_ms - 30) / 10 + 1) with t_ms = (samples + 320) / 16 is samples // 160 exactly.
    """
    return int(n_samples) // (SAMPLE_RATE * FRAME_HOP_MS // 1000)


def timestamps_ms(n_samples: int) -> np.ndarray:
    """(T,) float32 timestamps in ms: 10, 20, ..., 10 T."""
    return (np.arange(1, n_timestamps(n_samples) + 1) * FRAME_HOP_MS).astype(np.float32)


def pad_and_chunk(audio: torch.Tensor) -> torch.Tensor:
    """(samples,) -> (k, 16000): the package's padding, cut into k >= 1 chunks of 1 s."""
    x = F.pad(audio, (PAD_FRONT, PAD_END))
    k = max(1, -(-x.shape[0] // CHUNK_SAMPLES))
    return F.pad(x, (0, k * CHUNK_SAMPLES - x.shape[0])).reshape(k, CHUNK_SAMPLES)


def chunks_to_sequence(tokens: torch.Tensor) -> torch.Tensor:
    """(k, 98, d) per-chunk outputs -> (100 k - 2, d): replicate-pad each, concatenate, trim."""
    k, t, d = tokens.shape
    padded = torch.cat([tokens[:, :1], tokens, tokens[:, -1:]], dim=1)   # (k, t + 2, d)
    return padded.reshape(k * (t + 2), d)[1:-1]


@dataclass
class ClipEmbedding:
    """The KW-MLP embeddings of one clip."""
    frames: np.ndarray       # (T, 64) float32 timestamp embeddings
    timestamps: np.ndarray   # (T,) float32 ms
    scene: np.ndarray        # (1024,) float32


class KWMLPEmbedder:
    """Clips (any lengths, 16 kHz) -> timestamp and scene embeddings with a KW-MLP encoder.

    ``n_blocks``: take the tokens after this many blocks (the paper's ablation: 4, 8 or 12 of
    12); None = all. ``scene_algorithm``: see bow.kwmlp.scene. ``batch_chunks``: 1 s chunks per
    encoder call. ``precision``: fp32, or tf32 / bf16 on CUDA (bow.runtime).
    """

    def __init__(self, model: KWMLP, n_blocks: int | None = None,
                 scene_algorithm: str = "iterative", batch_chunks: int = 32,
                 device: str | torch.device = "cpu", precision: str = "fp32"):
        self.device = torch.device(device)
        check_precision(precision, self.device)
        if n_blocks is not None and not 0 <= n_blocks <= model.depth:
            raise ValueError(f"n_blocks must be in 0..{model.depth}, got {n_blocks}")
        self.model = model.eval().to(self.device)
        self.encoder = KWMLPEncoder(self.model)
        self.n_blocks = n_blocks
        self.scene_algorithm = scene_algorithm
        self.batch_chunks = batch_chunks
        self.precision = precision
        self.mfcc = MFCC().to(self.device)

    @torch.inference_mode()
    @one_thread()
    def encode_chunks(self, chunks: torch.Tensor) -> torch.Tensor:
        """(k, 16000) -> (k, 98, 64) layer-normalised tokens, on CPU; torch on one thread
        (bow.runtime.one_thread: from 3 threads MKL rounded this model's matmuls otherwise)."""
        out = []
        for i in range(0, chunks.shape[0], self.batch_chunks):
            mfcc = self.mfcc(chunks[i:i + self.batch_chunks].to(self.device))
            with encoder_precision(self.precision, self.device):
                tokens = self.encoder(mfcc, self.n_blocks)
                out.append(F.layer_norm(tokens.float(), tokens.shape[-1:]).cpu())
        return torch.cat(out)

    def sequences(self, audios: list[np.ndarray]) -> list[torch.Tensor]:
        """List of (samples_i,) -> list of whole (100 k_i - 2, 64) sequences (steps 1-4)."""
        chunked = [pad_and_chunk(torch.as_tensor(np.asarray(a, dtype=np.float32)))
                   for a in audios]
        tokens = self.encode_chunks(torch.cat(chunked)).split([c.shape[0] for c in chunked])
        return [chunks_to_sequence(t) for t in tokens]

    def embed(self, audios: list[np.ndarray]) -> list[ClipEmbedding]:
        """List of (samples_i,) -> per clip: frames, timestamps and the scene embedding."""
        seqs = self.sequences(audios)
        scenes = scene_embeddings(seqs, self.scene_algorithm)
        return [ClipEmbedding(seq[:n_timestamps(len(a))].numpy(), timestamps_ms(len(a)),
                              s.numpy()) for seq, a, s in zip(seqs, audios, scenes)]

    def chunk_vectors(self, frames: np.ndarray, timestamps: np.ndarray,
                      n_samples: int) -> np.ndarray:
        """(T, 64) frames of a clip -> (bow.audio.load.n_chunks(n_samples), 1024): see module
        doc."""
        return chunk_vectors(frames, timestamps, n_samples, self.scene_algorithm)


def chunk_vectors(frames: np.ndarray, timestamps: np.ndarray, n_samples: int,
                  algorithm: str = "iterative", steps: int = N_STEPS) -> np.ndarray:
    """(T, d) timestamp frames of a clip and their (T,) ms -> (n_chunks(n_samples), steps * d):
    row j is the scene algorithm on the frames centred in second j (see the module doc)."""
    rows = []
    for j in range(n_chunks(n_samples)):
        sel = (timestamps >= 1000 * j) & (timestamps < 1000 * (j + 1))
        rows.append(torch.from_numpy(frames[sel]))
    return scene_embeddings(rows, algorithm, steps).numpy()


@dataclass
class FrameShardEmbedder:
    """list[Clip] -> ([ClipFeatures], [(fname, reason)]) for bow.io.sharded: the shard worker of
    the frame models (KW-MLP here, bow.audiomlp), clips decoded ahead in threads
    (bow.audio.readahead) and embedded ``batch_clips`` at a time; picklable (each process loads
    the checkpoint on first use, ``load``). ``batch_chunks`` None: 32 on the CPU, 512 on CUDA."""
    checkpoint: Path
    vocabulary: list[str]
    scene_algorithm: str = "iterative"
    batch_clips: int = 32
    batch_chunks: int | None = None
    precision: str = "fp32"
    device: str = "cpu"
    decode_threads: int | None = None
    _embedder: object = field(default=None, repr=False)

    def __post_init__(self):
        check_precision(self.precision, self.device)

    def __getstate__(self):
        return {**self.__dict__, "_embedder": None}

    def load(self, batch_chunks: int):
        """The model's embedder (``embed``, ``chunk_vectors``) from ``checkpoint``."""
        raise NotImplementedError

    def embedder(self):
        if self._embedder is None:
            gpu = torch.device(self.device).type != "cpu"
            self._embedder = self.load(self.batch_chunks or
                                       (GPU_BATCH_CHUNKS if gpu else CPU_BATCH_CHUNKS))
        return self._embedder

    def _embed(self, batch: list[tuple[Clip, np.ndarray]]) -> list[ClipFeatures]:
        embedder = self.embedder()
        return [ClipFeatures(fname=clip.fname, split=clip.split,
                             labels=multi_hot(clip.labels, self.vocabulary),
                             chunks=embedder.chunk_vectors(emb.frames, emb.timestamps, len(audio)),
                             clip=emb.scene, frames=emb.frames, timestamps=emb.timestamps)
                for (clip, audio), emb in zip(batch, embedder.embed([a for _, a in batch]))]

    def __call__(self, clips: list[Clip]):
        items, skipped = [], []
        threads = self.decode_threads
        if threads is None:
            threads = default_threads(torch.device(self.device).type)
        for batch in read_batches(clips, read_audio, self.batch_clips, threads, skipped):
            items += self._embed(batch)
        return items, skipped


@dataclass
class ShardEmbedder(FrameShardEmbedder):
    """KW-MLP's shard worker (FrameShardEmbedder; module docstring); ``n_blocks``: embeddings
    after that many blocks (None: all)."""
    n_blocks: int | None = None

    def load(self, batch_chunks: int) -> KWMLPEmbedder:
        return KWMLPEmbedder(load_checkpoint(self.checkpoint), self.n_blocks,
                             self.scene_algorithm, batch_chunks, self.device, self.precision)
