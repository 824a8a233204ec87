"""Stage 2 of the bag-of-words model: one k-means codebook per token family.

    python -m pipelines.fit_codebooks --data DIR [--artifacts artifacts] [--n-codes 256]

Encodes the grid tokens of a seeded sample of at most ``--sample-chunks`` training chunks
(bow.bagofwords.corpus.sampled_logmel: one pass, 19.2 KB of log-mel a sampled chunk; the same
sample as train_autoencoders' with the same seed) with the stage-1 autoencoders
(``autoencoders/`` or ``autoencoders-random/``, picked by ``--encoder``) and fits
``bow.bagofwords.codebook.Codebook`` (FAISS k-means, on the GPU when faiss sees one and ``--device``
is auto or cuda) on each family's codes, and the frame words (bow.bagofwords.frames,
``--frame-codes``, ``frames.npz``; with ``--frame-stats`` statistics words per chunk statistic)
on the chunks' frame descriptors. Writes
``<artifacts>/codebooks/<family>.npz`` (centroids),
``<family>.json`` (parameters, per-iteration objective, cluster sizes, empty clusters,
imbalance), ``summary.json``, ``config.json`` and ``fingerprint.json`` (``codebooks-random/``
for the random encoders). Redone when the autoencoders, the clips or the options change.

Unreadable training clips and rows of the labels file that are not clips are skipped, listed in
summary.json and printed (``--strict``: exit status 3 if any). The stage holds a shared lock on
the autoencoder folder while it reads it (so train_autoencoders cannot rewrite it meanwhile)
and an exclusive one on its own. Same seed, config and clips: the same ``.npz`` bytes on CPU;
the ``<family>.json`` statistics also hold FAISS's per-iteration wall-clock times (``time``,
``time_search``), the only values that differ between two runs.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from bow.bagofwords.codebook import CodebookConfig, faiss_gpus
from bow.bagofwords.corpus import SAMPLE_CHUNKS, SAMPLE_HELP, check_sample_chunks, sampled_logmel
from bow.bagofwords.training import DEFAULT_ENCODER, ENCODERS, fit_codebooks
from bow.config import ConfigError, choose, option
from bow.data.clips import clips_fingerprint, training_clips
from bow.data.datasets import load_dataset
from bow.io.stage import (
    InputError,
    clear_done,
    is_done,
    locked,
    mark_done,
    read_fingerprint,
    read_json,
    stage_fingerprint,
    write_json,
)
from bow.runtime import resolve_device
from pipelines import cli, layout


@dataclass(frozen=True)
class FitCodebooksConfig(CodebookConfig):
    """k-means codebooks over the stage-1 autoencoders' codes (see bow.bagofwords.codebook)."""
    encoder: str = option(DEFAULT_ENCODER, "which encoders to use: trained, random or pca")
    level_bins: int = option(16, "level bins per family for encoders of shape tokens "
                             "(bow.bagofwords.levels; 0: none)")
    frame_codes: int = option(256, "frame words (bow.bagofwords.frames): words per stream of "
                              "the frame descriptors' codebooks (1000: openXBOW's size; 0: "
                              "none, the paper's four families only)")
    frame_stats: int = option(8, "statistics words (bow.bagofwords.frames): words per chunk "
                              "statistic (means, stds and modulation shares of the frame "
                              "descriptors; 0: none; needs frame words)")
    max_clips: int | None = option(None, "fit on a seeded subset of at most this many training "
                                   "clips (none: all)")
    train_splits: tuple[str, ...] = option(("train",), "splits to fit on (FSD50K: train; "
                                           "labels.csv: e.g. 1,2,3,4)")
    sample_chunks: int = option(SAMPLE_CHUNKS, SAMPLE_HELP)

    def __post_init__(self):
        super().__post_init__()
        choose("encoder", self.encoder, ENCODERS)
        check_sample_chunks(self.sample_chunks)
        if self.frame_codes < 0 or self.frame_codes == 1:
            raise ConfigError(f"frame_codes must be 0 (none) or >= 2, got {self.frame_codes}")
        if self.frame_stats < 0 or self.frame_stats == 1:
            raise ConfigError(f"frame_stats must be 0 (none) or >= 2, got {self.frame_stats}")
        if self.level_bins < 0 or self.level_bins == 1:
            raise ConfigError(f"level_bins must be 0 (none) or >= 2, got {self.level_bins}")


