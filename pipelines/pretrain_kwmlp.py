"""Stage: pretrain KW-MLP on a keyword dataset (the paper's recipe) -> artifacts/kwmlp/best.pth.

    python -m pipelines.pretrain_kwmlp --data DIR [--epochs 140 ...]

Data: the Speech Commands layout (word folders, validation_list.txt, testing_list.txt) or the
labels.csv layout; every clip needs exactly one label (others are skipped and reported); each
clip's first second becomes a (40, 98) MFCC, cached in ``mfcc-<digest>.npy`` beside the outputs
(bow.kwmlp.train).

The defaults are the paper's recipe (bow.kwmlp.train). Short run on fsdd (2,400 training clips),
where 140 epochs of 10 steps are far more than needed: ``--epochs 10 --warmup-epochs 1
--batch-size 32 --threads 1`` reached 99.3% test accuracy in 3.6 minutes of one CPU thread
(README.md). On a busy 2-core machine one torch thread trained 5x faster than two.

Outputs in ``<artifacts>/kwmlp/``:
  best.pth      the best-validation model, ``{"model_state_dict": ...}`` in the authors' format
                (loads with bow.kwmlp.model.load_checkpoint, and in the authors' code for the same
                number of classes); no pickled objects;
  best.json     sidecar: config, classes (logit order), best epoch, validation and test accuracy
                of best.pth, clip counts, skipped clips, per-epoch history;
  curves.png    loss and accuracy per epoch;
  last.pt       resume state (killed runs, even by SIGKILL, continue from the last finished
                epoch and end with the same weights as a run that never stopped).

Clips that cannot be read, rows of the labels file that are not clips and clips without exactly
one label are skipped, listed in best.json and printed (``--strict``: exit status 3 if any).
The stage holds an exclusive lock on ``<artifacts>/kwmlp/`` (bow.io.stage.locked).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bow.config import option
from bow.data.clips import clips_fingerprint
from bow.data.datasets import load_dataset
from bow.io.stage import (
    InputError,
    clear_done,
    is_done,
    locked,
    mark_done,
    read_json,
    stage_fingerprint,
    write_json,
)
from bow.kwmlp.train import PretrainConfig, keyword_clips, mfcc_features, pretrain_keywords
from bow.report.figures import training_curves_plot
from bow.runtime import resolve_device
from pipelines import cli, layout


@dataclass(frozen=True)
class PretrainKWMLPConfig(PretrainConfig):
    """KW-MLP pretraining (the paper's recipe, bow.kwmlp.train) and the splits it uses."""
    train_splits: tuple[str, ...] = option(("train",), "fit splits")
    val_splits: tuple[str, ...] = option(("val",), "splits choosing the best epoch")
    test_splits: tuple[str, ...] = option(("eval", "test"), "splits reported at the end")


def run(data: Path, artifacts: Path, config: PretrainKWMLPConfig = PretrainKWMLPConfig(),
        device: str = "auto", progress: bool = True) -> Path:
    """Pretrain (or resume, or skip when done) and return the path of best.pth."""
    out_dir, dev = layout.kwmlp(artifacts), resolve_device(device)
    ds = load_dataset(data)
    groups = {"train": config.train_splits, "val": config.val_splits,
              "test": config.test_splits}
    clips, y, skipped = keyword_clips(ds, [s for splits in groups.values() for s in splits])
    if not clips:
        raise InputError(f"{data}: no single-label clips in the splits "
                         f"{config.train_splits + config.val_splits + config.test_splits}")
    clip_list = clips_fingerprint(clips)
    inputs = {"layout": ds.layout, "clips": clip_list, "vocabulary": ds.vocabulary}
    fingerprint = stage_fingerprint(config, inputs)
    with locked(out_dir, "pretrain_kwmlp"):
        if is_done(out_dir, fingerprint):
            return out_dir / "best.pth"
        clear_done(out_dir)
        x, ok, bad = mfcc_features(clips, out_dir / f"mfcc-{clip_list[:16]}.npy",
                                   progress=progress)
        skipped += bad
        split = np.array([c.split for c in clips])
        rows = {name: np.flatnonzero(ok & np.isin(split, list(splits)))
                for name, splits in groups.items()}
        for name in ("train", "val"):
            if not len(rows[name]):
                raise InputError(f"{data}: no usable clips in the {name} splits "
                                 f"{getattr(config, name + '_splits')}")
        state, accuracy = pretrain_keywords(x, y, rows, len(ds.vocabulary), out_dir, config, dev,
                                            progress, resume_tag=fingerprint)
        write_json(out_dir / "best.json", {
            "config": config, "data": str(data), "layout": ds.layout,
            "classes": ds.vocabulary, "depth": config.depth, "best_epoch": state["best_epoch"],
            "train_accuracy": accuracy["train"], "val_accuracy": accuracy["val"],
            "test_accuracy": accuracy["test"], "n_clips": {k: len(v) for k, v in rows.items()},
            "skipped": skipped, "history": state["history"]})
        training_curves_plot(state["history"], out_dir / "curves.png")
        mark_done(out_dir, fingerprint, config, inputs)
    return out_dir / "best.pth"


def _work(args, config: PretrainKWMLPConfig):
    best = run(args.data, args.artifacts, config, args.device, not args.no_progress)
    info = read_json(best.with_suffix(".json"), "pretraining summary")
    test = info["test_accuracy"]
    print(f"{best}: best epoch {info['best_epoch']}, validation accuracy "
          f"{info['val_accuracy']:.4f}, test accuracy "
          f"{'n/a' if test is None else f'{test:.4f}'} ({info['n_clips']}); "
          f"{len(info['skipped'])} clips skipped")
    return info["skipped"], f"'skipped' in {best.with_suffix('.json')}"


def main(argv=None) -> None:
    cli.stage_main(argv, "pretrain_kwmlp", "Pretrain KW-MLP on keyword clips (the paper's "
                   "recipe).", PretrainKWMLPConfig, _work, options=[cli.threads_option])


if __name__ == "__main__":
    main()
