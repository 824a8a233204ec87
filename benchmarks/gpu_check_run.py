"""The bookkeeping of benchmarks.gpu_check: sizes, rows, timing, and its k-means fallback."""
from __future__ import annotations

import json
import time

import torch

FULL = dict(chunks=2048, enc_chunks=512, hidden=2048, codes=65_536, n_codes=256, niter=20,
            steps=(5, 25), batch=256, kw_chunks=2048, kw_depth=12, head_chunks=50_000,
            head_dim=1024, n_dev=200, n_eval=60, min_s=1.0, level_bins=16)
SMALL = dict(chunks=8, enc_chunks=4, hidden=128, codes=512, n_codes=16, niter=3,
             steps=(2, 8), batch=32, kw_chunks=8, kw_depth=2, head_chunks=400, head_dim=64,
             n_dev=6, n_eval=2, min_s=0.05, level_bins=4)


class Check:
    """Rows, the device, the sizes and the time budget of one run."""

    def __init__(self, device: torch.device, small: bool, budget: float, precisions: list[str]):
        self.device, self.size, self.precisions = device, SMALL if small else FULL, precisions
        self.deadline, self.rows = time.perf_counter() + budget, []

    def add(self, figure: str, **values) -> dict:
        row = {"benchmark": "gpu_check", "figure": figure, "device": self.device.type, **values}
        print(json.dumps(row, sort_keys=True, default=str), flush=True)
        self.rows.append(row)
        return row

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def rate(self, fn, work: float) -> float:
        """``work`` units per second of ``fn()``: one warm-up call, then calls for min_s."""
        fn()
        self.sync()
        reps, start = 0, time.perf_counter()
        while True:
            fn()
            reps += 1
            self.sync()
            elapsed = time.perf_counter() - start
            if elapsed >= self.size["min_s"] or reps >= 50:
                return work * reps / elapsed


def torch_kmeans(x: torch.Tensor, k: int, niter: int, seed: int = 0) -> tuple[torch.Tensor, float]:
    """Lloyd's k-means in float32 on x's device from k random points: (centroids, objective).
    The fallback where faiss is missing; empty clusters keep their centroid."""
    g = torch.Generator().manual_seed(seed)
    c = x[torch.randperm(len(x), generator=g)[:k].to(x.device)].clone()
    x_sq = (x * x).sum(1, keepdim=True)
    for _ in range(niter + 1):
        dist = x_sq - 2 * x @ c.T + (c * c).sum(1)
        best, ids = dist.min(1)
        sums = torch.zeros_like(c).index_add_(0, ids, x)
        count = torch.bincount(ids, minlength=k)[:, None]
        c = torch.where(count > 0, sums / count.clamp_min(1), c)
    return c, float(best.clamp_min(0).sum())
