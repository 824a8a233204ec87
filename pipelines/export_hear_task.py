"""Stage: a data set -> a HEAR 2021 task folder for the HEAR evaluation kit (heareval 2021.1.3).

    python -m pipelines.export_hear_task --data DIR --out TASKDIR [--duration S|longest|none]
                                         [--name NAME] [--metrics top1_acc,mAP]

``--data`` is any layout bow reads (FSD50K release, audio/ + labels.csv with fold or
train/val/test splits, Speech Commands). TASKDIR becomes the task: task_metadata.json,
labelvocabulary.csv, <split>.json and 16000/<split>/*.wav, resampled to 16 kHz mono and padded
or trimmed to the task's duration (by default the longest clip, capped at ``--max-duration``
10 s). The rules (splits, multiclass or multilabel, metrics, durations, file names) are those
of bow/data/hear_task.py. The folder's name is the name the kit files the task's results under
(``--name`` sets task_name in the metadata; default: the folder's name).

Unreadable clips and rows of the labels file that are not clips are skipped, listed in
TASKDIR/export.json and printed (``--strict``: exit status 3 if any). Atomic and resumable:
each file is written under a temporary name and renamed, task_metadata.json (which makes the
folder a task for the kit) and fingerprint.json come last, and a stopped export started again
with the same data and options keeps the audio files it had written. An export that is up to
date (same options, same clips) is skipped; other options or clips rewrite the folder. A folder
that holds anything else is refused. Measured (one thread, loaded 2-core machine): ESC-10
(400 clips) and FSDD (3000 clips) in the README's HEAR section.

Score a model on the task with ``python -m pipelines.hear_eval``.
"""
from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path

from bow.data.clips import clips_fingerprint
from bow.data.datasets import load_dataset
from bow.data.hear_task import HearTaskConfig, TaskError, plan_task, write_task
from bow.io.stage import (
    is_done,
    locked,
    mark_done,
    read_fingerprint,
    read_json,
    stage_fingerprint,
    write_json,
)
from pipelines import cli, layout


@dataclass(frozen=True)
class ExportHearTaskConfig(HearTaskConfig):
    """A data set as a HEAR task (bow.data.hear_task.HearTaskConfig)."""


def _started(out: Path) -> str | None:
    path = layout.hear_task_started(out)
    return read_json(path, "export marker").get("fingerprint") if path.is_file() else None


def _clear(out: Path) -> None:
    """Empty a task folder of an earlier export (task_metadata.json and the fingerprint first,
    so the folder stops being a task at once); refuse a folder that holds other things."""
    names = {p.name for p in out.iterdir()} - {".lock"}
    if names and read_fingerprint(out) is None and _started(out) is None:
        raise TaskError(f"{out}: exists and is not a task folder written by export_hear_task "
                        f"(holds {sorted(names)[:5]}); give a new or empty --out folder")
    for name in ("task_metadata.json", "fingerprint.json"):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "16000", ignore_errors=True)
    for p in out.glob("*.json"):
        p.unlink()
    (out / "labelvocabulary.csv").unlink(missing_ok=True)
    layout.hear_task_started(out).unlink(missing_ok=True)


def run(data: Path, out: Path, config: ExportHearTaskConfig = ExportHearTaskConfig(),
        progress: bool = True) -> dict:
    """Write the task folder ``out`` for the data set ``data`` (skipped when up to date);
    return its summary (layout.hear_task_summary)."""
    out = Path(out)
    with locked(out, "export_hear_task"):
        dataset = load_dataset(data)
        resolved = dataclasses.replace(config, name=config.name or out.name)
        inputs = {"clips": clips_fingerprint(dataset.clips), "invalid": dataset.invalid}
        fingerprint = stage_fingerprint(resolved, inputs)
        summary_path = layout.hear_task_summary(out)
        if is_done(out, fingerprint) and summary_path.is_file():
            return read_json(summary_path, "export summary")
        if _started(out) != fingerprint:
            _clear(out)
            write_json(layout.hear_task_started(out), {"fingerprint": fingerprint})
        plan = plan_task(dataset, resolved, out.name)
        skipped = plan.skipped + write_task(plan, out, progress)
        written = {s: 0 for s in plan.splits}
        for split in plan.splits:
            written[split] = len(read_json(out / f"{split}.json", "split labels"))
        summary = {"task": str(out), "task_name": plan.task_name, "source": plan.source,
                   "prediction_type": plan.prediction_type, "split_mode": plan.split_mode,
                   "sample_duration": plan.sample_duration, "evaluation": plan.evaluation,
                   "clips": written, "skipped": [list(s) for s in skipped]}
        write_json(summary_path, summary)
        mark_done(out, fingerprint, resolved, inputs)
        layout.hear_task_started(out).unlink(missing_ok=True)
    return summary


def _size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*.wav")) / 1e6


def _work(args, cfg: ExportHearTaskConfig):
    out = args.out
    before = read_fingerprint(out) if out.is_dir() else None
    summary = run(args.data, out, cfg, not args.no_progress)
    cli.say_if_unchanged(before, read_fingerprint(out), out, "options and clips")
    seconds = summary["sample_duration"]
    counts = ", ".join(f"{s} {n}" for s, n in summary["clips"].items())
    print(f"{out}: HEAR task {summary['task_name']!r}, {summary['prediction_type']}, "
          f"{summary['split_mode']} ({counts} clips), sample_duration "
          f"{'none (clip lengths)' if seconds is None else f'{seconds} s'}, evaluation "
          f"{','.join(summary['evaluation'])}; {_size_mb(out):.0f} MB of 16 kHz WAV")
    print(f"  score a model on it: python -m pipelines.hear_eval --module bow.hear.kwmlp "
          f"--model kwmlp.pth --tasks {out} --out hear-runs")
    return [tuple(s) for s in summary["skipped"]], layout.hear_task_summary(out)


def _out_option(parser) -> None:
    parser.add_argument("--out", type=Path, required=True,
                        help="the task folder to write (new or empty, or an earlier export)")


def main(argv=None) -> None:
    cli.stage_main(argv, "export_hear_task", "Export a data set as a HEAR 2021 task folder for "
                   "the HEAR evaluation kit.", ExportHearTaskConfig, _work,
                   options=[_out_option, cli.threads_option])


if __name__ == "__main__":
    main()
