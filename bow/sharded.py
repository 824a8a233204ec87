"""Embed a clip list into a store shard by shard: resumable, and the unit of parallel work.

The clips are cut into shards of ``shard_size`` in dataset order. Each finished shard is an
HDF5 file under ``.<store>.shards-<fingerprint>/`` (written atomically), so a run killed at any
point redoes at most the shards in flight; the shards are then merged, in order, into the store
and deleted. Since the shard contents depend only on the clips and the config, the merged store
is the same whether the shards were computed at once, across restarts, or on several workers.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from bow import __version__
from bow.datasets import Clip
from bow.store import ClipFeatures, merge, write_shard

EmbedShard = Callable[[list[Clip]], tuple[list[ClipFeatures], list[tuple[str, str]]]]


def shard_dir(out_path: Path, fingerprint: str) -> Path:
    return out_path.parent / f".{out_path.name}.shards-{fingerprint[:16]}"


def split_shards(clips: list[Clip], shard_size: int) -> list[list[Clip]]:
    return [clips[i:i + shard_size] for i in range(0, len(clips), shard_size)]


def run_shard(embed_shard: EmbedShard, clips: list[Clip], path: Path) -> Path:
    """Compute one shard unless its file already exists; return its path."""
    if not path.exists():
        items, skipped = embed_shard(clips)
        write_shard(path, items, skipped)
    return path


def embed_to_store(clips: list[Clip], embed_shard: EmbedShard, out_path: str | Path, *,
                   vocabulary: list[str], kind: str, config, fingerprint: str, upstream: dict,
                   shard_size: int = 256, extra_skipped: list[tuple[str, str]] = (),
                   progress: bool = True) -> None:
    """Embed ``clips`` with ``embed_shard`` into the store ``out_path`` (see module docstring).

    ``extra_skipped`` lists clips rejected before embedding (e.g. labels outside the
    vocabulary); they are recorded in the store's skipped table.
    """
    out_path = Path(out_path)
    tmp_dir = shard_dir(out_path, fingerprint)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    shards = split_shards(clips, shard_size)
    paths = [tmp_dir / f"shard-{i:05d}.h5" for i in range(len(shards))]
    pre = tmp_dir / "rejected.h5"
    write_shard(pre, [], list(extra_skipped))
    bar = tqdm(total=len(clips), desc=f"embed {out_path.name}", unit="clip", disable=not progress)
    for group, path in zip(shards, paths):
        run_shard(embed_shard, group, path)
        bar.update(len(group))
    bar.close()
    merge([pre] + paths, out_path, vocabulary=vocabulary, kind=kind, config=config,
          fingerprint=fingerprint, upstream=upstream, code_version=__version__)
    shutil.rmtree(tmp_dir, ignore_errors=True)
