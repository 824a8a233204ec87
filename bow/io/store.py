"""The HDF5 feature store: written as shards, merged into one file, read with plain h5py.

Schema (N clips, M chunks in all, C labels; README.md documents it for users):

    /                     attrs: format="bow-store", format_version, kind ("bow" | "kwmlp" | ...),
                          config (JSON), code_version, fingerprint, upstream (JSON)
    /vocabulary           (C,)      str    label names, the column order of labels
    /clips/fname          (N,)      str
    /clips/split          (N,)      str    train / val / eval / fold number ...
    /clips/labels         (N, C)    uint8  multi-hot
    /clips/vectors        (N, Dc)   float32  one clip-level vector (bow: mean chunk counts)
    /chunks/vectors       (M, Dk)   chunk-level vectors, one row per 1 s chunk (bow: counts,
                                    uint16 with hard assignment, float32 with soft)
    /chunks/offsets       (N + 1,)  int64  clip i owns chunk rows offsets[i]:offsets[i+1]
    /frames/vectors       (F, Df)   optional frame-level vectors (kwmlp: timestamp embeddings)
    /frames/timestamps    (F,)      float32 ms, with /frames/offsets (N + 1,)
    /clips/<name>         (N,)      int64  optional per-clip integers (ClipFeatures.per_clip;
                                    opensmile: nonfinite)
    /skipped/fname, /skipped/reason   (S,) str: clips that could not be embedded, and why

Format versions: 1, bag-of-words chunk vectors always uint16; 2 (now), float32 with soft
assignment and level histograms after the code histograms (the store's config says which). Both
read; a newer version is refused with a message.

Datasets are compressed with byte shuffling and deflate level 1 (``COMPRESSION``) and chunked in
blocks of about 256 KiB, except float vectors of sparse counts (``ClipFeatures.sparse``: the
soft-assigned bag of words), deflated without shuffling: on 501 ESC-10 chunk rows of the default bag
of words (3,088 columns, 10 % nonzero) shuffling made them 2x larger (1,028 KiB against 501) and 2x
slower to write (38 ms against 21), while on dense embeddings it makes them 2-4x smaller (KW-MLP
timestamp embeddings: 255 KiB against 1,056). Shards record the choice in their datasets and
``merge`` keeps it. Deflate gives the same bytes for the same data (with a given zlib; h5py's wheels
bundle theirs). Stores written before issue 17 used lzf and still read; lzf was dropped because
h5py's lzf filter leaves its hash table uninitialised, so the same chunk could compress to other
bytes (2 of ~9 fault-test runs gave a store with equal data, other bytes). On 200,600 x 256 uint16
counts, shuffle + deflate 1 wrote 11.3 MB in 1.0 s and read it in 0.4 s; lzf 18.9 MB in 0.6 s, read
in 0.5 s. A shard has the same layout without /vocabulary, except that sparse float vectors are
kept as their rows' nonzero entries, uncompressed (``_write_rows``): deflating them in the shard
and again at the merge cost ~5 % of the default bag of words' embed stage (100 ESC-10 clips,
one thread: 1.93 -> 1.83 s, the same store bytes), for shards ~1.4x larger while they wait
for the merge (those 100 clips' shard with 5,744-column vectors, 16 % nonzero: 4.1 MB against
2.9 MB deflated, 13.8 MB raw). ``merge`` concatenates shards in order into the final file (and
reads shards of either layout).
Every file is written under a temporary name and renamed when complete (``bow.io.stage``), so a
killed writer never leaves a part of a store under its final name. Datasets are created
without HDF5's creation/modification times (``track_times=False``) and always in the same
order, so the same clips and config give the same bytes.

Locking: the stage writing ``stores/X.h5`` holds an exclusive lock, and stages reading it a
shared one, on ``lock_dir(path)`` (``stores/.X.h5.lock/``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from bow.io.stage import atomic_path

FORMAT_VERSION = 2   # 2: bag-of-words chunk vectors may be float32 (soft assignment)
STR = h5py.string_dtype()
BLOCK_BYTES = 256 * 1024


class StoreError(ValueError):
    """A file that is not a readable bow feature store; the message names it."""


@dataclass
class ClipFeatures:
    """What one clip contributes to a store."""
    fname: str
    split: str
    labels: np.ndarray                    # (C,) uint8 multi-hot
    chunks: np.ndarray                    # (n_chunks, Dk)
    clip: np.ndarray                      # (Dc,) float32
    frames: np.ndarray | None = None      # (T, Df)
    timestamps: np.ndarray | None = None  # (T,) ms
    per_clip: dict[str, int] | None = None  # integers stored as /clips/<name> (int64)
    sparse: bool = False                  # chunks and clip are mostly-zero counts (docstring)


@dataclass
class Store:
    """A store read into memory (see the module docstring for the meaning of each array)."""
    vocabulary: list[str]
    fname: np.ndarray
    split: np.ndarray
    labels: np.ndarray
    clips: np.ndarray
    chunks: np.ndarray
    offsets: np.ndarray
    attrs: dict
    frames: np.ndarray | None = None
    frame_offsets: np.ndarray | None = None
    timestamps: np.ndarray | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.fname)

    def chunk_vectors(self, i: int) -> np.ndarray:
        """(n_chunks, Dk) chunk vectors of clip i."""
        return self.chunks[self.offsets[i]:self.offsets[i + 1]]

    def chunk_clip_index(self) -> np.ndarray:
        """(M,) the clip index of every chunk row."""
        return np.repeat(np.arange(len(self)), np.diff(self.offsets))


def _chunk_shape(shape, itemsize, rows: int | None = None):
    """HDF5 chunk shape: whole rows, about ``BLOCK_BYTES``, at most ``rows`` (default: the
    data's own rows; a store's datasets, which grow as shards are appended, ``APPEND_ROWS``)."""
    row = int(np.prod(shape[1:])) * itemsize if len(shape) > 1 else itemsize
    cap = shape[0] if rows is None else rows
    return (max(1, min(cap, BLOCK_BYTES // max(row, 1))),) + tuple(shape[1:])


# Rows per HDF5 chunk of a store's datasets, at most: set by neither the first shard nor the
# store's size, so the bytes do not depend on the shard size, and reading a store's per-clip
# arrays (names, labels, offsets) does not go through one chunk per clip or per shard (a
# 100,000-clip store whose fname had 1-row chunks took 420 MB of RSS to open).
APPEND_ROWS = 8192


# deterministic: the same data gives the same bytes (lzf does not, see the module docstring)
COMPRESSION = {"compression": "gzip", "compression_opts": 1, "shuffle": True}


def _create(group: h5py.Group, name: str, data: np.ndarray, dtype=None, shuffle: bool = True,
            rows: int | None = None):
    """A resizable dataset holding ``data``, compressed with ``COMPRESSION`` (not strings;
    without its byte shuffling when not ``shuffle``), chunked by ``_chunk_shape(..., rows)``."""
    data = np.asarray(data) if dtype is None else np.asarray(data, dtype=dtype)
    dtype = STR if data.dtype.kind in "OUS" else data.dtype
    itemsize = 8 if dtype is STR else data.dtype.itemsize
    kwargs = dict(maxshape=(None,) + data.shape[1:], dtype=dtype, track_times=False,
                  chunks=_chunk_shape(data.shape if data.shape[0] else (1,) + data.shape[1:],
                                      itemsize, rows))
    if dtype is not STR:
        kwargs.update(COMPRESSION, shuffle=shuffle)
    return group.create_dataset(name, data=data.astype(object) if dtype is STR else data,
                                **kwargs)


def lock_dir(path: str | Path) -> Path:
    """The folder whose ``.lock`` guards the store ``path`` (bow.io.stage.locked)."""
    path = Path(path)
    return path.parent / f".{path.name}.lock"


def _offsets(lengths) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)


def _write_arrays(f: h5py.File, arrays: dict) -> None:
    for path, data in arrays.items():
        group, name = path.split("/")
        _create(f.require_group(group), name, data)


def _shard_arrays(items: list[ClipFeatures], skipped) -> dict:
    arrays = {
        "clips/fname": np.array([c.fname for c in items], dtype=object),
        "clips/split": np.array([c.split for c in items], dtype=object),
        "skipped/fname": np.array([s[0] for s in skipped], dtype=object),
        "skipped/reason": np.array([s[1] for s in skipped], dtype=object),
    }
    if items:
        arrays["clips/labels"] = np.stack([c.labels for c in items]).astype(np.uint8)
        arrays["clips/vectors"] = np.stack([c.clip for c in items]).astype(np.float32)
        arrays["chunks/vectors"] = np.concatenate([c.chunks for c in items])
        arrays["chunks/offsets"] = _offsets([len(c.chunks) for c in items])
        if items[0].frames is not None:
            arrays["frames/vectors"] = np.concatenate([c.frames for c in items])
            arrays["frames/timestamps"] = np.concatenate(
                [c.timestamps for c in items]).astype(np.float32)
            arrays["frames/offsets"] = _offsets([len(c.frames) for c in items])
        for name in items[0].per_clip or {}:
            arrays[f"clips/{name}"] = np.array([c.per_clip[name] for c in items], np.int64)
    return arrays


def _write_rows(group: h5py.Group, name: str, data: np.ndarray) -> None:
    """A mostly-zero (n, W) float matrix as the rows' nonzero entries, uncompressed (shards
    only; module docstring): ``name/indptr`` (n + 1,) int64, ``name/indices`` column ids (uint16
    where W allows), ``name/values``, attribute ``width``. Zeros are found by their bits, so the
    matrix comes back bit for bit (a -0.0 included)."""
    bits = data.view(f"u{data.itemsize}")
    rows, cols = np.nonzero(bits)
    g = group.require_group(name)
    g.attrs["width"] = data.shape[1]
    index = np.uint16 if data.shape[1] <= 1 << 16 else np.uint32
    for key, arr in (("indptr", _offsets(np.bincount(rows, minlength=len(data)))),
                     ("indices", cols.astype(index)), ("values", data[rows, cols])):
        g.create_dataset(key, data=arr, track_times=False)


def _read_rows(g: h5py.Group) -> np.ndarray:
    """``_write_rows``'s group -> the dense (n, W) matrix."""
    indptr, values = g["indptr"][()], g["values"][()]
    out = np.zeros((len(indptr) - 1, int(g.attrs["width"])), values.dtype)
    out[np.repeat(np.arange(len(out)), np.diff(indptr)), g["indices"][()]] = values
    return out


