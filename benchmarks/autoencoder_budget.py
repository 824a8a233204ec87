"""How much autoencoder training does it take to beat random encoders? (ESC-10, linear probe)

    python -m benchmarks.autoencoder_budget [--data ../shared/data/esc10] [--budgets 100,300,600]

The bag-of-words pipeline of the stages (bow.bagofwords.autoencoder, bow.bagofwords.codebook,
bow.bagofwords.model), fitted on ESC-10 folds 1-4 (a seeded 10% of those clips held out for the
autoencoders' validation loss, as in pipelines.train_autoencoders), with:
* the control: untrained, seeded encoders (``epochs=0``: the training's own initialisation);
* the same encoders trained for each budget (optimiser steps of ``--batch-size`` random crops
  per family), one run resumed from its checkpoint from budget to budget (early stopping as in
  the stage, so a budget may end at an earlier best epoch).
For each: codebooks (D = 256, the stage's k-means settings) on the folds 1-4 codes, chunk
histograms, clip vector = mean of the chunk counts, sqrt, and the linear probe of
../shared/FINDINGS.md (standardise + LogisticRegression C = 0.1). Two scores:
* ``fold5``: the probe trained on folds 1-4, tested on fold 5 (80 clips; the clean split,
  nothing was fitted on fold 5);
* ``cv5``: the 5-fold probe accuracy over the official folds, the representation still fitted
  on folds 1-4 only, so for 4 of the 5 test folds its unsupervised parts saw the test audio
  (never the labels); less noisy, and it treats the control and trained encoders alike.
Per-family scores use that family's D counts alone. Prints one JSON line per encoder and
budget, then a summary table. ``--threads`` is 1 by default: on a shared 2-core machine one
thread ran 3-4x faster per step than two. With ``--codebook-seeds 0,1,2`` it took 1,346 s
(1,134 s of CPU) there; the results are in the docstring of
pipelines.train_autoencoders.TrainAutoencodersConfig.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from benchmarks.common import machine, matmul_flops
from bow.bagofwords.autoencoder import Autoencoder
from bow.bagofwords.codebook import Codebook, CodebookConfig
from bow.bagofwords.corpus import logmel_clips
from bow.bagofwords.encoder import AutoencoderConfig
from bow.bagofwords.model import clip_vector, family_codes, histograms, normalise
from bow.bagofwords.tokens import COUNTS, FAMILIES
from bow.data.clips import holdout
from bow.data.datasets import load_dataset

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def probe_accuracy(x_train, y_train, x_test, y_test) -> float:
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000))
    return float((model.fit(x_train, y_train).predict(x_test) == y_test).mean())


def scores_for(codes, n_chunks, is_train_chunk, offsets, labels, folds, n_codes, seed):
    """Codebooks (k-means ``seed``) on the training chunks' codes -> probe accuracies."""
    ids = {}
    for family, c in codes.items():
        per_chunk = c.reshape(n_chunks, COUNTS[family], -1)
        book = Codebook(CodebookConfig(n_codes=n_codes, seed=seed), gpu=False).fit(
            per_chunk[is_train_chunk].reshape(-1, c.shape[1]))
        ids[family] = book.assign(c).reshape(n_chunks, COUNTS[family])
    counts = histograms(ids, n_codes)
    clips = np.stack([clip_vector(counts[a:b]) for a, b in zip(offsets[:-1], offsets[1:])])
    clips = normalise(clips, "sqrt")
    scores = {}
    views = {"all": slice(None)}
    views.update({f: slice(i * n_codes, (i + 1) * n_codes) for i, f in enumerate(FAMILIES)})
    for name, cols in views.items():
        x = clips[:, cols]
        test = folds == "5"
        scores[f"fold5_{name}"] = probe_accuracy(x[~test], labels[~test], x[test], labels[test])
        scores[f"cv5_{name}"] = float(np.mean([
            probe_accuracy(x[folds != f], labels[folds != f], x[folds == f], labels[folds == f])
            for f in sorted(set(folds))]))
    return scores


