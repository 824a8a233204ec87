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
the same fingerprint (of the upstream stages, the clip list, ``encoder``, the assignment and the
kernel thread count; ``shard_size``, ``batch_chunks``, ``--jobs``, ``--scheduler`` and
``--threads`` do not change the store: every worker computes on one thread, bow.io.sharded).

The command prints the skipped clips with their reasons (the first ten; all are in /skipped)
and exits 0, or 3 with ``--strict`` when any clip was skipped (the store is complete either
way). The stage holds shared locks on the autoencoder and codebook folders and an exclusive one
on the store (``bow.io.store.lock_dir``), so no concurrent stage rewrites what it reads or writes;
a store killed half-way resumes from its finished shards (``bow.io.sharded``).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from bow.bagofwords.embed import BATCH_CHUNKS, ShardEmbedder
from bow.bagofwords.frames import STREAMS
from bow.bagofwords.model import AssignmentConfig, BagOfWords
from bow.bagofwords.tokens import FAMILIES
from bow.bagofwords.training import DEFAULT_ENCODER, ENCODERS
from bow.config import choose, narrow, option
from bow.data.clips import clips_fingerprint
from bow.data.datasets import load_dataset
from bow.io.sharded import embed_to_store, remove_leftovers
from bow.io.stage import InputError, locked, read_fingerprint, read_json, stage_fingerprint
from bow.io.store import describe, lock_dir, read_skipped, store_fingerprint
from bow.runtime import KERNEL_THREADS, PRECISIONS, resolve_device
from pipelines import cli, layout


@dataclass(frozen=True)
class EmbedConfig(AssignmentConfig):
    """Bag-of-words embedding of every clip into the feature store: which model, and how its
    tokens are assigned to codes (bow.bagofwords.model)."""
    encoder: str = option(DEFAULT_ENCODER, "which encoders and codebooks to use: trained, "
                          "random or pca")
    shard_size: int = option(64, "clips per store shard (the unit of resumption)")
    batch_chunks: int = option(BATCH_CHUNKS, "1 s chunks per log-mel and encoding batch")
    precision: str = option("fp32", "encoder arithmetic: fp32, bf16 (CUDA or CPU) or tf32 "
                            "(CUDA) (see bow.runtime)")

    def __post_init__(self):
        super().__post_init__()
        choose("encoder", self.encoder, ENCODERS)
        choose("precision", self.precision, PRECISIONS)


def run(data: Path, artifacts: Path, config: EmbedConfig = EmbedConfig(),
        device: str = "auto", progress: bool = True, jobs: int = 1,
        scheduler: str | None = None) -> Path:
    """Embed every clip into the store; return its path. Skips itself when nothing changed.

    ``jobs`` and ``scheduler`` choose where shards run (bow.io.sharded); they do not change the
    store, so they are not part of its fingerprint.
    """
    ae_dir = layout.autoencoders(artifacts, config.encoder)
    cb_dir = layout.codebooks(artifacts, config.encoder)
    out = layout.bow_store(artifacts, config.encoder)
    with contextlib.ExitStack() as locks:  # read the models, write the store: see bow.io.stage
        for d in (ae_dir, cb_dir):
            if d.is_dir():
                locks.enter_context(locked(d, "embed", shared=True))
        locks.enter_context(locked(lock_dir(out), "embed"))
        upstream = {"autoencoders": read_fingerprint(ae_dir),
                    "codebooks": read_fingerprint(cb_dir)}
        for name, d in (("train_autoencoders", ae_dir), ("fit_codebooks", cb_dir)):
            if read_fingerprint(d) is None:
                raise InputError(f"{d}: not finished; run python -m pipelines.{name} "
                                 f"--encoder {config.encoder} first")
        dataset = load_dataset(data)
        inputs = {**upstream, "clips": clips_fingerprint(dataset.clips),
                  "invalid": dataset.invalid}
        # shard_size and batch_chunks change how the store is computed, not what it holds
        # (a reduced precision changes it: it counts, and fp32 keeps the fingerprints it had)
        what = {"encoder": config.encoder, "assignment": narrow(config, AssignmentConfig),
                "kernel_threads": KERNEL_THREADS}
        if config.precision != "fp32":
            what["precision"] = config.precision
        fingerprint = stage_fingerprint(what, inputs)
        if store_fingerprint(out) == fingerprint:
            remove_leftovers(out)
            return out
        bag = BagOfWords.load(ae_dir, cb_dir, assignment=narrow(config, AssignmentConfig))
        resolved = {"embed": config, "n_codes": bag.n_codes, "level_bins": bag.n_levels,
                    "frame_codes": bag.frames.n_codes if bag.frames else 0,
                    "frame_streams": list(STREAMS) if bag.frames else [],
                    "frame_stat_bins": bag.frames.stat_bins if bag.frames else 0,
                    "families": list(FAMILIES),
                    "chunk_vectors": f"{'uint16' if config.assignment == 'hard' else 'float32'} "
                                     "counts: 4 histograms of n_codes in family order, then 4 "
                                     "of level_bins, then one of frame_codes per frame "
                                     "stream, then frame_stat_bins per chunk statistic "
                                     "(mean, std of the 94 frame descriptors, modulation "
                                     "shares of the 24 band energies)",
                    "clip_vector": "mean of the chunk vectors",
                    "train_autoencoders": read_json(ae_dir / "config.json", "stage config"),
                    "fit_codebooks": read_json(cb_dir / "config.json", "stage config")}
        embedder = ShardEmbedder(ae_dir, cb_dir, dataset.vocabulary,
                                 str(resolve_device(device)), config.batch_chunks,
                                 config.precision, assignment=narrow(config, AssignmentConfig))
        embed_to_store(dataset.clips, embedder, out, vocabulary=dataset.vocabulary,
                       kind="bow", config=resolved, fingerprint=fingerprint,
                       upstream=upstream, shard_size=config.shard_size,
                       extra_skipped=dataset.invalid, progress=progress, jobs=jobs,
                       scheduler=scheduler)
    return out


def _work(args, cfg: EmbedConfig):
    path = layout.bow_store(args.artifacts, cfg.encoder)
    before = store_fingerprint(path)
    run(args.data, args.artifacts, cfg, args.device, not args.no_progress, args.jobs,
        args.scheduler)
    cli.say_if_unchanged(before, store_fingerprint(path), path)
    print(describe(path))
    return read_skipped(path), f"/skipped in {path}"


def main(argv=None) -> None:
    cli.stage_main(argv, "embed", "Embed every clip with the bag-of-words model into an HDF5 "
                   "store.", EmbedConfig, _work, options=[cli.parallel_options])


if __name__ == "__main__":
    main()
