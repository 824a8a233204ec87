"""Timestamp embeddings (T, d) -> one scene embedding (16 d,) of fixed size.

Three algorithms (the paper's ablation; ``iterative`` is the authors' package):

* ``iterative``: while the sequence is at least twice 16 long, halve it by linear interpolation
  (align_corners=True), floor(log2(T / 16)) times; if T / 16 is not a power of two, interpolate
  once more to exactly 16 frames. Each halving maps T frames to floor(T / 2).
* ``single``: one linear interpolation (align_corners=True) from T frames to 16.
* ``mean``: cut the T frames into 16 contiguous groups, group g holding frames
  floor(g T / 16) .. floor((g + 1) T / 16) - 1, and average each group.

In all three, a sequence of fewer than 16 frames is zero-padded at the end to 16 frames and
used as is (an empty one gives zeros). The (16, d) result is flattened feature-major (the 16
values of feature 0, then of feature 1, ...) into 16 d values: 1024 for d = 64.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bow.runtime import one_thread

N_STEPS = 16
ALGORITHMS = ("iterative", "single", "mean")


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """(n, d, T) -> (n, d, size), linear with align_corners=True."""
    return F.interpolate(x, size=size, mode="linear", align_corners=True)


def _group_means(x: torch.Tensor, steps: int) -> torch.Tensor:
    """(n, d, T) -> (n, d, steps): means of ``steps`` contiguous groups of frames."""
    t = x.shape[-1]
    edges = [g * t // steps for g in range(steps + 1)]
    return torch.stack([x[..., a:b].mean(dim=-1) for a, b in zip(edges, edges[1:])], dim=-1)


def scene_embedding(frames: torch.Tensor, algorithm: str = "iterative",
                    steps: int = N_STEPS) -> torch.Tensor:
    """(n, T, d) timestamp embeddings of n sequences of equal length -> (n, steps * d)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"scene algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    n, t, d = frames.shape
    x = frames.transpose(1, 2)                                  # (n, d, T)
    if t < steps:
        x = F.pad(x, (0, steps - t))
    elif algorithm == "single":
        x = _resize(x, steps)
    elif algorithm == "mean":
        x = _group_means(x, steps)
    else:
        ratio = t / steps
        for _ in range(int(math.floor(math.log2(ratio)))):
            x = _resize(x, x.shape[-1] // 2)
        if not math.log2(ratio).is_integer():
            x = _resize(x, steps)
    return x.reshape(n, d * steps)


@one_thread()
def scene_embeddings(sequences: list[torch.Tensor], algorithm: str = "iterative",
                     steps: int = N_STEPS) -> torch.Tensor:
    """List of (T_i, d) sequences of any lengths -> (len, steps * d), batched by length; with
    torch on one thread (bow.runtime.one_thread)."""
    if not sequences:
        raise ValueError("no sequences to embed")
    d = sequences[0].shape[-1]
    out = sequences[0].new_empty((len(sequences), steps * d))
    by_length: dict[int, list[int]] = {}
    for i, s in enumerate(sequences):
        by_length.setdefault(s.shape[0], []).append(i)
    for idx in by_length.values():
        out[idx] = scene_embedding(torch.stack([sequences[i] for i in idx]), algorithm, steps)
    return out