def evaluate(encoders, logmel, offsets, is_train_chunk, labels, folds, n_codes, seeds):
    """Scores averaged over k-means seeds (codes computed once); ``*_sd`` their spread."""
    codes = {f: family_codes(encoders[f], logmel, f).numpy() for f in FAMILIES}
    runs = [scores_for(codes, logmel.shape[0], is_train_chunk, offsets, labels, folds,
                       n_codes, seed) for seed in seeds]
    out = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
    out.update({f"{k}_sd": float(np.std([r[k] for r in runs])) for k in ("fold5_all", "cv5_all")})
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=SHARED / "data" / "esc10")
    p.add_argument("--budgets", default="100,300,600", help="optimiser steps per family")
    p.add_argument("--steps-per-epoch", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--n-codes", type=int, default=256)
    p.add_argument("--codebook-seeds", default="0", help="k-means seeds to average over")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    start = time.perf_counter()
    info = {**machine(), "threads": args.threads,
            "matmul_gflops": round(matmul_flops(args.threads, seconds=1.0) / 1e9, 1)}
    print(json.dumps(info), flush=True)

    dataset = load_dataset(args.data)
    clips = dataset.clips
    train = [c for c in clips if c.split in {"1", "2", "3", "4"}]
    fit_clips, val_clips = holdout(train, 0.1, args.seed)
    logmel, offsets, skipped = logmel_clips(clips)
    assert not skipped, skipped
    folds = np.array([c.split for c in clips])
    labels = np.array([c.labels[0] for c in clips])
    chunk_clip = np.repeat(np.arange(len(clips)), np.diff(offsets))
    is_train_chunk = np.isin(folds[chunk_clip], ["1", "2", "3", "4"])
    index = {c.fname: i for i, c in enumerate(clips)}
    pick = lambda cs: torch.from_numpy(np.concatenate(  # noqa: E731
        [np.arange(offsets[index[c.fname]], offsets[index[c.fname] + 1]) for c in cs]))
    fit_lm, val_lm = logmel[pick(fit_clips)], logmel[pick(val_clips)]

    rows = []
    common = dict(hidden=args.hidden, batch_size=args.batch_size, lr=args.lr,
                  steps_per_epoch=args.steps_per_epoch, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        for steps in [0] + [int(b) for b in args.budgets.split(",")]:
            t0 = time.perf_counter()
            config = AutoencoderConfig(epochs=steps // args.steps_per_epoch, **common)
            encoders = {f: Autoencoder(f, config, checkpoint=None if steps == 0 else
                                       Path(tmp) / f"{f}.pt").fit(fit_lm, val_lm)
                        for f in FAMILIES}
            train_s = time.perf_counter() - t0
            scores = evaluate(encoders, logmel, offsets, is_train_chunk, labels, folds,
                              args.n_codes, [int(v) for v in args.codebook_seeds.split(",")])
            row = {"encoder": "random" if steps == 0 else "trained", "steps": steps,
                   "crops": steps * args.batch_size,
                   **{f"best_epoch_{f}": e.best_epoch_ for f, e in encoders.items()},
                   **{f"val_mse_{f}": round(e.history_[e.best_epoch_]["val_mse"], 4)
                      for f, e in encoders.items()},
                   **{k: round(v, 4) for k, v in scores.items()},
                   "train_seconds": round(train_s, 1),
                   "eval_seconds": round(time.perf_counter() - t0 - train_s, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            print(f"[{time.perf_counter() - start:.0f} s]", file=sys.stderr, flush=True)
    keys = (["encoder", "steps", "fold5_all", "fold5_all_sd", "cv5_all", "cv5_all_sd"]
            + [f"cv5_{f}" for f in FAMILIES] + [f"val_mse_{f}" for f in FAMILIES]
            + ["train_seconds"])
    print()
    table = [[str(r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(t[i]) for t in table)) for i, k in enumerate(keys)]
    for line in [keys] + table:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths)))
    print(f"total {time.perf_counter() - start:.0f} s wall, {time.process_time():.0f} s CPU",
          file=sys.stderr)


if __name__ == "__main__":
    main()
