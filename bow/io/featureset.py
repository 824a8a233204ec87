"""Feature sets for the heads: one or several stores, concatenated chunk by chunk.

Several stores (e.g. bag of words and KW-MLP) are joined column-wise: their clips are
matched by ``fname`` (clips missing from any store are dropped and listed in ``dropped``), and
a matched clip must have the same number of chunk rows, split and labels in every store,
otherwise a ``FeatureSetError`` names the clip. Chunk vectors stay in the stores: ``chunks``
is a lazy ``bow.io.reader.ChunkMatrix`` (the stores' rows side by side, row-aligned), read
block by block by the heads, which hold it in memory only when it fits their budget. The
columns of a store whose ``kind`` attribute is ``"bow"`` are marked as counts
(``count_columns``): only those are masked and count-normalised by the heads; all other
columns are only standardised. ``blocks`` and ``block`` give each store's columns apart (the
late fusion of bow.heads.fusion trains a head on each).

``find_feature_sets`` names the feature sets of a folder of stores: every store (bow.h5,
bow-random.h5 (the random-encoder control), kwmlp.h5, audiomlp.h5 and the openSMILE peer's
opensmile.h5 first, then any other ``*.h5``), plus ``bow+kwmlp``, ``bow+audiomlp`` and
``bow+opensmile`` (joined chunk by chunk) when both of their stores exist; or those
requested (store names without .h5, joined with + to concatenate).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bow.io.reader import ChunkMatrix, open_store

STANDARD = ("bow", "bow-random", "kwmlp", "audiomlp", "opensmile")  # report order; then others
COMBINED = ("bow+kwmlp", "bow+audiomlp", "bow+opensmile")


class FeatureSetError(ValueError):
    """Stores that cannot be joined or used by a head; the message names the store and clip."""


@dataclass
class FeatureSet:
    """Chunk vectors with their clips' labels (M chunk rows, N clips, D columns, C classes)."""
    chunks: ChunkMatrix | np.ndarray  # (M, D) as stored (bow: uint16 counts); joined: float32
    offsets: np.ndarray         # (N + 1,) int64, clip i owns rows offsets[i]:offsets[i + 1]
    labels: np.ndarray          # (N, C) uint8 multi-hot
    fname: np.ndarray           # (N,) str
    split: np.ndarray           # (N,) str
    vocabulary: list[str]
    count_columns: np.ndarray   # (D,) bool: bag-of-words count columns
    sources: list[dict] = field(default_factory=list)   # per store: path, kind, fingerprint, dim
    dropped: list[str] = field(default_factory=list)    # fnames missing from some store

    def __len__(self) -> int:
        return len(self.fname)

    @property
    def dim(self) -> int:
        return self.chunks.shape[1]

    def chunk_labels(self) -> np.ndarray:
        """(M, C) the labels of every chunk row (its clip's labels)."""
        return np.repeat(self.labels, np.diff(self.offsets), axis=0)

    def subset(self, clips: np.ndarray) -> "FeatureSet":
        """The clips at the given indices (or boolean mask), in that order."""
        idx = np.arange(len(self))[clips]
        starts, counts = self.offsets[idx], np.diff(self.offsets)[idx]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        rows = np.arange(offsets[-1]) + np.repeat(starts - offsets[:-1], counts)
        chunks = (self.chunks.take(rows) if isinstance(self.chunks, ChunkMatrix)
                  else self.chunks[rows])
        return FeatureSet(chunks, offsets,
                          self.labels[idx], self.fname[idx], self.split[idx], self.vocabulary,
                          self.count_columns, self.sources, self.dropped)

    def blocks(self) -> list[tuple[str, slice]]:
        """(name, column slice) of each store's columns, in column order."""
        out, start = [], 0
        for source in self.sources:
            out.append((Path(source["path"]).stem, slice(start, start + source["dim"])))
            start += source["dim"]
        return out

    def block(self, i: int) -> "FeatureSet":
        """The feature set of the ``i``-th store's columns alone (same clips and rows)."""
        cols = self.blocks()[i][1]
        chunks = (ChunkMatrix([self.chunks.parts[i]]) if isinstance(self.chunks, ChunkMatrix)
                  else self.chunks[:, cols])
        return FeatureSet(chunks, self.offsets, self.labels, self.fname, self.split,
                          self.vocabulary, self.count_columns[cols], [self.sources[i]],
                          self.dropped)

    def select(self, splits) -> "FeatureSet":
        """The clips whose split is in ``splits`` (strings)."""
        return self.subset(np.isin(self.split, [str(s) for s in splits]))


