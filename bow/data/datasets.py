"""Dataset layouts -> clip records.

Four layouts are detected automatically from the folder given:

* FSD50K release: ``FSD50K.dev_audio/``, ``FSD50K.eval_audio/``,
  ``FSD50K.ground_truth/{dev.csv,eval.csv,vocabulary.csv}``. dev rows keep their ``split``
  (train / val); eval rows get split ``eval``. Audio is ``<fname>.wav``.
* labels.csv: ``audio/`` + ``labels.csv`` with columns ``fname,labels,split`` (several labels
  comma-separated; split is any string: train/val/test, or fold numbers). The vocabulary is the
  sorted set of labels.
* Speech Commands: one folder per word holding its ``.wav`` clips, plus ``validation_list.txt``
  and ``testing_list.txt`` (paths relative to the root, e.g. ``yes/0a7c2a8d_nohash_0.wav``).
  Listed clips get split ``val`` / ``test``, all others ``train``; the fname is the relative
  path. Folders starting with ``_`` (``_background_noise_``) hold no keywords and are ignored.
  The vocabulary is the sorted set of words (folders with at least one clip). A listed file that
  does not exist is in ``invalid``.
* AudioSet: ``class_labels_indices.csv`` + Google's segment CSVs + ``audio/<csv stem>/Y<YTID>.*``
  (bow.data.audioset: splits ``balanced_train``, ``unbalanced_train``, ``eval``; labels are the
  display names; rows without an audio file are in ``invalid``).

A row whose labels are outside the vocabulary is not a clip: it is listed in ``Dataset.invalid``
with the reason, for the stages to report. Missing audio files are found when read.
"""
from __future__ import annotations

import csv
from pathlib import Path

from bow.data import audioset
from bow.data.records import Clip, Dataset, DatasetError
from bow.data.records import read_rows as _read_rows


def _split_labels(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def _make_clips(rows, audio_dir: Path, vocabulary: list[str], split_of, name_of):
    known = set(vocabulary)
    clips, invalid, seen = [], [], set()
    for row in rows:
        fname = row["fname"].strip()
        labels = _split_labels(row["labels"])
        unknown = [lab for lab in labels if lab not in known]
        if fname in seen:
            invalid.append((fname, "duplicate row in the labels file"))
        elif unknown:
            invalid.append((fname, f"labels outside the vocabulary: {unknown}"))
        else:
            seen.add(fname)
            clips.append(Clip(fname, audio_dir / name_of(fname), split_of(row), labels))
    return clips, invalid


def load_fsd50k(root: Path) -> Dataset:
    gt = root / "FSD50K.ground_truth"
    vocab_rows = []
    try:
        with open(gt / "vocabulary.csv", newline="", encoding="utf-8") as f:
            vocab_rows = [r for r in csv.reader(f) if r]
    except OSError as e:
        raise DatasetError(f"{gt / 'vocabulary.csv'}: cannot read ({e})") from e
    vocabulary = [r[1].strip() for r in vocab_rows]
    name = lambda fname: fname if Path(fname).suffix else f"{fname}.wav"  # noqa: E731
    dev = _read_rows(gt / "dev.csv", ("fname", "labels", "split"))
    clips, invalid = _make_clips(dev, root / "FSD50K.dev_audio", vocabulary,
                                 lambda r: r["split"].strip(), name)
    ev = _read_rows(gt / "eval.csv", ("fname", "labels"))
    more, bad = _make_clips(ev, root / "FSD50K.eval_audio", vocabulary, lambda r: "eval", name)
    return Dataset(root, "fsd50k", vocabulary, clips + more, invalid + bad)


def load_labels_csv(root: Path) -> Dataset:
    rows = _read_rows(root / "labels.csv", ("fname", "labels", "split"))
    vocabulary = sorted({lab for r in rows for lab in _split_labels(r["labels"])})
    clips, invalid = _make_clips(rows, root / "audio", vocabulary,
                                 lambda r: r["split"].strip(), lambda f: f)
    return Dataset(root, "labels_csv", vocabulary, clips, invalid)


def _read_list(path: Path) -> set[str]:
    try:
        return {line.strip() for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip()}
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read ({e})") from e


def load_speech_commands(root: Path) -> Dataset:
    val, test = _read_list(root / "validation_list.txt"), _read_list(root / "testing_list.txt")
    folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("_"))
    words, clips, found = [], [], set()
    for folder in folders:
        paths = sorted(folder.glob("*.wav"))
        words += [folder.name] if paths else []
        for path in paths:
            fname = f"{folder.name}/{path.name}"
            found.add(fname)
            split = "test" if fname in test else "val" if fname in val else "train"
            clips.append(Clip(fname, path, split, (folder.name,)))
    invalid = [(f, "listed in validation_list.txt / testing_list.txt but not found")
               for f in sorted((val | test) - found)]
    return Dataset(root, "speech_commands", words, clips, invalid)


def load_dataset(root: str | Path) -> Dataset:
    """Detect the layout of ``root`` and read its clip records."""
    root = Path(root)
    if (root / "FSD50K.ground_truth").is_dir():
        return load_fsd50k(root)
    if audioset.is_audioset(root):
        return audioset.load_audioset(root)
    if (root / "labels.csv").is_file():
        return load_labels_csv(root)
    if (root / "validation_list.txt").is_file() and (root / "testing_list.txt").is_file():
        return load_speech_commands(root)
    raise DatasetError(
        f"{root}: not a dataset folder: expected FSD50K.ground_truth/ (FSD50K layout), "
        "labels.csv + audio/ (labels.csv layout), word folders + validation_list.txt + "
        "testing_list.txt (Speech Commands layout) or class_labels_indices.csv + "
        "*_segments.csv + audio/ (AudioSet layout)")
