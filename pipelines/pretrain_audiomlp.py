"""Stage: pretrain the Audio-MLP autoencoder on any audio, no labels -> artifacts/audiomlp/best.pth.

    python -m pipelines.pretrain_audiomlp --data DIR[,DIR2,...] [--train-splits ...]
                                          [--recipe ours|authors] [--epochs 40 ...]

Data: one or several data sets in any layout bow reads (FSD50K, labels.csv, Speech Commands),
pooled; labels are ignored. The clips of ``--train-splits`` (default: every clip) are cut into
1 s chunks as the embedder cuts them, and a seeded ``--val-fraction`` of the clips (whole
clips) is held out to choose the best epoch; ``--max-clips`` takes a seeded subset first. The
chunks' power mel is cached in ``audiomlp/powermel-<digest>.npy``. The settings (recipe, loss,
input scaling, SpecAugment, budget) are bow.audiomlp.train's; the defaults are the measured
recipe ``ours``, and ``--recipe authors`` is the authors' configuration.

Outputs in ``<artifacts>/audiomlp/``:
  best.pth      the best-validation encoder, ``{"model_state_dict": ...}`` in the authors' format
                with our keys beside it (input scaling, decoder, config): it loads with
                bow.audiomlp.model.load_checkpoint like the authors' audiomae.pth;
  best.json     sidecar: config (resolved), data sets, clip and chunk counts, best epoch, its
                held-out losses, skipped clips, per-epoch history;
  curves.png    training and held-out losses per epoch, and predicting the mean;
  last.pt       resume state (a killed run continues from the last finished epoch and ends with
                the weights of a run that never stopped).

Unreadable clips are skipped, listed in best.json and printed (``--strict``: exit status 3).
The stage holds an exclusive lock on ``<artifacts>/audiomlp/``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bow.audiomlp.train import PretrainConfig, power_mel_chunks, pretrain_chunks
from bow.config import option
from bow.data.clips import clips_fingerprint, holdout, subset
from bow.data.datasets import load_dataset
from bow.io.stage import (
    InputError,
    clear_done,
    digest,
    is_done,
    locked,
    mark_done,
    read_json,
    stage_fingerprint,
    write_json,
)
from bow.report.figures import reconstruction_curves_plot
from bow.runtime import resolve_device
from pipelines import cli, layout


@dataclass(frozen=True)
class PretrainAudioMLPConfig(PretrainConfig):
    """Audio-MLP pretraining (bow.audiomlp.train) and the clips it uses."""
    train_splits: tuple[str, ...] = option((), "splits of the clips to train on (default: "
                                           "every clip; labels are never used)")
    val_fraction: float = option(0.1, "fraction of the clips held out (whole clips) to choose "
                                 "the best epoch")
    max_clips: int | None = option(None, "train on a seeded subset of at most this many clips")


def data_folders(data) -> list[Path]:
    """``--data`` as a list of folders: a path, a comma-separated string, or a list."""
    items = data if isinstance(data, (list, tuple)) else str(data).split(",")
    return [Path(str(d).strip()) for d in items if str(d).strip()]


def run(data, artifacts: Path, config: PretrainAudioMLPConfig = PretrainAudioMLPConfig(),
        device: str = "auto", progress: bool = True) -> Path:
    """Pretrain (or resume, or skip when done) and return the path of best.pth."""
    out_dir, dev = layout.audiomlp(artifacts), resolve_device(device)
    clips, sources, skipped = [], [], []
    for folder in data_folders(data):
        ds = load_dataset(folder)
        chosen = ds.select(config.train_splits) if config.train_splits else list(ds.clips)
        clips += chosen
        skipped += ds.invalid
        sources.append({"data": str(folder), "layout": ds.layout, "clips": len(chosen),
                        "fingerprint": clips_fingerprint(chosen)})
    clips = subset(clips, config.max_clips, config.seed)
    if len(clips) < 2:
        raise InputError(f"{', '.join(s['data'] for s in sources)}: {len(clips)} clip(s) in "
                         f"the splits {list(config.train_splits) or 'all'}; need at least 2 "
                         "(some are held out)")
    fit, held = holdout(clips, config.val_fraction, config.seed)
    clip_list = clips_fingerprint(clips)
    inputs = {"data": [{k: s[k] for k in ("layout", "fingerprint")} for s in sources],
              "clips": clip_list}
    fingerprint = stage_fingerprint(config, inputs)
    with locked(out_dir, "pretrain_audiomlp"):
        if is_done(out_dir, fingerprint):
            return out_dir / "best.pth"
        clear_done(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        ordered = fit + held
        power, counts, bad = power_mel_chunks(
            ordered, layout.audiomlp_cache(artifacts, digest([str(c.path) for c in ordered])),
            progress=progress)
        skipped += bad
        owner = np.repeat(np.arange(len(ordered)), counts)
        rows = {"train": np.flatnonzero(owner < len(fit)),
                "val": np.flatnonzero(owner >= len(fit))}
        for name, part in rows.items():
            if not len(part):
                raise InputError(f"no readable {name} clips to pretrain Audio-MLP on "
                                 f"({len(skipped)} skipped)")
        state, _ = pretrain_chunks(power, rows["train"], rows["val"], out_dir, config, dev,
                                   progress, resume_tag=fingerprint)
        best = state["history"][state["best_epoch"] - 1]
        resolved = config.resolved()
        write_json(out_dir / "best.json", {
            "config": resolved, "data": sources, "best_epoch": state["best_epoch"],
            "val_loss": best["val_loss"], "val_clean": best["val_clean"],
            "val_mean": best["val_mean"],
            "n_clips": {"train": len(fit), "val": len(held)},
            "n_chunks": {k: len(v) for k, v in rows.items()},
            "skipped": skipped, "history": state["history"]})
        reconstruction_curves_plot(state["history"], out_dir / "curves.png", resolved.loss,
                                   masked=resolved.time_masks + resolved.freq_masks > 0)
        mark_done(out_dir, fingerprint, config, inputs)
    return out_dir / "best.pth"


def _work(args, config: PretrainAudioMLPConfig):
    best = run(args.data, args.artifacts, config, args.device, not args.no_progress)
    info = read_json(best.with_suffix(".json"), "pretraining summary")
    print(f"{best}: best epoch {info['best_epoch']} of {len(info['history'])}, held-out "
          f"{info['config']['loss']} {info['val_loss']:.4g} (clean input "
          f"{info['val_clean']:.4g}; predicting the mean {info['val_mean']:.4g}) on "
          f"{info['n_chunks']['val']} chunks of {info['n_clips']['val']} clips; trained on "
          f"{info['n_chunks']['train']} chunks of {info['n_clips']['train']} clips; "
          f"{len(info['skipped'])} clips skipped")
    return info["skipped"], f"'skipped' in {best.with_suffix('.json')}"


def main(argv=None) -> None:
    cli.stage_main(argv, "pretrain_audiomlp", "Pretrain the Audio-MLP autoencoder on any "
                   "audio (labels unused).", PretrainAudioMLPConfig, _work,
                   options=[cli.threads_option],
                   data_help="dataset folder(s), comma-separated to pool several: FSD50K "
                             "release layout, audio/ + labels.csv, or Speech Commands")


if __name__ == "__main__":
    main()
