"""Audio-MLP pretraining: a denoising autoencoder on 1 s chunks of any audio, no labels.

    chunks (N, 16000) ─ PowerMel ─ InputScaling (fitted on the training chunks) ─▶ clean x
    noisy = SpecAugment(x): time and frequency bands set to 0, drawn per example
    loss = mean of loss(decoder(encoder(noisy)) - x)        (mse or l1)

The authors publish neither the loss, the input scaling their decoder's Tanh implies, nor the
budget. ``PretrainConfig.recipe`` chooses a whole set of those settings at once (each can still
be set alone): ``authors`` is their architecture and input (linear power mel, GELU bottleneck,
6-block decoder, Tanh output, SpecAugment 2 time masks of 0-25 frames and 2 frequency masks of
0-7 bands, as in their KW-MLP recipe) with a mean squared error; ``ours`` (the default) is what
measured best in the prototype's experiments (linear probe of
../shared/FINDINGS.md on the 1584-d scene embeddings, ESC-10 5-fold / FSDD train -> test,
pretrained on ESC-10 folds 1-4 / FSDD train, one seed each; differences below ~0.04 on ESC-10
are within the fold noise):
  * input ``logmel`` (dB, per-band standardised, tanh(z / 2)): the authors' linear power input
    left the held-out MSE at 0.967 of predicting the mean (ESC-10) and probed 0.467 / 0.517
    (ESC-10 / FSDD), below a random encoder on log-mel (0.595 / 0.797);
  * a linear bottleneck (``none``): held-out loss lower every time, FSDD 0.767 vs 0.680 with
    GELU, ESC-10 a tie (0.642 vs 0.647);
  * no SpecAugment masks: masks hurt both probes (ESC-10 0.647 without, 0.545 with 2x25 / 2x7
    or 2x50 / 2x14; FSDD 0.680 vs 0.573), so the default is a plain autoencoder and denoising
    is ``--time-masks 2 --freq-masks 2`` away;
  * the authors' 6-block decoder: a per-frame decoder (``decoder_depth`` 0) lost on ESC-10
    (0.600 vs 0.642), tied on FSDD;
  * budget: 40 epochs of batch 64, AdamW lr 1e-3 (1 warm-up epoch, cosine), weight decay 0.01;
    ESC-10 20 -> 40 epochs: 0.642 -> 0.6725 (fold 5 alone 0.650 -> 0.725), held-out MSE 0.0063
    -> 0.0039 (predicting the mean: 0.184); not saturated. lr and batch were not tuned.
  * loss: mean squared error (``l1`` is an option, not measured).
The authors' checkpoint through the same probe: ESC-10 0.5375, FSDD 0.727.

Held-out numbers per epoch (``history``, on clips held out whole): ``val_loss`` = the denoising
loss with masks drawn from a fixed seed (the criterion of the best epoch), ``val_clean`` = the
loss of reconstructing unmasked chunks, ``val_mean`` = the loss of predicting the training
chunks' per-band mean, the floor any useful model must beat.

Randomness: initialisation from ``seed``; epoch e draws its shuffling, masks and dropped blocks
from a generator seeded with (seed, e), so a run resumed after epoch e is the same, bit for bit
on CPU, as one that never stopped.

Files in ``out_dir`` (written atomically):
  last.pt    resume state after the latest epoch (model, optimizer, epoch, history, best)
  best.pth   the best-validation encoder in the authors' format plus our keys
             (bow.audiomlp.model.save_checkpoint: input scaling, decoder, config)

Data (``power_mel_chunks``): each clip is padded and cut into 1 s chunks as the embedder does
(bow.kwmlp.embed.pad_and_chunk) and turned into (40, 98) power mel once; the result is cached
in a ``.npy`` file (15.7 KB a chunk: 37 MB for ESC-10's 2,400 chunks) and memory-mapped.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bow.audio.features import PowerMel
from bow.audio.load import read_audio
from bow.audio.readahead import read_batches
from bow.audiomlp.model import (
    N_FRAMES,
    N_MELS,
    AudioMLPAutoencoder,
    AudioMLPDecoder,
    AudioMLPEncoder,
    save_checkpoint,
)
from bow.audiomlp.scaling import KINDS, InputScaling
from bow.config import choose, option
from bow.data.datasets import Clip
from bow.io.stage import atomic_path, load_torch, save_torch, write_json
from bow.kwmlp.embed import pad_and_chunk
from bow.kwmlp.train import lr_at, spec_augment
from bow.progress import progress as progress_bar
from bow.runtime import generator

LOSSES = ("mse", "l1")
RECIPES = {
    "authors": {"input_scaling": "power", "bottleneck_act": "gelu", "output_act": "tanh",
                "decoder_depth": 6, "loss": "mse", "time_masks": 2, "time_mask_width": 25,
                "freq_masks": 2, "freq_mask_width": 7},
    "ours": {"input_scaling": "logmel", "bottleneck_act": "none", "output_act": "tanh",
             "decoder_depth": 6, "loss": "mse", "time_masks": 0, "time_mask_width": 25,
             "freq_masks": 0, "freq_mask_width": 7},
}


@dataclass(frozen=True)
class PretrainConfig:
    """Audio-MLP pretraining (module docstring). Settings left None take the recipe's value."""
    recipe: str = option("ours", "ours (what measured best) or authors (linear power mel, GELU "
                         "bottleneck, SpecAugment 2x25 / 2x7): the default of every setting "
                         "marked 'recipe'")
    input_scaling: str | None = option(None, "recipe: power (the authors'), power_clip or logmel")
    bottleneck_act: str | None = option(None, "recipe: gelu (the authors') or none")
    output_act: str | None = option(None, "recipe: tanh (the authors') or none")
    decoder_depth: int | None = option(None, "recipe: decoder blocks (the authors': 6)")
    loss: str | None = option(None, "recipe: mse or l1")
    time_masks: int | None = option(None, "recipe: SpecAugment time masks")
    time_mask_width: int | None = option(None, "recipe: largest time mask (frames of 98)")
    freq_masks: int | None = option(None, "recipe: SpecAugment frequency masks")
    freq_mask_width: int | None = option(None, "recipe: largest frequency mask (bands of 40)")
    depth: int = option(6, "encoder blocks (the authors': 6)")
    embed_dim: int = option(8, "bottleneck width: the timestamp embedding size (authors: 8)")
    prob_survival: float = option(0.9, "stochastic depth: P(keep a block)")
    epochs: int = option(40, "training epochs")
    warmup_epochs: int = option(1, "linear warm-up epochs, then cosine decay")
    batch_size: int = option(64, "chunks per step")
    lr: float = option(1e-3, "AdamW peak learning rate")
    weight_decay: float = option(0.01, "AdamW weight decay")
    seed: int = option(0, "seed of initialisation and training")

    def __post_init__(self):
        choose("recipe", self.recipe, RECIPES)
        r = self.resolved()
        choose("input_scaling", r.input_scaling, KINDS)
        choose("bottleneck_act", r.bottleneck_act, ("gelu", "none"))
        choose("output_act", r.output_act, ("tanh", "none"))
        choose("loss", r.loss, LOSSES)

    def resolved(self) -> "PretrainConfig":
        """This config with every None setting replaced by the recipe's value."""
        missing = {k: v for k, v in RECIPES[self.recipe].items() if getattr(self, k) is None}
        return dataclasses.replace(self, **missing) if missing else self


