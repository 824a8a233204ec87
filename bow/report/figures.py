"""Pictures that show each stage worked: codebook usage, autoencoder reconstructions, sweeps.

* ``codebook_usage_plot``: per token family, the share of tokens each code received, codes
  sorted from most to least used (a rank-ordered histogram, log scale; unused codes fall off
  the bottom), for one or several models (e.g. the trained encoders and the random-encoder
  control). Usage comes from a bag-of-words store
  (``store_usage``: the counts of every embedded chunk, all splits). Each panel names the codes
  used out of D and the perplexity exp(entropy) of the usage: D for perfectly even usage,
  1 when one code takes every token.
* ``example_chunks``: the log-mel of one chunk (the most varied) from each of a few clips of
  distinct first labels, for the reconstruction plot.
* ``reconstruction_plot``: log-mel chunks beside what each family's autoencoder makes of them.
  The patch, band-envelope and spectral-envelope grids tile the whole (96, 100) log-mel, so
  their reconstructions are tiled back into a full spectrogram (``ungrid``); the thumbnail is
  shown as its (8, 10) input and reconstruction. Titles give the reconstruction MSE in
  standardised units (1.0 = predicting the training mean), as in the training history.
* ``training_curves_plot``: loss and accuracy per epoch of a classifier's training history
  (KW-MLP pretraining).
* ``sweep_plot``: one line per group of sweep rows (e.g. mAP against D for each head width and
  dropout), with optional horizontal reference lines (chance); categorical x values (e.g.
  scene algorithms) become a bar chart.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bow.bagofwords.corpus import logmel_clips
from bow.bagofwords.encoder import TokenEncoder
from bow.bagofwords.tokens import COUNTS, FAMILIES, N_FRAMES, N_MELS, SHAPES, grid
from bow.io.store import read
from bow.report.tables import bar_plot, line_plot, plt, save_figure

TILED = ("patch", "band_envelope", "spectral_envelope")  # families whose grid tiles the log-mel


def store_usage(path: str | Path) -> dict[str, np.ndarray]:
    """A bag-of-words store -> {family: (D,) int64 tokens assigned to each code, all chunks}."""
    store = read(path)
    families = store.attrs["config"].get("families", list(FAMILIES))
    n_codes = int(store.attrs["config"]["n_codes"])
    total = store.chunks.sum(axis=0, dtype=np.int64)
    return {f: total[i * n_codes:(i + 1) * n_codes] for i, f in enumerate(families)}


def usage_stats(counts: np.ndarray) -> dict:
    """(D,) code counts -> {n_codes, used, perplexity, top_share}."""
    counts = np.asarray(counts, dtype=np.float64)
    share = counts / max(counts.sum(), 1.0)
    nz = share[share > 0]
    return {"n_codes": len(counts), "used": int((counts > 0).sum()),
            "perplexity": float(np.exp(-(nz * np.log(nz)).sum())) if len(nz) else 0.0,
            "top_share": float(share.max()) if len(share) else 0.0}


def codebook_usage_plot(path, usages: dict[str, dict[str, np.ndarray]], *,
                        title: str = "") -> Path:
    """``usages[model][family] = (D,) counts`` -> one panel per family, codes sorted by use."""
    fig, axes = plt.subplots(2, 2, figsize=(10.0, 6.4))
    colours = plt.cm.tab10(np.arange(len(usages)) % 10)
    for ax, family in zip(axes.ravel(), FAMILIES):
        floor = 1.0
        for colour, (model, usage) in zip(colours, usages.items()):
            counts = np.sort(np.asarray(usage[family], dtype=np.float64))[::-1]
            share = counts / max(counts.sum(), 1.0)
            floor = min(floor, share[share > 0].min(initial=1.0) / 2)
            s = usage_stats(counts)
            ax.step(np.arange(1, len(share) + 1), share, where="mid", color=colour,
                    label=f"{model}: {s['used']}/{s['n_codes']} used, "
                          f"perplexity {s['perplexity']:.0f}")
        n_codes = len(next(iter(usages.values()))[family])
        ax.axhline(1.0 / n_codes, color="grey", ls="--", lw=0.8, label="even use (1/D)")
        ax.set_yscale("log")
        ax.set_ylim(bottom=floor)
        ax.set(title=f"{family} ({COUNTS[family]} token{'s' if COUNTS[family] > 1 else ''}"
                     " per chunk)", xlabel="code rank (most used first)",
               ylabel="share of tokens")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def ungrid(tokens: torch.Tensor, family: str) -> torch.Tensor:
    """(n, COUNTS[family], dim) grid tokens -> (n, 96, 100) log-mel; inverse of tokens.grid for
    the families whose grid tiles the spectrogram (not the thumbnail)."""
    if family not in TILED:
        raise ValueError(f"{family}: its grid does not tile the log-mel; expected one of {TILED}")
    h, w = SHAPES[family]
    n = tokens.shape[0]
    x = tokens.reshape(n, N_MELS // h, N_FRAMES // w, h, w).permute(0, 1, 3, 2, 4)
    return x.reshape(n, N_MELS, N_FRAMES)


@torch.inference_mode()
def example_chunks(clips, n: int = 4):
    """(n, 96, 100) log-mel of one chunk (its most varied) from clips of distinct first labels."""
    chosen, seen = [], set()
    for clip in clips:
        if clip.labels[0] not in seen:
            seen.add(clip.labels[0])
            chosen.append(clip)
        if len(chosen) == n:
            break
    logmel, offsets, skipped = logmel_clips(chosen)
    bad = {f for f, _ in skipped}
    chosen = [c for c in chosen if c.fname not in bad]
    rows = [int(offsets[i] + torch.argmax(logmel[offsets[i]:offsets[i + 1]].float()
                                          .flatten(1).std(dim=1))) for i in range(len(chosen))]
    return logmel[rows], [f"{c.fname} ({c.labels[0]})" for c in chosen]


def reconstruction_plot(path, autoencoders: dict[str, TokenEncoder], logmel: torch.Tensor,
                        names=None, *, title: str = "") -> Path:
    """(n, 96, 100) log-mel chunks beside their reconstructions by each family's autoencoder:
    one row per chunk: input, patch, band envelope, spectral envelope, thumbnail in and out."""
    logmel = logmel.float().cpu()
    n = logmel.shape[0]
    names = list(names) if names is not None else [f"chunk {i}" for i in range(n)]
    columns = ["input log-mel"] + [f"{f} AE" for f in TILED] + ["thumbnail", "thumbnail AE"]
    fig, axes = plt.subplots(n, len(columns), figsize=(2.3 * len(columns), 2.2 * n + 0.6),
                             squeeze=False)
    lo, hi = float(logmel.min()), float(logmel.max())
    for i in range(n):
        panels, errors = [logmel[i]], [None]
        for family in TILED:
            ae = autoencoders[family]
            tokens = grid(logmel[i:i + 1], family).reshape(-1, ae.dim)
            out, mse = ae.reconstruct(tokens)
            panels.append(ungrid(out.reshape(1, COUNTS[family], -1), family)[0])
            errors.append(float(mse.mean()))
        thumb = grid(logmel[i:i + 1], "thumbnail").reshape(1, -1)
        out, mse = autoencoders["thumbnail"].reconstruct(thumb)
        panels += [thumb.reshape(SHAPES["thumbnail"]), out.reshape(SHAPES["thumbnail"])]
        errors += [None, float(mse.mean())]
        for j, (ax, image, err) in enumerate(zip(axes[i], panels, errors)):
            ax.imshow(image.numpy(), origin="lower", aspect="auto", cmap="magma",
                      vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            head = columns[j] if i == 0 else ""
            ax.set_title("\n".join(t for t in (head, f"MSE {err:.3f}" if err is not None else "")
                                   if t), fontsize=8)
        axes[i][0].set_ylabel(names[i], fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


METRICS = {"map": "clip", "chunk_map": "chunk"}


def sweep_plot(path, rows: list[dict], x: str, *, ys=("map", "chunk_map"), groups=(),
               label: str = "", xlabel: str = "", ylabel: str = "eval mAP", title: str = "",
               logx: bool = False, hlines: dict | None = None) -> Path:
    """Rows (dicts) -> for each metric of ``ys`` (clip mAP solid, chunk mAP...), one line per
    distinct value of the ``groups`` keys (named ``label`` without groups) against ``x``; rows
    missing a metric are left out of its line. String x values give a bar chart instead."""
    def has(r, y):
        return r.get(y) is not None and np.isfinite(float(r[y]))
    if rows and isinstance(rows[0][x], str):
        bars = [(f"{r[x]} ({METRICS.get(y, y)})", float(r[y])) for r in rows for y in ys
                if has(r, y)]
        return bar_plot(path, [b[0] for b in bars], [b[1] for b in bars], ylabel=ylabel,
                        title=title, hlines=hlines)
    series: dict[str, tuple[list, list]] = {}
    for y in ys:
        for r in sorted((r for r in rows if has(r, y)), key=lambda r: float(r[x])):
            name = ", ".join(f"{g} {r[g]}" for g in groups) or label
            xs, values = series.setdefault(f"{name} ({METRICS.get(y, y)} mAP)".strip(), ([], []))
            xs.append(float(r[x]))
            values.append(float(r[y]))
    return line_plot(path, series, xlabel=xlabel or x, ylabel=ylabel, title=title, logx=logx,
                     hlines=hlines)


def training_curves_plot(history: list[dict], path) -> Path:
    """Loss and accuracy per epoch ({epoch, train_loss, val_loss, train_accuracy,
    val_accuracy} rows) in two panels."""
    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(epochs, [h["train_loss"] for h in history], label="train (augmented, smoothed)")
    a.plot(epochs, [h["val_loss"] for h in history], label="validation")
    b.plot(epochs, [h["train_accuracy"] for h in history], label="train (augmented)")
    b.plot(epochs, [h["val_accuracy"] for h in history], label="validation")
    a.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    b.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (a, b):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def reconstruction_curves_plot(history: list[dict], path, loss: str = "mse",
                               masked: bool = True) -> Path:
    """Autoencoder losses per epoch ({epoch, train_loss, val_loss, val_clean, val_mean} rows):
    training (running mean over the epoch, in training mode), held-out reconstruction of clean
    and (``masked``: SpecAugment on) masked inputs, and the held-out loss of predicting the
    per-band mean, on a log scale."""
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [h["train_loss"] for h in history],
            label="train" + (" (masked input)" if masked else ""))
    if masked:
        ax.plot(epochs, [h["val_loss"] for h in history], label="held out, masked input")
    ax.plot(epochs, [h["val_clean"] for h in history], "--",
            label="held out, clean input" if masked else "held out")
    ax.plot(epochs, [h["val_mean"] for h in history], ":", color="gray",
            label="held out, predicting the mean")
    ax.set(xlabel="epoch", ylabel=loss, yscale="log", title="reconstruction loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)
