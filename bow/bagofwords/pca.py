"""PCA encoders: the linear autoencoder's optimum, fitted in closed form (no training).

Among all encoders that are one Linear layer of rank dim / F, the projection on the first
dim / F principal components of the standardised tokens gives the lowest reconstruction MSE
(Eckart-Young): it is what a linear autoencoder trained with MSE converges to, and the control a
trained (nonlinear) encoder must beat. Same tokens, standardisation and folding as the
autoencoders (bow.bagofwords.encoder).

Fit: one pass over the grid tokens of all training chunks accumulates, in float64, their sum
and the sum of their outer products, from which come the standardisation and the covariance of
the standardised tokens; its eigenvectors (``torch.linalg.eigh``) with the largest eigenvalues
are the components, each signed so that its largest-magnitude entry is positive (the same
components whatever the eigensolver's sign). Cost: (dim^2) per token: 0.2 s for ESC-10's 240,000
patch tokens, about 1 min for FSD50K's 47 M on one core; the covariance of a 960-d family is 7 MB.
Codes are not whitened (each component keeps its variance), so k-means weighs the directions
as the autoencoders' codes do. The fit runs with torch on one thread (bow.runtime.one_thread):
with 2 or 3 threads MKL's eigensolver rounded otherwise (787 of the 800 eigenvalues of a
band-envelope correlation matrix changed in their last bits), and one of the 64,000 float32
components of fsd50k_mini's band-envelope encoder moved by one unit in the last place (issue 23).
"""
from __future__ import annotations

from pathlib import Path

import torch

from bow.bagofwords.encoder import AutoencoderConfig, TokenEncoder
from bow.io.stage import save_torch
from bow.runtime import one_thread


class PCAEncoder(TokenEncoder):
    """One family's PCA encoder. Learned: mean_, std_ (dim,), components_ (dim / F, dim),
    explained_ (dim / F,) the share of the standardised variance of each component, history_
    (one entry: the held-out reconstruction MSE, as the autoencoders' epoch 0), best_epoch_ 0."""

    kind, format = "pca", "bow-pca"

    def __init__(self, family: str, config: AutoencoderConfig = AutoencoderConfig(),
                 device: str | torch.device = "cpu", checkpoint=None, progress: bool = False):
        super().__init__(family, config, device)   # (no training: checkpoint, progress unused)

    @one_thread()
    def fit(self, logmel: torch.Tensor, val_logmel: torch.Tensor) -> "PCAEncoder":
        """Standardisation and components from the grid tokens of ``logmel`` (n, 96, 100);
        held-out MSE on those of ``val_logmel``."""
        if logmel.shape[0] == 0:
            raise ValueError(f"{self.family}: no training chunks")
        count, total, outer = self._moments(logmel, second=True)
        self._set_standardisation(count, total, torch.diagonal(outer))
        mean = total / count
        cov = outer / count - torch.outer(mean, mean)
        scale = self.std_.double().cpu()
        corr = cov / torch.outer(scale, scale)
        values, vectors = torch.linalg.eigh(corr)              # ascending
        order = torch.argsort(values, descending=True)[:self.bottleneck]
        comps = vectors[:, order].T                            # (k, dim)
        signs = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
        self.components_ = (comps * signs).float().to(self.device)
        self.explained_ = (values[order] / values.clamp_min(0).sum()).float()
        self._fast = None
        val = self._grid_tokens(val_logmel, self.config.max_val_tokens)
        self.history_ = [{"epoch": 0, "steps": 0, "train_mse": None,
                          "val_mse": self.score(val) if len(val) else None}]
        self.best_epoch_ = 0
        return self

    def layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(self.components_, torch.zeros(self.bottleneck, device=self.device))]

    @torch.inference_mode()
    def score(self, tokens: torch.Tensor) -> float:
        """Reconstruction MSE of (n, dim) raw tokens, in standardised units."""
        return float(self.reconstruct(tokens)[1].mean())

    @torch.inference_mode()
    def reconstruct(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._standardise(tokens)
        y = (x @ self.components_.T) @ self.components_
        level = 0.0
        if self.config.tokens == "shape":
            level = tokens.to(self.device, torch.float32).mean(dim=1, keepdim=True)
        return (y * self.std_ + self.mean_ + level).cpu(), ((y - x) ** 2).mean(dim=1).cpu()

    def save(self, path: str | Path, meta: dict | None = None) -> None:
        """Write the model (plain tensors and numbers) atomically."""
        save_torch({"format": self.format, "params": self.get_params(),
                    "mean": self.mean_.cpu(), "std": self.std_.cpu(),
                    "components": self.components_.cpu(), "explained": self.explained_.cpu(),
                    "history": self.history_, "best_epoch": self.best_epoch_,
                    "meta": meta or {}}, path)

    @classmethod
    def from_blob(cls, blob: dict, device: str | torch.device = "cpu") -> "PCAEncoder":
        """The model in a dict written by ``save`` (bow.bagofwords.model.load_encoder)."""
        pca = cls.from_params(blob["params"], device=device)
        pca.mean_, pca.std_ = blob["mean"].to(device), blob["std"].to(device)
        pca.components_, pca.explained_ = blob["components"].to(device), blob["explained"]
        if pca.components_.shape != (pca.bottleneck, pca.dim) or pca.mean_.shape != (pca.dim,):
            raise ValueError(f"components of shape {tuple(pca.components_.shape)}, expected "
                             f"({pca.bottleneck}, {pca.dim})")
        pca.history_, pca.best_epoch_, pca.meta_ = blob["history"], blob["best_epoch"], \
            blob["meta"]
        return pca