def build(config: PretrainConfig) -> AudioMLPAutoencoder:
    """A freshly initialised autoencoder (seeded by ``config.seed``; the global RNG is left
    as it was)."""
    c = config.resolved()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(c.seed)
        encoder = AudioMLPEncoder(depth=c.depth, embed_dim=c.embed_dim,
                                  prob_survival=c.prob_survival, bottleneck_act=c.bottleneck_act)
        decoder = AudioMLPDecoder(depth=c.decoder_depth, embed_dim=c.embed_dim,
                                  prob_survival=c.prob_survival, output_act=c.output_act)
    return AudioMLPAutoencoder(encoder, decoder)


def _loss(name: str, got: torch.Tensor, want: torch.Tensor, reduction: str = "mean"):
    return (F.mse_loss if name == "mse" else F.l1_loss)(got, want, reduction=reduction)


def _mask(x: torch.Tensor, g: torch.Generator, c: PretrainConfig) -> torch.Tensor:
    return spec_augment(x, g, c.time_masks, c.time_mask_width, c.freq_masks, c.freq_mask_width)


@torch.no_grad()
def evaluate(model: AudioMLPAutoencoder, x: torch.Tensor, mean: torch.Tensor,
             config: PretrainConfig, device: torch.device, batch: int = 256) -> dict:
    """Held-out (N, 40, 98) model inputs -> val_loss, val_clean, val_mean (module docstring)."""
    c = config.resolved()
    model.eval()
    g = generator(10_000_019)                       # the same masks every epoch
    noisy = clean = base = 0.0
    for i in range(0, len(x), batch):
        xb = torch.as_tensor(x[i:i + batch]).to(device)
        masked = _mask(xb.cpu(), g, c).to(device)
        noisy += float(_loss(c.loss, model(masked), xb, "sum"))
        clean += float(_loss(c.loss, model(xb), xb, "sum"))
        base += float(_loss(c.loss, mean.to(device).expand_as(xb), xb, "sum"))
    n = max(x.numel(), 1)
    return {"val_loss": noisy / n, "val_clean": clean / n, "val_mean": base / n}


