"""Stage 3 of the bag-of-words model: every clip -> chunk and clip count vectors in an HDF5 store.

    python -m pipelines.embed --data DIR [--artifacts artifacts] [--encoder trained|random]

For every clip of the data set (all splits): audio (``bow.audio.load.read_audio``), 1 s chunks
(``bow.audio.load.chunk``, default tail rule, so rows align with every other store), log-mel, the
143 grid tokens, the stage-1 encoders, the stage-2 codebooks, and one (4 D,) count vector per
chunk (``bow.bagofwords.model``). Chunks of all clips of a shard go through in batches of
``batch_chunks``. The store (``bow.io.store`` schema, kind "bow") holds raw counts: chunk vectors
uint16, the clip vector the mean over its chunks (float32). Unreadable clips and rows with
labels outside the vocabulary are recorded in /skipped. Output: ``<artifacts>/stores/bow.h5``
(``bow-random.h5`` for ``--encoder random``); its attributes hold this stage's config, the
upstream configs and fingerprints, D and the family order. Skipped when the store exists with
the same fingerprint (of the upstream stages, the clip list and ``encoder``; ``shard_size``,
``batch_chunks``, ``--jobs`` and ``--threads`` do not change the store).

The command prints the skipped clips with their reasons (the first ten; all are in /skipped)
and exits 0, or 3 with ``--strict`` when any clip was skipped (the store is complete either
way). The stage holds shared locks on the autoencoder and codebook folders and an exclusive one
on the store (``bow.io.store.lock_dir``), so no concurrent stage rewrites what it reads or writes;
a store killed half-way resumes from its finished shards (``bow.io.sharded``).
"""
from __future__ import annotations

import contextlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from bow.audio.load import AudioError, chunk, read_audio
from bow.bagofwords.model import BagOfWords, clip_vector
from bow.bagofwords.codebook import Codebook
from bow.data.clips import clips_fingerprint
from bow.data.datasets import Clip, load_dataset
from bow.audio.features import LogMel
from bow.runtime import PRECISIONS, check_precision, encoder_precision
from bow.audio.readahead import default_threads, read_ahead
from bow.runtime import resolve_device
from bow.io.sharded import embed_to_store, remove_leftovers
from bow.io.stage import locked, read_fingerprint, read_json, stage_fingerprint
from bow.io.store import ClipFeatures, lock_dir, multi_hot, read_skipped, store_fingerprint
from bow.bagofwords.tokens import FAMILIES
from pipelines import fit_codebooks, train_autoencoders
from pipelines.cli import (add_config_args, add_parallel_options, add_strict_option, apply_threads,
                           clean_errors, common_parser,
                           config_from_args, report_skipped)


@dataclass(frozen=True)
class EmbedConfig:
    """Bag-of-words embedding of every clip into the feature store."""
    encoder: str = field(default="trained", metadata={"help": "which autoencoders and codebooks "
                         "to use: trained or random"})
    shard_size: int = field(default=64, metadata={"help": "clips per store shard (the unit "
                            "of resumption)"})
    batch_chunks: int = field(default=256, metadata={"help": "1 s chunks per log-mel and "
                              "encoding batch"})
    precision: str = field(default="fp32", metadata={"help": "encoder arithmetic: fp32, or on "
                           "CUDA tf32 / bf16 (see bow.runtime)"})

    def __post_init__(self):
        if self.encoder not in train_autoencoders.ENCODERS:
            raise ValueError(f"encoder must be one of {train_autoencoders.ENCODERS}, "
                             f"got {self.encoder!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")


def store_path(artifacts: Path, encoder: str) -> Path:
    """The bag-of-words store for the ``encoder`` (trained | random) model."""
    return Path(artifacts) / "stores" / ("bow.h5" if encoder == "trained" else f"bow-{encoder}.h5")



LOGMEL_BATCH = 16  # chunks per log-mel call on the CPU (see ShardEmbedder)


