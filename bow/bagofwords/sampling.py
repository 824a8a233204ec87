"""A seeded sample of chunks in one streaming pass: bottom-k of a keyed hash of (clip, chunk).

Each chunk gets a 64-bit key that depends only on the seed, its clip's ``fname`` and its index
in the clip (``chunk_keys``: BLAKE2b of the seed and fname, then splitmix64 of that plus the
index). The sample is the ``k`` chunks with the smallest keys: every chunk is in it with the same
probability k / N, and it is the same set whatever order the clips come in or however they are
split into shards (bottom-k sketches merge: the bottom k of the shards' bottom k's). Keys tie
with probability under N·k / 2^64 (3e-7 for AudioSet's 20.9 M chunks and k = 320,000).

``BottomK`` keeps the k smallest keys seen so far in a max-heap and hands out one storage slot
per kept chunk (a chunk pushed out gives its slot to the newcomer), so the caller stores only
the chunks it is told to (``RowStore``: blocks allocated as slots are first used): memory is
at most k rows, whatever N is. Bookkeeping: 40 bytes a slot (heap
entry, clip and chunk index, key) plus Python's heap tuples (~100 bytes).

Cost: N key computations (vectorised per clip) and about k·(1 + ln(N / k)) admissions, each a
heap operation and one stored row; the rest are rejected by one comparison.
"""
from __future__ import annotations

import hashlib
import heapq

import numpy as np
import torch

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """(n,) uint64 -> (n,) uint64, the splitmix64 finaliser (a bijection with good mixing)."""
    with np.errstate(over="ignore"):
        x = x + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def chunk_keys(fname: str, n: int, seed: int) -> np.ndarray:
    """Keys of chunks 0..n-1 of clip ``fname``: (n,) uint64, a function of (seed, fname, index)."""
    base = hashlib.blake2b(f"{seed}\x00{fname}".encode(), digest_size=8).digest()
    with np.errstate(over="ignore"):
        return _splitmix64(np.uint64(int.from_bytes(base, "little"))
                           + np.arange(n, dtype=np.uint64) * _GOLDEN)


class BottomK:
    """The k smallest keys offered so far, each with a storage slot in [0, k).

    ``offer(clip, keys)`` returns the (chunk index, slot) pairs admitted: store those chunks'
    rows at those slots (a later admission may reuse a slot: the newer row wins).
    """

    def __init__(self, k: int):
        if k < 1:
            raise ValueError(f"sample size must be >= 1, got {k}")
        self.k = k
        self.heap: list[tuple[int, int]] = []          # (-key, slot): the largest key on top
        self.clip = np.zeros(0, dtype=np.int64)         # per slot, grown as slots are handed out
        self.index = np.zeros(0, dtype=np.int64)
        self.key = np.zeros(0, dtype=np.uint64)
        self.seen = 0

    def _grow(self, size: int) -> None:
        if size > len(self.clip):
            extra = min(self.k, max(size, 2 * len(self.clip), 1024)) - len(self.clip)
            self.clip = np.concatenate([self.clip, np.zeros(extra, np.int64)])
            self.index = np.concatenate([self.index, np.zeros(extra, np.int64)])
            self.key = np.concatenate([self.key, np.zeros(extra, np.uint64)])

    def offer(self, clip: int, keys: np.ndarray) -> list[tuple[int, int]]:
        """Clip number ``clip`` with chunk keys (n,) uint64 -> admitted [(chunk index, slot)]."""
        self.seen += len(keys)
        admitted = []
        full = len(self.heap) >= self.k
        candidates = (np.flatnonzero(keys < np.uint64(-self.heap[0][0])) if full
                      else range(len(keys)))
        for i in candidates:
            key = int(keys[i])
            if len(self.heap) < self.k:
                slot = len(self.heap)
                self._grow(slot + 1)
                heapq.heappush(self.heap, (-key, slot))
            elif key < -self.heap[0][0]:
                slot = heapq.heapreplace(self.heap, (-key, self.heap[0][1]))[1]
            else:
                continue
            self.clip[slot], self.index[slot], self.key[slot] = clip, i, key
            admitted.append((int(i), slot))
        return admitted

    def order(self) -> np.ndarray:
        """(m,) slots of the sample sorted by (clip number, chunk index): the corpus order."""
        m = len(self.heap)
        return np.lexsort((self.index[:m], self.clip[:m]))


class RowStore:
    """Rows of shape ``row_shape`` addressed by slot, held in blocks of ``block`` rows allocated
    on first use: memory follows the slots used (at most one block over), and nothing is copied
    as it grows. ``store[i]`` reads and ``store[i] = row`` writes one row."""

    def __init__(self, row_shape: tuple[int, ...], dtype: torch.dtype, block: int = 4096):
        self.row_shape, self.dtype, self.block = tuple(row_shape), dtype, block
        self.blocks: list[torch.Tensor | None] = []

    def _block(self, b: int) -> torch.Tensor:
        while len(self.blocks) <= b:
            self.blocks.append(None)
        if self.blocks[b] is None:
            self.blocks[b] = torch.empty(self.block, *self.row_shape, dtype=self.dtype)
        return self.blocks[b]

    def __getitem__(self, slot: int) -> torch.Tensor:
        return self._block(slot // self.block)[slot % self.block]

    def __setitem__(self, slot: int, row: torch.Tensor) -> None:
        self._block(slot // self.block)[slot % self.block] = row

    def put(self, slots: np.ndarray, rows: torch.Tensor) -> None:
        """Write rows (n, *row_shape) at slots (n,)."""
        slots = np.asarray(slots)
        for b in np.unique(slots // self.block):
            mine = np.flatnonzero(slots // self.block == b)
            self._block(int(b))[torch.from_numpy(slots[mine] % self.block)] = \
                rows[torch.from_numpy(mine)].to(self.dtype)

    def take(self, m: int) -> torch.Tensor:
        """Slots 0..m-1 as one (m, *row_shape) tensor; each block is freed once copied, so the
        peak is the rows plus one block. The store is empty afterwards."""
        out = torch.empty(m, *self.row_shape, dtype=self.dtype)
        for b in range(-(-m // self.block)):
            start = b * self.block
            out[start:min(m, start + self.block)] = self._block(b)[:min(m, start + self.block)
                                                                   - start]
            self.blocks[b] = None
        self.blocks = []
        return out


def permute_rows_(rows, order: np.ndarray) -> None:
    """rows[:m] = rows[order] in place (m = len(order), a permutation of 0..m-1), one row of
    extra memory; ``rows`` is a tensor or a RowStore. Rows already in place are not touched."""
    m = len(order)
    done = order == np.arange(m)
    for start in np.flatnonzero(~done):
        if done[start]:
            continue
        held = rows[start].clone()
        cur = start
        while True:
            src = int(order[cur])
            done[cur] = True
            if src == start:
                rows[cur] = held
                break
            rows[cur] = rows[src]
            cur = src
