"""Reading a HEAR 2021 task folder back as the evaluation kit will (heareval 2021.1.3).

``read_task`` checks what the kit reads, with the kit's own rules, and names the file and the
problem when something is off, before an hour of embedding finds it: task_metadata.json (the
keys the kit uses and their values: split_mode and its splits, embedding and prediction type,
metric names of heareval/score.py, sample_duration), labelvocabulary.csv (idx 0..n-1; labels
that pandas would read back as something else), every ``<split>.json`` (labels in the
vocabulary; one per clip for a multiclass scene task, which the kit asserts) and the 16 kHz
files they name (with ``audio=True``: mono, 16 kHz, sample_duration long, as the kit batches
clips of one length). Folders written by ``bow.data.hear_task`` and by hear-preprocess (scene
or event tasks) are read alike.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import soundfile as sf

from bow.audio.load import SAMPLE_RATE
from bow.data.hear_task import KIT_METRICS, SPLIT_MODES, TaskError, check_labels


def _fail(path: Path, problem: str):
    raise TaskError(f"{path}: {problem}")


def _read_vocabulary(path: Path) -> list[str]:
    try:
        rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        _fail(path, f"cannot read ({e})")
    if not rows or rows[0][:2] != ["idx", "label"]:
        _fail(path, "expected the header idx,label")
    body = [r for r in rows[1:] if r]
    if [r[0] for r in body] != [str(i) for i in range(len(body))] or not body:
        _fail(path, "idx must run 0, 1, 2, ... (one row per label)")
    labels = [r[1] if len(r) > 1 else "" for r in body]
    check_labels(labels)
    if len(set(labels)) != len(labels):
        _fail(path, "a label appears twice")
    return labels


def read_task(folder: str | Path, audio: bool = False) -> dict:
    """Check a task folder as the kit reads it (its metadata, vocabulary, split files, the
    16 kHz files they name; with ``audio``, every file's rate, channels and length too) and
    return {"metadata": dict, "vocabulary": [labels], "clips": {split: n}}; TaskError naming
    the file and the problem otherwise. Scene and event tasks (hear-preprocess's) are read."""
    folder = Path(folder)
    meta_path = folder / "task_metadata.json"
    if not meta_path.is_file():
        _fail(folder, "not a HEAR task folder (no task_metadata.json: not a task, or an export "
                      "that has not finished)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        _fail(meta_path, f"not readable JSON ({e})")
    need = ("task_name", "splits", "split_mode", "embedding_type", "prediction_type",
            "sample_duration", "evaluation")
    if not isinstance(meta, dict) or any(k not in meta for k in need):
        _fail(meta_path, f"needs the keys {list(need)}")
    splits, mode = meta["splits"], meta["split_mode"]
    if mode not in SPLIT_MODES or not isinstance(splits, list) or \
            not all(isinstance(s, str) for s in splits) or len(set(splits)) != len(splits):
        _fail(meta_path, f"split_mode must be one of {SPLIT_MODES} and splits distinct names")
    if mode == "trainvaltest" and sorted(splits) != ["test", "train", "valid"]:
        _fail(meta_path, f"split_mode trainvaltest needs the splits train, valid and test, "
                         f"not {splits}")
    if mode != "trainvaltest" and len(splits) < 3:
        _fail(meta_path, f"{mode} needs at least 3 folds, got {splits}")
    kind, ptype = meta["embedding_type"], meta["prediction_type"]
    if kind not in ("scene", "event") or ptype not in ("multiclass", "multilabel"):
        _fail(meta_path, "embedding_type must be scene or event, prediction_type multiclass "
                         "or multilabel")
    metrics = meta["evaluation"]
    if not metrics or not isinstance(metrics, list) or any(m not in KIT_METRICS for m in metrics):
        _fail(meta_path, f"evaluation must list metrics of the kit {KIT_METRICS}")
    seconds = meta["sample_duration"]
    if seconds is not None and not (isinstance(seconds, (int, float)) and seconds > 0):
        _fail(meta_path, "sample_duration must be seconds > 0 or null")
    vocabulary = _read_vocabulary(folder / "labelvocabulary.csv")
    known, counts = set(vocabulary), {}
    n_samples = None if seconds is None else round(seconds * SAMPLE_RATE)
    for split in splits:
        path = folder / f"{split}.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            _fail(path, f"cannot read the split's labels ({e})")
        if not isinstance(data, dict) or not data:
            _fail(path, "expected a non-empty object {file: labels}")
        for name, labels in data.items():
            found = [e.get("label") if isinstance(e, dict) else e for e in labels]
            if kind == "scene" and ptype == "multiclass" and len(found) != 1:
                _fail(path, f"{name}: a multiclass scene task needs one label, got {found}")
            if any(lab not in known for lab in found):
                _fail(path, f"{name}: labels {found} are not all in labelvocabulary.csv")
            wav = folder / str(SAMPLE_RATE) / split / name
            if not wav.is_file():
                _fail(wav, "no such file (named in " + path.name + ")")
            if audio:
                _check_audio(wav, n_samples)
        counts[split] = len(data)
    return {"metadata": meta, "vocabulary": vocabulary, "clips": counts}


def _check_audio(path: Path, n_samples: int | None) -> None:
    try:
        info = sf.info(str(path))
    except Exception as e:  # noqa: BLE001 - soundfile raises several types
        _fail(path, f"unreadable audio ({e})")
    if info.samplerate != SAMPLE_RATE or info.channels != 1:
        _fail(path, f"{info.samplerate} Hz, {info.channels} channel(s): the kit needs mono "
                    f"{SAMPLE_RATE} Hz in the {SAMPLE_RATE}/ folder")
    if n_samples is not None and info.frames != n_samples:
        _fail(path, f"{info.frames} samples, but sample_duration asks for {n_samples} (the kit "
                    "batches clips of one length)")
