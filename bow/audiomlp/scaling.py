"""The encoder's input scaling: (n, 40, 98) power mel -> (n, 40, 98) model input, which is also
the autoencoder's reconstruction target.

Kinds:
  * ``power`` -- the authors' checkpoint: the power mel as is. Values run from 0 to ~1e3 for
    loud full-scale audio but are mostly below 1e-3, so the decoder's Tanh (range -1..1) cannot
    reach the loud part, and the loss is dominated by a few loud frames.
  * ``power_clip`` -- ours: p / scale_ clipped to [0, 1] and mapped to [-1, 1], with scale_ the
    ``quantile`` (0.999) of the fitted chunks' power values.
  * ``logmel`` -- ours: dB = 10 log10(max(p, 1e-10)) floored at the chunk's own maximum minus
    ``top_db`` (80); z = (dB - mean_[band]) / std_[band] with per-band statistics of the fitted
    chunks; x = tanh(z / ``squash``) with squash 2, in (-1, 1), the range of the decoder's
    Tanh. A zeroed SpecAugment band then reads as the data's mean level, not as silence.
Statistics are learned by ``fit`` (buffers ``mean_``, ``std_``, ``scale_``) and travel in the
checkpoint (``state`` / ``from_state``: plain tensors, floats and a string). Every kind works
chunk by chunk (the dB floor is per chunk), so a batch equals its items one by one.
"""
from __future__ import annotations

import torch
from torch import nn

KINDS = ("power", "power_clip", "logmel")
N_MELS = 40
FIT_SAMPLE = 1 << 24   # power values a quantile is computed from (evenly spaced subsample)


class InputScaling(nn.Module):
    """(n, 40, 98) power mel -> (n, 40, 98) model input (module docstring)."""

    def __init__(self, kind: str = "power", n_mels: int = N_MELS, top_db: float = 80.0,
                 squash: float = 2.0, quantile: float = 0.999):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"input scaling must be one of {KINDS}, got {kind!r}")
        self.kind, self.top_db, self.squash, self.quantile = kind, top_db, squash, quantile
        self.register_buffer("mean_", torch.zeros(n_mels, 1))
        self.register_buffer("std_", torch.ones(n_mels, 1))
        self.register_buffer("scale_", torch.ones(()))

    def db(self, power: torch.Tensor) -> torch.Tensor:
        """(n, F, T) power -> dB, floored per chunk at its maximum minus ``top_db``."""
        d = 10 * torch.log10(power.clamp_min(1e-10))
        return torch.maximum(d, d.amax(dim=(1, 2), keepdim=True) - self.top_db)

    @torch.no_grad()
    def fit(self, power: torch.Tensor, batch: int = 4096) -> "InputScaling":
        """Learn the statistics from (N, 40, 98) power mel of the training chunks."""
        if self.kind == "logmel":
            total = torch.zeros(power.shape[1], dtype=torch.float64)
            squares = torch.zeros_like(total)
            for i in range(0, len(power), batch):
                d = self.db(torch.as_tensor(power[i:i + batch])).double()
                total += d.sum(dim=(0, 2))
                squares += (d ** 2).sum(dim=(0, 2))
            n = power.shape[0] * power.shape[2]
            mean = total / n
            std = (squares / n - mean ** 2).clamp_min(0).sqrt()
            self.mean_.copy_(mean[:, None].float())
            self.std_.copy_(std[:, None].float().clamp_min(1e-3))
        elif self.kind == "power_clip":
            flat = torch.as_tensor(power).reshape(-1)
            pick = torch.linspace(0, flat.numel() - 1, min(flat.numel(), FIT_SAMPLE)).long()
            value = torch.quantile(flat[pick].double(), self.quantile).float()
            self.scale_.copy_(value.clamp_min(1e-12))
        return self

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        if self.kind == "power":
            return power
        if self.kind == "power_clip":
            return (power / self.scale_).clamp(0, 1) * 2 - 1
        return torch.tanh((self.db(power) - self.mean_) / (self.std_ * self.squash))

    def state(self) -> dict:
        """Plain-dict description (kind, settings, statistics) for a checkpoint."""
        return {"kind": self.kind, "top_db": float(self.top_db), "squash": float(self.squash),
                "quantile": float(self.quantile), "mean": self.mean_.detach().cpu().clone(),
                "std": self.std_.detach().cpu().clone(),
                "scale": self.scale_.detach().cpu().clone()}

    @classmethod
    def from_state(cls, state: dict) -> "InputScaling":
        """The scaling ``state()`` described; KeyError / ValueError / RuntimeError when the
        description is incomplete or its statistics have the wrong shapes."""
        s = cls(state["kind"], state["mean"].shape[0], float(state["top_db"]),
                float(state["squash"]), float(state["quantile"]))
        s.mean_.copy_(state["mean"])
        s.std_.copy_(state["std"])
        s.scale_.copy_(state["scale"])
        return s.eval()
