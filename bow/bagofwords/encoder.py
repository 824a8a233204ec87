"""What every token encoder shares: its config, the token transform, standardisation, files.

An encoder maps one family's (n, dim) tokens to (n, dim / F) codes. Two kinds are trained from
data: the autoencoder of the paper (bow.bagofwords.autoencoder: three Linear layers with ReLU
between, trained, or left at its seeded initialisation as the random control) and PCA
(bow.bagofwords.pca: one Linear layer, the optimum of a linear autoencoder under MSE, fitted in
closed form: the control a trained encoder must beat). Both go through the same steps:

* tokens ``raw``: as cut from the log-mel (the paper). ``shape``: each token minus its own mean
  over its values (``shape``), so the code describes the token's spectro-temporal shape and not
  its loudness, which dominates raw tokens: after standardisation a token's own mean level
  carries 92-97 % of the variance of every family on ESC-10 (../shared/FINDINGS.md), and k-means
  on raw codes mostly slices loudness. The removed levels are not lost: bow.bagofwords.levels
  turns them into a small histogram per family.
* standardisation per dimension with the mean and std of the family's (transformed) grid tokens
  over the training chunks, saved with the model;
* at inference (``encode``) the shape transform and the standardisation are folded into the
  first Linear layer (``folded``): x P (W / s)^T + b - (W / s) m, where P = I - 11^T / dim
  removes a token's mean, so encoding is one matmul per layer whatever the options.

Files hold plain tensors and numbers (``torch.load(weights_only=True)``), never pickles, with a
``format`` naming the kind; ``bow.bagofwords.model.load_encoder`` reads either.
"""
from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass

import torch

from bow.bagofwords.tokens import DIMS, FAMILIES, grid
from bow.config import ConfigError, choose, narrow, option
from bow.runtime import one_thread

ENCODE_BATCH = 4096  # tokens per encode call (bow.bagofwords.model.family_codes)
BLOCK_ROWS = 256     # rows of every encoder matmul (TokenEncoder.encode; ``block_rows``)
CPU_BLOCK_ROWS = 64  # ... on the CPU
OPTIMIZERS = ("adam", "adamw", "sgd")
TOKENS = ("raw", "shape")


def block_rows(device: torch.device) -> int:
    """Rows of every encoder matmul on ``device``: 64 on the CPU (a HEAR call on one 5 s clip
    has 50 spectral envelopes: 256-row blocks made its encoding 4x the work; the paper-sized
    random encoders ran 46.5 against 46.9 audio-s/s with 64 and 256), 256 elsewhere (fewer
    kernel launches)."""
    return CPU_BLOCK_ROWS if torch.device(device).type == "cpu" else BLOCK_ROWS

_WORKSPACE = threading.local()


@dataclass(frozen=True)
class AutoencoderConfig:
    """One family's encoder and its training. Paper: F = 10 (or 20), 2048 hidden units,
    dropout 0.5, MSE. Ours (the paper is silent): Adam, lr 1e-3, batch 256 random crops, epochs
    of 100 steps, at most 6 (see pipelines/train_autoencoders.py for the budget measurement).
    PCA encoders use ``factor``, ``tokens``, ``max_val_tokens`` and ``seed`` only."""
    factor: int = option(10, "bottleneck = token size / factor (10 or 20)")
    tokens: str = option("shape", "shape: each token minus its own mean, its level going to "
                         "the level histograms (measured better, see README); or raw tokens "
                         "(the paper's)")
    hidden: int = option(2048, "hidden layer width")
    dropout: float = option(0.5, "dropout after each hidden layer")
    denoise: float = option(0.0, "denoising: share of each training input's values set to the "
                            "training mean (0: plain MSE autoencoder, the paper's)")
    optimizer: str = option("adam", "adam, adamw or sgd (momentum 0.9)")
    lr: float = option(1e-3, "learning rate")
    weight_decay: float = option(0.0, "weight decay")
    batch_size: int = option(256, "random crops per step")
    epochs: int = option(6, "at most this many epochs")
    steps_per_epoch: int = option(100, "optimiser steps per epoch")
    patience: int = option(3, "early stopping: epochs without a better validation MSE")
    max_val_tokens: int = option(20_000, "validation tokens per family (seeded subset of the "
                                 "held-out grid tokens)")
    seed: int = option(0, "seed for initialisation, crops, dropout")

    def __post_init__(self):
        choose("optimizer", self.optimizer, OPTIMIZERS)
        choose("tokens", self.tokens, TOKENS)
        if not 0.0 <= self.denoise < 1.0:
            raise ConfigError(f"denoise must be in [0, 1), got {self.denoise}")


def shape(tokens: torch.Tensor) -> torch.Tensor:
    """(..., dim) tokens -> the same minus each token's own mean (its level)."""
    return tokens - tokens.mean(dim=-1, keepdim=True)