def write_shard(path: str | Path, items: list[ClipFeatures],
                skipped: list[tuple[str, str]] = ()) -> None:
    """Write one shard (a few hundred clips) atomically; mostly-zero float vectors
    (``ClipFeatures.sparse``) as their nonzero entries (``_write_rows``)."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = "bow-shard"
            arrays = _shard_arrays(items, list(skipped))
            sparse = {k for k in ("clips/vectors", "chunks/vectors")
                      if items and items[0].sparse and arrays[k].dtype.kind == "f"}
            for key in sorted(sparse):
                group, name = key.split("/")
                _write_rows(f.require_group(group), name, arrays.pop(key))
            _write_arrays(f, arrays)


def _append(dst: h5py.Dataset, data: np.ndarray) -> None:
    n = dst.shape[0]
    dst.resize(n + data.shape[0], axis=0)
    dst[n:] = data


def merge(shards: list[str | Path], out_path: str | Path, *, vocabulary: list[str],
          kind: str, config, fingerprint: str, upstream: dict, code_version: str) -> None:
    """Concatenate shards, in order, into the final store at ``out_path`` (atomically)."""
    from bow.io.stage import to_jsonable
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as out:
        out.attrs.update({"format": "bow-store", "format_version": FORMAT_VERSION, "kind": kind,
                          "config": json.dumps(to_jsonable(config), sort_keys=True),
                          "code_version": code_version, "fingerprint": fingerprint,
                          "upstream": json.dumps(upstream, sort_keys=True)})
        _create(out, "vocabulary", np.array(vocabulary, dtype=object))
        for shard in shards:
            with h5py.File(shard, "r") as src:
                for gname in ("clips", "skipped", "chunks", "frames"):
                    if gname not in src:
                        continue
                    for name, ds in src[gname].items():
                        rows = isinstance(ds, h5py.Group)        # sparse rows: _write_rows
                        data = _read_rows(ds) if rows else ds[()]
                        key = f"{gname}/{name}"
                        if name == "offsets":  # rebase: drop the leading 0, add rows so far
                            base = out[key][-1] if key in out else None
                            data = data if base is None else data[1:] + base
                        if key in out:
                            _append(out[key], data)
                        else:
                            _create(out.require_group(gname), name, data,
                                    shuffle=not rows and bool(ds.shuffle), rows=APPEND_ROWS)
        for key in ("clips/fname", "clips/split", "skipped/fname", "skipped/reason"):
            if key not in out:
                _create(out.require_group(key.split("/")[0]), key.split("/")[1],
                        np.array([], dtype=object), rows=APPEND_ROWS)


def _strings(ds) -> np.ndarray:
    return np.array([s.decode() if isinstance(s, bytes) else s for s in ds[()]], dtype=object)


def open_checked(path: str | Path) -> h5py.File:
    """Open a store for reading after checking its format; StoreError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: not a readable HDF5 file (no such file)")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise StoreError(f"{path}: not a readable HDF5 file ({e})") from e
    if f.attrs.get("format") != "bow-store":
        f.close()
        raise StoreError(f"{path}: not a bow feature store (format attribute missing)")
    version = f.attrs.get("format_version")
    version = version.item() if isinstance(version, np.generic) else version
    if version not in (1, FORMAT_VERSION):
        f.close()
        raise StoreError(f"{path}: store format version {version!r}; this code reads "
                         f"versions 1 and {FORMAT_VERSION} (a newer bow wrote it?)")
    return f


