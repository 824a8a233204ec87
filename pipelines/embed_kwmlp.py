"""Stage: every clip -> KW-MLP timestamp, chunk and scene embeddings in an HDF5 store.

    python -m pipelines.embed_kwmlp --data DIR --checkpoint FILE [--scene-algorithm iterative]
                                    [--blocks 12] [--batch-clips 32]

The encoder is an authors'-format checkpoint (``/work/shared/kwmlp/kwmlp.pth``, or our own
``<artifacts>/kwmlp/best.pth`` from pipelines.pretrain_kwmlp, used when --checkpoint is not
given). Every clip of the data set (all splits) is read with ``bow.audio.load.read_audio`` and
embedded as the authors' package does (``bow.kwmlp.embed``); clips of a batch may differ in
length. Store (``bow.io.store`` schema, kind "kwmlp"), ``<artifacts>/stores/kwmlp.h5``:

  /frames/vectors, /frames/timestamps, /frames/offsets   timestamp embeddings (T, 64), ms
  /clips/vectors    (N, 1024) the scene embedding of the whole clip
  /chunks/vectors   (M, 1024) one row per 1 s chunk of bow.audio.load.chunk(read_audio(path)): the
                    scene algorithm on the frames centred in that second (bow.kwmlp.embed)

Unreadable clips and rows with labels outside the vocabulary are recorded in /skipped and
printed (the first ten); the command exits 0, or 3 with ``--strict`` when any clip was skipped
(the store is complete either way). The fingerprint covers the config (without the
checkpoint's path), the checkpoint's SHA-256 and the clip list; a store with the same
fingerprint is not recomputed. Locks: exclusive on the store (``bow.io.store.lock_dir``), shared
on ``<artifacts>/kwmlp/`` when the checkpoint is our own pretraining's.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from bow.audio.load import AudioError, read_audio
from bow.data.clips import clips_fingerprint
from bow.data.datasets import Clip, load_dataset
from bow.kwmlp.model import load_checkpoint
from bow.kwmlp.embed import KWMLPEmbedder
from bow.runtime import PRECISIONS, check_precision
from bow.audio.readahead import default_threads, read_ahead
from bow.runtime import resolve_device
from bow.kwmlp.scene import ALGORITHMS
from bow.io.sharded import embed_to_store, remove_leftovers
from bow.io.stage import file_digest, locked, stage_fingerprint
from bow.io.store import ClipFeatures, lock_dir, multi_hot, read_skipped, store_fingerprint
from pipelines.cli import (add_config_args, add_parallel_options, add_strict_option, apply_threads,
                           clean_errors, common_parser,
                           config_from_args, report_skipped)


CPU_BATCH_CHUNKS, GPU_BATCH_CHUNKS = 32, 512


@dataclass(frozen=True)
class EmbedKWMLPConfig:
    """KW-MLP embedding of every clip into the feature store."""
    checkpoint: str | None = field(default=None, metadata={
        "help": "authors'-format checkpoint (.pth); default: <artifacts>/kwmlp/best.pth"})
    scene_algorithm: str = field(default="iterative", metadata={
        "help": "scene embedding: iterative (the authors'), single or mean"})
    blocks: int | None = field(default=None, metadata={
        "help": "embed after this many blocks (paper's ablation: 4, 8 or 12); default: all"})
    batch_clips: int = field(default=32, metadata={"help": "clips embedded together"})
    batch_chunks: int | None = field(default=None, metadata={
        "help": "1 s chunks per encoder call; default: 32 on the CPU (measured fastest: the "
                "activations stay in cache), 512 on CUDA"})
    shard_size: int = field(default=256, metadata={"help": "clips per store shard"})
    precision: str = field(default="fp32", metadata={
        "help": "encoder arithmetic: fp32, or on CUDA tf32 / bf16 (see bow.runtime)"})

    def __post_init__(self):
        if self.scene_algorithm not in ALGORITHMS:
            raise ValueError(f"scene_algorithm must be one of {ALGORITHMS}, "
                             f"got {self.scene_algorithm!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")


def store_path(artifacts: Path) -> Path:
    return Path(artifacts) / "stores" / "kwmlp.h5"


def checkpoint_path(artifacts: Path, config: EmbedKWMLPConfig) -> Path:
    """The checkpoint to use: the configured one, else our own pretraining's best.pth."""
    path = Path(config.checkpoint) if config.checkpoint else Path(artifacts) / "kwmlp/best.pth"
    if not path.is_file():
        hint = "" if config.checkpoint else (" (give --checkpoint, e.g. the authors' kwmlp.pth, "
                                             "or run python -m pipelines.pretrain_kwmlp first)")
        raise SystemExit(f"{path}: no such checkpoint{hint}")
    return path



