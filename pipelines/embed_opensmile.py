"""Stage: every clip -> openSMILE's ComParE_2016 functionals per 1 s chunk and per clip (a peer).

    python -m pipelines.embed_opensmile --data DIR [--artifacts artifacts] [--jobs N]

The classic peer of the bag of words: audEERING's openSMILE (the ``opensmile`` package, an
optional extra: ``pip install "bow-audio[opensmile]"``; its licence allows research use only;
without it the command ends with exit status 1 and one line saying so). Every clip of the data
set (all splits) is read with ``bow.audio.load.read_audio`` and given to bow.peers.embed. Store
(``bow.io.store`` schema, kind "opensmile"), ``<artifacts>/stores/opensmile.h5``:

  /clips/vectors    (N, 6373) float32 the functionals of the whole clip
  /chunks/vectors   (M, 6373) float32 the functionals of each 1 s chunk of
                    bow.audio.load.chunk(read_audio(path)), the rows of every other store
  /clips/nonfinite  (N,) int64 values openSMILE gave as NaN or inf, stored as 0 (none seen on
                    clips of 60 ms or more; shorter ones are zero-padded to 60 ms first)

Heads only standardise its columns (kind "opensmile" is not counts). openSMILE computes on the
CPU (``--device`` is not used) at tens of audio-seconds a second (README: the openSMILE peer),
so ``--jobs`` matters here. Unreadable clips, clips openSMILE fails on and rows with labels
outside the vocabulary are recorded in /skipped and printed; exit 0, or 3 with ``--strict``
when any was skipped. The fingerprint covers the feature set, the opensmile version, the
extraction rules (``RULES``) and the clip list (not ``shard_size``, ``--jobs`` or
``--threads``: inert here, as in every embed stage): a store with the same one is not recomputed, a
killed run resumes from its finished shards (bow.io.sharded). Lock: exclusive on the store.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bow.config import option
from bow.data.clips import clips_fingerprint
from bow.data.datasets import load_dataset
from bow.io.sharded import embed_to_store, remove_leftovers
from bow.io.stage import locked, stage_fingerprint
from bow.io.store import describe, lock_dir, read_skipped, store_fingerprint
from bow.peers import opensmile
from bow.peers.embed import ShardEmbedder, nonfinite_counts
from pipelines import cli, layout

RULES = ("chunks: bow.audio.load.chunk, each on its own; clip: the whole clip; input clipped to "
         "[-1, 32767/32768] and zero-padded to 60 ms; non-finite values stored as 0")


@dataclass(frozen=True)
class EmbedOpenSmileConfig:
    """openSMILE ComParE_2016 functionals of every clip and 1 s chunk into the feature store."""
    shard_size: int = option(64, "clips per store shard (the unit of resumption)")


def run(data: Path, artifacts: Path, config: EmbedOpenSmileConfig = EmbedOpenSmileConfig(),
        device: str = "auto", progress: bool = True, jobs: int = 1,
        scheduler: str | None = None) -> Path:
    """Embed every clip into ``<artifacts>/stores/opensmile.h5``; skip when nothing changed.
    OpenSmileMissing (before anything is written) when the package is not installed."""
    version = opensmile.version()
    out = layout.opensmile_store(artifacts)
    with locked(lock_dir(out), "embed_opensmile"):
        dataset = load_dataset(data)
        what = {"feature_set": opensmile.FEATURE_SET, "opensmile": version, "rules": RULES}
        inputs = {"clips": clips_fingerprint(dataset.clips), "invalid": dataset.invalid}
        fingerprint = stage_fingerprint(what, inputs)
        if store_fingerprint(out) == fingerprint:
            remove_leftovers(out)
            return out
        resolved = {"embed_opensmile": config, **what,
                    "chunk_vectors": f"{opensmile.FEATURE_SET} functionals of each 1 s chunk "
                                     f"({opensmile.N_FUNCTIONALS})",
                    "clip_vector": f"{opensmile.FEATURE_SET} functionals of the whole clip "
                                   f"({opensmile.N_FUNCTIONALS})",
                    "licence": opensmile.LICENCE}
        embed_to_store(dataset.clips, ShardEmbedder(dataset.vocabulary), out,
                       vocabulary=dataset.vocabulary, kind="opensmile", config=resolved,
                       fingerprint=fingerprint, upstream={"opensmile": version},
                       shard_size=config.shard_size, extra_skipped=dataset.invalid,
                       progress=progress, jobs=jobs, scheduler=scheduler)
    return out


def _work(args, cfg: EmbedOpenSmileConfig):
    path = layout.opensmile_store(args.artifacts)
    before = store_fingerprint(path)
    run(args.data, args.artifacts, cfg, args.device, not args.no_progress, args.jobs,
        args.scheduler)
    cli.say_if_unchanged(before, store_fingerprint(path), path, "opensmile version and clips")
    print(describe(path))
    values, clips = nonfinite_counts(path)
    print(f"{path}: {values} non-finite openSMILE value(s) stored as 0, in {clips} clip(s)")
    return read_skipped(path), f"/skipped in {path}"


def main(argv=None) -> None:
    cli.stage_main(argv, "embed_opensmile", "Embed every clip with openSMILE's ComParE_2016 "
                   "functionals (per 1 s chunk and per clip) into an HDF5 store.",
                   EmbedOpenSmileConfig, _work, options=[cli.parallel_options])


if __name__ == "__main__":
    main()
