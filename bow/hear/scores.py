"""The HEAR evaluation kit's test scores as tables: one CSV row per model, task and metric, and a
Markdown table with one line per model and task.

``task_rows`` reads what the kit wrote in its task folder (``test.predicted-scores.json``: per
fold ``test_<metric>``, and ``aggregated_scores`` ``test_<metric>_mean`` / ``_std`` over the
folds, the std being pandas' sample std; ``hparams``: the chosen grid point) and what
bow.hear.kit recorded (model, grid, wall times, load). ``collect`` gathers every model and task
under an embeddings folder, so the tables always show everything that was scored there, and
``write_tables`` rewrites both files atomically under a lock (two evaluations finishing at once
both land). A metric the kit could not compute is empty in the CSV and n/a in Markdown; d_prime
is inf when a class is separated perfectly (AUC 1): it is shown as such.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import math
import re
from pathlib import Path

from bow.hear.kit import MARKER
from bow.io.stage import atomic_path
from bow.report.tables import markdown_table, write_csv

COLUMNS = ("name", "module", "model", "task", "split_mode", "folds", "metric", "mean", "std",
           "grid", "grid_points", "hparams", "embed_s", "predict_s", "threads", "load",
           "device", "model_sha256", "task_path")
SCORES = "test.predicted-scores.json"


def _hparams(hp: dict) -> str:
    init = re.sub(r"<function (\w+).*", r"\1", str(hp.get("initialization")))
    return (f"hidden_layers={hp.get('hidden_layers')} hidden_dim={hp.get('hidden_dim')} "
            f"lr={hp.get('lr')} init={init}")


def task_rows(emb: Path) -> list[dict]:
    """One row per metric of the task scored in the kit's task folder ``emb``."""
    emb = Path(emb)
    record = json.loads((emb / MARKER).read_text())
    scores = json.loads((emb / SCORES).read_text())
    metadata = json.loads((emb / "task_metadata.json").read_text())
    profile = emb / "profile.embeddings.json"
    device = json.loads(profile.read_text()).get("gpu_device_name") if profile.is_file() else ""
    folds = [k for k, v in scores.items() if isinstance(v, dict) and "test_score" in v]
    embedded, predicted = record.get("embeddings", {}), record.get("predictions", {})
    base = {"name": record.get("name"), "module": record.get("module"),
            "model": record.get("model"), "model_sha256": record.get("sha256"),
            "task": emb.name, "task_path": embedded.get("task"),
            "split_mode": metadata.get("split_mode"), "folds": len(folds),
            "grid": predicted.get("grid"), "grid_points": predicted.get("grid_points"),
            "hparams": _hparams(scores.get("hparams", {})), "embed_s": embedded.get("seconds"),
            "predict_s": predicted.get("seconds"), "threads": predicted.get("threads"),
            "load": predicted.get("load"), "device": device}
    rows = []
    for metric in metadata["evaluation"]:
        if "aggregated_scores" in scores:
            agg = scores["aggregated_scores"]
            mean, std = agg.get(f"test_{metric}_mean"), agg.get(f"test_{metric}_std")
        else:
            mean, std = scores[folds[0]].get(f"test_{metric}"), None
        rows.append(dict(base, metric=metric, mean=mean, std=std))
    return rows


def collect(embeddings: Path) -> list[dict]:
    """The rows of every model and task scored under ``embeddings`` (``<name>/<module>/<task>``),
    by task then model name."""
    rows = []
    for marker in sorted(Path(embeddings).glob(f"*/*/*/{MARKER}")):
        if (marker.parent / SCORES).is_file():
            rows += task_rows(marker.parent)
    return sorted(rows, key=lambda r: (r["task"], r["name"]))


def _cell(row: dict | None) -> str:
    if row is None or row["mean"] is None:
        return ""
    mean, std = float(row["mean"]), row["std"]
    if math.isnan(mean):
        return "n/a"
    text = f"{mean:.3f}"
    if std is not None and not math.isnan(float(std)):
        text += f" ± {float(std):.3f}"
    return text


def markdown(rows: list[dict]) -> str:
    """One line per (task, model): folds, each metric as mean ± std, grid, wall times, load."""
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    lines = []
    for key in dict.fromkeys((r["task"], r["name"]) for r in rows):
        mine = {r["metric"]: r for r in rows if (r["task"], r["name"]) == key}
        first = next(iter(mine.values()))
        line = {"task": key[0], "model": key[1], "folds": str(first["folds"]),
                "grid": f"{first['grid']}/{first['grid_points']}",
                "embed_s": _seconds(first["embed_s"]), "predict_s": _seconds(first["predict_s"]),
                "load": "" if first["load"] is None else f"{first['load']:.1f}"}
        line.update({m: _cell(mine.get(m)) for m in metrics})
        lines.append(line)
    columns = ([("task", "task"), ("model", "model"), ("folds", "test folds")]
               + [(m, m) for m in metrics]
               + [("grid", "grid/points"), ("embed_s", "embed s"), ("predict_s", "predict s"),
                  ("load", "load")])
    return markdown_table(lines, columns, ["l", "l", "r"] + ["r"] * (len(columns) - 3))


def _seconds(value) -> str:
    return "" if value is None else f"{float(value):.0f}"


def _csv_value(value):
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else value


@contextlib.contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)     # waits: writing the tables takes ms
        yield


def write_tables(rows: list[dict], csv_path: Path, md_path: Path) -> None:
    """Write the rows to ``csv_path`` (COLUMNS) and ``md_path`` (``markdown``), atomically."""
    with _lock(Path(csv_path).parent / ".scores.lock"):
        write_csv(csv_path, [{k: _csv_value(v) for k, v in r.items()} for r in rows], COLUMNS)
        with_note = (markdown(rows) + "\n\nMean ± std over the test folds (one test split: no "
                     "std); grid/points: the kit's grid and random points; embed s, predict s: "
                     "wall seconds of the kit's two programs; load: mean 1-min load average "
                     "of the machine during predictions.\n")
        with atomic_path(md_path) as tmp:
            tmp.write_text(with_note, encoding="utf-8")