def faiss_gpu(device: str) -> bool:
    """--device -> whether k-means runs on the GPU: cpu never, else when faiss sees one."""
    return device != "cpu" and faiss_gpus() > 0


def run(data: Path, artifacts: Path, config: FitCodebooksConfig = FitCodebooksConfig(),
        device: str = "auto", progress: bool = True) -> Path:
    """Fit the four codebooks; return their folder. Skips itself when nothing changed."""
    ae_dir = layout.autoencoders(artifacts, config.encoder)
    out = layout.codebooks(artifacts, config.encoder)
    with contextlib.ExitStack() as locks:
        if ae_dir.is_dir():
            locks.enter_context(locked(ae_dir, "fit_codebooks", shared=True))
        ae_fingerprint = read_fingerprint(ae_dir)
        if ae_fingerprint is None:
            raise InputError(f"{ae_dir}: no finished autoencoders; run python -m "
                             f"pipelines.train_autoencoders --encoder {config.encoder} first")
        locks.enter_context(locked(out, "fit_codebooks"))
        dataset = load_dataset(data)
        train = training_clips(dataset, config.train_splits, config.max_clips, config.seed)
        inputs = {"autoencoders": ae_fingerprint, "clips": clips_fingerprint(train)}
        fingerprint = stage_fingerprint(config, inputs)
        if is_done(out, fingerprint):
            return out
        clear_done(out)
        dev = resolve_device(device)
        logmel, _, skipped, sample = sampled_logmel(train, config.sample_chunks, config.seed,
                                                    dev, progress=progress, desc="log-mel train")
        summary = {"clips": len(train) - len(skipped), "chunks": int(logmel.shape[0]),
                   "sample": sample, "skipped": skipped, "invalid": dataset.invalid}
        summary["families"] = fit_codebooks(ae_dir, logmel, config, out, dev, faiss_gpu(device),
                                            config.level_bins, config.frame_codes,
                                            config.frame_stats)
        write_json(out / "summary.json", summary)
        mark_done(out, fingerprint, config, inputs)
    return out


def _work(args, cfg: FitCodebooksConfig):
    before = read_fingerprint(layout.codebooks(args.artifacts, cfg.encoder))
    out = run(args.data, args.artifacts, cfg, args.device, not args.no_progress)
    cli.say_if_unchanged(before, read_fingerprint(out), out)
    summary = read_json(out / "summary.json", "codebook summary")
    print(f"codebooks (D = {cfg.n_codes}, {cfg.encoder} encoders) in {out}: "
          f"{summary['clips']} clips, {summary['chunks']} of {summary['sample']['chunks_seen']} "
          f"chunks sampled, "
          f"{len(summary['skipped'])} unreadable")
    for family in summary["families"]:
        s = summary["families"][family]
        note = f", {s['points_per_centroid']:.0f} points per centroid" if s["few_points"] else ""
        print(f"  {family:18s} {s['n_points']} points, mean sq. distance "
              f"{s['mean_squared_distance']:.4g}, {s['empty']} empty, imbalance "
              f"{s['imbalance']:.2f} ({s['device']}){note}")
    return (summary["skipped"] + summary.get("invalid", []),
            f"'skipped' and 'invalid' in {out / 'summary.json'}")


def main(argv=None) -> None:
    cli.stage_main(argv, "fit_codebooks", "Fit the bag-of-words k-means codebooks (one per "
                   "token family).", FitCodebooksConfig, _work)


if __name__ == "__main__":
    main()