def _workspace(slot: int, rows: int, cols: int, dtype=torch.float32) -> torch.Tensor:
    """A reusable (rows, cols) CPU buffer, one per slot, width, dtype and thread."""
    bufs = _WORKSPACE.__dict__
    buf = bufs.get((slot, cols, dtype))
    if buf is None or buf.shape[0] < rows:
        buf = bufs[(slot, cols, dtype)] = torch.empty(rows, cols, dtype=dtype)
    return buf[:rows]


def _bf16_autocast(device) -> bool:
    """Whether bow.runtime.encoder_precision("bf16") is in force for ``device``."""
    kind = torch.device(device).type
    return torch.is_autocast_enabled(kind) and torch.get_autocast_dtype(kind) == torch.bfloat16


class TokenEncoder:
    """Base of the encoders: family, config, standardisation (mean_, std_ (dim,)), the folded
    inference layers. Subclasses give ``layers()`` (the affine layers after the
    standardisation, ReLU between them), ``fit``, ``reconstruct`` and their file format."""

    kind = ""    # "trained" (or its untrained "random" control), "pca"
    format = ""  # the ``format`` of its files

    def __init__(self, family: str, config: AutoencoderConfig = AutoencoderConfig(),
                 device: str | torch.device = "cpu"):
        if family not in FAMILIES:
            raise ValueError(f"unknown token family {family!r}; expected one of {FAMILIES}")
        self.family, self.config = family, narrow(config, AutoencoderConfig)
        self.device = device
        self._fast = None

    @property
    def dim(self) -> int:
        return DIMS[self.family]

    @property
    def bottleneck(self) -> int:
        if self.dim % self.config.factor:
            raise ValueError(f"{self.family}: token size {self.dim} is not divisible by "
                             f"factor {self.config.factor}")
        return self.dim // self.config.factor

    def get_params(self) -> dict:
        """The family and the config, as saved in model files and bundles."""
        return {"family": self.family, **dataclasses.asdict(self.config)}

    @classmethod
    def from_params(cls, params: dict, **kwargs) -> "TokenEncoder":
        """The inverse of ``get_params`` (``kwargs``: the constructor's other arguments)."""
        params = dict(params)
        return cls(params.pop("family"), AutoencoderConfig(**params), **kwargs)

    # ----------------------------------------------------------------- tokens
    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, torch.float32)
        return shape(x) if self.config.tokens == "shape" else x

    def _standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (self._prepare(x) - self.mean_) / self.std_

    def _grid_tokens(self, logmel: torch.Tensor, limit: int | None = None) -> torch.Tensor:
        """(n, 96, 100) -> (n * count, dim) float32 raw grid tokens on the CPU, at most
        ``limit`` (a seeded subset)."""
        tok = torch.cat([grid(logmel[i:i + 512].float(), self.family).reshape(-1, self.dim).cpu()
                         for i in range(0, logmel.shape[0], 512)])
        if limit is not None and tok.shape[0] > limit:
            g = torch.Generator().manual_seed(self.config.seed + 1)
            tok = tok[torch.randperm(tok.shape[0], generator=g)[:limit]]
        return tok

    def _moments(self, logmel: torch.Tensor, batch: int = 512, second: bool = False):
        """Sums over the training grid tokens (transformed), float64 on the CPU: (count,
        sum (dim,), sum of squares (dim,) or, with ``second``, of outer products (dim, dim))."""
        total = torch.zeros(self.dim, dtype=torch.float64)
        prod = torch.zeros((self.dim, self.dim) if second else self.dim, dtype=torch.float64)
        count = 0
        for i in range(0, logmel.shape[0], batch):
            tok = grid(logmel[i:i + batch].float(), self.family).reshape(-1, self.dim)
            tok = self._prepare(tok).double().cpu()
            total += tok.sum(0)
            prod += tok.T @ tok if second else (tok * tok).sum(0)
            count += tok.shape[0]
        return count, total, prod

    def _set_standardisation(self, count: int, total: torch.Tensor, squares: torch.Tensor):
        mean = total / count
        var = (squares / count - mean * mean).clamp_min(0)
        self.mean_ = mean.float().to(self.device)
        self.std_ = var.sqrt().clamp_min(1e-3).float().to(self.device)

    # -------------------------------------------------------------- inference
    def layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The encoder's affine layers [(W (out, in), b (out,))] after the standardisation."""
        raise NotImplementedError

    def folded(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The layers as (W^T contiguous, b) with the token transform and the standardisation
        folded into the first (module docstring)."""
        if self._fast is None:
            (w, b), *rest = self.layers()
            w1 = w / self.std_
            b1 = b - w1 @ self.mean_
            if self.config.tokens == "shape":
                w1 = w1 - w1.mean(dim=1, keepdim=True)
            self._fast = [(w1.t().contiguous(), b1)] + [(m.t().contiguous(), c.clone())
                                                        for m, c in rest]
        return self._fast

    def folded_bf16(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The layers for ``encode`` in bfloat16: the first with 1 / std folded in (the token
        transform and the mean are applied to the input in float32), every layer but the last
        in bfloat16, the last in float32 (W^T contiguous, b)."""
        fast = self.folded()
        if getattr(self, "_bf16", (None,))[0] is not fast:     # rebuilt with the fp32 layers
            (w, b), *_ = self.layers()
            layers = [((w / self.std_).t().contiguous(), b.clone())] + fast[1:]
            self._bf16 = (fast, [(m.bfloat16(), c.bfloat16()) for m, c in layers[:-1]]
                          + [layers[-1]])
        return self._bf16[1]

    @torch.inference_mode()
    @one_thread()
    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """(n, dim) raw tokens -> (n, dim / F) float32 codes on ``device``.

        Every matmul has exactly ``block_rows`` rows (the last block zero-padded): a BLAS
        kernel's rounding can depend on a matrix's row count (measured: a thumbnail code moved
        by 2e-6 between calls of 9 and 3 tokens), never, with the row count fixed, on a row's
        position or neighbours (checked for every layer shape here with MKL: equal bits). It
        can also depend on how many threads split the work: on the machine of issue 23 one
        and two threads gave codes that swapped the 2nd and 3rd nearest codes of 2 tokens of
        1,064 clips. So the matmuls run with torch on one thread (bow.runtime.one_thread,
        whatever the caller set; the decision and its cost are there). A token's code is then
        a function of the token and the model alone: a batch equals its items one by one, and
        a store does not depend on how its clips were batched or sharded, nor on the thread
        count of the process that computed it (tests/bagofwords/test_encoders.py builds tokens
        at a tie). On the CPU the activations go to two buffers kept per thread
        (``_workspace``; a fresh activation per matmul cost page faults, ~8 % of the time). On
        CUDA, bow.runtime.encoder_precision may run the layers in TF32; under its bf16 (CUDA or
        CPU), ``_encode_bf16``.
        """
        if _bf16_autocast(self.device):
            return self._encode_bf16(torch.as_tensor(tokens))
        layers = self.folded()
        tokens = torch.as_tensor(tokens)
        n = tokens.shape[0]
        out = torch.empty(n, self.bottleneck, device=self.device)
        cpu, rows = out.device.type == "cpu", block_rows(out.device)
        block = torch.zeros(rows, self.dim, device=self.device)
        for i in range(0, n, rows):
            m = min(rows, n - i)
            block[:m] = tokens[i:i + m]
            block[m:] = 0
            h = block
            for j, (wt, b) in enumerate(layers):
                last = j == len(layers) - 1
                dst = _workspace(j, rows, wt.shape[1]) if cpu else None
                h = torch.addmm(b, h, wt, out=dst) if cpu else torch.addmm(b, h, wt)
                if not last:
                    h.relu_()
            out[i:i + m] = h[:m]
        return out

    def reconstruct(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, dim) raw tokens -> ((n, dim) reconstructions in raw units, each shape token's
        level added back, (n,) MSE in standardised units)."""
        raise NotImplementedError

    def _encode_bf16(self, tokens: torch.Tensor) -> torch.Tensor:
        """``encode`` in bfloat16 (bow.runtime): per block of ``block_rows`` tokens, the token
        transform and the standardisation's mean in float32, then the hidden layers' matmuls
        in bfloat16 (float32 accumulation, bfloat16 activations), the last layer in float32.
        Centring first matters: folded into the bias, the mean would cancel against products
        of bfloat16-rounded raw levels (tokens sit ~50 dB from zero, their spread is ~10 dB).
        Still a function of each token alone (fixed block rows)."""
        layers = self.folded_bf16()
        n = tokens.shape[0]
        out = torch.empty(n, self.bottleneck, device=self.device)
        cpu, rows = out.device.type == "cpu", block_rows(out.device)
        block = torch.zeros(rows, self.dim, device=self.device)
        with torch.autocast(out.device.type, enabled=False):
            for i in range(0, n, rows):
                m = min(rows, n - i)
                block[:m] = self._prepare(tokens[i:i + m]) - self.mean_
                block[m:] = 0
                h = block.bfloat16() if len(layers) > 1 else block
                for j, (wt, b) in enumerate(layers):
                    if j == len(layers) - 1:
                        h = torch.addmm(b, h.float(), wt)
                        break
                    dst = _workspace(j, rows, wt.shape[1], torch.bfloat16) if cpu else None
                    h = torch.addmm(b, h, wt, out=dst) if cpu else torch.addmm(b, h, wt)
                    h.relu_()
                out[i:i + m] = h[:m]
        return out
