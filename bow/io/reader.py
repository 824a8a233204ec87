"""Lazy reading of feature stores: slice clips, chunks or frames without reading a store whole.

    with open_store("artifacts/stores/bow.h5") as s:
        s.fname, s.split, s.labels, s.offsets       # per-clip arrays, read on open (small)
        s.clips[10:20]                               # (10, Dc) clip vectors
        s.chunks_of(3)                               # (n_chunks, Dk) chunk vectors of clip 3
        s.chunks[1000:2000]                          # (1000, Dk) chunk rows
        s.frames_of(3)                               # ((T, Df) frames, (T,) ms) when stored

Every array view (``Rows``) reads only what is sliced, with h5py underneath; rows given as an
index array, in any order, are read as runs of neighbouring HDF5 chunks, never row by row.
``ChunkMatrix`` puts the chunk rows of several stores side by side (the heads' feature sets,
bow.io.featureset). Files are opened lazily in the process that reads (never across a fork).
"""
from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from bow.io.store import StoreError, _strings, open_checked


def read_rows(ds: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    """The rows ``rows`` ((m,) int, any order, repeats allowed) of ``ds`` -> (m, ...) array.

    The distinct rows are read as runs: a run ends where the gap to the next wanted row is
    longer than one HDF5 chunk, so each stored chunk is decompressed about once.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return np.zeros((0,) + ds.shape[1:], ds.dtype)
    wanted, inverse = np.unique(rows, return_inverse=True)
    gap = ds.chunks[0] if ds.chunks else 1
    breaks = np.flatnonzero(np.diff(wanted) > gap) + 1
    parts = [ds[run[0]:run[-1] + 1][run - run[0]] for run in np.split(wanted, breaks)]
    return np.concatenate(parts)[inverse]


class _File:
    """An h5py file opened on first use in the current process (reopened after a fork)."""

    def __init__(self, path: str | Path, opened: h5py.File | None = None):
        self.path, self._file = Path(path), opened
        self._pid = os.getpid() if opened is not None else None

    def get(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._file

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None


class Rows:
    """A lazy (m, ...) view of a store dataset: all its rows, or those of an index.

    ``view[a:b]``, ``view[int array]``, ``view[bool mask]``, ``view[rows, cols]`` and
    ``np.asarray(view)`` read from the file; ``view.take(rows)`` is a narrower lazy view.
    """

    def __init__(self, file: _File, name: str, index: np.ndarray | None = None):
        self.file, self.name, self.index = file, name, index
        ds = self.dataset
        self.dtype = ds.dtype
        self.shape = (len(index) if index is not None else ds.shape[0],) + ds.shape[1:]
        self.block_rows = ds.chunks[0] if ds.chunks else 1   # rows of one HDF5 chunk

    @property
    def dataset(self) -> h5py.Dataset:
        return self.file.get()[self.name]

    def __len__(self) -> int:
        return self.shape[0]

    def _positions(self, key) -> np.ndarray | slice:
        if isinstance(key, slice):
            return key
        key = np.asarray(key)
        if key.dtype == bool:
            return np.flatnonzero(key)
        return np.where(key < 0, key + len(self), key).astype(np.int64)

    def take(self, rows) -> "Rows":
        """The lazy view of rows ``rows`` (index array, mask or slice) of this view."""
        pos = self._positions(rows)
        base = self.index if self.index is not None else np.arange(len(self))
        return Rows(self.file, self.name, base[pos])

    def __getitem__(self, key) -> np.ndarray:
        cols = None
        if isinstance(key, tuple):
            key, cols = key[0], key[1:]
        if isinstance(key, (int, np.integer)):
            return self[(np.array([key]),) + (cols or ())][0]
        pos = self._positions(key)
        ds = self.dataset
        if self.index is None and isinstance(pos, slice):
            out = ds[pos]
        elif isinstance(pos, slice):
            out = read_rows(ds, self.index[pos])
        else:
            out = read_rows(ds, pos if self.index is None else self.index[pos])
        return out if cols is None else out[(slice(None),) + cols]

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype)


class ChunkMatrix:
    """(M, D) chunk vectors: the chunk rows of one or several stores side by side, lazily.

    ``parts`` are ``Rows`` views with the same number of rows (row r of every part belongs to
    the same chunk). Slicing reads each part's rows and joins them column-wise (float32 when
    there are several parts, the stored dtype for one).
    """

    def __init__(self, parts: list[Rows]):
        if len({len(p) for p in parts}) != 1:
            raise ValueError(f"parts differ in rows: {[len(p) for p in parts]}")
        self.parts = list(parts)
        self.widths = [p.shape[1] for p in parts]
        self.shape = (len(parts[0]), sum(self.widths))
        self.dtype = parts[0].dtype if len(parts) == 1 else np.dtype(np.float32)
        self.block_rows = max(p.block_rows for p in parts)

    def __len__(self) -> int:
        return self.shape[0]

    def take(self, rows) -> "ChunkMatrix":
        """The lazy matrix of rows ``rows`` (index array, mask or slice)."""
        return ChunkMatrix([p.take(rows) for p in self.parts])

    def hstack(self, other: "ChunkMatrix") -> "ChunkMatrix":
        """``other``'s columns after these (same rows)."""
        return ChunkMatrix(self.parts + other.parts)

    def __getitem__(self, key) -> np.ndarray:
        cols = None
        if isinstance(key, tuple):
            key, cols = key[0], key[1:]
        if isinstance(key, (int, np.integer)):
            return self[(np.array([key]),) + (cols or ())][0]
        got = [p[key] for p in self.parts]
        out = got[0] if len(got) == 1 else np.concatenate(
            [g.astype(np.float32, copy=False) for g in got], axis=1)
        return out if cols is None else out[(slice(None),) + cols]

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype)