@dataclass
class ShardEmbedder:
    """list[Clip] -> ([ClipFeatures], [(fname, reason)]); loads the model on first use, so it
    can be sent to worker processes. Clips are read ahead by ``decode_threads`` threads
    (bow.audio.readahead; default 1 on the CPU, more for a GPU) while the encoder computes, and
    embedded ``batch_clips`` at a time (their chunks pooled in batches of ``batch_chunks``)."""
    checkpoint: Path
    config: EmbedKWMLPConfig
    vocabulary: list[str]
    device: str = "cpu"
    decode_threads: int | None = None
    _embedder: KWMLPEmbedder | None = field(default=None, repr=False)

    def __post_init__(self):
        check_precision(self.config.precision, self.device)

    def __getstate__(self):
        return {**self.__dict__, "_embedder": None}

    def batch_chunks(self) -> int:
        if self.config.batch_chunks:
            return self.config.batch_chunks
        return CPU_BATCH_CHUNKS if torch.device(self.device).type == "cpu" else GPU_BATCH_CHUNKS

    def embedder(self) -> KWMLPEmbedder:
        if self._embedder is None:
            self._embedder = KWMLPEmbedder(
                load_checkpoint(self.checkpoint), self.config.blocks,
                self.config.scene_algorithm, self.batch_chunks(), self.device,
                self.config.precision)
        return self._embedder

    def _embed(self, batch: list[tuple[Clip, np.ndarray]]) -> list[ClipFeatures]:
        embedder = self.embedder()
        return [ClipFeatures(fname=clip.fname, split=clip.split,
                             labels=multi_hot(clip.labels, self.vocabulary),
                             chunks=embedder.chunk_vectors(emb.frames, emb.timestamps, len(audio)),
                             clip=emb.scene, frames=emb.frames, timestamps=emb.timestamps)
                for (clip, audio), emb in zip(batch, embedder.embed([a for _, a in batch]))]

    def __call__(self, clips: list[Clip]):
        items, skipped, batch = [], [], []
        threads = self.decode_threads
        if threads is None:
            threads = default_threads(torch.device(self.device).type)
        for clip, audio in read_ahead(clips, read_audio, threads):
            if isinstance(audio, AudioError):
                skipped.append((clip.fname, str(audio)))
                continue
            batch.append((clip, audio))
            if len(batch) == self.config.batch_clips:
                items += self._embed(batch)
                batch = []
        if batch:
            items += self._embed(batch)
        return items, skipped


def run(data: Path, artifacts: Path, config: EmbedKWMLPConfig = EmbedKWMLPConfig(),
        device: str = "auto", progress: bool = True, jobs: int = 1,
        threads: int | None = None, scheduler: str | None = None) -> Path:
    """Embed every clip into ``<artifacts>/stores/kwmlp.h5``; skip when nothing changed."""
    ckpt = checkpoint_path(artifacts, config)
    out = store_path(artifacts)
    with contextlib.ExitStack() as locks:
        own = Path(artifacts) / "kwmlp"
        if own.is_dir() and ckpt.resolve().parent == own.resolve():  # pretrain_kwmlp's output
            locks.enter_context(locked(own, "embed_kwmlp", shared=True))
        locks.enter_context(locked(lock_dir(out), "embed_kwmlp"))
        return _embed(data, ckpt, out, config, device, progress, jobs, threads, scheduler)


def _embed(data, ckpt, out, config, device, progress, jobs, threads, scheduler) -> Path:
    """The work of ``run``, with the locks held."""
    model = load_checkpoint(ckpt)              # fail early, before any shard, on a bad file
    if config.blocks is not None and not 1 <= config.blocks <= model.depth:
        raise SystemExit(f"--blocks {config.blocks}: the checkpoint has {model.depth} blocks")
    dataset = load_dataset(data)
    inputs = {"checkpoint_sha256": file_digest(ckpt), "clips": clips_fingerprint(dataset.clips),
              "invalid": dataset.invalid}
    fingerprint = stage_fingerprint(dataclasses.replace(config, checkpoint=None), inputs)
    if store_fingerprint(out) == fingerprint:
        remove_leftovers(out)
        return out
    resolved = {"embed_kwmlp": config, "checkpoint": str(ckpt), "depth": model.depth,
                "frames": "timestamp embeddings (T, 64) of the authors' package, 10 ms hop",
                "clip_vector": f"{config.scene_algorithm} scene embedding of the clip (1024)",
                "chunk_vectors": f"{config.scene_algorithm} scene embedding of the frames "
                                 "centred in each 1 s chunk (1024)"}
    embedder = ShardEmbedder(ckpt, config, dataset.vocabulary, str(resolve_device(device)))
    embed_to_store(dataset.clips, embedder, out, vocabulary=dataset.vocabulary, kind="kwmlp",
                   config=resolved, fingerprint=fingerprint,
                   upstream={"checkpoint_sha256": inputs["checkpoint_sha256"]},
                   shard_size=config.shard_size, extra_skipped=dataset.invalid,
                   progress=progress, jobs=jobs, threads=threads, scheduler=scheduler)
    return out


def main(argv=None) -> None:
    parser = common_parser("Embed every clip with KW-MLP into an HDF5 store.")
    add_parallel_options(parser)
    add_strict_option(parser)
    add_config_args(parser, EmbedKWMLPConfig)
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(EmbedKWMLPConfig, args)
    except ValueError as e:
        parser.error(str(e))
    apply_threads(args)
    path = store_path(args.artifacts)
    with clean_errors("embed_kwmlp"):
        before = store_fingerprint(path)
        run(args.data, args.artifacts, cfg, args.device, jobs=args.jobs, threads=args.threads,
            scheduler=args.scheduler)
        if before is not None and store_fingerprint(path) == before:
            print(f"{path}: up to date (same config, checkpoint and clips), skipped")
        with h5py.File(path, "r") as f:
            n, m = len(f["clips/fname"]), (len(f["chunks/vectors"]) if "chunks" in f else 0)
            frames = len(f["frames/vectors"]) if "frames" in f else 0
            print(f"{path}: {n} clips, {m} chunk rows, {frames} frames, "
                  f"{len(f['skipped/fname'])} skipped")
        skipped = read_skipped(path)
    report_skipped("embed_kwmlp", skipped, f"/skipped in {path}", args.strict)


if __name__ == "__main__":
    main()
