"""Stage: score a HEAR API module on HEAR task folders with the HEAR 2021 evaluation kit.

    python -m pipelines.hear_eval --module bow.hear.kwmlp --model kwmlp.pth \\
        --tasks TASKDIR [TASKDIR ...] --out DIR [--name NAME] [--grid default|fast|faster]
        [--grid-points 8] [--threads 1] [--device auto|cpu|cuda] [--python PY]

For each task folder (``python -m pipelines.export_hear_task`` writes them; hear-preprocess's
work too) it runs the kit's embeddings runner, then its predictions runner (bow/hear/kit.py
says how, and why the predictions process alone gets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1),
and prints the task's first metric. Then it collects the kit's test scores of every model and
task scored in DIR into DIR/scores.csv (one row per model, task and metric) and DIR/scores.md
(one line per model and task: mean ± std over the test folds, the grid, wall times, load).

Each model gets its own folder, DIR/embeddings/NAME (NAME: ``--name``, default the model file's
stem and 8 hex digits of its SHA-256, or the module's last part for a module without a model
file, e.g. ``opensmile``), so two bundles of bow.hear.bow never share embeddings;
a NAME already used by another model is refused. Reruns reuse the embeddings while the task
folder is unchanged, and the predictions while the grid is also the same. The kit's output is
in DIR/logs/. ``--threads`` sets the kit's OpenMP/MKL threads (default: its own, every core);
``--device cpu`` hides CUDA devices from it, ``cuda`` requires one (the kit takes the first).

The kit (heareval 2021.1.3) is not a dependency of bow: when it is missing this says what to
install (bow.hear.kit.INSTALL: the ``hear`` extra plus one ``pip install --no-deps`` line).
tensorflow is not needed: the embeddings runner gets bow's stand-in (bow.hear.tfstub). The
smallest grid, for plumbing checks, is ``--grid faster --grid-points 1``. Measured scores and
times: the README's HEAR section.
"""
from __future__ import annotations

import contextlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from bow.config import choose, option
from bow.data.hear_check import read_task
from bow.hear import kit, scores
from bow.io.stage import InputError, locked
from bow.runtime import resolve_device
from pipelines import cli, layout


@dataclass(frozen=True)
class HearEvalConfig:
    """Which model to score, and the kit's model search."""
    module: str = option("bow.hear.kwmlp", "HEAR API module (bow.hear.kwmlp, "
                         "bow.hear.audiomlp, bow.hear.bow, bow.hear.opensmile or any other the "
                         "kit can import)")
    model: str | None = option(None, "model file for the module's load_model (kwmlp.pth, "
                               "audiomae.pth, a bundle .npz; none for bow.hear.opensmile)")
    model_options: str = option("{}", "JSON keyword arguments for load_model")
    name: str | None = option(None, "this model's name in folders and tables (default: the "
                              "model file's stem + 8 hex digits of its SHA-256)")
    grid: str = option("default", "the kit's hyper-parameter grid: default, fast or faster")
    grid_points: int = option(8, "random points of the grid the kit tries")
    gpus: str | None = option(None, "the kit's --gpus as JSON, e.g. [0] (default: the kit's: "
                              "[0] when torch sees a GPU)")
    python: str | None = option(None, "Python interpreter with the kit installed (default: "
                                "this one)")

    def __post_init__(self):
        choose("grid", self.grid, kit.GRIDS)
        if self.grid_points < 1:
            raise ValueError(f"grid_points must be >= 1, got {self.grid_points}")
        if self.name is not None and not re.fullmatch(r"[\w.+-]+", self.name):
            raise ValueError(f"name {self.name!r}: use letters, digits, '.', '_', '+', '-'")


def _tasks(paths) -> list[Path]:
    tasks = [Path(p).resolve() for p in paths]
    if len({t.name for t in tasks}) != len(tasks):
        raise InputError("the task folders must have different names (the kit files results "
                         f"under the folder's name): {[str(t) for t in tasks]}")
    for task in tasks:
        read_task(task)             # a TaskError naming the file, before the kit starts
    return tasks


def _first(rows: list[dict]) -> str:
    row = rows[0]
    std = "" if row["std"] is None else f" ± {row['std']:.3f}"
    return f"{row['metric']} {row['mean']:.3f}{std} ({row['folds']} test split(s))"


def _work(args, cfg: HearEvalConfig):
    out = args.out.resolve()
    tasks = _tasks(args.tasks)
    if args.device not in ("auto", "cpu"):
        resolve_device(args.device)
    python = cfg.python or sys.executable
    version = kit.check_kit(python, args.device)
    if version != kit.KIT_VERSION:
        print(f"hear_eval: heareval {version} found; this was written for {kit.KIT_VERSION}")
    model = Path(cfg.model) if cfg.model else None
    if model is not None and not model.is_file():
        raise InputError(f"{model}: no such model file")
    identity = kit.model_identity(cfg.module, model, cfg.model_options)
    name = cfg.name or kit.default_name(identity)
    root = layout.hear_embeddings(out, name)
    run = {"python": python, "threads": args.threads, "device": args.device}
    with contextlib.ExitStack() as locks:
        locks.enter_context(locked(root, "hear_eval"))
        for task in tasks:
            locks.enter_context(locked(task, "hear_eval", shared=True))
        kit.claim(root, identity)
        for task in tasks:
            print(f"{name} / {task.name}: embeddings ...", flush=True)
            emb, reused = kit.embed(task, root, identity,
                                    layout.hear_log(out, name, task.name, "embeddings"), **run)
            print(f"{name} / {task.name}: embeddings {'reused' if reused else 'computed'}; "
                  f"predictions (grid {cfg.grid}, {cfg.grid_points} points) ...", flush=True)
            reused = kit.predict(emb, layout.hear_log(out, name, task.name, "predictions"),
                                 cfg.grid, cfg.grid_points, cfg.gpus, **run)
            print(f"{name} / {task.name}: {_first(scores.task_rows(emb))}"
                  f"{' (predictions reused)' if reused else ''}", flush=True)
    rows = scores.collect(layout.hear_embeddings(out))
    csv_path, md_path = layout.hear_scores(out)
    scores.write_tables(rows, csv_path, md_path)
    print(scores.markdown([r for r in rows if r["name"] == name]))
    print(f"scores of every model scored in {out}: {csv_path}, {md_path}; the kit's output: "
          f"{layout.hear_log(out, name, '*', '*').parent}")


def _options(parser) -> None:
    parser.add_argument("--tasks", type=Path, nargs="+", required=True,
                        help="HEAR task folders (python -m pipelines.export_hear_task)")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder of the embeddings, the kit's logs and the score tables")
    cli.threads_option(parser)


def main(argv=None) -> None:
    cli.stage_main(argv, "hear_eval", "Score a HEAR API module on HEAR task folders with the "
                   "HEAR 2021 evaluation kit (heareval 2021.1.3).", HearEvalConfig, _work,
                   options=[_options], strict=False, data_required=False,
                   data_help="not used (the tasks are given with --tasks)")


if __name__ == "__main__":
    main()
