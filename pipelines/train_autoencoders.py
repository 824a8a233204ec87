"""Stage 1 of the bag-of-words model: one autoencoder per token family.

    python -m pipelines.train_autoencoders --data DIR [--artifacts artifacts] [--encoder random]

Reads the training clips (``--train-splits``), computes their log-mel once, holds out a seeded
``val_fraction`` of the readable ones for validation (early stopping) and trains the four
autoencoders (``bow.bagofwords.autoencoder``) in turn. Writes ``<artifacts>/autoencoders/<family>.pt``,
``history.json`` (per-epoch train and validation MSE, the clips skipped and why),
``timings.json`` (training seconds), ``config.json`` and ``fingerprint.json``. Checkpoints go
to ``.checkpoints-<fingerprint>/`` after every epoch; a run that is stopped (even by SIGKILL)
resumes from them, with the optimiser and random generator states, so it ends with the same
models as a run that never stopped; a family already saved with this fingerprint is not trained
again; checkpoints are deleted when the stage completes (with any left by runs of other
configurations). ``--encoder random`` writes the untrained, seeded initialisations (with the
input standardisation fitted on the training tokens) to ``autoencoders-random/``: the control.

Unreadable clips (``bow.audio.load.AudioError``) and rows of the labels file that are not clips
(``Dataset.invalid``) are skipped, listed in history.json and printed (``--strict``: exit
status 3 if any). The model files and history.json hold no wall-clock times, so the same seed,
config and clips give the same bytes on CPU; the times are in timings.json.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bow.bagofwords.autoencoder import Autoencoder
from bow.data.clips import clips_fingerprint, holdout, logmel_clips, subset
from bow.data.datasets import Clip, Dataset, load_dataset
from bow.runtime import resolve_device
from bow.io.stage import (ArtifactError, clear_done, is_done, load_torch, locked, mark_done,
                       read_fingerprint, read_json, stage_fingerprint, write_json)
from bow.bagofwords.tokens import FAMILIES
from pipelines.cli import (add_config_args, add_strict_option, clean_errors, common_parser,
                           config_from_args, report_skipped)

ENCODERS = ("trained", "random")


@dataclass(frozen=True)
class TrainAutoencodersConfig:
    """Autoencoder training. Paper values: F = 10, hidden 2048, dropout 0.5, MSE.

    Not in the paper, chosen here: Adam, lr 1e-3, batch 256 random crops, epochs of 100 steps,
    at most 6 epochs (600 steps, 153,600 crops per family), early stopping after 3 epochs
    without a lower validation MSE (the best epoch is kept).

    Why 600 steps: ``python -m benchmarks.autoencoder_budget --budgets 100,300,600
    --codebook-seeds 0,1,2`` on ESC-10 (autoencoders and D = 256 codebooks fitted on folds 1-4;
    probe = standardise + logistic regression C = 0.1 on sqrt of the clip-mean counts; fold5 =
    clean test on fold 5, cv5 = 5-fold probe with the representation fitted on folds 1-4; mean
    (and sd) over 3 k-means seeds; 1 thread, 1,134 s of CPU):

        encoders                 fold5          cv5            cv5 of one family alone
                                                               patch  band   spectral  thumb
        random (the control)     0.829 (0.030)  0.812 (0.015)  0.770  0.655  0.763     0.512
        trained 100 steps        0.804 (0.026)  0.734 (0.002)  0.747  0.502  0.507     0.496
        trained 300 (best 200)   0.825 (0.000)  0.805 (0.000)  0.799  0.488  0.523     0.630
        trained 600              0.825 (0.000)  0.808 (0.005)  0.836  0.488  0.517     0.618

    Within the 600 steps a 2-core CPU could afford here, training did NOT beat the random
    control on the full 4 x 256 vector: 300-600 steps tie with it (within the k-means spread),
    and 100 steps (about the quick prototype's budget in ../shared/FINDINGS.md) is clearly
    worse. Per family it differs: trained patch codes beat random ones from 300 steps on
    (0.836 vs 0.770 at 600 steps, above every 4-family vector) and so do thumbnails, while
    trained envelope codes classify far worse than random ones (0.49-0.52 vs 0.66-0.76). The
    default is the largest measured budget (the patch validation MSE was still falling);
    larger budgets were not measured: with a GPU, raise ``epochs`` and let early stopping end
    the training, and compare with ``--encoder random`` before claiming a gain. (A single
    k-means seed per point had shown trained 600 at 0.850 / 0.830 vs random 0.800 / 0.795:
    the codebook's randomness alone moves these scores by a few points.)
    """
    encoder: str = field(default="trained", metadata={"help": "trained, or random: untrained "
                         "seeded encoders of the same shapes (a control)"})
    factor: int = field(default=10, metadata={"help": "bottleneck = token size / factor "
                        "(10 or 20)"})
    hidden: int = field(default=2048, metadata={"help": "hidden layer width"})
    dropout: float = field(default=0.5, metadata={"help": "dropout after each hidden layer"})
    optimizer: str = field(default="adam", metadata={"help": "adam, adamw or sgd (momentum 0.9)"})
    lr: float = field(default=1e-3, metadata={"help": "learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "weight decay"})
    batch_size: int = field(default=256, metadata={"help": "random crops per step"})
    epochs: int = field(default=6, metadata={"help": "at most this many epochs"})
    steps_per_epoch: int = field(default=100, metadata={"help": "optimiser steps per epoch"})
    patience: int = field(default=3, metadata={"help": "early stopping: epochs without a "
                          "better validation MSE"})
    val_fraction: float = field(default=0.1, metadata={"help": "fraction of the training clips "
                                "held out for validation (seeded)"})
    max_val_tokens: int = field(default=20_000, metadata={"help": "validation tokens per family "
                                "(seeded subset of the held-out grid tokens)"})
    max_clips: int | None = field(default=None, metadata={"help": "train on a seeded subset of "
                                  "at most this many training clips (none: all)"})
    train_splits: tuple[str, ...] = field(default=("train",), metadata={"help": "splits to "
                                          "train on (FSD50K: train; labels.csv: e.g. 1,2,3,4)"})
    seed: int = field(default=0, metadata={"help": "seed for initialisation, crops, dropout"})

    def __post_init__(self):
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")


def output_dir(artifacts: Path, encoder: str) -> Path:
    """Where the autoencoders of kind ``encoder`` (trained | random) live."""
    return Path(artifacts) / ("autoencoders" if encoder == "trained" else f"autoencoders-{encoder}")


def training_clips(dataset: Dataset, splits: tuple[str, ...]) -> list[Clip]:
    """The clips of the training splits; a clear error when there are none."""
    clips = dataset.select(splits)
    if not clips:
        raise SystemExit(f"{dataset.root}: no clips in the training split(s) {list(splits)}; "
                         f"the data set has splits {dataset.splits} (set --train-splits)")
    return clips


def _model(cfg: TrainAutoencodersConfig, family: str, device, checkpoint, progress):
    return Autoencoder(family, factor=cfg.factor, hidden=cfg.hidden, dropout=cfg.dropout,
                       optimizer=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay,
                       batch_size=cfg.batch_size,
                       epochs=cfg.epochs if cfg.encoder == "trained" else 0,
                       steps_per_epoch=cfg.steps_per_epoch, patience=cfg.patience,
                       max_val_tokens=cfg.max_val_tokens, seed=cfg.seed, device=device,
                       checkpoint=checkpoint, progress=progress)


def _saved_fingerprint(path: Path) -> str | None:
    try:
        return load_torch(path, "bow autoencoder")["meta"].get("fingerprint")
    except (ArtifactError, KeyError, TypeError, AttributeError):  # missing or not ours: train it
        return None


def _split_held_out(logmel: torch.Tensor, offsets: np.ndarray, held: np.ndarray):
    """(n, 96, 100) log-mel of clips (clip i: rows offsets[i]:offsets[i+1]) -> (the rows of the
    clips not ``held``, those of the ``held`` ones), in clip order. The first is ``logmel``'s
    own memory, compacted in place (no second copy of the training log-mel)."""
    val = [logmel[offsets[i]:offsets[i + 1]] for i in np.flatnonzero(held)]
    val = torch.cat(val) if val else logmel[:0].clone()
    dst = 0
    for i in np.flatnonzero(~held):
        start, n = int(offsets[i]), int(offsets[i + 1] - offsets[i])
        if start != dst:
            logmel[dst:dst + n] = logmel[start:start + n].clone()
        dst += n
    return logmel[:dst], val


def _timings(out: Path, fingerprint: str) -> dict:
    try:
        saved = read_json(out / "timings.json")
    except ArtifactError:
        return {"fingerprint": fingerprint, "families": {}}
    return saved if saved.get("fingerprint") == fingerprint else \
        {"fingerprint": fingerprint, "families": {}}


def run(data: Path, artifacts: Path, config: TrainAutoencodersConfig = TrainAutoencodersConfig(),
        device: str = "auto", progress: bool = True) -> Path:
    """Train (or initialise) the four autoencoders; return their folder. Skips if unchanged."""
    dataset = load_dataset(data)
    train = subset(training_clips(dataset, config.train_splits), config.max_clips, config.seed)
    inputs = {"clips": clips_fingerprint(train)}
    fingerprint = stage_fingerprint(config, inputs)
    out = output_dir(artifacts, config.encoder)
    with locked(out, "train_autoencoders"):
        if is_done(out, fingerprint):
            return out
        clear_done(out)
        dev = resolve_device(device)
        logmel, offsets, skipped = logmel_clips(train, dev, progress=progress,
                                                desc="log-mel train")
        bad = {fname for fname, _ in skipped}
        readable = [c for c in train if c.fname not in bad]
        if len(readable) < 2:
            raise SystemExit(f"{data}: {len(readable)} readable clip(s) in the training split(s) "
                             f"{list(config.train_splits)} ({len(skipped)} skipped); need 2 "
                             "to train and validate")
        fit_clips, val_clips = holdout(readable, config.val_fraction, config.seed)
        held = {c.fname for c in val_clips}
        logmel, val_logmel = _split_held_out(logmel, offsets,
                                             np.array([c.fname in held for c in readable]))
        checkpoints = out / f".checkpoints-{fingerprint[:16]}"
        summary = {"fit_clips": len(fit_clips), "val_clips": len(val_clips),
                   "fit_chunks": int(logmel.shape[0]), "val_chunks": int(val_logmel.shape[0]),
                   "skipped": skipped, "invalid": dataset.invalid, "families": {}}
        timings = _timings(out, fingerprint)
        for family in FAMILIES:
            path = out / f"{family}.pt"
            if _saved_fingerprint(path) != fingerprint:
                start = time.perf_counter()
                ae = _model(config, family, dev, checkpoints / f"{family}.pt", progress)
                ae.fit(logmel, val_logmel)
                epoch_seconds = [h.pop("seconds", None) for h in ae.history_]  # not in the model
                ae.save(path, meta={"fingerprint": fingerprint})
                timings["families"][family] = {"seconds": time.perf_counter() - start,
                                               "epoch_seconds": epoch_seconds}
                write_json(out / "timings.json", timings)
            saved = Autoencoder.load(path)
            summary["families"][family] = {"best_epoch": saved.best_epoch_,
                                           "val_mse": saved.history_[saved.best_epoch_]["val_mse"],
                                           "history": saved.history_}
        write_json(out / "history.json", summary)
        mark_done(out, fingerprint, config, inputs)
        for stale in out.glob(".checkpoints-*"):  # this run's, and any left by earlier runs
            shutil.rmtree(stale, ignore_errors=True)
    return out


def main(argv=None) -> None:
    parser = common_parser("Train the bag-of-words autoencoders (one per token family).")
    add_strict_option(parser)
    add_config_args(parser, TrainAutoencodersConfig)
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(TrainAutoencodersConfig, args)
    except ValueError as e:
        parser.error(str(e))
    with clean_errors("train_autoencoders"):
        before = read_fingerprint(output_dir(args.artifacts, cfg.encoder))
        out = run(args.data, args.artifacts, cfg, device=args.device)
        if before is not None and read_fingerprint(out) == before:
            print(f"{out}: up to date (same config and inputs), skipped")
        summary = read_json(out / "history.json", "training summary")
    print(f"autoencoders ({cfg.encoder}) in {out}: {summary['fit_clips']} clips "
          f"({summary['fit_chunks']} chunks) fitted, {summary['val_clips']} held out, "
          f"{len(summary['skipped'])} unreadable")
    for family in FAMILIES:
        s = summary["families"][family]
        print(f"  {family:18s} validation MSE {s['val_mse']:.4f} (standardised; 1.0 = the mean) "
              f"at epoch {s['best_epoch']}")
    report_skipped("train_autoencoders", summary["skipped"] + summary.get("invalid", []),
                   f"'skipped' and 'invalid' in {out / 'history.json'}", args.strict)


if __name__ == "__main__":
    main()