class ShardEmbedder:
    """list[Clip] -> ([ClipFeatures], [(fname, reason)]) for bow.io.sharded; picklable: each
    process loads the encoders and codebooks from their folders on first use.

    Clips are read (and chunked) ahead by ``decode_threads`` threads (bow.audio.readahead; default 1
    on the CPU, more for a GPU) while the model computes; their chunks are pooled across clips
    into batches of exactly ``batch_chunks`` (the last one of a shard may be smaller), so short
    clips fill whole batches and memory holds at most one batch, one clip and the clips read
    ahead, whatever the shard size. On the CPU the log-mel of a batch is computed
    ``LOGMEL_BATCH`` chunks at a time: the same bytes (chunks are independent), 2x faster than
    256 at once on one thread (the STFT's frames stay in cache) and ~500 MB less memory.
    ``precision`` (bow.runtime): fp32, or tf32 / bf16 for the encoders on CUDA.
    """

    def __init__(self, autoencoders: Path, codebooks: Path, vocabulary: list[str],
                 device: str = "cpu", batch_chunks: int = 256, precision: str = "fp32",
                 decode_threads: int | None = None):
        self.autoencoders, self.codebooks, self.vocabulary = autoencoders, codebooks, vocabulary
        self.device, self.batch_chunks = device, batch_chunks
        self.precision, self.decode_threads = precision, decode_threads
        check_precision(precision, device)
        self._model = None

    def __getstate__(self):
        return {**self.__dict__, "_model": None}

    def _counts(self, chunks: np.ndarray) -> np.ndarray:
        """(n, 16000) chunks -> (n, 4 D) uint16 counts, one batch."""
        if self._model is None:
            dev = resolve_device(self.device)
            self._model = (LogMel().to(dev), BagOfWords.load(self.autoencoders, self.codebooks,
                                                             dev), dev)
        front, bag, dev = self._model
        with torch.inference_mode():
            x = torch.from_numpy(chunks).to(dev)
            step = LOGMEL_BATCH if dev.type == "cpu" else len(x)
            logmel = torch.cat([front(x[i:i + step]) for i in range(0, len(x), step)])
            with encoder_precision(self.precision, dev):
                return bag.transform(logmel)

    def __call__(self, clips: list[Clip]):
        items, skipped = [], []
        waiting: deque = deque()                # clips read, whose count rows are not all done
        parts, n_parts = [], 0                  # chunks read, not yet embedded
        rows = np.zeros((0, 0), np.uint16)      # count rows done, not yet given to their clips
        threads = self.decode_threads
        if threads is None:
            threads = default_threads(torch.device(self.device).type)
        for i, (clip, chunks) in enumerate(read_ahead(clips, _read_chunks, threads)):
            if isinstance(chunks, AudioError):
                skipped.append((clip.fname, str(chunks)))
            else:
                waiting.append((clip, len(chunks)))
                parts.append(chunks)
                n_parts += len(chunks)
            last = i == len(clips) - 1
            if n_parts >= self.batch_chunks or (last and n_parts):
                flat = parts[0] if len(parts) == 1 else np.concatenate(parts)
                n = n_parts if last else n_parts // self.batch_chunks * self.batch_chunks
                done = [self._counts(flat[j:j + self.batch_chunks])
                        for j in range(0, n, self.batch_chunks)]
                rows = np.concatenate([rows] + done) if len(rows) else np.concatenate(done)
                parts, n_parts = ([flat[n:]] if n < n_parts else []), n_parts - n
            while waiting and waiting[0][1] <= len(rows):
                clip, n = waiting.popleft()
                mine, rows = rows[:n].copy(), rows[n:]
                items.append(ClipFeatures(fname=clip.fname, split=clip.split,
                                          labels=multi_hot(clip.labels, self.vocabulary),
                                          chunks=mine, clip=clip_vector(mine)))
        return items, skipped


def _read_chunks(path) -> np.ndarray:
    """(n_chunks, 16000) float32 chunks of a file (bow.audio.load defaults)."""
    return chunk(read_audio(path))


