"""bow.data.hear_task and bow.data.hear_check: the rules (splits, prediction type, metrics,
durations, labels, file names), the files written, bad clips skipped, and our own reading of
task folders. The kit's own loaders on exported tasks: tests/hear/test_hear_kit.py."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bow.audio.load import read_audio
from bow.config import ConfigError
from bow.data.datasets import Clip, load_dataset
from bow.data.hear_check import read_task
from bow.data.hear_task import (
    HearTaskConfig,
    TaskError,
    check_labels,
    fit_length,
    per_split,
    plan_task,
    split_plan,
    wav_names,
    write_task,
    write_wav,
)
from tests.conftest import linked_dataset


def test_split_plan():
    assert split_plan(["train", "val", "test"]) == (
        "trainvaltest", {"train": "train", "val": "valid", "test": "test"})
    assert split_plan(["eval", "train", "valid"])[1]["eval"] == "test"      # FSD50K's names
    mode, folds = split_plan(["10", "2", "1"])                              # numeric order
    assert mode == "presplit_kfold" and folds == {"1": "fold00", "2": "fold01", "10": "fold02"}
    assert split_plan(["b", "a", "c"])[1] == {"a": "fold00", "b": "fold01", "c": "fold02"}
    for bad, match in ((["train", "test"], "exactly one each"), (["1", "2"], "at least 3"),
                       (["train", "val", "test", "extra"], "mix")):
        with pytest.raises(TaskError, match=match):
            split_plan(bad)


def test_labels_the_kit_would_misread_are_refused():
    for good in (["dog", "cat"], ["1", "2", "10"], ["0.5", "1.5"], ["yes", "no", "01a"]):
        check_labels(good)
    for bad in (["dog", "NA"], ["None", "x"], ["01", "2"], ["1", "2.50"], [" dog", "cat"]):
        with pytest.raises(TaskError, match="misread"):
            check_labels(bad)


def test_file_names_are_flat_and_unique(tmp_path):
    clips = [Clip(f, tmp_path / f, "train", ("a",)) for f in ("x.flac", "y.wav", "123")]
    assert wav_names(clips) == {"x.flac": "x.wav", "y.wav": "y.wav", "123": "123.wav"}
    words = [Clip(f, tmp_path / f, "train", ("a",)) for f in ("yes/a.wav", "no/a.wav")]
    assert wav_names(words) == {"yes/a.wav": "yes__a.wav", "no/a.wav": "no__a.wav"}


def test_config_rules():
    assert HearTaskConfig(duration="2.5").duration == "2.5"
    for bad in ({"duration": "-1"}, {"duration": "long"}, {"max_duration": 0},
                {"metrics": ("top1_acc", "f1")}, {"clips_per_split": 0}):
        with pytest.raises(ConfigError):
            HearTaskConfig(**bad)


def test_per_split_spreads_over_labels(esc10_dir):
    clips = per_split(load_dataset(esc10_dir).clips, 10)
    assert len(clips) == 50
    for fold in "12345":
        assert len({c.labels[0] for c in clips if c.split == fold}) == 10


def test_fit_length_and_float_wav_round_trip(tmp_path):
    x = np.arange(1, 6, dtype=np.float32)
    np.testing.assert_array_equal(fit_length(x, 3), x[:3])
    np.testing.assert_array_equal(fit_length(x, 7), [1, 2, 3, 4, 5, 0, 0])
    assert fit_length(x, None) is x
    audio = np.random.default_rng(0).uniform(-1.5, 1.5, 9999).astype(np.float32)
    write_wav(tmp_path / "a.wav", audio)
    back, rate = sf.read(tmp_path / "a.wav", dtype="float32")
    assert rate == 16000 and sf.info(tmp_path / "a.wav").subtype == "FLOAT"
    np.testing.assert_array_equal(back, audio)                  # bit-exact, not clipped
    write_wav(tmp_path / "b.wav", audio)
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()


def test_plans_of_the_three_layouts(esc10_dir, fsdd_dir, fsd50k_mini_dir):
    esc = plan_task(load_dataset(esc10_dir), HearTaskConfig(), "esc10")
    assert (esc.split_mode, esc.prediction_type, esc.splits) == (
        "presplit_kfold", "multiclass", [f"fold0{i}" for i in range(5)])
    assert esc.evaluation == ["top1_acc", "mAP", "d_prime", "aucroc"]
    assert esc.sample_duration == 7.25 and esc.n_samples == 116_000 and not esc.skipped
    fsdd = plan_task(load_dataset(fsdd_dir), HearTaskConfig(max_duration=2.0), "fsdd")
    assert (fsdd.split_mode, fsdd.splits) == ("trainvaltest", ["test", "train", "valid"])
    assert fsdd.sample_duration == 2.0                         # 2.29 s, capped
    assert plan_task(load_dataset(fsdd_dir), HearTaskConfig(), "f").sample_duration == 2.29
    fsd = plan_task(load_dataset(fsd50k_mini_dir), HearTaskConfig(duration="none"), "mini")
    assert fsd.prediction_type == "multilabel" and fsd.sample_duration is None
    assert fsd.evaluation[0] == "mAP" and fsd.split_of == {"train": "train", "val": "valid",
                                                          "eval": "test"}
    named = plan_task(load_dataset(esc10_dir), HearTaskConfig(name="ESC", duration="5",
                                                              metrics=("mAP",)), "x")
    assert (named.task_name, named.sample_duration, named.evaluation) == ("ESC", 5.0, ["mAP"])


@pytest.fixture
def small_set(tmp_path, esc10_dir):
    """12 ESC-10 clips in 3 folds (2 labels), a corrupt file and a row with no label."""
    ds = load_dataset(esc10_dir)
    picked = [c for c in ds.clips if c.labels[0] == "dog"][:6] + \
        [c for c in ds.clips if c.labels[0] == "rooster"][:6]
    root = linked_dataset(tmp_path / "data", picked, split_of=lambda k, c: str(k % 3 + 1),
                          broken=("dog", "2", None))
    with open(root / "labels.csv", "a") as f:
        f.write(f"{picked[0].path.name},,1\n")                   # a duplicate row: invalid
    return root


def test_write_task_skips_bad_clips_and_reads_back(small_set, tmp_path):
    ds = load_dataset(small_set)
    plan = plan_task(ds, HearTaskConfig(), "small")
    assert [f for f, _ in plan.skipped] == [ds.clips[0].fname, "broken.wav"]   # both reported
    assert "duplicate" in plan.skipped[0][1] and "header" in plan.skipped[1][1]
    out = tmp_path / "small"
    assert write_task(plan, out, progress=False) == []
    task = read_task(out, audio=True)
    assert task["clips"] == {"fold00": 4, "fold01": 4, "fold02": 4}
    assert task["vocabulary"] == ["dog", "rooster"]
    meta = task["metadata"]
    assert meta["nfolds"] == 3 and meta["sample_duration"] == plan.sample_duration
    first = ds.clips[0]
    labels = json.loads((out / "fold00.json").read_text())
    assert labels[Path(first.fname).stem + ".wav"] == list(first.labels)
    written, _ = sf.read(out / "16000" / "fold00" / (Path(first.fname).stem + ".wav"),
                         dtype="float32")
    np.testing.assert_array_equal(written, fit_length(read_audio(first.path), plan.n_samples))


def test_clips_unreadable_past_their_header_are_skipped(small_set, tmp_path):
    plan = plan_task(load_dataset(small_set), HearTaskConfig(duration="1"), "s")
    assert "broken.wav" not in [f for f, _ in plan.skipped]     # no header pass with a duration
    skipped = write_task(plan, tmp_path / "s", progress=False)
    assert [f for f, _ in skipped] == ["broken.wav"] and "broken.wav" in skipped[0][1]
    assert read_task(tmp_path / "s", audio=True)["clips"]["fold01"] == 4


def _task(tmp_path, **changes) -> Path:
    """A valid 3-fold task folder, then ``changes``: file name -> new text (None: delete)."""
    out = tmp_path / "t"
    for split in ("a", "b", "c"):
        (out / "16000" / split).mkdir(parents=True)
        write_wav(out / "16000" / split / f"{split}.wav", np.zeros(1600, np.float32))
        (out / f"{split}.json").write_text(json.dumps({f"{split}.wav": ["dog"]}))
    (out / "labelvocabulary.csv").write_text("idx,label\n0,dog\n1,cat\n")
    (out / "task_metadata.json").write_text(json.dumps({
        "task_name": "t", "splits": ["a", "b", "c"], "split_mode": "new_split_kfold",
        "embedding_type": "scene", "prediction_type": "multiclass", "sample_duration": 0.1,
        "evaluation": ["top1_acc"]}))
    for name, text in changes.items():
        if text is None:
            (out / name).unlink()
        else:
            (out / name).write_text(text)
    return out


def test_read_task_names_the_file_and_the_problem(tmp_path):
    assert read_task(_task(tmp_path), audio=True)["clips"] == {"a": 1, "b": 1, "c": 1}
    meta = json.loads((tmp_path / "t" / "task_metadata.json").read_text())
    cases = {
        "no task_metadata": {"task_metadata.json": None},
        "needs the keys": {"task_metadata.json": json.dumps({"task_name": "t"})},
        "metrics of the kit": {"task_metadata.json": json.dumps(dict(meta, evaluation=["f1"]))},
        "trainvaltest needs": {"task_metadata.json": json.dumps(dict(
            meta, split_mode="trainvaltest"))},
        "idx must run": {"labelvocabulary.csv": "idx,label\n1,dog\n"},
        "misread": {"labelvocabulary.csv": "idx,label\n0,dog\n1,NA\n"},
        "not all in labelvocabulary": {"b.json": json.dumps({"b.wav": ["bird"]})},
        "needs one label": {"c.json": json.dumps({"c.wav": ["dog", "cat"]})},
        "no such file": {"a.json": json.dumps({"z.wav": ["dog"]})},
        "cannot read the split": {"b.json": None},
        "sample_duration asks for": {"task_metadata.json": json.dumps(dict(
            meta, sample_duration=0.2))},
    }
    for i, (match, changes) in enumerate(cases.items()):
        with pytest.raises(TaskError, match=match):
            read_task(_task(tmp_path / str(i), **changes), audio=True)