def pretrain(train: torch.Tensor, val: torch.Tensor, out_dir: str | Path,
             config: PretrainConfig, scaling: InputScaling, device: str | torch.device = "cpu",
             progress: bool = True, resume_tag: str = "") -> dict:
    """Train a seeded autoencoder on scaled (N, 40, 98) inputs, keep the best on ``val``.

    Resumes from ``out_dir/last.pt`` when it holds the same ``resume_tag`` (e.g. the stage
    fingerprint). Returns the state: epoch, history (one dict per epoch: lr, train_loss,
    val_loss, val_clean, val_mean), best_epoch, best_val_loss.
    """
    c, out_dir, device = config.resolved(), Path(out_dir), torch.device(device)
    model = build(c).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
    steps = math.ceil(len(train) / c.batch_size)
    total, warmup = c.epochs * steps, c.warmup_epochs * steps
    mean = train.mean(dim=(0, 2), keepdim=True)[0]          # (40, 1): the per-band mean
    state = {"epoch": 0, "history": [], "best_epoch": -1, "best_val_loss": math.inf}
    last = out_dir / "last.pt"
    if last.exists():
        saved = load_torch(last, "Audio-MLP resume state", map_location=device)
        if saved.get("resume_tag") == resume_tag:
            model.load_state_dict(saved["model_state_dict"])
            optimizer.load_state_dict(saved["optimizer_state_dict"])
            state = {k: saved[k] for k in state}
    bar = progress_bar(total=total, initial=state["epoch"] * steps, desc="pretrain audiomlp",
                       unit="step", enabled=progress)
    for epoch in range(state["epoch"], c.epochs):
        model.train()
        g = generator(c.seed * 1_000_003 + epoch)
        order = torch.randperm(len(train), generator=g)
        loss_sum = 0.0
        for b in range(steps):
            idx = order[b * c.batch_size:(b + 1) * c.batch_size]
            for group in optimizer.param_groups:
                group["lr"] = lr_at(epoch * steps + b, total, warmup, c.lr)
            xb = train[idx]
            noisy = _mask(xb, g, c).to(device)
            loss = _loss(c.loss, model(noisy, g), xb.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(idx)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.4f}", refresh=False)
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
               "train_loss": loss_sum / len(train), **evaluate(model, val, mean, c, device)}
        state["history"].append(row)
        state["epoch"] = epoch + 1
        if row["val_loss"] < state["best_val_loss"]:
            state["best_val_loss"], state["best_epoch"] = row["val_loss"], epoch + 1
            with atomic_path(out_dir / "best.pth") as tmp:
                save_checkpoint(tmp, model.encoder, scaling, model.decoder,
                                config=dataclasses.asdict(c))
        save_torch({**state, "resume_tag": resume_tag, "model_state_dict": model.state_dict(),
                    "optimizer_state_dict": optimizer.state_dict()}, last)
    bar.close()
    return state


def power_mel_chunks(clips: list[Clip], cache: Path, batch: int = 64, progress: bool = True,
                     threads: int = 1) -> tuple[np.ndarray, np.ndarray, list]:
    """(N, 40, 98) float32 power mel of every 1 s chunk of the readable clips (memory-mapped
    from the ``cache`` .npy, computed on first use), (len(clips),) int64 chunks per clip (0 for
    an unreadable one), [(fname, reason)] for the unreadable clips."""
    meta = cache.with_suffix(".json")
    if not (cache.exists() and meta.exists()):
        mel, parts, counts, bad = PowerMel(), [], [], []
        bar = progress_bar(total=len(clips), desc="power mel", unit="clip", enabled=progress)
        index = {id(c): i for i, c in enumerate(clips)}
        counts = np.zeros(len(clips), np.int64)
        for group in read_batches(clips, read_audio, batch, threads, bad):
            chunks = [pad_and_chunk(torch.from_numpy(a)) for _, a in group]
            with torch.inference_mode():
                parts.append(mel(torch.cat(chunks)).numpy())
            for (clip, _), ch in zip(group, chunks):
                counts[index[id(clip)]] = len(ch)
            bar.update(len(group))
        bar.close()
        feats = np.concatenate(parts) if parts else np.zeros((0, N_MELS, N_FRAMES), np.float32)
        with atomic_path(cache) as tmp, open(tmp, "wb") as f:
            np.save(f, feats)
        write_json(meta, {"counts": counts.tolist(), "skipped": bad})
    info = json.loads(meta.read_text())
    return (np.load(cache, mmap_mode="r", allow_pickle=False),
            np.asarray(info["counts"], np.int64), [tuple(s) for s in info["skipped"]])


def scaled(power: np.ndarray, rows: np.ndarray, scaling: InputScaling,
           batch: int = 4096) -> torch.Tensor:
    """The model inputs (len(rows), 40, 98) of the power mel chunks ``rows``."""
    out = torch.empty((len(rows), power.shape[1], power.shape[2]))
    with torch.inference_mode():
        for i in range(0, len(rows), batch):
            out[i:i + batch] = scaling(torch.from_numpy(np.asarray(power[rows[i:i + batch]])))
    return out


def pretrain_chunks(power: np.ndarray, train_rows: np.ndarray, val_rows: np.ndarray,
                    out_dir: Path, config: PretrainConfig, device: str | torch.device = "cpu",
                    progress: bool = True, resume_tag: str = "") -> tuple[dict, InputScaling]:
    """Fit the input scaling on the training chunks' power mel, then ``pretrain``; -> (its
    state, the scaling)."""
    c = config.resolved()
    scaling = InputScaling(c.input_scaling).fit(torch.from_numpy(np.asarray(power[train_rows])))
    train, val = scaled(power, train_rows, scaling), scaled(power, val_rows, scaling)
    return pretrain(train, val, out_dir, c, scaling, device, progress, resume_tag), scaling
