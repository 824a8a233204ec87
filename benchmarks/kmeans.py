"""k-means for the codebooks: FAISS (bow.bagofwords.codebook) against scikit-learn's KMeans, same
codes.

    python -m benchmarks.kmeans [--data ../shared/data/esc10] [--codes 120000] [--d 256]
                                [--families patch,spectral_envelope] [--threads 1]

Codes: the bottleneck codes of real clips (the first ``--clips`` of ``--data``) under the
paper-sized random encoders of benchmarks.embed_speed (encoders of the same shapes give codes of
the same size; trained ones only move them): ``--codes`` grid patches (8-d), and as many
spectral-envelope crops at random positions (96-d, ``bow.bagofwords.tokens.sample``, as in
autoencoder training) for the wider family. On each family's codes, with D = ``--d`` centroids:
* ``faiss_default``: ``Codebook(CodebookConfig(n_codes=D))`` as fit_codebooks runs it: k-means++, at
most 100
  iterations, 3 restarts, trained on a seeded subsample of D x 256 points
  (``max_points_per_centroid``), objective over all points;
* ``faiss_all``: one run on all the points (no subsample), otherwise the same;
* ``sklearn``: ``KMeans(D, init="k-means++", n_init=1, max_iter=100, random_state=0)`` on all
  the points (its ``inertia_`` is the objective over all points).
Printed per family and method: seconds, the objective (sum of squared distances of all points
to their nearest centroid), and against scikit-learn the time ratio (sklearn s / method s) and
the objective ratio (method / sklearn; below 1 is better). ``--threads`` OpenMP threads for
both libraries (1 by default: on a shared 2-core machine, two spinning OpenMP threads ran
slower than one).

Measured (defaults, 1 thread, ESC-10 codes, 120,000 points, D = 256, 2026-11-21, shared 2-vCPU
AMD EPYC, load 3-4): patches (8-d) FAISS default 2.9 s / all points 1.9 s / scikit-learn 7.0 s,
objective ratios 1.014 / 1.002; spectral envelopes (96-d) 14.4 s / 9.2 s / 13.3 s, objective
ratios 1.008 / 1.003.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import torch
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

from benchmarks.common import emit, machine
from benchmarks.embed_speed import SHARED, clip_subset, random_bow
from bow.bagofwords.codebook import Codebook, CodebookConfig
from bow.bagofwords.corpus import logmel_clips
from bow.bagofwords.model import family_codes, load_encoder
from bow.bagofwords.tokens import COUNTS, sample
from bow.data.datasets import load_dataset
from bow.runtime import generator


def real_codes(logmel, artifacts: Path, family: str, n: int) -> np.ndarray:
    """(at most n, d) float32 codes of ``family`` tokens of the (chunks, 96, 100) log-mel:
    grid tokens in order for the patches, random crops for the other families."""
    ae = load_encoder(artifacts / "autoencoders-random" / f"{family}.pt")
    if family == "patch":
        return family_codes(ae, logmel[:-(-n // COUNTS[family])], family).numpy()[:n]
    per = -(-n // logmel.shape[0])
    return ae.encode(sample(logmel.float(), family, per, generator=generator(0))[:n]).numpy()


def objective(x: np.ndarray, centroids: np.ndarray) -> float:
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(np.ascontiguousarray(centroids, np.float32))
    return float(index.search(x, 1)[0].sum(dtype=np.float64))


def run_methods(x: np.ndarray, d: int, seed: int = 0) -> dict[str, tuple[float, float]]:
    """{method: (seconds, objective over all points)}."""
    out = {}
    for name, kw in (("faiss_default", {}),
                     ("faiss_all", {"nredo": 1, "max_points_per_centroid": len(x)})):
        start = time.perf_counter()
        book = Codebook(CodebookConfig(n_codes=d, seed=seed, **kw), gpu=False).fit(x)
        out[name] = (time.perf_counter() - start, book.objective_)
    start = time.perf_counter()
    km = KMeans(d, init="k-means++", n_init=1, max_iter=100, random_state=seed).fit(x)
    out["sklearn"] = (time.perf_counter() - start, objective(x, km.cluster_centers_))
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=SHARED / "data" / "esc10")
    p.add_argument("--codes", type=int, default=120_000)
    p.add_argument("--clips", type=int, default=400, help="clips of --data to take codes from")
    p.add_argument("--d", type=int, default=256, help="number of centroids D")
    p.add_argument("--families", default="patch,spectral_envelope")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="kmeans_") as tmp, threadpool_limits(args.threads):
        data = clip_subset(args.data, len(load_dataset(args.data).clips), Path(tmp) / "data")
        art = Path(tmp) / "artifacts"
        random_bow(data, art)
        logmel, _, _ = logmel_clips(load_dataset(data).clips[:args.clips])
        for family in args.families.split(","):
            x = np.ascontiguousarray(real_codes(logmel, art, family, args.codes), np.float32)
            results = run_methods(x, args.d)
            ref_s, ref_obj = results["sklearn"]
            for method, (seconds, obj) in results.items():
                rows.append({"benchmark": "kmeans", "family": family, "n_codes": len(x),
                             "dim": x.shape[1], "d": args.d, "method": method,
                             "threads": args.threads, "seconds": seconds, "objective": obj,
                             "time_ratio_sklearn_over": ref_s / seconds,
                             "objective_ratio_to_sklearn": obj / ref_obj,
                             "load": os.getloadavg()[0], **machine()})
    emit(rows)


if __name__ == "__main__":
    main()
