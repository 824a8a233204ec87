"""KW-MLP pretraining on 1 s keyword clips: the paper's recipe, resumable.

Recipe (Morshed & Ahsan; the defaults of ``PretrainConfig``): AdamW (lr 1e-3, weight decay 0.1 on
every parameter), batch 256, 140 epochs, the learning rate rising linearly from 0 over the first
10 epochs then following a cosine to 0 over the rest (updated every step; the authors' code steps
the cosine once per epoch), cross-entropy with label smoothing 0.1, stochastic depth 0.1 (in the
model), SpecAugment on the MFCC of every training example (``spec_augment``).

Randomness: the model is initialised from ``seed``; epoch e draws its shuffling, masks and
skipped blocks from a generator seeded with (seed, e), so a run resumed after epoch e is the same,
bit for bit on CPU, as one that never stopped.

Files in ``out_dir`` (all written atomically, the same bytes for the same state):
  last.pt    resume state after the latest epoch (model, optimizer, epoch, history, best so far)
  best.pth   the best-validation model as ``{"model_state_dict": ...}``, the authors' format

Data (``keyword_clips``, ``mfcc_features``): every clip needs exactly one label (others are
skipped and reported). Each clip is read with bow.audio.load, reduced to its first 1 s chunk
(shorter clips zero-padded, longer ones cut: keywords last at most 1 s) and turned into a
(40, 98) MFCC once (bow.audio.features.MFCC, the front end of the embeddings); the MFCCs are
cached in a ``.npy`` file, so a restart does not recompute them, and held in memory while
training (15.7 KB a clip: 47 MB for fsdd, about 1.6 GB for Speech Commands V2's 105,829 clips).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bow.audio.features import MFCC
from bow.audio.load import CHUNK_SAMPLES, AudioError, chunk, read_audio
from bow.config import option
from bow.data.datasets import Clip, Dataset
from bow.io.stage import atomic_path, load_torch, save_torch, write_json
from bow.kwmlp.model import KWMLP, MFCC_FRAMES, N_MFCC, load_checkpoint, save_checkpoint
from bow.progress import progress as progress_bar
from bow.runtime import generator


@dataclass(frozen=True)
class PretrainConfig:
    """KW-MLP pretraining: the paper's recipe."""
    depth: int = option(12, "gated-MLP blocks (paper: 12; 8, 10)")
    epochs: int = option(140, "training epochs")
    warmup_epochs: int = option(10, "linear warm-up epochs")
    batch_size: int = option(256, "clips per step")
    lr: float = option(1e-3, "AdamW peak learning rate")
    weight_decay: float = option(0.1, "AdamW weight decay")
    label_smoothing: float = option(0.1, "cross-entropy smoothing")
    prob_survival: float = option(0.9, "stochastic depth: P(keep)")
    time_masks: int = option(2, "SpecAugment time masks")
    time_mask_width: int = option(25, "largest time mask (frames)")
    freq_masks: int = option(2, "SpecAugment coefficient masks")
    freq_mask_width: int = option(7, "largest coefficient mask")
    seed: int = option(0, "seed of initialisation and training")


def spec_augment(mfcc: torch.Tensor, g: torch.Generator, time_masks: int = 2,
                 time_mask_width: int = 25, freq_masks: int = 2,
                 freq_mask_width: int = 7) -> torch.Tensor:
    """(n, F, T) -> copy with masks set to 0, drawn per example.

    Each mask has a width uniform in 0..max_width (inclusive) and a start uniform among the
    positions where it fits; masks may overlap. Frequency masks cover MFCC coefficients.
    """
    n, n_freq, n_time = mfcc.shape
    keep = torch.ones(n, n_freq, n_time, dtype=torch.bool)
    for count, width, axis in ((time_masks, time_mask_width, 2), (freq_masks, freq_mask_width, 1)):
        size = mfcc.shape[axis]
        pos = torch.arange(size)
        for _ in range(count):
            w = torch.randint(0, width + 1, (n,), generator=g)
            start = (torch.rand(n, generator=g) * (size - w + 1)).long()
            hit = (pos >= start[:, None]) & (pos < (start + w)[:, None])       # (n, size)
            keep &= ~(hit[:, None, :] if axis == 2 else hit[:, :, None])
    return mfcc * keep.to(mfcc.device)


