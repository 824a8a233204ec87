"""Data sets -> HEAR 2021 task folders: the input of the HEAR evaluation kit (heareval 2021.1.3).

A task folder, as hear-preprocess writes it and the kit reads it::

    task_metadata.json        task_name, embedding_type "scene", prediction_type, split_mode,
                              splits, sample_duration, evaluation (+ nfolds for folds)
    labelvocabulary.csv       idx,label: the labels of the clips, sorted
    <split>.json              {"<file>.wav": ["label", ...]} for each split
    16000/<split>/<file>.wav  mono float32 WAV at 16 kHz

Rules (``plan_task``), following HEAR's own tasks where they have one:

* Splits: train / val (or valid) / test (or eval, FSD50K's) -> split_mode ``trainvaltest`` with
  the kit's names train / valid / test (all three are needed). Any other names are predefined
  folds -> ``presplit_kfold``, splits fold00, fold01... in the order of the original names
  (numeric when they are integers: ESC-10's 1..5 -> fold00..fold04); the kit tests on each fold
  in turn, validates on the next one and trains on the rest, so at least 3 folds are needed.
* Prediction type: ``multilabel`` for the FSD50K layout or when any clip has other than one
  label, else ``multiclass`` (the kit asserts one label per clip then).
* Metrics (``evaluation``; the kit selects models and stops early on the FIRST): multiclass
  top1_acc, mAP, d_prime, aucroc (HEAR's ESC-50 list); multilabel mAP, d_prime, aucroc,
  top1_acc (HEAR's FSD50K list); or the configured ones.
* Duration: every clip is zero-padded or trimmed at the end to ``sample_duration`` (as
  hear-preprocess does with ffmpeg apad + atrim): by default the longest clip of the data set
  (file headers, rounded up to 10 ms: 5.001 s -> 5.01 s), capped at ``max_duration`` (10 s);
  or a given number of seconds; or ``none``: each clip keeps its length and the task says
  sample_duration null (the kit then embeds one clip at a time, as HEAR did for FSD50K).
  With a number every clip has the same length, which the kit needs (it batches clips).
* Audio: ``bow.audio.load.read_audio`` (any soundfile format, mono, 16 kHz), written as float
  WAV: the samples the kit reads are exactly those our own stages embed (before padding).
  Unreadable files are skipped and reported, never written.
* File names: the clips' names with ``.wav`` (flat: the kit writes one file per name), the
  whole relative path with '/' -> '__' when stems collide (Speech Commands' ``yes/x.wav`` ->
  ``yes__x.wav``).
* Labels: the kit reads labelvocabulary.csv with pandas, which turns "NA", "None", "" into
  missing values and "01" into 1: such vocabularies are refused up front (``check_labels``).

``bow.data.hear_check.read_task`` reads a task folder back with the kit's rules.

Speech Commands keeps its words as they are (HEAR's own task maps them to 10 words,
_unknown_ and _silence_). Event tasks (onsets and offsets) are not written: our layouts have
clip labels only.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from bow.audio.load import SAMPLE_RATE, AudioError, read_audio
from bow.config import ConfigError, option
from bow.data.datasets import Clip, Dataset
from bow.io.stage import InputError, atomic_path
from bow.progress import progress as progress_bar

TRAINVALTEST = {"train": "train", "val": "valid", "valid": "valid", "test": "test",
                "eval": "test"}
SCENE_METRICS = ("top1_acc", "mAP", "d_prime", "aucroc")
METRICS = {"multiclass": ("top1_acc", "mAP", "d_prime", "aucroc"),
           "multilabel": ("mAP", "d_prime", "aucroc", "top1_acc")}
# Every name of heareval/score.py's available_scores (2021.1.3): what a task may list.
KIT_METRICS = SCENE_METRICS + ("pitch_acc", "chroma_acc", "event_onset_200ms_fms",
                               "event_onset_50ms_fms", "event_onset_offset_50ms_20perc_fms",
                               "segment_1s_er")
SPLIT_MODES = ("trainvaltest", "new_split_kfold", "presplit_kfold")
# pandas' default missing-value strings (read_csv's na_values): the kit would read them as NaN
_PANDAS_NA = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
              "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class TaskError(InputError):
    """A data set that cannot become a HEAR task, or a folder that is not a valid one."""


def parse_duration(text) -> float | str | None:
    """``"longest"`` (the default rule), None for ``"none"`` (clips keep their lengths), or
    seconds > 0; ConfigError otherwise."""
    low = str(text).strip().lower()
    if low in ("longest", "none"):
        return None if low == "none" else "longest"
    try:
        seconds = float(low)
    except ValueError:
        seconds = -1.0
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ConfigError(f"duration must be seconds > 0, 'longest' or 'none', got {text!r}")
    return seconds


@dataclass(frozen=True)
class HearTaskConfig:
    """How a data set becomes a HEAR task (module docstring)."""
    name: str | None = option(None, "task_name in task_metadata.json (default: the output "
                              "folder's name, which is also the name the kit files results "
                              "under)")
    duration: str = option("longest", "clip length of the task in seconds; 'longest': the "
                           "longest clip, capped by max_duration; 'none': clips keep their "
                           "lengths (sample_duration null)")
    max_duration: float = option(10.0, "cap in seconds on the 'longest' duration")
    metrics: tuple[str, ...] = option((), "evaluation metrics, the first one selects the model "
                                      "(default: top1_acc,mAP,d_prime,aucroc for multiclass, "
                                      "mAP,d_prime,aucroc,top1_acc for multilabel)")
    clips_per_split: int | None = option(None, "keep at most this many clips of each split, "
                                         "spread over the labels (quick checks; default: all)")

    def __post_init__(self):
        parse_duration(self.duration)
        if not self.max_duration > 0:
            raise ConfigError(f"max_duration must be > 0, got {self.max_duration}")
        unknown = [m for m in self.metrics if m not in SCENE_METRICS]
        if unknown:
            raise ConfigError(f"metrics {unknown}: a scene task can use {SCENE_METRICS}")
        if self.clips_per_split is not None and self.clips_per_split < 1:
            raise ConfigError(f"clips_per_split must be >= 1, got {self.clips_per_split}")


@dataclass
class TaskPlan:
    """What ``write_task`` writes: the task's metadata and its clips with their file names."""
    task_name: str
    split_mode: str
    split_of: dict[str, str]           # original split -> HEAR split
    prediction_type: str
    evaluation: list[str]
    sample_duration: float | None      # seconds; None: clips keep their lengths
    clips: list[Clip]
    files: dict[str, str]              # clip fname -> file name (.wav)
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (fname, reason)
    source: dict = field(default_factory=dict)

    @property
    def splits(self) -> list[str]:
        return sorted(set(self.split_of.values()))

    @property
    def n_samples(self) -> int | None:
        return None if self.sample_duration is None else round(self.sample_duration
                                                                * SAMPLE_RATE)


