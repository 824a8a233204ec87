"""The K nearest centroids of each code, exactly: a function of the code's bits and the
centroids alone.

Why not faiss's flat search: ``faiss.IndexFlatL2.search`` picks its algorithm per call (a
direct SIMD loop over sum (x - c)^2 below nq * d = 128,000, above it |x|^2 + |c|^2 - 2 x.c from
an OpenBLAS sgemm whose float32 rounding depends on the number of codes in the call and on
faiss's OpenMP thread count), so a token whose nearest centroids are nearly tied moved to
another code with the batch size, the threads or the CPU: a store depended on where and how
its shards ran (issue 17; measured: 2 tokens of ESC-10 moved between two shard sizes).

How (``nearest``): per block of ``ROWS`` codes, float32 distances |c|^2 - 2 x.c (+ |x|^2):
whatever the summation order (BLAS blocking, threads, FMA) each is within (2 d + 8) u
(|x|^2 + |c|^2) of the exact value (u = 2^-24; twice that is used). Where the K-th and the
(K+1)-th candidates are further apart than their bounds the set of the K nearest is certain
(all but ~1e-4 of the family codes at D = 256, ~1 % of the frame descriptors at D = 1000); the
other codes go through the same test in float64 (every
product of two float32 values exact, u = 2^-53), and the few left after it are decided with
exact integer arithmetic (float32 values are integers times 2^-149), ties to the lowest id. A
screen can only send a code on to the next, exact one, so the result does not depend on it.
The K are then ordered, and their distances given, by sum (x - c)^2 computed elementwise in
float64 for each (code, centroid) pair alone, ties to the lowest id: the same numbers whatever
the block. The float32 screen, k argmins instead of np.argpartition and the distances summed
one coordinate at a time measured 1.2-2.9x faster than the float64 screen they replaced
(ESC-10 PCA codes, D = 256, K = 1 and 5, one thread; the same ids, distances within 1e-15
relative: now summed in a fixed order). Then (issue 22) the float32 screen became one GEMM
with |c|^2 folded in and k + 1 passes over each block (six before), the centroids' constants
are kept per codebook (``Centroids``), and ``distances=False`` orders the K from the screen
where their ranges are apart: frame words, D = 1,000, K = 3, 0.38 -> 0.20 ms a chunk and
stream, the same ids (tests/bagofwords/test_codebook.py).
"""
from __future__ import annotations

import numpy as np

ROWS = 2048              # codes per distance block (memory: ROWS x D x 4 bytes)
SMALL = 512              # (code, centroid) pairs below which distances are summed at once
_UNIT = 2.0 ** -53       # float64 unit roundoff
_UNIT32 = 2.0 ** -24     # float32 unit roundoff
_SCALE = 2.0 ** 149      # float32 values times this are integers (2^-149: the smallest subnormal)


