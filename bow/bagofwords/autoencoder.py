"""Feed-forward autoencoders, one per token family (Verma), with their training loop.

Architecture (the paper gives depth, width, dropout, bottleneck ratio and the loss):
  encoder  dim -> hidden -> hidden -> dim / F   Linear ReLU Dropout Linear ReLU Dropout Linear
  decoder  dim / F -> hidden -> hidden -> dim   the mirror image
  hidden = 2048, dropout = 0.5, F = 10 (20 as an option): patch and thumbnail 80 -> 8, band
  envelope 800 -> 80, spectral envelope 960 -> 96. Loss: MSE on standardised tokens.
Decisions where the paper is silent:
- ReLU between layers: the usual choice for wide MLPs, cheapest at inference (an in-place clamp)
  and without saturation. The bottleneck is linear (no nonlinearity on the codes, which k-means
  clusters next) and dropout sits after each hidden ReLU only (not on inputs or codes).
- Inputs: tokens raw or shape, standardised, folded into the first layer at inference
  (bow.bagofwords.encoder, shared with the PCA encoders).
- Training samples are random crops (``bow.bagofwords.tokens.sample``): each step draws
  ``batch_size`` chunks uniformly with replacement and one crop at a random position from
  each. An epoch is
  ``steps_per_epoch`` steps. Validation: grid tokens of held-out chunks (at most
  ``max_val_tokens``, a seeded subset), MSE in standardised units (predicting the training
  mean scores about 1.0 when held-out tokens resemble the training tokens). Early stopping
  keeps the best epoch after ``patience`` epochs without improvement; ``epochs=0`` gives the
  untrained, seeded initialisation (the random control).
- Optimiser Adam (lr 1e-3, no weight decay), batch 256, 6 epochs of 100 steps: the budget is
  measured against the random control in pipelines/train_autoencoders.py.
- Denoising (``denoise`` p > 0, off by default: an option in the paper's masking spirit): each
  training input value is set to 0, the training mean in standardised units, with probability
  p, and the loss is the MSE against the clean input.
Files hold plain tensors and numbers (``torch.load(weights_only=True)``), never pickles.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch
from torch import nn

from bow.bagofwords.encoder import ENCODE_BATCH, AutoencoderConfig, TokenEncoder
from bow.bagofwords.tokens import sample
from bow.io.stage import load_torch, save_torch
from bow.progress import progress as progress_bar


def _mlp(sizes: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers += [nn.ReLU(inplace=True), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class Autoencoder(TokenEncoder):
    """One family's autoencoder: ``fit`` on log-mel chunks, ``encode`` tokens to codes.

    Learned attributes: mean_, std_ (dim,) standardisation; encoder_, decoder_ (nn.Sequential);
    history_ (per epoch: epoch, steps, train_mse, val_mse, seconds); best_epoch_.
    """

    kind, format = "trained", "bow-autoencoder"

    def __init__(self, family: str, config: AutoencoderConfig = AutoencoderConfig(),
                 device: str | torch.device = "cpu", checkpoint: str | Path | None = None,
                 progress: bool = False):
        super().__init__(family, config, device)
        self.checkpoint, self.progress = checkpoint, progress

    def _build(self) -> None:
        """Seeded initialisation (PyTorch's default Linear init under torch.manual_seed(seed))."""
        sizes = [self.dim, self.config.hidden, self.config.hidden, self.bottleneck]
        with self._seeded():
            self.encoder_ = _mlp(sizes, self.config.dropout)
            self.decoder_ = _mlp(sizes[::-1], self.config.dropout)
        self.encoder_.to(self.device)
        self.decoder_.to(self.device)
        self._fast = None

    @contextlib.contextmanager
    def _seeded(self):
        """Seed torch's CPU (and our CUDA device's) generator inside a fork of their state."""
        dev = torch.device(self.device)
        cuda = [dev.index or 0] if dev.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.random.default_generator.manual_seed(self.config.seed)
            if cuda:
                torch.cuda.manual_seed(self.config.seed)
            yield

    def _make_optimizer(self, params) -> torch.optim.Optimizer:
        kinds = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
        kw = {"momentum": 0.9} if self.config.optimizer == "sgd" else {}
        return kinds[self.config.optimizer](params, lr=self.config.lr,
                                            weight_decay=self.config.weight_decay, **kw)

    def fit(self, logmel: torch.Tensor, val_logmel: torch.Tensor) -> "Autoencoder":
        """Train on crops of ``logmel`` (n, 96, 100), validate on ``val_logmel`` (m, 96, 100).

        The log-mel may be float16 and on any device (batches are moved to ``device``). With a
        ``checkpoint`` path, state is saved there after every epoch (atomically) and a fit
        with the same parameters (``epochs`` and ``patience`` may differ) resumes from it.
        """
        if logmel.shape[0] == 0 or val_logmel.shape[0] == 0:
            raise ValueError(f"{self.family}: need training and validation chunks, got "
                             f"{logmel.shape[0]} and {val_logmel.shape[0]}")
        self._build()
        self._set_standardisation(*self._moments(logmel))
        val = self._grid_tokens(val_logmel, self.config.max_val_tokens)
        if self.family == "thumbnail":
            logmel = self._grid_tokens(logmel).to(logmel.device)  # (n, 80): crops to draw from
        params = list(self.encoder_.parameters()) + list(self.decoder_.parameters())
        opt = self._make_optimizer(params)
        gen = torch.Generator().manual_seed(self.config.seed)
        state = {"epoch": 0, "best_epoch": 0, "bad": 0, "history": []}
        with self._seeded():
            best = self._resume(opt, gen, state)
            if best is None:  # a fresh start: epoch 0 is the initialisation
                state["best_val"] = self.score(val)
                state["history"].append({"epoch": 0, "steps": 0, "train_mse": None,
                                         "val_mse": state["best_val"], "seconds": 0.0})
                best = self._weights()
            while state["epoch"] < self.config.epochs and state["bad"] < self.config.patience:
                self._epoch(logmel, val, opt, gen, state)
                if state["history"][-1]["val_mse"] < state["best_val"]:
                    state.update(best_val=state["history"][-1]["val_mse"],
                                 best_epoch=state["epoch"], bad=0)
                    best = self._weights()
                else:
                    state["bad"] += 1
                self._save_checkpoint(opt, gen, state, best)
        self._load_weights(best)
        self.history_, self.best_epoch_ = state["history"], state["best_epoch"]
        return self

    def _epoch(self, logmel, val, opt, gen, state) -> None:
        start = time.perf_counter()
        self.encoder_.train()
        self.decoder_.train()
        total = 0.0
        bar = progress_bar(range(self.config.steps_per_epoch), enabled=self.progress, leave=False,
                           desc=f"{self.family} epoch {state['epoch'] + 1}/{self.config.epochs}")
        for step in bar:
            idx = torch.randint(0, logmel.shape[0], (self.config.batch_size,), generator=gen)
            if self.family == "thumbnail":  # one position per chunk: its precomputed thumbnail
                crops = logmel[idx.to(logmel.device)]
            else:
                crops = sample(logmel, self.family, 1, generator=gen, chunk_ids=idx)
            x = self._standardise(crops)
            noisy = x
            if self.config.denoise > 0:          # masked values: the mean (0 standardised)
                keep = torch.rand(x.shape, generator=gen) >= self.config.denoise
                noisy = x * keep.to(x.device)
            loss = nn.functional.mse_loss(self.decoder_(self.encoder_(noisy)), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
            bar.set_postfix(mse=f"{total / (step + 1):.4f}")
        state["epoch"] += 1
        state["history"].append({"epoch": state["epoch"],
                                 "steps": state["epoch"] * self.config.steps_per_epoch,
                                 "train_mse": total / max(self.config.steps_per_epoch, 1),
                                 "val_mse": self.score(val),
                                 "seconds": time.perf_counter() - start})

    def _weights(self) -> dict:
        return {"encoder": {k: v.detach().clone() for k, v in self.encoder_.state_dict().items()},
                "decoder": {k: v.detach().clone() for k, v in self.decoder_.state_dict().items()}}

    def _load_weights(self, weights: dict) -> None:
        self.encoder_.load_state_dict(weights["encoder"])
        self.decoder_.load_state_dict(weights["decoder"])
        self._fast = None

    def _save_checkpoint(self, opt, gen, state, best) -> None:
        if self.checkpoint is None:
            return
        save_torch({"params": self.get_params(), "state": state, "best": best,
                    "current": self._weights(), "optimizer": opt.state_dict(),
                    "generator": gen.get_state(), "torch_rng": torch.get_rng_state()},
                   self.checkpoint)

    def _resume(self, opt, gen, state) -> dict | None:
        """Continue from the checkpoint if it has the same parameters; return its best weights."""
        path = Path(self.checkpoint) if self.checkpoint is not None else None
        if path is None or not path.is_file():
            return None
        ck = load_torch(path, "autoencoder training checkpoint")
        mutable = ("epochs", "patience")  # a checkpoint may continue with new ones
        if {k: v for k, v in ck["params"].items() if k not in mutable} != \
                {k: v for k, v in self.get_params().items() if k not in mutable}:
            return None  # another configuration's checkpoint: start afresh
        self._load_weights(ck["current"])
        opt.load_state_dict(ck["optimizer"])
        gen.set_state(ck["generator"])
        torch.set_rng_state(ck["torch_rng"])
        state.update(ck["state"])
        return ck["best"]

    @torch.inference_mode()
    def score(self, tokens: torch.Tensor) -> float:
        """Reconstruction MSE of (n, dim) raw tokens, in standardised units, eval mode."""
        self.encoder_.eval()
        self.decoder_.eval()
        total = 0.0
        for i in range(0, tokens.shape[0], ENCODE_BATCH):
            x = self._standardise(tokens[i:i + ENCODE_BATCH])
            total += float(((self.decoder_(self.encoder_(x)) - x) ** 2).sum())
        return total / (tokens.shape[0] * self.dim)

    def layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(m.weight.detach(), m.bias.detach()) for m in self.encoder_
                if isinstance(m, nn.Linear)]

    @torch.inference_mode()
    def reconstruct(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.encoder_.eval()
        self.decoder_.eval()
        x = self._standardise(tokens)
        y = self.decoder_(self.encoder_(x))
        level = 0.0
        if self.config.tokens == "shape":
            level = tokens.to(self.device, torch.float32).mean(dim=1, keepdim=True)
        return (y * self.std_ + self.mean_ + level).cpu(), ((y - x) ** 2).mean(dim=1).cpu()

    def save(self, path: str | Path, meta: dict | None = None) -> None:
        """Write the model (plain tensors and numbers) atomically."""
        blob = {"format": self.format, "params": self.get_params(),
                "mean": self.mean_.cpu(), "std": self.std_.cpu(),
                "history": self.history_, "best_epoch": self.best_epoch_,
                "meta": meta or {}, **{k: {n: t.cpu() for n, t in v.items()}
                                       for k, v in self._weights().items()}}
        save_torch(blob, path)

    @classmethod
    def from_blob(cls, blob: dict, device: str | torch.device = "cpu") -> "Autoencoder":
        """The model in a dict written by ``save`` (bow.bagofwords.model.load_encoder)."""
        ae = cls.from_params(blob["params"], device=device)
        ae._build()
        ae._load_weights(blob)
        ae.mean_, ae.std_ = blob["mean"].to(device), blob["std"].to(device)
        if ae.mean_.shape != (ae.dim,) or ae.std_.shape != (ae.dim,):
            raise ValueError(f"standardisation of shape {tuple(ae.mean_.shape)}, "
                             f"expected ({ae.dim},)")
        ae.history_, ae.best_epoch_ = blob["history"], blob["best_epoch"]
        ae.meta_ = blob["meta"]
        return ae