def split_plan(splits: list[str]) -> tuple[str, dict[str, str]]:
    """(split_mode, {original split: HEAR split}) for a data set's split names."""
    splits = sorted(set(splits))
    named = [s for s in splits if s in TRAINVALTEST]
    if named and len(named) == len(splits):
        mapping = {s: TRAINVALTEST[s] for s in splits}
        if sorted(mapping.values()) != ["test", "train", "valid"]:
            raise TaskError(f"splits {splits}: a train/val/test task needs exactly one each of "
                            "train, val (or valid) and test (or eval)")
        return "trainvaltest", mapping
    if named:
        raise TaskError(f"splits {splits} mix train/val/test names with others: use either "
                        "train, val and test, or fold names")
    if len(splits) < 3:
        raise TaskError(f"splits {splits}: folds need at least 3 (the kit tests on one, "
                        "validates on the next and trains on the rest)")
    if all(re.fullmatch(r"-?\d+", s) for s in splits):
        splits = sorted(splits, key=int)
    return "presplit_kfold", {s: f"fold{i:02d}" for i, s in enumerate(splits)}


def check_labels(labels) -> None:
    """TaskError for labels that the kit's pandas read of labelvocabulary.csv would change:
    missing-value strings, surrounding spaces, and numbers that would not read back equal
    when every label is numeric (pandas then reads the column as numbers: "01" -> 1)."""
    labels = list(labels)
    bad = [lab for lab in labels if lab in _PANDAS_NA or lab != lab.strip()]
    if labels and all(_NUMBER.fullmatch(lab) for lab in labels):
        as_int = all(re.fullmatch(r"[-+]?\d+", lab) for lab in labels)
        bad += [lab for lab in labels if (str(int(lab)) if as_int else str(float(lab))) != lab]
    if bad:
        raise TaskError(f"labels the kit would misread from labelvocabulary.csv (pandas turns "
                        f"them into missing values or other numbers): {bad[:5]}; rename them")