def _exact_order(x: np.ndarray, centroids: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """One float32 code (d,) as float64, candidate ids -> the candidates sorted by their exact
    squared distance to it, then by id."""
    xi = [int(v) for v in x * _SCALE]
    exact = [(sum((a - int(b)) ** 2 for a, b in zip(xi, centroids[k] * _SCALE)), int(k))
             for k in candidates]
    return np.array([k for _, k in sorted(exact)], np.int64)


def _smallest(dis: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(m, D) -> ((m, k) ids of k smallest values per row, (m, k) those values, (m,) the
    (k+1)-th smallest value), by k argmins and a min (SIMD; 5-8x faster than np.argpartition
    for k = 5 of 256); any k smallest do (the screens check the set). Overwrites the chosen
    entries of ``dis`` with inf."""
    rows = np.arange(len(dis))
    ids = np.empty((len(dis), k), np.int64)
    values = np.empty((len(dis), k), dis.dtype)
    for i in range(k):
        ids[:, i] = dis.argmin(1)
        values[:, i] = dis[rows, ids[:, i]]
        dis[rows, ids[:, i]] = np.inf
    return ids, values, dis.min(1)


def _squared_distances(x: np.ndarray, c: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(n, d) float32 codes, (D, d) float64 centroids, (n, k) ids -> (n, k) float64
    sum_j (x_j - c_j)^2, summed in the order j = 0 .. d - 1 (a function of the pair alone):
    one coordinate at a time over all pairs, or for a few pairs by ``np.add.accumulate``, the
    same sequential sums (measured: 60 codes of 80 dimensions, K = 3, 0.07 ms instead of 0.43;
    from ~1,500 pairs on the loop is faster)."""
    if ids.size < SMALL:
        diff = x[:, None, :].astype(np.float64) - c[ids]
        diff *= diff
        return np.add.accumulate(diff, axis=2)[..., -1]
    out = np.zeros(ids.shape, np.float64)
    for j in range(x.shape[1]):
        diff = x[:, j, None].astype(np.float64) - c[ids, j]
        out += diff * diff
    return out


def _factor(d: int, unit: float) -> float:
    """Bound factor: each computed |c|^2 - 2 x.c of d-dimensional float codes (any summation
    order, with or without FMA; |c|^2 rounded to the dtype, added or folded into the product
    as one more term) is within (2 d + 8) u (|x|^2 + |c|^2) of the exact value (products of
    float32 values are exact in float64, not in float32, which the 8 covers); twice that."""
    return 2.0 * (2 * d + 8) * unit


def _screen32(x: np.ndarray, aug: np.ndarray, slack: np.ndarray, k: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float32 codes x (m, d), ``aug`` = [-2 C^T; |c|^2] (d + 1, D) float32 and each
    centroid's bound less |x|^2's part, ``slack`` (D,) -> (chosen (m, k) ids, undecided (m,)
    bool, ordered (m,) bool: rows whose chosen are surely in order of distance). One GEMM,
    [x, 1] @ aug, gives every |c|^2 - 2 x.c; a code outside the chosen can be as near as one
    inside only if the (k+1)-th smallest value, less the largest bound, reaches the chosen's
    largest value plus its bound: a superset of ``_screen64``'s test, in k + 1 passes over the
    block instead of six. The chosen come out by increasing value; two neighbours are surely in
    order when their ranges are apart."""
    x_slack = 2.0 * _factor(x.shape[1], _UNIT32) * np.einsum("ij,ij->i", x, x,
                                                             dtype=np.float64)
    dis = np.hstack([x, np.ones((len(x), 1), np.float32)]) @ aug
    chosen, values, after = _smallest(dis, k)
    low, high = values - slack[chosen], values + slack[chosen]
    reach = high.max(1) + x_slack
    ordered = (low[:, 1:] - high[:, :-1] > x_slack[:, None]).all(1)
    return chosen, after - slack.max() <= reach, ordered


def _screen64(x: np.ndarray, c: np.ndarray, c_sq: np.ndarray, k: int):
    """float64 codes x (m, d) and centroids -> (chosen (m, k) ids, undecided (m,) bool: rows
    where a code outside ``chosen`` may be as near as one inside, distances less their bounds
    (m, D), reach (m,)). Products of float32 values are exact in float64."""
    factor = _factor(c.shape[1], _UNIT)
    slack = factor * c_sq                                # a candidate's bound, less |x|^2's part
    dis = x @ (-2.0 * c.T)
    dis += c_sq
    chosen, values, _ = _smallest(dis.copy(), k)
    reach = (values + slack[chosen]).max(1) + 2.0 * factor * (x * x).sum(1)
    dis -= slack
    return chosen, np.count_nonzero(dis <= reach[:, None], axis=1) > k, dis, reach


class Centroids:
    """(D, d) float32 centroids with what every search needs from them alone (float64 copy,
    squared norms, [-2 C^T; |c|^2], bounds), computed once: a codebook keeps one (a HEAR call on
    a 5 s clip searches six codebooks; measured once, 12.1 -> 10.3 ms a call with it)."""

    def __init__(self, centroids: np.ndarray):
        self.source = centroids
        self.c32 = np.ascontiguousarray(centroids, dtype=np.float32)
        self.c = self.c32.astype(np.float64)
        self.c_sq = (self.c * self.c).sum(1)
        self.aug = np.vstack([-2.0 * self.c32.T, self.c_sq.astype(np.float32)[None]])
        self.slack32 = _factor(self.c.shape[1], _UNIT32) * self.c_sq


def nearest(codes: np.ndarray, centroids: np.ndarray | Centroids, k: int = 1,
            distances: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """(n, d) float32 codes, (D, d) float32 centroids (or their ``Centroids``) -> (ids (n, k)
    int64, squared distances (n, k) float64) of each code's k nearest centroids, nearest first
    (module docstring). ``distances=False``: (ids, None), the same ids; the exact distances are
    then computed only for the codes whose k nearest the float32 screen could not put surely
    in order (~1 % at D = 1000, K = 3: the rank and uniform weightings need the order, not the
    distances)."""
    x = np.ascontiguousarray(codes, dtype=np.float32)
    prepared = centroids if isinstance(centroids, Centroids) else Centroids(centroids)
    c, c_sq, aug, slack32 = prepared.c, prepared.c_sq, prepared.aug, prepared.slack32
    n_codes = c.shape[0]
    ids = np.empty((len(x), k), np.int64)
    ordered = np.zeros(len(x), bool)                 # ids[i] surely by distance, then id
    for i0 in range(0, len(x), ROWS):
        xb = x[i0:i0 + ROWS]
        if k < n_codes:
            chosen, undecided, ordered[i0:i0 + len(xb)] = _screen32(xb, aug, slack32, k)
            ordered[i0:i0 + len(xb)] &= ~undecided
            sub = np.flatnonzero(undecided)
            if len(sub):
                x64 = xb[sub].astype(np.float64)
                chosen64, undecided, dis, reach = _screen64(x64, c, c_sq, k)
                for r in np.flatnonzero(undecided):
                    candidates = np.flatnonzero(dis[r] <= reach[r])
                    chosen64[r] = _exact_order(x64[r], c, candidates)[:k]
                chosen[sub] = chosen64
        else:
            chosen = np.broadcast_to(np.arange(n_codes), (len(xb), n_codes))
        ids[i0:i0 + len(xb)] = chosen
    rows = np.arange(len(x)) if distances else np.flatnonzero(~ordered)
    dist = _squared_distances(x[rows], c, ids[rows])
    order = np.lexsort((ids[rows], dist), axis=1)    # by distance, then id
    ids[rows] = np.take_along_axis(ids[rows], order, 1)
    return ids, (np.take_along_axis(dist, order, 1) if distances else None)
