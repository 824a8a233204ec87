"""Training and prediction speed of a classification head, against the machine's matmul floor.

    python -m benchmarks.heads_speed [--chunks 20000] [--dim 4096] [--classes 200] [--width 512]
                                     [--epochs 2] [--threads 2] [--device cpu]

Synthetic bag-of-words counts shaped like FSD50K with D = 1024 (4 x 1024 count columns,
200 classes). A training step costs about 6 (D W + W^2 + W C) FLOPs per chunk (forward 2,
backward 4), a prediction 2 (D W + W^2 + W C); the floor is the measured matmul FLOP/s
divided by that. The FSD50K development set holds roughly 300,000 chunks of 1 s: divide by the
printed training chunks/s for the seconds an epoch takes.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from benchmarks.common import emit, machine, matmul_flops, timed
from bow.heads.model import Head, HeadConfig
from bow.io.featureset import FeatureSet


def synthetic(n_chunks: int, dim: int, n_classes: int, seed: int = 0) -> FeatureSet:
    """Poisson counts (mostly zeros, ~143 tokens per chunk), one chunk per clip, random labels."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(143 / dim, size=(n_chunks, dim)).astype(np.uint16)
    labels = (rng.random((n_chunks, n_classes)) < 0.02).astype(np.uint8)
    labels[np.arange(n_chunks), rng.integers(0, n_classes, n_chunks)] = 1
    return FeatureSet(counts, np.arange(n_chunks + 1, dtype=np.int64), labels,
                      np.array([f"c{i}" for i in range(n_chunks)], dtype=object),
                      np.array(["train"] * n_chunks, dtype=object),
                      [f"class{k}" for k in range(n_classes)], np.ones(dim, dtype=bool))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chunks", type=int, default=20000)
    p.add_argument("--dim", type=int, default=4096)
    p.add_argument("--classes", type=int, default=200)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    flops = matmul_flops(args.threads, args.device)
    data = synthetic(args.chunks, args.dim, args.classes)
    val = data.subset(np.arange(min(2000, args.chunks)))
    per_chunk = 2 * (args.dim * args.width + args.width ** 2 + args.width * args.classes)
    config = HeadConfig(width=args.width, max_epochs=args.epochs, patience=args.epochs)
    head, fit_s = timed(Head(config, args.device).fit, data, val)
    # fit also predicts the validation chunks once per epoch: count them at prediction cost
    _, pred_s = timed(head.predict_chunks, data.chunks)
    pred_rate = args.chunks / pred_s
    train_s = fit_s - args.epochs * len(val) / pred_rate
    train_rate = args.epochs * args.chunks / train_s
    emit([{**machine(), "threads": args.threads, "device": args.device,
           "matmul_gflops": flops / 1e9, "chunks": args.chunks, "dim": args.dim,
           "width": args.width, "classes": args.classes,
           "train_chunks_per_s": train_rate, "train_floor": flops / (3 * per_chunk),
           "train_of_floor": train_rate / (flops / (3 * per_chunk)),
           "predict_chunks_per_s": pred_rate, "predict_floor": flops / per_chunk,
           "predict_of_floor": pred_rate / (flops / per_chunk)}])


if __name__ == "__main__":
    main()