def wav_names(clips: list[Clip]) -> dict[str, str]:
    """fname -> a unique flat file name ending in .wav (stems when unique, else the relative
    path with '/' -> '__')."""
    flat = {c.fname: c.fname.replace("/", "__") for c in clips}
    stems = {f: (Path(n).stem if Path(n).suffix else n) for f, n in flat.items()}
    if len(set(stems.values())) == len(stems):
        return {f: f"{s}.wav" for f, s in stems.items()}
    names = {f: (n if n.endswith(".wav") else f"{n}.wav") for f, n in flat.items()}
    if len(set(names.values())) != len(names):
        raise TaskError("clip names collide once '/' is replaced by '__'")
    return names


def per_split(clips: list[Clip], n: int) -> list[Clip]:
    """At most ``n`` clips of each split, taken round-robin over the clips' first labels (so a
    small task still sees most classes), in data set order."""
    keep = set()
    for split in sorted({c.split for c in clips}):
        by_label: dict[str, list[Clip]] = {}
        for c in clips:
            if c.split == split:
                by_label.setdefault(c.labels[0] if c.labels else "", []).append(c)
        queues, taken, rank = list(by_label.values()), 0, 0
        while taken < n and rank < max(map(len, queues)):
            for queue in queues:
                if rank < len(queue) and taken < n:
                    keep.add(queue[rank].fname)
                    taken += 1
            rank += 1
    return [c for c in clips if c.fname in keep]


def longest_clip(clips: list[Clip]) -> tuple[float, list[tuple[str, str]]]:
    """(the longest clip in seconds from the file headers, [(fname, reason)] of the clips whose
    header cannot be read)."""
    longest, bad = 0.0, []
    for c in clips:
        try:
            info = sf.info(str(c.path))
            longest = max(longest, info.frames / info.samplerate)
        except Exception as e:  # noqa: BLE001 - soundfile raises several types
            bad.append((c.fname, f"{c.path}: unreadable audio header ({e})"))
    return longest, bad


def plan_task(dataset: Dataset, config: HearTaskConfig, folder_name: str) -> TaskPlan:
    """The task for ``dataset``: splits, prediction type, metrics, duration, file names. Clips
    whose header cannot be read (when the duration comes from the headers) and the data set's
    invalid rows are in ``skipped``."""
    clips = dataset.clips
    if config.clips_per_split:
        clips = per_split(clips, config.clips_per_split)
    if not clips:
        raise TaskError(f"{dataset.root}: no clips")
    split_mode, split_of = split_plan([c.split for c in clips])
    multilabel = dataset.layout == "fsd50k" or any(len(c.labels) != 1 for c in clips)
    prediction_type = "multilabel" if multilabel else "multiclass"
    check_labels({lab for c in clips for lab in c.labels})
    skipped = list(dataset.invalid)
    duration = parse_duration(config.duration)
    if duration == "longest":
        longest, bad = longest_clip(clips)
        skipped += bad
        dropped = {f for f, _ in bad}
        clips = [c for c in clips if c.fname not in dropped]
        duration = min(math.ceil(round(longest * 100, 6)) / 100, config.max_duration)
        if not duration > 0:
            raise TaskError(f"{dataset.root}: no readable clip to take the duration from")
    return TaskPlan(
        task_name=config.name or folder_name, split_mode=split_mode, split_of=split_of,
        prediction_type=prediction_type,
        evaluation=list(config.metrics or METRICS[prediction_type]),
        sample_duration=duration, clips=clips, files=wav_names(clips), skipped=skipped,
        source={"dataset": str(Path(dataset.root).resolve()), "layout": dataset.layout,
                "splits": dict(sorted(split_of.items()))})


