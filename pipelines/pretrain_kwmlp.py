"""Stage: pretrain KW-MLP on a keyword dataset (the paper's recipe) -> artifacts/kwmlp/best.pth.

    python -m pipelines.pretrain_kwmlp --data DIR [--epochs 140 ...]

Data: the Speech Commands layout (word folders, validation_list.txt, testing_list.txt) or the
labels.csv layout; every clip needs exactly one label (others are skipped and reported). Each
clip is read with bow.audio.load, reduced to its first 1 s chunk (shorter clips zero-padded, longer
ones cut: keywords last at most 1 s) and turned into a (40, 98) MFCC once (bow.audio.features.MFCC,
the front end of the embeddings); the MFCCs are cached in ``mfcc-<digest>.npy`` beside the
outputs, so a restart does not recompute them, and held in memory while training (15.7 KB a
clip: 47 MB for fsdd, about 1.6 GB for Speech Commands V2's 105,829 clips).

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

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from bow.audio import load as baudio
from bow.data.clips import clips_fingerprint
from bow.data.datasets import Clip, load_dataset
from bow.audio.features import MFCC
from bow.kwmlp.model import KWMLP, load_checkpoint
from bow.kwmlp.train import TrainSettings, evaluate, pretrain
from bow.runtime import resolve_device
from bow.io.stage import (atomic_path, clear_done, is_done, locked, mark_done, read_json,
                       stage_fingerprint, write_json)
from pipelines import cli


@dataclass(frozen=True)
class PretrainKWMLPConfig:
    depth: int = field(default=12, metadata={"help": "gated-MLP blocks (paper: 12; 8, 10)"})
    epochs: int = field(default=140, metadata={"help": "training epochs"})
    warmup_epochs: int = field(default=10, metadata={"help": "linear warm-up epochs"})
    batch_size: int = field(default=256, metadata={"help": "clips per step"})
    lr: float = field(default=1e-3, metadata={"help": "AdamW peak learning rate"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay"})
    label_smoothing: float = field(default=0.1, metadata={"help": "cross-entropy smoothing"})
    prob_survival: float = field(default=0.9, metadata={"help": "stochastic depth: P(keep)"})
    time_masks: int = field(default=2, metadata={"help": "SpecAugment time masks"})
    time_mask_width: int = field(default=25, metadata={"help": "largest time mask (frames)"})
    freq_masks: int = field(default=2, metadata={"help": "SpecAugment coefficient masks"})
    freq_mask_width: int = field(default=7, metadata={"help": "largest coefficient mask"})
    train_splits: tuple[str, ...] = field(default=("train",), metadata={"help": "fit splits"})
    val_splits: tuple[str, ...] = field(default=("val",),
                                        metadata={"help": "splits choosing the best epoch"})
    test_splits: tuple[str, ...] = field(default=("eval", "test"),
                                         metadata={"help": "splits reported at the end"})
    seed: int = field(default=0, metadata={"help": "seed of initialisation and training"})


def keyword_clips(data: Path, config: PretrainKWMLPConfig):
    """-> (dataset, clips of the three split groups, class ids, skipped [(fname, reason)])."""
    ds = load_dataset(data)
    wanted = set(config.train_splits) | set(config.val_splits) | set(config.test_splits)
    clips, skipped = [], list(ds.invalid)
    for c in ds.clips:
        if c.split not in wanted:
            continue
        if len(c.labels) != 1:
            skipped.append((c.fname, f"KW-MLP pretraining needs one label, has {c.labels}"))
        else:
            clips.append(c)
    index = {name: i for i, name in enumerate(ds.vocabulary)}
    return ds, clips, np.array([index[c.labels[0]] for c in clips], dtype=np.int64), skipped


def mfcc_features(clips: list[Clip], cache: Path, batch: int = 256, progress: bool = True):
    """(N, 40, 98) float32 MFCC of each clip's first second (memory-mapped cache) and ok mask."""
    mask_path = cache.with_suffix(".json")
    if not (cache.exists() and mask_path.exists()):
        front_end, feats, bad = MFCC(), np.zeros((len(clips), 40, 98), np.float32), {}
        bar = tqdm(total=len(clips), desc="mfcc", unit="clip", disable=not progress)
        for i in range(0, len(clips), batch):
            group, first = clips[i:i + batch], []
            for c in group:
                try:
                    first.append(baudio.chunk(baudio.read_audio(c.path))[0])
                except baudio.AudioError as e:
                    bad[c.fname] = e.problem
                    first.append(np.zeros(baudio.CHUNK_SAMPLES, np.float32))
            with torch.inference_mode():
                feats[i:i + len(group)] = front_end(torch.from_numpy(np.stack(first))).numpy()
            bar.update(len(group))
        bar.close()
        with atomic_path(cache) as tmp, open(tmp, "wb") as f:
            np.save(f, feats)
        write_json(mask_path, bad)
    bad = json.loads(mask_path.read_text())
    ok = np.array([c.fname not in bad for c in clips])
    return np.load(cache, mmap_mode="r", allow_pickle=False), ok, sorted(bad.items())


