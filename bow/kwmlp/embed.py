"""KW-MLP embeddings computed as the authors' HEAR-2021 package computes them.

Per clip, (samples,) float32 at 16 kHz:
  1. zero-pad 80 samples in front and 240 at the end (so frame k is centred on 10 k ms);
  2. zero-pad to a whole number of seconds (at least one) and cut into 1 s chunks;
  3. each chunk -> (40, 98) MFCC (bow.audio.features.MFCC, dB floor per chunk) -> encoder -> (98, 64)
     tokens -> LayerNorm(64) without affine parameters (the package replaces the classifier by a
     freshly initialised LayerNorm: weight 1, bias 0);
  4. each chunk's 98 frames get one replicated frame on each side (100 frames, 10 ms apart),
     the chunks are concatenated in time, and the first and last frame of the whole sequence are
     dropped;
  5. timestamps: n = int((t_ms - 30) / 10 + 1) for the padded length t_ms of step 1, at
     10, 20, ..., 10 n ms; the timestamp embeddings are those first n frames: (n, 64).
     Evaluated exactly, n = samples // 160 (a float evaluation gives 399 for a 4 s clip, whose
     reference has 400);
  6. scene embedding: bow.kwmlp.scene (``iterative`` in the package) on the WHOLE sequence of step 4,
     100 k - 2 frames, before the truncation of step 5 (so frames of the zero padding count):
     (1024,). This is what reproduces golden_public.npz (relative error ~1e-5); the truncated
     frames give errors of the order of the values themselves, except where n = 100 k - 2.

Batches hold clips of any lengths: each clip is padded on its own, the chunks of all clips go
through the encoder together (``batch_chunks`` at a time) and are split back per clip, so a
batch gives what its clips give one by one.

Speed: ``KWMLPEncoder`` computes ``KWMLP.encode`` for inference in a time-major layout,
(98, n, C) instead of (n, 98, C): every linear layer is one (98 n, C) matmul, the gating unit's
time mixing (a Conv1d(98, 98, 1) in the checkpoint) is one (98, 98) @ (98, n 128) matmul with
no transposes, and the first projection is split into its residual and gate halves so that no
activation is ever copied to be made contiguous; GELU and the residual sum work in place. Same
numbers as ``KWMLP.encode`` to float rounding (~1e-6 relative); measured 1.5-2x faster on one
CPU thread. Chunks go through in
batches of ``batch_chunks`` (32 by default: the activations of a batch then stay in the CPU's
caches; measured faster than 256 on one thread). ``precision`` (bow.runtime) runs the encoder
in TF32 or bf16 on CUDA.

Chunk vectors for the feature store (``chunk_vectors``), a decision of ours, not the package's:
row j of a clip is the scene algorithm applied to the timestamp frames centred in second j of
the clip, timestamps in [1000 j, 1000 j + 1000) ms (99 frames for the first second, 100 for a
full later one, fewer in a partial last one), for j < bow.audio.load.n_chunks(len(audio)), so the rows
align with bow.audio.load.chunk(audio) and its 0.1 s tail rule. Frames centred in a dropped short tail
belong to no chunk row (they still count in the clip's frames and scene embedding). This reuses
the clip's own forward pass, so each row sees the same context the timestamp embeddings saw,
and gives each 1 s row the same 1024-d shape and algorithm as the clip-level vector. A row with
no frame (a clip shorter than 10 ms) is all zeros.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bow.audio.load import CHUNK_SAMPLES, SAMPLE_RATE, n_chunks
from bow.audio.features import MFCC
from bow.kwmlp.model import KWMLP
from bow.runtime import check_precision, encoder_precision
from bow.kwmlp.scene import scene_embeddings

PAD_FRONT = 80
PAD_END = 240
HOP_MS = 10


def n_timestamps(n_samples: int) -> int:
    """Number of timestamp frames of a clip of ``n_samples`` at 16 kHz (the package's rule).

    int((t_ms - 30) / 10 + 1) with t_ms = (samples + 320) / 16 is samples // 160 exactly.
    """
    return int(n_samples) // (SAMPLE_RATE * HOP_MS // 1000)


def timestamps_ms(n_samples: int) -> np.ndarray:
    """(T,) float32 timestamps in ms: 10, 20, ..., 10 T."""
    return (np.arange(1, n_timestamps(n_samples) + 1) * HOP_MS).astype(np.float32)


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


def _transposed(weight: torch.Tensor) -> torch.Tensor:
    """(out, in) Linear weight -> contiguous (in, out), for x @ W^T as addmm(b, x, W^T)."""
    return weight.detach().t().contiguous()


def _copy(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone()


_gelu_ = torch.ops.aten.gelu_  # exact (erf) GELU in place, as nn.GELU(): one allocation less


class KWMLPEncoder:
    """Inference-only ``KWMLP.encode`` in a time-major layout (see the module docstring):
    (n, 40, 98) MFCC -> (n, 98, 64) tokens after ``n_blocks`` blocks (eval mode, every block).

    Holds its own copies of the weights, rearranged (transposed, the first projection split in
    its residual and gate halves, the 1x1 convolution as a matrix): build it again after the
    model's weights change.
    """

    def __init__(self, model: KWMLP):
        t, c = _transposed, _copy
        embed = model.to_patch_embed[1]
        self.embed = (t(embed.weight), c(embed.bias))
        self.blocks = []
        for layer in model.layers:
            post, block = layer.fn, layer.fn.fn
            w, b = block.proj_in[0].weight, block.proj_in[0].bias
            half = w.shape[0] // 2
            sgu = block.sgu
            self.blocks.append({
                "residual": (t(w[:half]), c(b[:half])), "gate": (t(w[half:]), c(b[half:])),
                "gate_norm": (c(sgu.norm.weight), c(sgu.norm.bias), sgu.norm.eps),
                "time": (sgu.proj.weight.detach()[:, :, 0].contiguous(), c(sgu.proj.bias)[:, None]),
                "out": (t(block.proj_out.weight), c(block.proj_out.bias)),
                "norm": (c(post.norm.weight), c(post.norm.bias), post.norm.eps)})

    @torch.inference_mode()
    def __call__(self, mfcc: torch.Tensor, n_blocks: int | None = None) -> torch.Tensor:
        n, n_mfcc, t = mfcc.shape
        x = torch.addmm(self.embed[1], mfcc.permute(2, 0, 1).reshape(t * n, n_mfcc),
                        self.embed[0]).float()                   # (t n, 64), time-major rows
        # (the residual stream x stays float32 under a bf16 autocast; .float() is free in fp32)
        dim = x.shape[1]
        for block in self.blocks[:len(self.blocks) if n_blocks is None else n_blocks]:
            r = _gelu_(torch.addmm(block["residual"][1], x, block["residual"][0]))
            g = _gelu_(torch.addmm(block["gate"][1], x, block["gate"][0]))
            weight, bias, eps = block["gate_norm"]
            g = F.layer_norm(g, g.shape[-1:], weight, bias, eps)
            wt, bt = block["time"]                               # mix the 98 frames
            g = torch.addmm(bt, wt, g.reshape(t, -1)).reshape(t * n, -1)
            y = torch.addmm(block["out"][1], r.mul_(g), block["out"][0])
            weight, bias, eps = block["norm"]
            x.add_(F.layer_norm(y, (dim,), weight, bias, eps))
        return x.reshape(t, n, dim).transpose(0, 1)


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
    def encode_chunks(self, chunks: torch.Tensor) -> torch.Tensor:
        """(k, 16000) -> (k, 98, 64) layer-normalised tokens, on CPU."""
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
        """(T, 64) frames of a clip -> (bow.audio.load.n_chunks(n_samples), 1024): see module doc."""
        rows = []
        for j in range(n_chunks(n_samples)):
            sel = (timestamps >= 1000 * j) & (timestamps < 1000 * (j + 1))
            rows.append(torch.from_numpy(frames[sel]))
        return scene_embeddings(rows, self.scene_algorithm).numpy()


def get_timestamp_embeddings(audio: torch.Tensor, model: KWMLP, **kwargs):
    """(n, samples) -> ((n, T, 64) embeddings, (n, T) timestamps in ms), as the HEAR API."""
    out = KWMLPEmbedder(model, **kwargs).embed(list(audio.cpu().numpy()))
    return (torch.stack([torch.from_numpy(c.frames) for c in out]),
            torch.from_numpy(np.stack([c.timestamps for c in out])))


def get_scene_embeddings(audio: torch.Tensor, model: KWMLP, **kwargs) -> torch.Tensor:
    """(n, samples) -> (n, 1024) scene embeddings, as the HEAR API."""
    out = KWMLPEmbedder(model, **kwargs).embed(list(audio.cpu().numpy()))
    return torch.from_numpy(np.stack([c.scene for c in out]))
