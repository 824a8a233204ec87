"""Stage 1 of the bag-of-words model: one autoencoder per token family.

    python -m pipelines.train_autoencoders --data DIR [--artifacts artifacts]
                                         [--encoder pca|trained|random]

Reads the training clips (``--train-splits``) in one pass and keeps the log-mel of a seeded
sample of at most ``--sample-chunks`` chunks (bow.bagofwords.corpus.sampled_logmel; 19.2 KB each;
the default covers FSD50K's train split, so it fits on every chunk), holds out a seeded
``val_fraction`` of the readable clips for validation (early stopping) and trains the four
autoencoders (``bow.bagofwords.autoencoder``) in turn. Writes
``<artifacts>/autoencoders/<family>.pt``, ``history.json`` (per-epoch train and validation MSE, the
clips skipped and why), ``timings.json`` (training seconds), ``config.json`` and
``fingerprint.json``. Checkpoints go to ``.checkpoints-<fingerprint>/`` after every epoch; a run
that is stopped (even by SIGKILL) resumes from them, with the optimiser and random generator states,
so it ends with the same models as a run that never stopped; a family already saved with this
fingerprint is not trained again; checkpoints are deleted when the stage completes (with any left by
runs of other configurations). ``--encoder random`` writes the untrained, seeded initialisations
(with the input standardisation fitted on the training tokens) to ``autoencoders-random/``: the
control; ``--encoder pca`` (the default) fits each family's PCA to input/F in closed form.

Unreadable clips (``bow.audio.load.AudioError``) and rows of the labels file that are not clips
(``Dataset.invalid``) are skipped, listed in history.json and printed (``--strict``: exit
status 3 if any). The model files and history.json hold no wall-clock times, so the same seed,
config and clips give the same bytes on CPU; the times are in timings.json.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from bow.bagofwords.corpus import SAMPLE_CHUNKS, SAMPLE_HELP, check_sample_chunks, training_logmel
from bow.bagofwords.encoder import AutoencoderConfig
from bow.bagofwords.tokens import FAMILIES
from bow.bagofwords.training import DEFAULT_ENCODER, ENCODERS, train_autoencoders
from bow.config import choose, option
from bow.data.clips import clips_fingerprint, training_clips
from bow.data.datasets import load_dataset
from bow.io.stage import (
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
class TrainAutoencodersConfig(AutoencoderConfig):
    """Autoencoder training. Paper values: F = 10, hidden 2048, dropout 0.5, MSE.

    Not in the paper, chosen here: Adam, lr 1e-3, batch 256 random crops, epochs of 100 steps,
    at most 6 epochs (600 steps, 153,600 crops per family), early stopping after 3 epochs
    without a lower validation MSE (the best epoch is kept).

    Why 600 steps: of 100, 300 and 600 steps (paper sizes, raw tokens, ESC-10) 600 measured
    best, 0.808 (5-fold probe) against 0.734 and 0.805; the validation MSE was still falling.

    Against the controls, ``python -m benchmarks.bow_quality --data ../shared/data/esc10 --arms
    paper,paper-random,paper-pca --seeds 0,1,2`` (raw tokens, D = 256, hard assignment, fitted
    on folds 1-4; the probe of ../shared/FINDINGS.md on sqrt of the clip means; 5-fold / fold 5,
    mean of 3 k-means seeds; one thread): trained 0.823 / 0.854 (about 640 CPU-s a seed),
    random 0.813 / 0.825, PCA to the same width 0.844 / 0.854 (49 CPU-s). The trained
    autoencoders beat untrained ones but not PCA, the optimum of a linear autoencoder (on shape
    tokens with the default level bins and soft assignment: trained 0.855, PCA 0.858); their
    codes use 1.05-1.9 effective dimensions of 8-96 (participation ratio: loudness, see
    bow.bagofwords.encoder), which is why the default encoder is PCA of shape tokens (README,
    Results). Larger budgets were not measured (no GPU): raise ``epochs`` and compare with
    ``--encoder pca`` and ``--encoder random`` before claiming a gain.
    """
    encoder: str = option(DEFAULT_ENCODER, "trained autoencoders (the paper's), random (the "
                          "same, untrained) or pca (the linear optimum, fitted in closed form)")
    val_fraction: float = option(0.1, "fraction of the training clips held out for validation "
                                 "(seeded)")
    max_clips: int | None = option(None, "train on a seeded subset of at most this many "
                                   "training clips (none: all)")
    train_splits: tuple[str, ...] = option(("train",), "splits to train on (FSD50K: train; "
                                           "labels.csv: e.g. 1,2,3,4)")
    sample_chunks: int = option(SAMPLE_CHUNKS, SAMPLE_HELP)

    def __post_init__(self):
        super().__post_init__()
        choose("encoder", self.encoder, ENCODERS)
        check_sample_chunks(self.sample_chunks)


def run(data: Path, artifacts: Path, config: TrainAutoencodersConfig = TrainAutoencodersConfig(),
        device: str = "auto", progress: bool = True) -> Path:
    """Train (or initialise) the four autoencoders; return their folder. Skips if unchanged."""
    dataset = load_dataset(data)
    train = training_clips(dataset, config.train_splits, config.max_clips, config.seed)
    inputs = {"clips": clips_fingerprint(train)}
    fingerprint = stage_fingerprint(config, inputs)
    out = layout.autoencoders(artifacts, config.encoder)
    with locked(out, "train_autoencoders"):
        if is_done(out, fingerprint):
            return out
        clear_done(out)
        dev = resolve_device(device)
        logmel, val, summary = training_logmel(train, config.val_fraction, config.seed, dev,
                                               progress, config.sample_chunks)
        summary["invalid"] = dataset.invalid
        summary["families"] = train_autoencoders(logmel, val, config, config.encoder, out,
                                                 fingerprint, dev, progress)
        write_json(out / "history.json", summary)
        mark_done(out, fingerprint, config, inputs)
        for stale in out.glob(".checkpoints-*"):  # this run's, and any left by earlier runs
            shutil.rmtree(stale, ignore_errors=True)
    return out


def _work(args, cfg: TrainAutoencodersConfig):
    before = read_fingerprint(layout.autoencoders(args.artifacts, cfg.encoder))
    out = run(args.data, args.artifacts, cfg, args.device, not args.no_progress)
    cli.say_if_unchanged(before, read_fingerprint(out), out)
    summary = read_json(out / "history.json", "training summary")
    sample = summary["sample"]
    print(f"autoencoders ({cfg.encoder}) in {out}: {summary['fit_clips']} clips "
          f"({summary['fit_chunks']} chunks) fitted, {summary['val_clips']} held out, "
          f"{len(summary['skipped'])} unreadable; sample of {sample['sampled']} of "
          f"{sample['chunks_seen']} chunks")
    for family in FAMILIES:
        s = summary["families"][family]
        print(f"  {family:18s} validation MSE {s['val_mse']:.4f} (standardised; 1.0 = the mean) "
              f"at epoch {s['best_epoch']}")
    return (summary["skipped"] + summary.get("invalid", []),
            f"'skipped' and 'invalid' in {out / 'history.json'}")


def main(argv=None) -> None:
    cli.stage_main(argv, "train_autoencoders", "Train the bag-of-words autoencoders (one per "
                   "token family).", TrainAutoencodersConfig, _work)


if __name__ == "__main__":
    main()
