"""MLP classification heads on chunk vectors: normalisation, token masking, training, early stop.

A head is trained on 1 s chunk vectors, each with its clip's labels, and predicts chunk
probabilities; a clip's probabilities are the mean over its chunks (bow.heads.metrics).

Decisions (the paper gives the architecture and the loss; the rest is ours):
* Architecture: Linear(D, W) - ReLU - Dropout - Linear(W, W) - ReLU - Dropout - Linear(W, C),
  sigmoid outputs. W = 512 and dropout 0.4 by default (the paper tried 256/512/4096 and
  0.1/0.4). How "a 2-layer MLP head" is read: two hidden layers of W units, each followed by
  ReLU and dropout, then the output layer (three Linear layers in all); the paper gives the
  width and dropout of its layers, which only hidden layers have, so "layers" counts those.
  The output biases start at the logits of the training class priors (clipped to
  [1e-3, 1 - 1e-3]) instead of 0 (p = 0.5): with the Huber loss on probabilities, starting at
  0.5 (``output_bias="zero"``) makes the first steps push every output towards 0, where the
  sigmoid's gradient vanishes and classes stall with inverted rankings. Measured on ESC-10 (400
  clips, mean log-mel of each chunk as the vector, 5-fold protocol of bow.heads.protocols, other
  settings default): Huber mAP 0.561 +- 0.106, accuracy 0.483 +- 0.082 with zero biases; 0.780 +-
  0.042 and 0.715 +- 0.048 with prior biases (BCE: 0.773 / 0.692 zero, 0.787 / 0.708 prior).
* Loss: Huber between labels and sigmoid probabilities (the paper's choice), delta 1. Since
  |p - y| <= 1 this equals half the squared error; "bce" (on logits) is the alternative.
* Inputs: count columns (bag of words) are normalised (sqrt by default, or log1p, or none),
  then every column is standardised with the mean and standard deviation of the training
  chunks (columns with std < 1e-8 are only centred).
* Token masking: during training every count entry of a chunk is set to zero with
  probability ``mask_p`` (fresh draws per batch, before normalisation; implemented on
  normalised inputs by writing the value a zero count normalises to). Nothing is rescaled,
  dense (KW-MLP) columns are never masked, and nothing is masked at inference.
* Optimiser: Adam, lr 1e-3, batch 256 chunks, reshuffled each epoch. After every epoch the
  validation clip mAP is measured; training stops after ``patience`` epochs without a new
  best (or at ``max_epochs``) and the best epoch's weights are kept.
* Memory: the training chunks are held in memory as float32 when they fit the memory budget
  (``memory_budget_mb``), else streamed from the stores in shuffled blocks (bow.heads.stream);
  normalisation statistics, masking, early stopping and metrics are the same either way, and
  validation and scoring always read in blocks of whole clips.
* Seeding: weight init, shuffling, masking and dropout draw from torch's generators seeded
  with ``seed`` inside ``torch.random.fork_rng`` (the caller's random state is untouched);
  on CPU the same seed gives the same numbers.
"""
from __future__ import annotations

import copy
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bow.bagofwords.model import NORMALISATIONS, normalise
from bow.config import ConfigError, choose, option
from bow.heads.metrics import clip_probabilities_in_blocks, mean_average_precision
from bow.heads.stream import (
    block_rows,
    float32_bytes,
    memory_batches,
    memory_budget,
    streamed_batches,
)
from bow.io.featureset import FeatureSet, FeatureSetError
from bow.io.stage import ArtifactError, atomic_path, read_json, write_json
from bow.progress import progress as progress_bar
from bow.runtime import resolve_device

LOSSES = ("huber", "bce")
FUSIONS = ("late", "concat")
OUTPUT_BIASES = ("prior", "zero")
BLOCK = 65536  # rows moved / normalised / predicted at a time, at most (``scoring_rows``)
STAT_ROWS = 256  # rows per float64 sum of the normalisation statistics (Normaliser.fit)
SCORING_BUDGET = 1 << 30  # bytes ``scoring_rows`` divides without --memory-budget-mb


