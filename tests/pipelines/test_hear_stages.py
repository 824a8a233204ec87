"""pipelines.export_hear_task on the real data sets (folds, train/val/test), skipping when up to
date, resuming, --strict, refusing foreign folders; pipelines.hear_eval's checks before the kit
runs (task folders, the kit missing). The kit itself: tests/hear/test_hear_kit.py."""
from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from bow.data import hear_task
from bow.data.hear_check import read_task
from bow.data.hear_task import TaskError
from bow.io.stage import read_fingerprint
from pipelines import export_hear_task, hear_eval, layout
from pipelines.export_hear_task import ExportHearTaskConfig
from tests.conftest import linked_dataset

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_esc10_folds(esc10_task):
    task = read_task(esc10_task, audio=True)
    meta = task["metadata"]
    assert (meta["split_mode"], meta["prediction_type"], meta["sample_duration"]) == (
        "presplit_kfold", "multiclass", 7.25)
    assert task["clips"] == {f"fold0{i}": 80 for i in range(5)} and len(task["vocabulary"]) == 10
    assert meta["source"]["splits"] == {str(i + 1): f"fold0{i}" for i in range(5)}
    summary = json.loads(layout.hear_task_summary(esc10_task).read_text())
    assert summary["skipped"] == [] and summary["clips"]["fold03"] == 80


def test_fsdd_train_val_test(fsdd_task):
    task = read_task(fsdd_task, audio=True)
    assert task["metadata"]["split_mode"] == "trainvaltest"
    assert task["clips"] == {"train": 60, "valid": 60, "test": 60}
    assert task["vocabulary"] == [str(d) for d in range(10)]


def test_up_to_date_rerun_and_changed_options(fsdd_dir, tmp_path, capsys):
    out = tmp_path / "fsdd"
    argv = ["--data", str(fsdd_dir), "--out", str(out), "--clips-per-split", "5",
            "--no-progress"]
    export_hear_task.main(argv)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    export_hear_task.main(argv)
    assert "up to date" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    export_hear_task.main(argv[:-1] + ["--duration", "1", "--no-progress"])
    assert read_task(out, audio=True)["metadata"]["sample_duration"] == 1.0
    assert len(list(out.rglob("*.wav"))) == 15                  # no file of the old export left


def test_a_stopped_export_resumes_with_the_files_it_wrote(fsdd_dir, tmp_path, monkeypatch):
    out, calls = tmp_path / "fsdd", []
    real = hear_task.write_wav

    def dies_after_four(path, audio):
        if len(calls) == 4:
            raise KeyboardInterrupt("killed")
        calls.append(path)
        real(path, audio)

    monkeypatch.setattr(hear_task, "write_wav", dies_after_four)
    config = ExportHearTaskConfig(clips_per_split=4)
    with pytest.raises(KeyboardInterrupt):
        export_hear_task.run(fsdd_dir, out, config, progress=False)
    assert not (out / "task_metadata.json").exists() and read_fingerprint(out) is None
    with pytest.raises(TaskError, match="not a HEAR task folder"):
        read_task(out)
    monkeypatch.setattr(hear_task, "write_wav", real)
    written = {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")}
    assert len(written) == 4
    export_hear_task.run(fsdd_dir, out, config, progress=False)
    assert read_task(out, audio=True)["clips"] == {"train": 4, "valid": 4, "test": 4}
    assert all(p.stat().st_mtime_ns == t for p, t in written.items())   # kept, not rewritten


def test_bad_files_are_skipped_and_strict_says_so(esc10_dir, tmp_path, capsys):
    from bow.data.datasets import load_dataset
    clips = load_dataset(esc10_dir).select(["1"])[:9]
    data = linked_dataset(tmp_path / "data", clips, split_of=lambda k, c: str(k % 3),
                          broken=("dog", "1", 2))
    out = tmp_path / "task"
    argv = ["--data", str(data), "--out", str(out), "--duration", "5", "--no-progress"]
    export_hear_task.main(argv)
    assert "1 input(s) skipped" in capsys.readouterr().out
    for _ in range(2):                                          # the same on an up-to-date rerun
        with pytest.raises(SystemExit) as exit_:
            export_hear_task.main(argv + ["--strict"])
        assert exit_.value.code == 3
        assert "broken.wav" in capsys.readouterr().out
    assert sum(read_task(out, audio=True)["clips"].values()) == 9


def test_a_folder_that_is_not_an_export_is_refused(fsdd_dir, tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(SystemExit) as exit_:
        export_hear_task.main(["--data", str(fsdd_dir), "--out", str(tmp_path)])
    assert exit_.value.code == 1 and "is not a task folder" in capsys.readouterr().err
    assert (tmp_path / "mine.txt").read_text() == "precious"


def test_hear_eval_says_what_to_install(fsdd_task, tmp_path, capsys):
    """A Python that cannot see the kit (site-packages off): exit 1 and the install lines."""
    fake = tmp_path / "python-without-kit"
    fake.write_text(f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    with pytest.raises(SystemExit) as exit_:
        hear_eval.main(["--tasks", str(fsdd_task), "--out", str(tmp_path / "o"),
                        "--python", str(fake)])
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and err.startswith("hear_eval: error: ")
    assert "missing heareval" in err and "pytorch-lightning<2" in err
    assert f'pip install "{ROOT}[hear]"' in err                # this checkout
    assert "pip install --no-deps heareval==2021.1.3" in err and "Traceback" not in err


def test_hear_eval_checks_its_inputs_first(fsdd_task, tmp_path, capsys):
    twin = tmp_path / "a" / fsdd_task.name
    os.makedirs(twin)
    for argv, match in (([str(fsdd_task), str(twin)], "different names"),
                        ([str(tmp_path)], "not a HEAR task folder")):
        with pytest.raises(SystemExit) as exit_:
            hear_eval.main(["--tasks", *argv, "--out", str(tmp_path / "o")])
        assert exit_.value.code == 1 and match in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        hear_eval.main(["--tasks", str(fsdd_task), "--out", str(tmp_path), "--grid", "huge"])
    assert exit_.value.code == 2 and "grid must be one of" in capsys.readouterr().err