def fit_length(audio: np.ndarray, n: int | None) -> np.ndarray:
    """Zero-pad or trim at the end to ``n`` samples (None: unchanged)."""
    if n is None or len(audio) == n:
        return audio
    if len(audio) > n:
        return audio[:n]
    return np.concatenate([audio, np.zeros(n - len(audio), dtype=audio.dtype)])


def write_wav(path: str | Path, audio: np.ndarray) -> None:
    """(samples,) -> a mono 32-bit float WAV at 16 kHz (fmt, fact, data chunks). Written here
    rather than by libsndfile, whose PEAK chunk holds the time of writing: the same audio
    gives the same bytes."""
    data = np.ascontiguousarray(audio, dtype="<f4").tobytes()
    if len(data) > 0xFFFFFFFF - 64:
        raise ValueError(f"{path}: {len(audio)} samples do not fit in one WAV file")
    fmt = struct.pack("<HHIIHH", 3, 1, SAMPLE_RATE, 4 * SAMPLE_RATE, 4, 32)  # IEEE float
    body = (b"WAVEfmt " + struct.pack("<I", len(fmt)) + fmt + b"fact" + struct.pack("<II", 4,
            len(audio)) + b"data" + struct.pack("<I", len(data)) + data)
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", len(body)) + body)


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_task(plan: TaskPlan, out: Path, progress: bool = True) -> list[tuple[str, str]]:
    """Write the task folder ``out`` from ``plan``; return [(fname, reason)] of the clips that
    could not be read (not written). Audio files already in ``out`` are kept (a resumed
    export: the caller makes sure they come from the same plan); every file is written under
    a temporary name and renamed, and task_metadata.json comes last, so a folder without it
    is an unfinished export."""
    out = Path(out)
    skipped, labels = [], {s: {} for s in plan.splits}
    for clip in progress_bar(plan.clips, enabled=progress, desc="hear task", unit="clip"):
        split, name = plan.split_of[clip.split], plan.files[clip.fname]
        target = out / str(SAMPLE_RATE) / split / name
        if not target.is_file():
            try:
                audio = fit_length(read_audio(clip.path), plan.n_samples)
            except AudioError as e:
                skipped.append((clip.fname, str(e)))
                continue
            with atomic_path(target) as tmp:
                write_wav(tmp, audio)
        labels[split][name] = list(clip.labels)
    empty = [s for s, files in labels.items() if not files]
    if empty:
        raise TaskError(f"{out}: no readable clip in split(s) {empty}")
    vocabulary = sorted({lab for files in labels.values() for v in files.values() for lab in v})
    for split, files in labels.items():
        _write_text(out / f"{split}.json", json.dumps(files, indent=1, sort_keys=True) + "\n")
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["idx", "label"])
    writer.writerows(enumerate(vocabulary))
    _write_text(out / "labelvocabulary.csv", text.getvalue())
    metadata = {"task_name": plan.task_name, "version": "bow-hear-task-1",
                "embedding_type": "scene", "prediction_type": plan.prediction_type,
                "split_mode": plan.split_mode, "splits": plan.splits,
                "sample_duration": plan.sample_duration, "evaluation": plan.evaluation,
                "source": plan.source}
    if plan.split_mode != "trainvaltest":
        metadata["nfolds"] = len(plan.splits)
    _write_text(out / "task_metadata.json", json.dumps(metadata, indent=1) + "\n")
    return skipped