def read(path: str | Path) -> Store:
    """Read a whole store into memory; StoreError naming the file if it is not a whole store.
    (``bow.io.reader.open_store`` reads parts of a store on demand.)"""
    with open_checked(path) as f:
        try:
            return _read_open(f)
        except (KeyError, OSError, ValueError) as e:
            raise StoreError(f"{path}: damaged or incomplete feature store ({e})") from e


def _read_open(f: h5py.File) -> Store:
    n_labels = len(f["vocabulary"])
    has = "clips/vectors" in f
    attrs = {k: (json.loads(v) if k in ("config", "upstream") else v)
             for k, v in f.attrs.items()}
    attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in attrs.items()}
    return Store(
        vocabulary=list(_strings(f["vocabulary"])),
        fname=_strings(f["clips/fname"]),
        split=_strings(f["clips/split"]),
        labels=f["clips/labels"][()] if has else np.zeros((0, n_labels), np.uint8),
        clips=f["clips/vectors"][()] if has else np.zeros((0, 0), np.float32),
        chunks=f["chunks/vectors"][()] if has else np.zeros((0, 0), np.float32),
        offsets=f["chunks/offsets"][()] if has else np.zeros(1, np.int64),
        attrs=attrs,
        frames=f["frames/vectors"][()] if "frames" in f else None,
        frame_offsets=f["frames/offsets"][()] if "frames" in f else None,
        timestamps=f["frames/timestamps"][()] if "frames" in f else None,
        skipped=list(zip(_strings(f["skipped/fname"]), _strings(f["skipped/reason"]))),
    )


