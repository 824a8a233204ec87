"""Clip lists: fingerprints, seeded subsets and hold-outs, training splits, labels.csv views.

``clips_fingerprint`` identifies a clip list by each clip's name, split, labels, file size and
modification time (like make; hashing every audio byte of a large data set would cost minutes).

``labels_view`` writes a labels.csv-layout data set whose ``audio/`` links to other clips (no
copies where links work): how pipelines.run gives KW-MLP pretraining, which needs one label per
clip, the training clips with their first label.
"""
from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import numpy as np

from bow.data.datasets import Clip, Dataset
from bow.io.stage import InputError, atomic_path, digest


def clips_fingerprint(clips: list[Clip]) -> str:
    """SHA-256 of the clips' names, splits, labels, file sizes and modification times."""
    rows = []
    for c in clips:
        try:
            st = c.path.stat()
            rows.append([c.fname, c.split, list(c.labels), st.st_size, st.st_mtime_ns])
        except OSError:
            rows.append([c.fname, c.split, list(c.labels), "missing"])
    return digest(rows)


def subset(clips: list[Clip], max_clips: int | None, seed: int) -> list[Clip]:
    """A seeded random subset of at most ``max_clips`` clips, in dataset order (None: all)."""
    if max_clips is None or len(clips) <= max_clips:
        return list(clips)
    keep = np.random.default_rng(seed).choice(len(clips), size=max_clips, replace=False)
    return [clips[i] for i in sorted(keep)]


def holdout(clips: list[Clip], fraction: float, seed: int) -> tuple[list[Clip], list[Clip]]:
    """Split clips into (fit, held out): a seeded ``fraction`` of them, at least one each side."""
    if len(clips) < 2:
        raise InputError(f"need at least 2 clips to hold some out, got {len(clips)}")
    n_held = min(len(clips) - 1, max(1, round(fraction * len(clips))))
    held = set(np.random.default_rng(seed).choice(len(clips), size=n_held, replace=False))
    return ([c for i, c in enumerate(clips) if i not in held],
            [c for i, c in enumerate(clips) if i in held])


def training_clips(dataset: Dataset, splits, max_clips: int | None = None,
                   seed: int = 0) -> list[Clip]:
    """The clips of ``splits`` (a seeded subset of at most ``max_clips``); InputError if none."""
    clips = dataset.select(splits)
    if not clips:
        raise InputError(f"{dataset.root}: no clips in the training split(s) {list(splits)}; "
                         f"the data set has splits {dataset.splits} (set --train-splits)")
    return subset(clips, max_clips, seed)


def labels_view(parts: dict[str, list[Clip]], folder: Path, label=lambda c: c.labels[0]
                ) -> Path:
    """Write ``folder/labels.csv`` (split name -> clips, each with ``label(clip)``) and
    ``folder/audio/`` links to the clips' files (copies where links fail); return ``folder``.
    Rewrites only what changed, so an unchanged view keeps its files' times."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["fname", "labels", "split"])
    for split, clips in parts.items():
        for clip in clips:
            name = clip.fname if clip.fname.endswith(clip.path.suffix) else \
                clip.fname + clip.path.suffix
            writer.writerow([name, label(clip), split])
            link, target = folder / "audio" / name, clip.path.resolve()
            if link.is_symlink() and link.readlink() == target:
                continue
            link.parent.mkdir(parents=True, exist_ok=True)
            link.unlink(missing_ok=True)
            try:
                link.symlink_to(target)
            except OSError:
                shutil.copy2(target, link)
    labels_csv = folder / "labels.csv"
    if not labels_csv.is_file() or labels_csv.read_text() != text.getvalue():
        with atomic_path(labels_csv) as tmp:
            tmp.write_text(text.getvalue())
    return folder
