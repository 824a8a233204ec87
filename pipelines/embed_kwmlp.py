"""Stage: every clip -> KW-MLP timestamp, chunk and scene embeddings in an HDF5 store.

    python -m pipelines.embed_kwmlp --data DIR --checkpoint FILE [--scene-algorithm iterative]
                                    [--blocks 12] [--batch-clips 32]

The encoder is an authors'-format checkpoint (``../shared/kwmlp/kwmlp.pth``, or our own
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

from dataclasses import dataclass
from pathlib import Path

from bow.config import choose, option
from bow.io.sharded import embed_with_checkpoint
from bow.io.stage import InputError
from bow.io.store import describe, read_skipped, store_fingerprint
from bow.kwmlp.embed import ShardEmbedder
from bow.kwmlp.model import load_checkpoint
from bow.kwmlp.scene import ALGORITHMS
from bow.runtime import PRECISIONS, resolve_device
from pipelines import cli, layout


@dataclass(frozen=True)
class EmbedKWMLPConfig:
    """KW-MLP embedding of every clip into the feature store."""
    checkpoint: str | None = option(None, "authors'-format checkpoint (.pth); default: "
                                    "<artifacts>/kwmlp/best.pth")
    scene_algorithm: str = option("iterative", "scene embedding: iterative (the authors'), "
                                  "single or mean")
    blocks: int | None = option(None, "embed after this many blocks (paper's ablation: 4, 8 or "
                                "12); default: all")
    batch_clips: int = option(32, "clips embedded together")
    batch_chunks: int | None = option(None, "1 s chunks per encoder call; default: 32 on the "
                                      "CPU (measured fastest: the activations stay in cache), "
                                      "512 on CUDA")
    shard_size: int = option(256, "clips per store shard")
    precision: str = option("fp32", "encoder arithmetic: fp32, bf16 (CUDA or CPU) or tf32 "
                            "(CUDA) (see bow.runtime)")

    def __post_init__(self):
        choose("scene_algorithm", self.scene_algorithm, ALGORITHMS)
        choose("precision", self.precision, PRECISIONS)


def checkpoint_path(artifacts: Path, config: EmbedKWMLPConfig) -> Path:
    """The checkpoint to use: the configured one, else our own pretraining's best.pth."""
    path = Path(config.checkpoint) if config.checkpoint else layout.kwmlp_best(artifacts)
    if not path.is_file():
        hint = "" if config.checkpoint else (" (give --checkpoint, e.g. the authors' kwmlp.pth, "
                                             "or run python -m pipelines.pretrain_kwmlp first)")
        raise InputError(f"{path}: no such checkpoint{hint}")
    return path


def run(data: Path, artifacts: Path, config: EmbedKWMLPConfig = EmbedKWMLPConfig(),
        device: str = "auto", progress: bool = True, jobs: int = 1,
        scheduler: str | None = None) -> Path:
    """Embed every clip into ``<artifacts>/stores/kwmlp.h5``; skip when nothing changed."""
    ckpt = checkpoint_path(artifacts, config)

    def prepare(dataset):
        model = load_checkpoint(ckpt)           # fail early, before any shard, on a bad file
        if config.blocks is not None and not 1 <= config.blocks <= model.depth:
            raise InputError(f"--blocks {config.blocks}: the checkpoint has {model.depth} "
                             "blocks")
        resolved = {"embed_kwmlp": config, "checkpoint": str(ckpt), "depth": model.depth,
                    "frames": "timestamp embeddings (T, 64) of the authors' package, 10 ms hop",
                    "clip_vector": f"{config.scene_algorithm} scene embedding of the clip "
                                   "(1024)",
                    "chunk_vectors": f"{config.scene_algorithm} scene embedding of the frames "
                                     "centred in each 1 s chunk (1024)"}
        return resolved, ShardEmbedder(ckpt, dataset.vocabulary, config.scene_algorithm,
                                       config.batch_clips, config.batch_chunks, config.precision,
                                       str(resolve_device(device)), n_blocks=config.blocks)

    return embed_with_checkpoint("embed_kwmlp", "kwmlp", data, ckpt, layout.kwmlp(artifacts),
                                 layout.kwmlp_store(artifacts), config, prepare,
                                 shard_size=config.shard_size, progress=progress, jobs=jobs,
                                 scheduler=scheduler)


def _work(args, cfg: EmbedKWMLPConfig):
    path = layout.kwmlp_store(args.artifacts)
    before = store_fingerprint(path)
    run(args.data, args.artifacts, cfg, args.device, not args.no_progress, args.jobs,
        args.scheduler)
    cli.say_if_unchanged(before, store_fingerprint(path), path, "config, checkpoint and clips")
    print(describe(path))
    return read_skipped(path), f"/skipped in {path}"


def main(argv=None) -> None:
    cli.stage_main(argv, "embed_kwmlp", "Embed every clip with KW-MLP into an HDF5 store.",
                   EmbedKWMLPConfig, _work, options=[cli.parallel_options])


if __name__ == "__main__":
    main()