def run(data: Path, artifacts: Path, config: EmbedConfig = EmbedConfig(),
        device: str = "auto", progress: bool = True, jobs: int = 1, threads: int | None = None,
        scheduler: str | None = None) -> Path:
    """Embed every clip into the store; return its path. Skips itself when nothing changed.

    ``jobs``, ``threads`` and ``scheduler`` choose where shards run (bow.io.sharded); they do not
    change the store, so they are not part of its fingerprint.
    """
    ae_dir = train_autoencoders.output_dir(artifacts, config.encoder)
    cb_dir = fit_codebooks.output_dir(artifacts, config.encoder)
    out = store_path(artifacts, config.encoder)
    with contextlib.ExitStack() as locks:  # read the models, write the store: see bow.io.stage
        for d in (ae_dir, cb_dir):
            if d.is_dir():
                locks.enter_context(locked(d, "embed", shared=True))
        locks.enter_context(locked(lock_dir(out), "embed"))
        return _embed(data, ae_dir, cb_dir, out, config, device, progress, jobs, threads,
                      scheduler)


def _embed(data, ae_dir, cb_dir, out, config, device, progress, jobs, threads,
           scheduler) -> Path:
    """The work of ``run``, with the locks held."""
    upstream = {"autoencoders": read_fingerprint(ae_dir), "codebooks": read_fingerprint(cb_dir)}
    for name, d in (("train_autoencoders", ae_dir), ("fit_codebooks", cb_dir)):
        if read_fingerprint(d) is None:
            raise SystemExit(f"{d}: not finished; run python -m pipelines.{name} "
                             f"--encoder {config.encoder} first")
    dataset = load_dataset(data)
    inputs = {**upstream, "clips": clips_fingerprint(dataset.clips), "invalid": dataset.invalid}
    # shard_size and batch_chunks change how the store is computed, not what it holds
    # (a reduced precision changes it: it counts, and fp32 keeps the fingerprints it had)
    what = {"encoder": config.encoder}
    if config.precision != "fp32":
        what["precision"] = config.precision
    fingerprint = stage_fingerprint(what, inputs)
    if store_fingerprint(out) == fingerprint:
        remove_leftovers(out)
        return out
    n_codes = Codebook.load(cb_dir / f"{FAMILIES[0]}.npz").n_codes
    resolved = {"embed": config, "n_codes": n_codes, "families": list(FAMILIES),
                "chunk_vectors": "uint16 counts, 4 histograms of n_codes in family order",
                "clip_vector": "mean of the chunk vectors",
                "train_autoencoders": read_json(ae_dir / "config.json", "stage config"),
                "fit_codebooks": read_json(cb_dir / "config.json", "stage config")}
    embedder = ShardEmbedder(ae_dir, cb_dir, dataset.vocabulary,
                             str(resolve_device(device)), config.batch_chunks,
                             config.precision)
    embed_to_store(dataset.clips, embedder, out, vocabulary=dataset.vocabulary, kind="bow",
                   config=resolved, fingerprint=fingerprint, upstream=upstream,
                   shard_size=config.shard_size, extra_skipped=dataset.invalid,
                   progress=progress, jobs=jobs, threads=threads, scheduler=scheduler)
    return out


def main(argv=None) -> None:
    parser = common_parser("Embed every clip with the bag-of-words model into an HDF5 store.")
    add_parallel_options(parser)
    add_strict_option(parser)
    add_config_args(parser, EmbedConfig)
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(EmbedConfig, args)
    except ValueError as e:
        parser.error(str(e))
    apply_threads(args)
    path = store_path(args.artifacts, cfg.encoder)
    with clean_errors("embed"):
        before = store_fingerprint(path)
        run(args.data, args.artifacts, cfg, device=args.device, jobs=args.jobs,
            threads=args.threads, scheduler=args.scheduler)
        if before is not None and store_fingerprint(path) == before:
            print(f"{path}: up to date (same config and inputs), skipped")
        with h5py.File(path, "r") as f:
            n, m = len(f["clips/fname"]), (len(f["chunks/vectors"]) if "chunks" in f else 0)
            print(f"{path}: {n} clips, {m} chunks, {len(f['skipped/fname'])} skipped, "
                  f"vectors of {f['chunks/vectors'].shape[1] if m else 0} counts")
        skipped = read_skipped(path)
    report_skipped("embed", skipped, f"/skipped in {path}", args.strict)


if __name__ == "__main__":
    main()