def _one(path: Path) -> FeatureSet:
    store = open_store(path)
    if len(store) == 0:
        raise FeatureSetError(f"{path}: the store holds no clips")
    kind = str(store.attrs.get("kind", ""))
    rows = store.chunks
    if len(rows.shape) != 2 or rows.dtype.kind not in "uif":
        raise FeatureSetError(f"{path}: chunk vectors must be a 2-D numeric array, got "
                              f"{rows.dtype} {rows.shape}")
    return FeatureSet(
        chunks=ChunkMatrix([rows]), offsets=store.offsets.astype(np.int64),
        labels=store.labels, fname=store.fname, split=store.split,
        vocabulary=store.vocabulary,
        count_columns=np.full(rows.shape[1], kind == "bow"),
        sources=[{"path": str(path), "kind": kind, "dim": int(rows.shape[1]),
                  "fingerprint": str(store.attrs.get("fingerprint", ""))}])


def _join(a: FeatureSet, b: FeatureSet) -> FeatureSet:
    where = {f: i for i, f in enumerate(b.fname)}
    keep = np.array([f in where for f in a.fname], dtype=bool)
    dropped = sorted(set(a.dropped) | set(b.dropped) | set(a.fname[~keep])
                     | (set(b.fname) - set(a.fname)))
    a = a.subset(keep)
    b = b.subset(np.array([where[f] for f in a.fname], dtype=np.int64))
    name_a, name_b = a.sources[-1]["path"], b.sources[0]["path"]
    for what in ("split", "labels", "offsets"):
        va, vb = getattr(a, what), getattr(b, what)
        if what == "offsets":
            va, vb = np.diff(va), np.diff(vb)
        bad = np.flatnonzero((va != vb).reshape(len(va), -1).any(axis=1))
        if len(bad):
            i = bad[0]
            detail = (f"{va[i]} vs {vb[i]} chunk rows" if what == "offsets"
                      else f"{what} {va[i]} vs {vb[i]}")
            raise FeatureSetError(
                f"clip {a.fname[i]!r} differs between {name_a} and {name_b}: {detail} "
                f"({len(bad)} clip(s) disagree); stores to be joined must be embedded from the "
                "same dataset with the same chunking")
    chunks = (a.chunks.hstack(b.chunks) if isinstance(a.chunks, ChunkMatrix)
              else np.concatenate([a.chunks, b.chunks], axis=1).astype(np.float32))
    return FeatureSet(chunks, a.offsets, a.labels,
                      a.fname, a.split, a.vocabulary,
                      np.concatenate([a.count_columns, b.count_columns]),
                      a.sources + b.sources, dropped)


def load_features(paths) -> FeatureSet:
    """Read one or several stores (paths) into one feature set (see the module docstring)."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise FeatureSetError("no feature store given")
    sets = [_one(p) for p in paths]
    out = sets[0]
    for p, s in zip(paths[1:], sets[1:]):
        if s.vocabulary != out.vocabulary:
            raise FeatureSetError(f"{p}: its vocabulary differs from {paths[0]}'s "
                                  f"({len(s.vocabulary)} vs {len(out.vocabulary)} labels)")
        out = _join(out, s)
    if len(out) == 0:
        raise FeatureSetError(f"{', '.join(map(str, paths))}: no clip is in every store")
    return out


def find_feature_sets(stores: Path, requested=()) -> dict[str, list[Path]]:
    """Feature set name -> its store paths (module docstring); FeatureSetError when a requested
    store, or any store, is missing."""
    found = sorted(p.stem for p in Path(stores).glob("*.h5") if not p.name.startswith("."))
    if requested:
        missing = sorted({s for name in requested for s in name.split("+")} - set(found))
        if missing:
            raise FeatureSetError(f"{stores}: no store for {missing} (found: {found})")
        names = list(requested)
    else:
        names = [s for s in STANDARD if s in found] + [s for s in found if s not in STANDARD]
        names += [c for c in COMBINED if all(s in found for s in c.split("+"))]
    if not names:
        raise FeatureSetError(f"{stores}: no feature store (*.h5); run python -m "
                              "pipelines.embed / pipelines.embed_kwmlp first")
    return {name: [Path(stores) / f"{s}.h5" for s in name.split("+")] for name in names}
