"""Stage: every clip -> Audio-MLP timestamp, chunk and scene embeddings in an HDF5 store.

    python -m pipelines.embed_audiomlp --data DIR --checkpoint FILE [--scene-algorithm iterative]
                                       [--batch-clips 32] [--jobs N]

The encoder is the authors' ``audiomae.pth`` (``../shared/audiomlp/audiomae.pth``) or our
own ``<artifacts>/audiomlp/best.pth`` from pipelines.pretrain_audiomlp (used when --checkpoint
is not given); its input scaling travels in the file. Every clip of the data set (all splits)
is read with ``bow.audio.load.read_audio`` and embedded as the authors' package does
(``bow.audiomlp.embed``). Store (``bow.io.store`` schema, kind "audiomlp"),
``<artifacts>/stores/audiomlp.h5``:

  /frames/vectors, /frames/timestamps, /frames/offsets   timestamp embeddings (T, 8), ms
  /clips/vectors    (N, 1584) the scene embedding of the whole clip
  /chunks/vectors   (M, 1584) one row per 1 s chunk of bow.audio.load.chunk(read_audio(path)): the
                    scene algorithm on the frames centred in that second (bow.audiomlp.embed)

Unreadable clips and rows with labels outside the vocabulary are recorded in /skipped and
printed; the command exits 0, or 3 with ``--strict`` when any clip was skipped. The fingerprint
covers the config (without the checkpoint's path), the checkpoint's SHA-256 and the clip list;
a store with the same fingerprint is not recomputed; an interrupted run resumes from its
finished shards. Locks: exclusive on the store, shared on ``<artifacts>/audiomlp/`` when the
checkpoint is our own pretraining's.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bow.audiomlp.embed import SCENE_STEPS, ShardEmbedder
from bow.audiomlp.model import load_checkpoint
from bow.config import choose, option
from bow.io.sharded import embed_with_checkpoint
from bow.io.stage import InputError
from bow.io.store import describe, read_skipped, store_fingerprint
from bow.kwmlp.scene import ALGORITHMS
from bow.runtime import PRECISIONS, resolve_device
from pipelines import cli, layout


@dataclass(frozen=True)
class EmbedAudioMLPConfig:
    """Audio-MLP embedding of every clip into the feature store."""
    checkpoint: str | None = option(None, "the authors' audiomae.pth or our pretraining's "
                                    "best.pth; default: <artifacts>/audiomlp/best.pth")
    scene_algorithm: str = option("iterative", "scene embedding: iterative (the authors'), "
                                  "single or mean")
    batch_clips: int = option(32, "clips embedded together")
    batch_chunks: int | None = option(None, "1 s chunks per encoder call; default: 32 on the "
                                      "CPU, 512 on CUDA")
    shard_size: int = option(256, "clips per store shard")
    precision: str = option("fp32", "encoder arithmetic: fp32, bf16 (CUDA or CPU) or tf32 "
                            "(CUDA) (see bow.runtime)")

    def __post_init__(self):
        choose("scene_algorithm", self.scene_algorithm, ALGORITHMS)
        choose("precision", self.precision, PRECISIONS)


def checkpoint_path(artifacts: Path, config: EmbedAudioMLPConfig) -> Path:
    """The checkpoint to use: the configured one, else our own pretraining's best.pth."""
    path = Path(config.checkpoint) if config.checkpoint else layout.audiomlp_best(artifacts)
    if not path.is_file():
        hint = "" if config.checkpoint else (" (give --checkpoint, e.g. the authors' "
                                             "audiomae.pth, or run python -m "
                                             "pipelines.pretrain_audiomlp first)")
        raise InputError(f"{path}: no such checkpoint{hint}")
    return path


def run(data: Path, artifacts: Path, config: EmbedAudioMLPConfig = EmbedAudioMLPConfig(),
        device: str = "auto", progress: bool = True, jobs: int = 1,
        scheduler: str | None = None) -> Path:
    """Embed every clip into ``<artifacts>/stores/audiomlp.h5``; skip when nothing changed."""
    ckpt = checkpoint_path(artifacts, config)

    def prepare(dataset):
        encoder, scaling = load_checkpoint(ckpt)   # fail early, before any shard
        width = SCENE_STEPS * encoder.embed_dim
        resolved = {"embed_audiomlp": config, "checkpoint": str(ckpt),
                    "input_scaling": scaling.kind, "bottleneck_act": encoder.bottleneck_act,
                    "frames": f"timestamp embeddings (T, {encoder.embed_dim}) of the authors' "
                              "package, 10 ms hop",
                    "clip_vector": f"{config.scene_algorithm} scene embedding of the clip "
                                   f"({width})",
                    "chunk_vectors": f"{config.scene_algorithm} scene embedding of the frames "
                                     f"centred in each 1 s chunk ({width})"}
        return resolved, ShardEmbedder(ckpt, dataset.vocabulary, config.scene_algorithm,
                                       config.batch_clips, config.batch_chunks, config.precision,
                                       str(resolve_device(device)))

    return embed_with_checkpoint("embed_audiomlp", "audiomlp", data, ckpt,
                                 layout.audiomlp(artifacts), layout.audiomlp_store(artifacts),
                                 config, prepare, shard_size=config.shard_size,
                                 progress=progress, jobs=jobs, scheduler=scheduler)


def _work(args, cfg: EmbedAudioMLPConfig):
    path = layout.audiomlp_store(args.artifacts)
    before = store_fingerprint(path)
    run(args.data, args.artifacts, cfg, args.device, not args.no_progress, args.jobs,
        args.scheduler)
    cli.say_if_unchanged(before, store_fingerprint(path), path, "config, checkpoint and clips")
    print(describe(path))
    return read_skipped(path), f"/skipped in {path}"


def main(argv=None) -> None:
    cli.stage_main(argv, "embed_audiomlp", "Embed every clip with Audio-MLP into an HDF5 "
                   "store.", EmbedAudioMLPConfig, _work, options=[cli.parallel_options])


if __name__ == "__main__":
    main()