def lr_at(step: int, total_steps: int, warmup_steps: int, lr: float) -> float:
    """Linear warm-up from 0 to ``lr`` over ``warmup_steps``, then cosine decay to 0."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * lr * (1 + math.cos(math.pi * min(progress, 1.0)))


def train_step(model: KWMLP, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               g: torch.Generator, settings: PretrainConfig) -> tuple[float, int]:
    """One optimisation step on (n, 40, 98) MFCC and (n,) class ids -> (mean loss, n correct)."""
    model.train()
    x = spec_augment(x, g, settings.time_masks, settings.time_mask_width, settings.freq_masks,
                     settings.freq_mask_width)
    logits = model(x, generator=g)
    loss = F.cross_entropy(logits, y, label_smoothing=settings.label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item(), int((logits.argmax(1) == y).sum())


@torch.inference_mode()
def score(model: KWMLP, x: np.ndarray, y: np.ndarray, device: torch.device,
             batch_size: int = 512) -> dict:
    """Accuracy and mean cross-entropy of ``model`` (eval mode) on (N, 40, 98) / (N,)."""
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, len(y), batch_size):
        xb = torch.as_tensor(np.asarray(x[i:i + batch_size])).to(device)
        yb = torch.as_tensor(y[i:i + batch_size]).to(device)
        logits = model(xb)
        loss += float(F.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
    n = max(len(y), 1)
    return {"accuracy": correct / n, "loss": loss / n}




def _save_best(model: KWMLP, path: Path) -> None:
    with atomic_path(path) as tmp:
        save_checkpoint(model, tmp)


def pretrain(model: KWMLP, train: tuple[np.ndarray, np.ndarray],
             val: tuple[np.ndarray, np.ndarray], out_dir: str | Path,
             settings: PretrainConfig = PretrainConfig(), device: str | torch.device = "cpu",
             progress: bool = True, resume_tag: str = "") -> dict:
    """Train ``model`` on (N, 40, 98) MFCC / (N,) int64 class ids; keep the best on ``val``.

    Resumes from ``out_dir/last.pt`` when it exists with the same ``resume_tag`` (e.g. the
    stage fingerprint). Returns the history: one dict per epoch (lr, train loss and accuracy,
    val loss and accuracy) plus the best epoch and its validation accuracy.
    """
    out_dir, device = Path(out_dir), torch.device(device)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr,
                                  weight_decay=settings.weight_decay)
    x_train, y_train = train
    steps_per_epoch = math.ceil(len(y_train) / settings.batch_size)
    total, warmup = settings.epochs * steps_per_epoch, settings.warmup_epochs * steps_per_epoch
    state = {"epoch": 0, "history": [], "best_epoch": -1, "best_val_accuracy": -1.0}
    last = out_dir / "last.pt"
    if last.exists():
        saved = load_torch(last, "KW-MLP resume state", map_location=device)
        if saved.get("resume_tag") == resume_tag:
            model.load_state_dict(saved["model_state_dict"])
            optimizer.load_state_dict(saved["optimizer_state_dict"])
            state = {k: saved[k] for k in state}
    bar = progress_bar(total=total, initial=state["epoch"] * steps_per_epoch,
                       desc="pretrain kwmlp", unit="step", enabled=progress)
    for epoch in range(state["epoch"], settings.epochs):
        g = generator(settings.seed * 1_000_003 + epoch)
        order = torch.randperm(len(y_train), generator=g).numpy()
        loss_sum, correct, seen = 0.0, 0, 0
        for b in range(steps_per_epoch):
            idx = np.sort(order[b * settings.batch_size:(b + 1) * settings.batch_size])
            for group in optimizer.param_groups:
                group["lr"] = lr_at(epoch * steps_per_epoch + b, total, warmup, settings.lr)
            xb = torch.as_tensor(np.asarray(x_train[idx])).to(device)
            yb = torch.as_tensor(y_train[idx]).to(device)
            loss, ok = train_step(model, optimizer, xb, yb, g, settings)
            loss_sum, correct, seen = loss_sum + loss * len(idx), correct + ok, seen + len(idx)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss_sum / seen:.3f}",
                            acc=f"{correct / seen:.3f}",
                            best_val=f"{max(state['best_val_accuracy'], 0):.3f}", refresh=False)
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
               "train_loss": loss_sum / seen, "train_accuracy": correct / seen}
        row.update({f"val_{k}": v for k, v in score(model, *val, device).items()})
        state["history"].append(row)
        state["epoch"] = epoch + 1
        if row["val_accuracy"] > state["best_val_accuracy"]:
            state["best_val_accuracy"], state["best_epoch"] = row["val_accuracy"], epoch + 1
            _save_best(model, out_dir / "best.pth")
        save_torch({**state, "resume_tag": resume_tag, "model_state_dict": model.state_dict(),
                    "optimizer_state_dict": optimizer.state_dict()}, last)
    bar.close()
    return state


def keyword_clips(dataset: Dataset, splits) -> tuple[list[Clip], np.ndarray, list]:
    """The clips of ``splits`` with exactly one label -> (clips, (N,) int64 class ids in the
    vocabulary's order, [(fname, reason)] for the rows left out)."""
    wanted = {str(s) for s in splits}
    clips, skipped = [], list(dataset.invalid)
    for c in dataset.clips:
        if c.split not in wanted:
            continue
        if len(c.labels) != 1:
            skipped.append((c.fname, f"KW-MLP pretraining needs one label, has {c.labels}"))
        else:
            clips.append(c)
    index = {name: i for i, name in enumerate(dataset.vocabulary)}
    return clips, np.array([index[c.labels[0]] for c in clips], dtype=np.int64), skipped


def mfcc_features(clips: list[Clip], cache: Path, batch: int = 256, progress: bool = True):
    """(N, 40, 98) float32 MFCC of each clip's first second (memory-mapped from the ``cache``
    .npy file, computed on first use), (N,) bool readable mask, [(fname, reason)] unreadable."""
    mask_path = cache.with_suffix(".json")
    if not (cache.exists() and mask_path.exists()):
        front_end = MFCC()
        feats, bad = np.zeros((len(clips), N_MFCC, MFCC_FRAMES), np.float32), {}
        bar = progress_bar(total=len(clips), desc="mfcc", unit="clip", enabled=progress)
        for i in range(0, len(clips), batch):
            group, first = clips[i:i + batch], []
            for c in group:
                try:
                    first.append(chunk(read_audio(c.path))[0])
                except AudioError as e:
                    bad[c.fname] = e.problem
                    first.append(np.zeros(CHUNK_SAMPLES, np.float32))
            with torch.inference_mode():
                feats[i:i + len(group)] = front_end(torch.from_numpy(np.stack(first))).numpy()
            bar.update(len(group))
        bar.close()
        with atomic_path(cache) as tmp, open(tmp, "wb") as f:
            np.save(f, feats)
        write_json(mask_path, bad)
    bad = json.loads(mask_path.read_text())
    ok = np.array([c.fname not in bad for c in clips])
    return np.load(cache, mmap_mode="r", allow_pickle=False), ok, sorted(bad.items())


def pretrain_keywords(x: np.ndarray, y: np.ndarray, groups: dict[str, np.ndarray],
                      n_classes: int, out_dir: Path, config: PretrainConfig = PretrainConfig(),
                      device: str | torch.device = "cpu", progress: bool = True,
                      resume_tag: str = "") -> tuple[dict, dict]:
    """Pretrain a seeded KW-MLP on MFCC x (N, 40, 98) and class ids y (N,), with ``groups``
    {"train", "val", "test": row indices}; -> (the state of ``pretrain``, the accuracy of
    best.pth on each group (None for an empty one))."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = KWMLP(num_classes=n_classes, depth=config.depth,
                      prob_survival=config.prob_survival)
    in_memory = {k: (x[v], y[v]) for k, v in groups.items()}   # fancy index: copies
    state = pretrain(model, in_memory["train"], in_memory["val"], out_dir, config, device,
                     progress, resume_tag)
    best = load_checkpoint(Path(out_dir) / "best.pth").to(device)
    accuracy = {k: score(best, *in_memory[k], device)["accuracy"] if len(v) else None
                for k, v in groups.items()}
    return state, accuracy
