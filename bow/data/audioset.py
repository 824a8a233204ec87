"""The AudioSet layout: Google's segment CSVs and class list, with the audio already downloaded.

    root/class_labels_indices.csv            index,mid,display_name (as published)
    root/balanced_train_segments.csv         any of the three segment CSVs, as published:
    root/unbalanced_train_segments.csv         3 comment lines starting with '#', then
    root/eval_segments.csv                     YTID, start_seconds, end_seconds, "positive_labels"
    root/audio/<csv stem>/Y<YTID>.<ext>      the segment's audio (start..end only), e.g.
                                             audio/eval_segments/Y--4gqARaEJE.wav; <YTID>.<ext>
                                             (no Y) is accepted too; <ext>: any format soundfile
                                             reads (wav, flac, ogg, mp3, ...)

Splits are the CSV names without ``_segments``: ``balanced_train``, ``unbalanced_train`` and
``eval`` (the heads score ``eval`` by default). There is no official validation split: train with
``--train-splits balanced_train`` (or ``balanced_train,unbalanced_train``) and the heads hold
out a seeded ``--val-fraction`` of the training clips for early stopping (bow.heads.protocols).
The fname of a clip is its YTID. Labels are the classes' display names (so reports show them),
in the order of class_labels_indices.csv's ``index``.

Not clips, listed in ``Dataset.invalid`` with the reason (the stages report them; not fatal): a
row whose audio file is missing, a row with a label outside class_labels_indices.csv, a YTID
already listed (in the same or an earlier CSV), and a segment CSV without its audio folder (one
entry for the whole CSV). A malformed CSV row raises DatasetError naming the file and line.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import soundfile as sf

from bow.data.records import Clip, Dataset, DatasetError, read_rows

SEGMENT_CSVS = ("balanced_train_segments.csv", "unbalanced_train_segments.csv",
                "eval_segments.csv")
CLASSES_CSV = "class_labels_indices.csv"
AUDIO_EXTENSIONS = frozenset(f".{ext.lower()}" for ext in sf.available_formats())


def is_audioset(root: Path) -> bool:
    return (root / CLASSES_CSV).is_file() and any((root / n).is_file() for n in SEGMENT_CSVS)


def read_classes(path: Path) -> dict[str, str]:
    """class_labels_indices.csv -> {mid: display name}, in index order."""
    rows = read_rows(path, ("index", "mid", "display_name"))
    try:
        rows.sort(key=lambda r: int(r["index"]))
    except ValueError as e:
        raise DatasetError(f"{path}: an index that is not an integer ({e})") from e
    classes = {r["mid"].strip(): r["display_name"].strip() for r in rows}
    names = list(classes.values())
    if len(classes) != len(rows) or len(set(names)) != len(names):
        raise DatasetError(f"{path}: repeated mid or display_name")
    return classes


def read_segments(path: Path) -> list[tuple[int, str, float, float, list[str]]]:
    """A segment CSV -> [(line number, YTID, start s, end s, [mid, ...])], comments skipped."""
    out = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for number, row in enumerate(csv.reader(f, skipinitialspace=True), 1):
                if not row or row[0].lstrip().startswith("#"):
                    continue
                if len(row) != 4:
                    raise DatasetError(f"{path}, line {number}: expected YTID, start_seconds, "
                                       f"end_seconds, \"positive_labels\"; got {row}")
                try:
                    start, end = float(row[1]), float(row[2])
                except ValueError:
                    raise DatasetError(f"{path}, line {number}: start/end seconds are not "
                                       f"numbers: {row[1]!r}, {row[2]!r}") from None
                mids = [m.strip() for m in row[3].split(",") if m.strip()]
                out.append((number, row[0].strip(), start, end, mids))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"{path}: cannot read ({e})") from e
    return out


def _audio_files(folder: Path) -> dict[str, Path]:
    """{file stem: path} of the audio files in ``folder`` (one directory listing)."""
    files = {}
    with os.scandir(folder) as entries:
        for e in sorted(entries, key=lambda e: e.name):
            stem, ext = os.path.splitext(e.name)
            if ext.lower() in AUDIO_EXTENSIONS and e.is_file():
                files.setdefault(stem, Path(e.path))
    return files


def load_audioset(root: Path) -> Dataset:
    classes = read_classes(root / CLASSES_CSV)
    clips, invalid, seen = [], [], {}
    for name in SEGMENT_CSVS:
        path = root / name
        if not path.is_file():
            continue
        stem = name[:-len(".csv")]
        split, folder = stem[:-len("_segments")], root / "audio" / stem
        rows = read_segments(path)
        if not folder.is_dir():
            invalid.append((name, f"no audio folder {folder}: its {len(rows)} segments left out"))
            continue
        files = _audio_files(folder)
        for number, ytid, start, end, mids in rows:
            unknown = [m for m in mids if m not in classes]
            audio = files.get(f"Y{ytid}") or files.get(ytid)
            if ytid in seen:
                invalid.append((ytid, f"{name} line {number}: already listed in {seen[ytid]}"))
            elif unknown:
                invalid.append((ytid, f"{name} line {number}: labels outside "
                                      f"{CLASSES_CSV}: {unknown}"))
            elif audio is None:
                invalid.append((ytid, f"no audio file {folder}/Y{ytid}.* (segment "
                                      f"{start:g}-{end:g} s)"))
            else:
                seen[ytid] = name
                clips.append(Clip(ytid, audio, split, tuple(classes[m] for m in mids)))
    return Dataset(root, "audioset", list(classes.values()), clips, invalid)
