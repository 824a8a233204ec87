"""The K nearest centroids of each code, exactly: a function of the code's bits and the
centroids alone.

Why not faiss's flat search: ``faiss.IndexFlatL2.search`` picks its algorithm per call (a
direct SIMD loop over sum (x - c)^2 below nq * d = 128,000, above it |x|^2 + |c|^2 - 2 x.c from
an OpenBLAS sgemm whose float32 rounding depends on the number of codes in the call and on
faiss's OpenMP thread count), so a token whose nearest centroids are nearly tied moved to
another code with the batch size, the threads or the CPU: a store depended on where and how
its shards ran (issue 17; measured: 2 tokens of ESC-10 moved between two shard sizes).

How (``nearest``): per block of ``ROWS`` codes, float64 distances |c|^2 - 2 x.c (+ |x|^2),
where every product of two float32 values is exact, so whatever the summation order (BLAS
blocking, threads, FMA) each is within (2 d + 4) u (|x|^2 + |c|^2) of the exact value (u = 2^-53;
twice that is used). Where the K-th and the (K+1)-th candidates are further apart than their
bounds the set of the K nearest is certain; the few other codes are decided with exact integer
arithmetic (float32 values are integers times 2^-149), ties to the lowest id. The K are then
ordered, and their distances given, by sum (x - c)^2 computed elementwise in float64 for each
(code, centroid) pair alone, ties to the lowest id: the same numbers whatever the block. Cost:
about 1 % of the embedding time at D = 256 (faiss: 0.2 %).
"""
from __future__ import annotations

import numpy as np

ROWS = 2048              # codes per float64 distance block (memory: ROWS x D x 8 bytes)
_UNIT = 2.0 ** -53       # float64 unit roundoff
_SCALE = 2.0 ** 149      # float32 values times this are integers (2^-149: the smallest subnormal)


def _exact_order(x: np.ndarray, centroids: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """One float32 code (d,) as float64, candidate ids -> the candidates sorted by their exact
    squared distance to it, then by id."""
    xi = [int(v) for v in x * _SCALE]
    exact = [(sum((a - int(b)) ** 2 for a, b in zip(xi, centroids[k] * _SCALE)), int(k))
             for k in candidates]
    return np.array([k for _, k in sorted(exact)], np.int64)


def nearest(codes: np.ndarray, centroids: np.ndarray, k: int = 1
            ) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) float32 codes, (D, d) float32 centroids -> (ids (n, k) int64, squared distances
    (n, k) float64) of each code's k nearest centroids, nearest first (module docstring)."""
    x = np.ascontiguousarray(codes, dtype=np.float32)
    c = np.ascontiguousarray(centroids, dtype=np.float32).astype(np.float64)
    n_codes = c.shape[0]
    c_sq = (c * c).sum(1)
    factor = 2.0 * (2 * c.shape[1] + 4) * _UNIT
    slack = factor * c_sq                            # a candidate's bound, less |x|^2's part
    minus_2ct = -2.0 * c.T
    ids = np.empty((len(x), k), np.int64)
    for i0 in range(0, len(x), ROWS):
        xb = x[i0:i0 + ROWS].astype(np.float64)
        rows = np.arange(len(xb))
        x_slack = 2.0 * factor * (xb * xb).sum(1)
        dis = xb @ minus_2ct
        dis += c_sq
        if k < n_codes:
            chosen = dis.argmin(1)[:, None] if k == 1 else np.argpartition(dis, k, axis=1)[:, :k]
            # a code outside the k can be nearer than one inside when their ranges overlap
            reach = (dis[rows[:, None], chosen] + slack[chosen]).max(1) + x_slack
            dis -= slack
            near = np.count_nonzero(dis <= reach[:, None], axis=1) > k
            for r in np.flatnonzero(near):
                candidates = np.flatnonzero(dis[r] <= reach[r])
                chosen[r] = _exact_order(xb[r], c, candidates)[:k]
        else:
            chosen = np.broadcast_to(np.arange(n_codes), (len(xb), n_codes))
        ids[i0:i0 + len(xb)] = chosen
    dist = ((x[:, None, :].astype(np.float64) - c[ids]) ** 2).sum(-1)
    order = np.lexsort((ids, dist), axis=1)          # by distance, then id
    return np.take_along_axis(ids, order, 1), np.take_along_axis(dist, order, 1)