def scoring_rows(dim: int, budget: int) -> int:
    """Rows read, normalised and predicted at a time outside training batches (statistics,
    validation, scoring): ``BLOCK``, or fewer so that a block's working copies (~24 bytes a
    value: the raw rows as float32, as float64 and their squares in Normaliser.fit, or the
    normalised float32 rows) take at most a quarter of the memory budget in bytes (streamed
    training windows take the rest). Measured: with blocks of 65,536 rows whatever the
    budget, evaluate's peak RSS grew 1.8x from 10,000 to 100,000 clips at a 256 MiB budget
    (benchmarks.scale; a 65,536 x 1,088 block is 570 MB in float64)."""
    return int(max(STAT_ROWS, min(BLOCK, budget // (4 * 24 * max(dim, 1)))))


@dataclass(frozen=True)
class HeadConfig:
    """An MLP head and its training (module docstring); the splits it trains and scores on."""
    width: int = option(512, "units in each of the two hidden layers (paper: 256, 512 (best) "
                        "or 4096)")
    dropout: float = option(0.4, "dropout after each hidden layer (paper: 0.1 or 0.4)")
    loss: str = option("huber", "huber (on probabilities, the paper's) or bce")
    normalisation: str = option("sqrt", "count normalisation of bag-of-words columns: none, "
                                "sqrt or log1p")
    mask_p: float = option(0.35, "probability of zeroing each bag-of-words count during "
                           "training (0: off)")
    output_bias: str = option("prior", "initial output biases: prior (logits of the training "
                              "class priors; measured better, see bow.heads.model) or zero")
    lr: float = option(1e-3, "Adam learning rate")
    weight_decay: float = option(0.0, "Adam weight decay")
    batch_size: int = option(256, "chunks per training batch")
    max_epochs: int = option(100, "most training epochs")
    patience: int = option(10, "stop after this many epochs without a better validation clip "
                           "mAP")
    seed: int = option(0, "seed of init, shuffling, masking, dropout")
    train_splits: tuple[str, ...] = option(("train",), "splits the head is trained on")
    val_splits: tuple[str, ...] = option(("val",), "splits for early stopping")
    eval_splits: tuple[str, ...] = option(("eval", "test"), "splits scored")
    fusion: str = option("late", "several stores: late (a head per store, probabilities "
                         "mixed with weights chosen on validation, bow.heads.fusion) or concat "
                         "(one head on the joined columns)")
    memory_budget_mb: float = option(0.0, "memory a head may hold, MiB; training chunks "
                                     "larger than half of it are streamed from the stores "
                                     "(bow.heads.stream). 0: half the available RAM (and GPU "
                                     "memory with cuda)")
    shuffle_window: int = option(16, "blocks shuffled together when streaming")
    val_fraction: float = option(0.1, "share of training clips (seeded) held out for early "
                                 "stopping when the validation splits hold no clips")

    def __post_init__(self):
        choose("normalisation", self.normalisation, NORMALISATIONS)
        choose("output_bias", self.output_bias, OUTPUT_BIASES)
        choose("loss", self.loss, LOSSES)
        choose("fusion", self.fusion, FUSIONS)
        if self.memory_budget_mb < 0 or self.shuffle_window < 1:
            raise ConfigError("memory_budget_mb must be >= 0 and shuffle_window >= 1")
        if not 0.0 <= self.mask_p < 1.0:
            raise ConfigError(f"mask_p must be in [0, 1), got {self.mask_p}")


class Normaliser:
    """Count normalisation of the count columns, then standardisation of all columns.

    ``fit`` takes (M, D) training chunks and a (D,) bool mask of count columns; ``transform``
    maps a (m, D) tensor (any device) to normalised float32.
    """

    def __init__(self, method: str = "sqrt"):
        self.method = method

    def _counts(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.method != "none" and self.count_columns_.any():
            cols = torch.as_tensor(self.count_columns_, device=x.device)
            x = torch.where(cols, normalise(x.clamp_min(0), self.method), x)
        return x

    def fit(self, chunks: np.ndarray, count_columns: np.ndarray, rows: int = BLOCK
            ) -> "Normaliser":
        """Column statistics of (M, D) chunks, read about ``rows`` at a time: float64 sums of
        groups of ``STAT_ROWS`` rows, added in order, so the same numbers for any ``rows``
        (the in-memory and streaming paths read with different budgets)."""
        self.count_columns_ = np.asarray(count_columns, dtype=bool)
        total, squares = np.zeros(chunks.shape[1]), np.zeros(chunks.shape[1])
        rows = max(STAT_ROWS, rows // STAT_ROWS * STAT_ROWS)
        for i in range(0, len(chunks), rows):
            block = self._counts(torch.from_numpy(np.asarray(chunks[i:i + rows]))).double()
            for x in block.split(STAT_ROWS):
                total += x.sum(0).numpy()
                squares += (x * x).sum(0).numpy()
        self.mean_ = (total / max(len(chunks), 1)).astype(np.float32)
        std = np.sqrt(np.maximum(squares / max(len(chunks), 1) - self.mean_.astype(float) ** 2, 0))
        self.scale_ = np.where(std < 1e-8, 1.0, std).astype(np.float32)
        return self

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.as_tensor(self.mean_, device=x.device)
        scale = torch.as_tensor(self.scale_, device=x.device)
        return (self._counts(x) - mean) / scale

    def zero_value(self) -> np.ndarray:
        """(D,) what a zero input becomes after ``transform``: the fill of masked counts."""
        return (-self.mean_ / self.scale_).astype(np.float32)


def mask_tokens(x: torch.Tensor, p: float, columns: torch.Tensor,
                fill: torch.Tensor | float = 0.0, generator: torch.Generator | None = None
                ) -> torch.Tensor:
    """(m, D) -> (m, D): each entry of the ``columns`` ((D,) bool) set to ``fill`` with
    probability ``p``; other columns unchanged. On raw counts (fill 0) this zeroes counts."""
    if p <= 0:
        return x
    drop = (torch.rand(x.shape, generator=generator, device=x.device) < p) & columns
    return torch.where(drop, torch.as_tensor(fill, dtype=x.dtype, device=x.device), x)


class MLP(nn.Module):
    """(m, D) normalised inputs -> (m, C) logits; two hidden ReLU layers with dropout."""

    def __init__(self, n_in: int, n_out: int, width: int = 512, dropout: float = 0.4):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_in, width), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(width, width), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(width, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def head_loss(logits: torch.Tensor, targets: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean Huber loss on sigmoid probabilities (delta 1) or mean binary cross-entropy."""
    if kind == "huber":
        return F.huber_loss(torch.sigmoid(logits), targets, delta=1.0)
    return F.binary_cross_entropy_with_logits(logits, targets)


class Head:
    """An MLP head with its input normaliser (sklearn-style: fit returns self)."""

    def __init__(self, config: HeadConfig = HeadConfig(), device: str = "cpu"):
        self.config = config
        self.device = device

    def rows(self, dim: int) -> int:
        """``scoring_rows`` for ``dim`` columns under ``--memory-budget-mb``, or under
        ``SCORING_BUDGET`` without one: a fixed number, not one from the free memory of the
        moment, so the blocks (and a matmul's rounding, which can depend on its row count) are
        the same in every run."""
        mb = self.config.memory_budget_mb
        return scoring_rows(dim, int(mb * 2 ** 20) if mb > 0 else SCORING_BUDGET)

    def _inputs(self, chunks: np.ndarray, order: np.ndarray | None = None) -> torch.Tensor:
        """(M, D) raw chunk vectors (rows ``order`` of them, in that order) -> normalised
        float32 tensor on the head's device, written block by block into one tensor."""
        dev, step = resolve_device(self.device), self.rows(chunks.shape[1])
        n = len(chunks) if order is None else len(order)
        out = torch.empty((n, chunks.shape[1]), dtype=torch.float32, device=dev)
        for i in range(0, n, step):
            rows = slice(i, i + step) if order is None else order[i:i + step]
            out[i:i + step] = self.normaliser_.transform(
                torch.from_numpy(np.asarray(chunks[rows])).to(dev))
        return out

    def fit(self, train: FeatureSet, val: FeatureSet, progress: bool = False) -> "Head":
        """Train on ``train``'s chunks, early-stopping on ``val``'s clip mAP; in memory when the
        training chunks (float32, twice: raw and normalised) fit the memory budget, else
        streamed from the stores (bow.heads.stream)."""
        cfg, dev = self.config, resolve_device(self.device)
        if len(train) == 0:
            raise FeatureSetError("no training clips")
        if len(val) == 0 or not val.labels.any():
            raise FeatureSetError("the validation clips hold no positive label: cannot "
                                  "early-stop on validation mAP")
        self.vocabulary_ = list(train.vocabulary)
        budget = memory_budget(cfg.memory_budget_mb, dev)
        self.streamed_ = 2 * float32_bytes(train.chunks) > budget
        if self.streamed_:
            self.normaliser_ = Normaliser(cfg.normalisation).fit(
                train.chunks, train.count_columns, self.rows(train.dim))
            rows_per_block = block_rows(train.chunks, budget, cfg.shuffle_window)
            val_chunks = val.chunks
        else:
            raw = np.asarray(train.chunks)
            self.normaliser_ = Normaliser(cfg.normalisation).fit(
                raw, train.count_columns, self.rows(train.dim))
            x = self._inputs(raw)
            del raw
            y = torch.from_numpy(train.chunk_labels().astype(np.float32)).to(dev)
            val_chunks = np.asarray(val.chunks)
        columns = torch.as_tensor(train.count_columns, device=dev)
        fill = torch.as_tensor(self.normaliser_.zero_value(), device=dev)
        mask_p = cfg.mask_p if train.count_columns.any() else 0.0  # no draws without counts
        n_rows = int(train.offsets[-1])
        devices = [dev.index or 0] if dev.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(cfg.seed)
            self.model_ = MLP(train.dim, len(self.vocabulary_), cfg.width, cfg.dropout).to(dev)
            with torch.no_grad():  # the class priors by default (module docstring)
                counts = torch.from_numpy(np.diff(train.offsets).astype(np.float64))
                share = (counts[:, None] * torch.from_numpy(train.labels.astype(np.float64))
                         ).sum(0) / n_rows
                prior = torch.logit(share.float().clamp(1e-3, 1 - 1e-3)).to(dev)
                self.model_.net[-1].bias.copy_(prior if cfg.output_bias == "prior" else 0.0)
            opt = torch.optim.Adam(self.model_.parameters(), lr=cfg.lr,
                                   weight_decay=cfg.weight_decay)
            self.history_, best, best_state, waited = [], -np.inf, None, 0
            bar = progress_bar(range(1, cfg.max_epochs + 1), desc="head", unit="epoch",
                               enabled=progress, leave=False)
            for epoch in bar:
                self.model_.train()
                total = torch.zeros((), device=dev)
                batches = (streamed_batches(train, rows_per_block, cfg.shuffle_window,
                                            cfg.batch_size, self._inputs, dev)
                           if self.streamed_ else memory_batches(x, y, cfg.batch_size))
                for xb, yb in batches:
                    xb = mask_tokens(xb, mask_p, columns, fill)
                    loss = head_loss(self.model_(xb), yb, cfg.loss)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += loss.detach() * len(xb)
                val_map = mean_average_precision(val.labels,
                                                 self._clip_probs(val_chunks, val.offsets))
                train_loss = float(total) / n_rows
                self.history_.append({"epoch": epoch, "train_loss": train_loss,
                                      "val_map": val_map})
                bar.set_postfix(loss=f"{train_loss:.4f}", val_map=f"{val_map:.4f}")
                if val_map > best:
                    best, waited = val_map, 0
                    best_state = copy.deepcopy(self.model_.state_dict())
                    self.best_epoch_ = epoch
                else:
                    waited += 1
                    if waited >= cfg.patience:
                        break
            bar.close()
        self.model_.load_state_dict(best_state)
        self.best_val_map_ = float(best)
        return self

    @torch.no_grad()
    def predict_chunks(self, chunks) -> np.ndarray:
        """(M, D) raw chunk vectors (array or lazy ChunkMatrix) -> (M, C) float32
        probabilities."""
        self.model_.eval()
        out = np.zeros((len(chunks), len(self.vocabulary_)), np.float32)
        step = self.rows(chunks.shape[1])
        for i in range(0, len(chunks), step):
            x = self._inputs(np.asarray(chunks[i:i + step]))
            out[i:i + len(x)] = torch.sigmoid(self.model_(x)).cpu().numpy()
        return out

    def _clip_probs(self, chunks, offsets: np.ndarray) -> np.ndarray:
        """(N, C) float32 clip probabilities of (M, D) chunks, read in blocks of whole clips."""
        return clip_probabilities_in_blocks(self.predict_chunks, chunks, offsets,
                                            len(self.vocabulary_), self.rows(chunks.shape[1]))

    def predict_clips(self, features: FeatureSet) -> np.ndarray:
        """(N, C) float32 clip probabilities: the mean of each clip's chunk probabilities."""
        return self._clip_probs(features.chunks, features.offsets)

    def summary(self) -> dict:
        """Training summary: best_epoch, epochs, best_val_map, history (per epoch)."""
        return {"best_epoch": self.best_epoch_, "epochs": len(self.history_),
                "best_val_map": self.best_val_map_, "history": self.history_}

    def save(self, directory: str | Path) -> Path:
        """Write head.npz (weights and normaliser, plain arrays) and head.json (config, ...)."""
        directory = Path(directory)
        arrays = {f"model/{k}": v.detach().cpu().numpy()
                  for k, v in self.model_.state_dict().items()}
        arrays.update({"normaliser/mean": self.normaliser_.mean_,
                       "normaliser/scale": self.normaliser_.scale_,
                       "normaliser/count_columns": self.normaliser_.count_columns_})
        with atomic_path(directory / "head.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        write_json(directory / "head.json", {
            "config": {f.name: getattr(self.config, f.name) for f in fields(HeadConfig)},
            "vocabulary": self.vocabulary_,
            "n_in": int(self.normaliser_.mean_.shape[0]), "best_epoch": self.best_epoch_,
            "best_val_map": self.best_val_map_, "history": self.history_})
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> "Head":
        """Read a head written by ``save``; ArtifactError naming the file if it cannot."""
        directory = Path(directory)
        meta = read_json(directory / "head.json", "head description (head.json)")
        weights = directory / "head.npz"
        try:
            config = HeadConfig(**{k: tuple(v) if isinstance(v, list) else v
                                   for k, v in meta["config"].items()})
            head = cls(config, device)
            with np.load(weights, allow_pickle=False) as z:
                state = {k[len("model/"):]: torch.from_numpy(z[k]) for k in z.files
                         if k.startswith("model/")}
                head.normaliser_ = Normaliser(config.normalisation)
                head.normaliser_.mean_ = z["normaliser/mean"]
                head.normaliser_.scale_ = z["normaliser/scale"]
                head.normaliser_.count_columns_ = z["normaliser/count_columns"]
            head.vocabulary_ = meta["vocabulary"]
            head.best_epoch_, head.best_val_map_ = meta["best_epoch"], meta["best_val_map"]
            head.history_ = meta["history"]
            head.model_ = MLP(meta["n_in"], len(head.vocabulary_), config.width, config.dropout)
            head.model_.load_state_dict(state)
        except (OSError, EOFError, zipfile.BadZipFile, KeyError, TypeError, ValueError,
                RuntimeError, AttributeError) as e:
            detail = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
            raise ArtifactError(f"{weights}: damaged head, or it does not match "
                                f"{directory / 'head.json'} ({detail})") from None
        head.model_.to(resolve_device(device))
        return head