def read_skipped(path: str | Path) -> list[tuple[str, str]]:
    """The /skipped table of a store, [(fname, reason)], without reading its vectors."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            return list(zip(_strings(f["skipped/fname"]), _strings(f["skipped/reason"])))
    except (OSError, KeyError) as e:
        raise StoreError(f"{path}: no readable /skipped table ({e})") from e


def describe(path: str | Path) -> str:
    """One line: a store's clips, chunk rows (and width), frames and skipped clips."""
    with h5py.File(path, "r") as f:
        n = len(f["clips/fname"])
        m = len(f["chunks/vectors"]) if "chunks" in f else 0
        width = f["chunks/vectors"].shape[1] if m else 0
        frames = f", {len(f['frames/vectors'])} frames" if "frames" in f else ""
        return (f"{path}: {n} clips, {m} chunk rows of {width} values{frames}, "
                f"{len(f['skipped/fname'])} skipped")


def store_fingerprint(path: str | Path, required: bool = False) -> str | None:
    """The fingerprint attribute of a finished store (its arrays are not read).

    None when there is no finished store at ``path``, or StoreError if ``required``.
    """
    try:
        with h5py.File(path, "r") as f:
            return str(f.attrs["fingerprint"])
    except (OSError, KeyError) as e:
        if required:
            raise StoreError(f"{path}: not a finished bow feature store ({e})") from e
        return None


def multi_hot(labels, vocabulary: list[str]) -> np.ndarray:
    """Label names -> (C,) uint8 multi-hot over ``vocabulary``."""
    index = {name: i for i, name in enumerate(vocabulary)}
    out = np.zeros(len(vocabulary), dtype=np.uint8)
    out[[index[lab] for lab in labels]] = 1
    return out