def _plot(history: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(epochs, [h["train_loss"] for h in history], label="train (augmented, smoothed)")
    a.plot(epochs, [h["val_loss"] for h in history], label="validation")
    b.plot(epochs, [h["train_accuracy"] for h in history], label="train (augmented)")
    b.plot(epochs, [h["val_accuracy"] for h in history], label="validation")
    a.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    b.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (a, b):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def run(data: Path, artifacts: Path, config: PretrainKWMLPConfig = PretrainKWMLPConfig(),
        device: str = "auto", progress: bool = True) -> Path:
    """Pretrain (or resume, or skip when done) and return the path of best.pth."""
    out_dir, dev = Path(artifacts) / "kwmlp", resolve_device(device)
    ds, clips, y, skipped = keyword_clips(Path(data), config)
    if not clips:
        raise SystemExit(f"{data}: no single-label clips in the splits "
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
        parts = {name: np.flatnonzero(ok & np.isin(split, list(splits))) for name, splits in
                 (("train", config.train_splits), ("val", config.val_splits),
                  ("test", config.test_splits))}
        for name in ("train", "val"):
            if not len(parts[name]):
                raise SystemExit(f"{data}: no usable clips in the {name} splits "
                                 f"{getattr(config, name + '_splits')}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = KWMLP(num_classes=len(ds.vocabulary), depth=config.depth,
                          prob_survival=config.prob_survival)
        settings = TrainSettings(**{f.name: getattr(config, f.name)
                                    for f in dataclasses.fields(TrainSettings)})
        in_memory = {k: (x[v], y[v]) for k, v in parts.items()}   # fancy index: copies
        state = pretrain(model, in_memory["train"], in_memory["val"], out_dir, settings, dev,
                         progress, resume_tag=fingerprint)
        best = load_checkpoint(out_dir / "best.pth").to(dev)
        scores = {k: evaluate(best, *in_memory[k], dev)["accuracy"] if len(v) else None
                  for k, v in parts.items()}
        write_json(out_dir / "best.json", {
            "config": config, "data": str(data), "layout": ds.layout,
            "classes": ds.vocabulary, "depth": config.depth, "best_epoch": state["best_epoch"],
            "train_accuracy": scores["train"], "val_accuracy": scores["val"],
            "test_accuracy": scores["test"], "n_clips": {k: len(v) for k, v in parts.items()},
            "skipped": skipped, "history": state["history"]})
        _plot(state["history"], out_dir / "curves.png")
        mark_done(out_dir, fingerprint, config, inputs)
    return out_dir / "best.pth"


def main(argv=None) -> None:
    parser = cli.common_parser("Pretrain KW-MLP on keyword clips (the paper's recipe).")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 is fastest on a busy machine)")
    cli.add_strict_option(parser)
    cli.add_config_args(parser, PretrainKWMLPConfig)
    args = parser.parse_args(argv)
    config = cli.config_from_args(PretrainKWMLPConfig, args)
    if args.threads:
        torch.set_num_threads(args.threads)
    with cli.clean_errors("pretrain_kwmlp"):
        best = run(args.data, args.artifacts, config, args.device)
        info = read_json(best.with_suffix(".json"), "pretraining summary")
    test = info["test_accuracy"]
    print(f"{best}: best epoch {info['best_epoch']}, validation accuracy "
          f"{info['val_accuracy']:.4f}, test accuracy "
          f"{'n/a' if test is None else f'{test:.4f}'} ({info['n_clips']}); "
          f"{len(info['skipped'])} clips skipped")
    cli.report_skipped("pretrain_kwmlp", info["skipped"],
                       f"'skipped' in {best.with_suffix('.json')}", args.strict)


if __name__ == "__main__":
    main()
