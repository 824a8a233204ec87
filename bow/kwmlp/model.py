"""KW-MLP (Morshed & Ahsan, "Learning Audio Representations with MLPs", HEAR 2021): a gated MLP
over the 98 frames of a 1 s, 40-coefficient MFCC.

    (n, 40, 98) MFCC ─ frames as tokens ─ Linear(40, 64) ─▶ (n, 98, 64)
      ─ L x [x + LayerNorm(block(x))] ─▶ (n, 98, 64)   (L = 12 by default; 8 and 10 in the paper)
      ─ head: LayerNorm(64) ─ mean over time ─ Linear(64, classes) ─▶ (n, classes) logits
    block: Linear(64, 256) ─ GELU ─ spatial gating unit ─ Linear(128, 64)
    spatial gating unit: split 256 channels into residual | gate (128 each); gate = LayerNorm(gate)
      mixed over time by Conv1d(98, 98, 1) (a 98 x 98 projection, weights ~ U(+-1e-3 / 98), bias 1);
      output = residual * gate (so at initialisation each block is close to a plain MLP).

The norm sits inside the residual, after the block ("post-norm"). In training each block is
skipped with probability ``1 - prob_survival`` (stochastic depth, 0.1), drawn once per forward pass
for the whole batch, and at least one block is kept (as in the authors' code); in eval mode every
block runs.

Module names follow the authors' checkpoint, so ``kwmlp.pth``'s ``model_state_dict`` loads with
``strict=True``: ``to_patch_embed.1`` (index 0 is the frame-to-token rearrangement),
``layers.<i>.fn.norm`` (post-norm), ``layers.<i>.fn.fn.{proj_in.0, sgu.norm, sgu.proj, proj_out}``,
``to_logits.{0, 2}`` (index 1 is the mean over time).

Inference: ``KWMLPEncoder`` computes ``KWMLP.encode`` for inference in a time-major layout,
(98, n, C) instead of (n, 98, C): every linear layer is one (98 n, C) matmul, the gating unit's
time mixing (a Conv1d(98, 98, 1) in the checkpoint) is one (98, 98) @ (98, n 128) matmul with
no transposes, and the first projection is split into its residual and gate halves so that no
activation is ever copied to be made contiguous; GELU and the residual sum work in place. Same
numbers as ``KWMLP.encode`` to float rounding (~1e-6 relative); measured 1.5-2x faster on one
CPU thread.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bow.io.stage import ArtifactError

N_MFCC = 40
MFCC_FRAMES = 98


def surviving_blocks(depth: int, prob_survival: float,
                     generator: torch.Generator | None = None) -> list[int]:
    """Stochastic depth in training: the indices of the ``depth`` blocks kept in one forward
    pass, each with probability ``prob_survival`` (u <= p for u uniform, one draw per block),
    at least one (a random one when all were dropped). All of them when p >= 1."""
    if prob_survival >= 1 or depth == 0:
        return list(range(depth))
    keep = torch.rand(depth, generator=generator) <= prob_survival
    if not keep.any():  # keep at least one block
        keep[int(torch.randint(depth, (1,), generator=generator))] = True
    return [i for i in range(depth) if keep[i]]


class SpatialGatingUnit(nn.Module):
    """(n, T, 2 d) -> (n, T, d): residual half times the time-mixed, normalised gate half."""

    def __init__(self, dim_ff: int, seq_len: int, init_eps: float = 1e-3):
        super().__init__()
        self.norm = nn.LayerNorm(dim_ff // 2)
        self.proj = nn.Conv1d(seq_len, seq_len, 1)
        bound = init_eps / seq_len
        nn.init.uniform_(self.proj.weight, -bound, bound)
        nn.init.constant_(self.proj.bias, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual, gate = x.chunk(2, dim=-1)
        return residual * self.proj(self.norm(gate))  # Conv1d over the time axis (channels = T)


class GatedMLPBlock(nn.Module):
    """(n, T, dim) -> (n, T, dim): Linear -> GELU -> spatial gating unit -> Linear."""

    def __init__(self, dim: int, dim_ff: int, seq_len: int):
        super().__init__()
        self.proj_in = nn.Sequential(nn.Linear(dim, dim_ff), nn.GELU())
        self.sgu = SpatialGatingUnit(dim_ff, seq_len)
        self.proj_out = nn.Linear(dim_ff // 2, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_out(self.sgu(self.proj_in(x)))


class PostNorm(nn.Module):
    """LayerNorm(fn(x))."""

    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.fn(x))


class Residual(nn.Module):
    """x + fn(x)."""

    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fn(x)


class FramesToTokens(nn.Module):
    """(n, 40, 98) MFCC -> (n, 98, 40): one token per frame."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class MeanOverTime(nn.Module):
    """(n, T, d) -> (n, d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)


class KWMLP(nn.Module):
    """(n, 40, 98) MFCC -> (n, num_classes) logits; ``encode`` gives the (n, 98, 64) tokens."""

    def __init__(self, num_classes: int = 35, depth: int = 12, dim: int = 64, ff_mult: int = 4,
                 n_mfcc: int = N_MFCC, n_frames: int = MFCC_FRAMES, prob_survival: float = 0.9):
        super().__init__()
        self.depth, self.prob_survival = depth, prob_survival
        self.to_patch_embed = nn.Sequential(FramesToTokens(), nn.Linear(n_mfcc, dim))
        self.layers = nn.ModuleList(
            Residual(PostNorm(dim, GatedMLPBlock(dim, dim * ff_mult, n_frames)))
            for _ in range(depth))
        self.to_logits = nn.Sequential(nn.LayerNorm(dim), MeanOverTime(),
                                       nn.Linear(dim, num_classes))

    def kept_blocks(self, generator: torch.Generator | None = None) -> list[int]:
        """Indices of the blocks run in this forward pass (all of them unless training)."""
        if not self.training:
            return list(range(self.depth))
        return surviving_blocks(self.depth, self.prob_survival, generator)

    def encode(self, mfcc: torch.Tensor, n_blocks: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, 40, 98) -> (n, 98, dim) after the first ``n_blocks`` blocks (all by default)."""
        x = self.to_patch_embed(mfcc)
        n_blocks = self.depth if n_blocks is None else n_blocks
        if not 0 <= n_blocks <= self.depth:
            raise ValueError(f"n_blocks must be in 0..{self.depth}, got {n_blocks}")
        for i in self.kept_blocks(generator):
            if i < n_blocks:
                x = self.layers[i](x)
        return x

    def forward(self, mfcc: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.to_logits(self.encode(mfcc, generator=generator))

    @classmethod
    def from_state_dict(cls, state_dict: dict, **kwargs) -> "KWMLP":
        """A model shaped like ``state_dict`` (depth, width, classes), loaded with strict=True."""
        depth = 1 + max(int(k.split(".")[1]) for k in state_dict if k.startswith("layers."))
        dim, n_mfcc = state_dict["to_patch_embed.1.weight"].shape
        dim_ff = state_dict["layers.0.fn.fn.proj_in.0.weight"].shape[0]
        n_frames = state_dict["layers.0.fn.fn.sgu.proj.weight"].shape[0]
        model = cls(num_classes=state_dict["to_logits.2.weight"].shape[0], depth=depth, dim=dim,
                    ff_mult=dim_ff // dim, n_mfcc=n_mfcc, n_frames=n_frames, **kwargs)
        model.load_state_dict(state_dict, strict=True)
        return model


class CheckpointError(ArtifactError):
    """A file that is not a KW-MLP checkpoint; the message names it."""


def load_checkpoint(path: str | Path, map_location="cpu") -> KWMLP:
    """The model in an authors'-format checkpoint ``{"model_state_dict": ...}``, in eval mode."""
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, OSError...
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({e})") from e
    if not isinstance(ckpt, dict) or "model_state_dict" not in ckpt:
        raise CheckpointError(f"{path}: no 'model_state_dict' key (not a KW-MLP checkpoint)")
    try:
        return KWMLP.from_state_dict(ckpt["model_state_dict"]).eval()
    except (KeyError, RuntimeError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise CheckpointError(f"{path}: state dict does not fit KW-MLP ({e})") from e


def save_checkpoint(model: KWMLP, path: str | Path) -> None:
    """Write ``{"model_state_dict": ...}`` (CPU tensors only, the authors' format) to ``path``."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    with open(path, "wb") as f:  # a file object: the same bytes whatever the file's name
        torch.save({"model_state_dict": state}, f)


def _transposed(weight: torch.Tensor) -> torch.Tensor:
    """(out, in) Linear weight -> contiguous (in, out), for x @ W^T as addmm(b, x, W^T)."""
    return weight.detach().t().contiguous()


def _copy(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone()


_gelu_ = torch.ops.aten.gelu_  # exact (erf) GELU in place, as nn.GELU(): one allocation less


class KWMLPEncoder:
    """Inference-only ``KWMLP.encode`` in a time-major layout (see the module docstring):
    (n, 40, 98) MFCC -> (n, 98, 64) tokens after ``n_blocks`` blocks (eval mode, every block).
    Reads only ``to_patch_embed[1]`` and ``layers``, so it also runs the trunk of other models
    built from these blocks (bow.audiomlp.model.AudioMLPEncoder).

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