class StoreReader:
    """An open store (module docstring): per-clip arrays in memory, vectors read on demand."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = _File(self.path, open_checked(self.path))
        f = self._file.get()
        try:
            self.attrs = {k: (v.item() if isinstance(v, np.generic) else v)
                          for k, v in f.attrs.items()}
            self.vocabulary = list(_strings(f["vocabulary"]))
            self.fname = _strings(f["clips/fname"])
            self.split = _strings(f["clips/split"])
            has = "clips/labels" in f
            self.labels = (f["clips/labels"][()] if has
                           else np.zeros((0, len(self.vocabulary)), np.uint8))
            self.offsets = f["chunks/offsets"][()] if has else np.zeros(1, np.int64)
            self.frame_offsets = f["frames/offsets"][()] if "frames" in f else None
            self.clips = Rows(self._file, "clips/vectors") if has else None
            self.chunks = Rows(self._file, "chunks/vectors") if has else None
            self.frames = Rows(self._file, "frames/vectors") if "frames" in f else None
            self.timestamps = Rows(self._file, "frames/timestamps") if "frames" in f else None
        except (KeyError, OSError, ValueError) as e:
            self.close()
            raise StoreError(f"{self.path}: damaged or incomplete feature store ({e})") from e

    def __len__(self) -> int:
        return len(self.fname)

    def chunks_of(self, i: int) -> np.ndarray:
        """(n_chunks, Dk) the chunk vectors of clip ``i``."""
        return self.chunks[int(self.offsets[i]):int(self.offsets[i + 1])]

    def frames_of(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """((T, Df) frame vectors, (T,) timestamps in ms) of clip ``i``; StoreError without
        frames."""
        if self.frames is None:
            raise StoreError(f"{self.path}: the store holds no frames")
        a, b = int(self.frame_offsets[i]), int(self.frame_offsets[i + 1])
        return self.frames[a:b], self.timestamps[a:b]

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "StoreReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_store(path: str | Path) -> StoreReader:
    """Open the store at ``path`` for lazy reading (StoreError naming it if it is not one)."""
    return StoreReader(path)
