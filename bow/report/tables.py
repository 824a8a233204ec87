"""Results to files: CSV tables, Markdown report, PNG plots (matplotlib, Agg).

Generic helpers (``write_csv``, ``markdown_table``, ``bar_plot``, ``line_plot``,
``heatmap_plot``, ``save_figure``) take plain rows / arrays so sweeps and bow.report.figures reuse
them; ``write_report`` lays out the heads' evaluation: one entry per (dataset, feature set) holding
the result dict of ``bow.heads.protocols.run_protocol``; ``results_table`` reads results.csv
back as a Markdown table and ``head_settings`` describes the heads in words.

Files written by ``write_report`` in the run folder:
  results.csv       one row per dataset x feature set x fold: fold "all" holds the score
                    (k-fold: mean, with the std columns), other rows the single folds
  per_class_ap.csv  dataset, features, class, ap (k-fold: mean over the folds)
  report.md         a table per dataset, with the plots linked
  map_<dataset>.png, per_class_ap_<dataset>.png, curves_<dataset>.png
"""
from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bow.io.stage import atomic_path  # noqa: E402

RESULT_COLUMNS = ("dataset", "features", "protocol", "fold", "map", "map_std", "chunk_map",
                  "chunk_map_std", "d_prime",
                  "d_prime_std", "mean_auc", "accuracy", "accuracy_std", "n_train_clips",
                  "n_val_clips", "n_eval_clips", "best_epoch", "epochs", "validation", "stores")


def slug(text: str) -> str:
    """A file-name-safe version of ``text``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "x"


def fmt(value, digits: int = 3) -> str:
    """Numbers to short text: 3 decimals for floats, integers as such, '' for None / NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)):
        return (f"{value:.0f}" if float(value).is_integer() and abs(value) >= 1000
                else f"{value:.{digits}f}")
    return str(value)


def mean_std(mean, std=None, digits: int = 3) -> str:
    """'0.812 ± 0.020' ('0.812' without a std, '' without a mean)."""
    text = fmt(mean, digits)
    return f"{text} ± {fmt(std, digits)}" if text and std is not None and fmt(std) else text


def write_csv(path: str | Path, rows: list[dict], columns) -> Path:
    """Write ``rows`` (dicts) with the given column order, atomically; floats kept exact."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    return Path(path)


def markdown_table(rows: list[dict], columns, align=None) -> str:
    """A GitHub-flavoured Markdown table. ``columns``: (key, header) pairs; values are
    formatted with ``fmt`` unless already strings; ``align``: per column 'l' or 'r'."""
    def cell(v):
        text = v if isinstance(v, str) else fmt(v)
        return text.replace("|", "\\|").replace("\n", " ")
    align = align or ["l"] * len(columns)
    lines = ["| " + " | ".join(h for _, h in columns) + " |",
             "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(cell(r.get(k, "")) for k, _ in columns) + " |" for r in rows]
    return "\n".join(lines)


def save_figure(fig, path: str | Path) -> Path:
    """Write a matplotlib figure as PNG, atomically, and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def _reference_lines(ax, hlines: dict | None) -> None:
    """Dashed horizontal lines ``{label: y}`` (e.g. chance level), labelled in the legend."""
    for i, (label, value) in enumerate((hlines or {}).items()):
        ax.axhline(value, color=("grey", "black", "tab:red")[i % 3], ls="--", lw=1, label=label)


def bar_plot(path, labels, values, errors=None, *, ylabel: str = "", title: str = "",
             hlines: dict | None = None) -> Path:
    """One bar per label, with optional error bars, the value written on each bar and optional
    dashed reference lines ``hlines`` ({label: y})."""
    values = np.asarray(values, dtype=float)
    if errors is not None:
        errors = np.nan_to_num(np.asarray(errors, dtype=float), nan=0.0, posinf=0.0)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(labels) + 1.5), 3.6))
    bars = ax.bar(range(len(labels)), np.nan_to_num(values), yerr=errors, capsize=4,
                  color=plt.cm.tab10(np.arange(len(labels)) % 10))
    ax.bar_label(bars, labels=[fmt(v) for v in values], padding=2, fontsize=8)
    ax.set_xticks(range(len(labels)), labels, rotation=20 if len(labels) > 4 else 0)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    finite = values[np.isfinite(values)]
    top = finite.max() + (errors.max() if errors is not None else 0) if len(finite) else 1
    ax.set_ylim(min(0.0, finite.min() if len(finite) else 0.0), max(1.0, top * 1.12))
    ax.grid(axis="y", alpha=0.3)
    if hlines:
        _reference_lines(ax, hlines)
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def line_plot(path, series: dict, *, xlabel: str = "", ylabel: str = "", title: str = "",
              logx: bool = False, errors: dict | None = None, hlines: dict | None = None
              ) -> Path:
    """One line per series: ``series[name] = (x, y)``; optional ``errors[name]`` (std) band and
    dashed reference lines ``hlines`` ({label: y})."""
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    for name, (x, y) in series.items():
        ax.plot(x, y, marker="o" if len(x) <= 20 else None, ms=4, label=str(name))
        if errors and name in errors:
            y, e = np.asarray(y, float), np.asarray(errors[name], float)
            ax.fill_between(x, y - e, y + e, alpha=0.2)
    if logx:
        ax.set_xscale("log", base=2)
        ticks = sorted({float(v) for x, _ in series.values() for v in x})
        ax.set_xticks(ticks, [fmt(t, 3).rstrip("0").rstrip(".") if not float(t).is_integer()
                              else str(int(t)) for t in ticks])
        ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    _reference_lines(ax, hlines)
    if len(series) + len(hlines or {}) > 1:
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def heatmap_plot(path, matrix: np.ndarray, row_labels, col_labels, *, title: str = "",
                 label: str = "") -> Path:
    """(rows, cols) values as a heatmap in [0, 1], written in the cells when there are few."""
    matrix = np.asarray(matrix, dtype=float)
    rows, cols = matrix.shape
    fig, ax = plt.subplots(figsize=(2.0 + 1.0 * cols, min(40.0, 1.2 + 0.22 * rows)))
    im = ax.imshow(np.ma.masked_invalid(matrix), aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(cols), col_labels, rotation=20 if cols > 3 else 0)
    ax.set_yticks(range(rows), row_labels, fontsize=7 if rows > 30 else 9)
    if rows * cols <= 300:
        for (i, j), v in np.ndenumerate(matrix):
            ax.text(j, i, fmt(v, 2), ha="center", va="center", fontsize=7,
                    color="black" if v > 0.6 else "white")
    fig.colorbar(im, ax=ax, label=label, fraction=0.05)
    ax.set_title(title)
    return save_figure(fig, path)


def result_rows(dataset: str, features: str, result: dict) -> list[dict]:
    """A result dict of bow.heads.protocols -> CSV rows: fold 'all' then one per fold (k-fold)."""
    common = {"dataset": dataset, "features": features, "protocol": result["protocol"],
              "validation": result["validation"], "stores": result.get("stores", "")}
    rows = [{**common, **{k: result.get(k) for k in RESULT_COLUMNS if k in result},
             "fold": "all"}]
    if result["protocol"] == "kfold":
        rows += [{**common, **{k: f.get(k) for k in RESULT_COLUMNS if k in f}}
                 for f in result["folds"]]
    return rows


def _curves(entries) -> dict:
    """Validation mAP per epoch of each feature set (the first fold's head)."""
    out = {}
    for e in entries:
        hist = e["result"]["folds"][0]["history"]
        out[e["features"]] = ([h["epoch"] for h in hist], [h["val_map"] for h in hist])
    return out


def _dataset_section(run_dir: Path, dataset: str, entries: list[dict]) -> str:
    first = entries[0]["result"]
    single = all(e["result"]["single_label"] for e in entries)
    name = slug(dataset)
    if first["protocol"] == "kfold":
        how = (f"{first['n_folds']}-fold cross-validation (early stopping on the next fold); "
               "scores are mean ± std over the folds")
    else:
        how = (f"train on the training split(s), stop early on {first['validation']}, score "
               f"on {first['folds'][0]['fold']}")
    rows = []
    for e in entries:
        r = e["result"]
        rows.append({
            "features": e["features"], "stores": r.get("stores", ""),
            "map": mean_std(r["map"], r["map_std"] if r["n_folds"] > 1 else None),
            "chunk_map": mean_std(r["chunk_map"], r["chunk_map_std"] if r["n_folds"] > 1
                                  else None),
            "d_prime": mean_std(r["d_prime"], r["d_prime_std"] if r["n_folds"] > 1 else None),
            "accuracy": mean_std(r.get("accuracy"),
                                 r.get("accuracy_std") if r["n_folds"] > 1 else None),
            "clips": " / ".join(fmt(r[k], 0) if isinstance(r[k], float) else str(r[k])
                                for k in ("n_train_clips", "n_val_clips", "n_eval_clips")),
            "epoch": fmt(r["best_epoch"], 1 if r["n_folds"] > 1 else 0)})
    columns = [("features", "features"), ("stores", "stores"), ("map", "clip mAP"),
               ("chunk_map", "chunk mAP"), ("d_prime", "d′")]
    columns += ([("accuracy", "accuracy")] if single else []) + [
        ("clips", "clips train / val / eval" + (" (per fold)" if first["n_folds"] > 1 else "")),
        ("epoch", "best epoch")]
    table = markdown_table(rows, columns, ["l", "l"] + ["r"] * (len(columns) - 2))
    labels = [e["features"] for e in entries]
    bar_plot(run_dir / f"map_{name}.png", labels, [e["result"]["map"] for e in entries],
             [e["result"]["map_std"] for e in entries] if first["n_folds"] > 1 else None,
             ylabel="clip mAP", title=f"{dataset}: mAP per feature set")
    ap = np.stack([e["result"]["per_class_ap"] for e in entries], axis=1)
    heatmap_plot(run_dir / f"per_class_ap_{name}.png", ap, first["vocabulary"], labels,
                 title=f"{dataset}: average precision per class", label="AP")
    line_plot(run_dir / f"curves_{name}.png", _curves(entries), xlabel="epoch",
              ylabel="validation clip mAP",
              title=f"{dataset}: early stopping" + (" (fold 1)" if first["n_folds"] > 1 else ""))
    notes = [f"- {e['features']}: {len(e['result']['dropped'])} clip(s) not in every store "
             "were left out" for e in entries if e["result"]["dropped"]]
    return "\n".join([
        f"## {dataset}", "", f"Protocol: {how}.", "", table, "", *notes, *([""] if notes else []),
        f"![mAP per feature set](map_{name}.png)", "",
        f"![Average precision per class](per_class_ap_{name}.png)", "",
        f"![Validation mAP per epoch](curves_{name}.png)", ""])


def write_report(run_dir: str | Path, entries: list[dict], *, title: str,
                 settings: str = "", notes: list[str] = ()) -> Path:
    """Write results.csv, per_class_ap.csv, the plots and report.md for ``entries``
    (dicts with dataset, features, result); return the report's path."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = [row for e in entries for row in result_rows(e["dataset"], e["features"], e["result"])]
    write_csv(run_dir / "results.csv", rows, RESULT_COLUMNS)
    ap_rows = [{"dataset": e["dataset"], "features": e["features"], "class": c,
                "ap": a if np.isfinite(a) else ""}  # no AP: no positive clip of the class
               for e in entries for c, a in zip(e["result"]["vocabulary"],
                                                e["result"]["per_class_ap"])]
    write_csv(run_dir / "per_class_ap.csv", ap_rows, ("dataset", "features", "class", "ap"))
    datasets = list(dict.fromkeys(e["dataset"] for e in entries))
    parts = [f"# {title}", ""] + ([settings, ""] if settings else [])
    parts += [f"- {n}" for n in notes] + ([""] if notes else [])
    parts += [_dataset_section(run_dir, d, [e for e in entries if e["dataset"] == d])
              for d in datasets]
    parts += ["Files: [results.csv](results.csv), [per_class_ap.csv](per_class_ap.csv).", ""]
    with atomic_path(run_dir / "report.md") as tmp:
        tmp.write_text("\n".join(parts))
    return run_dir / "report.md"


def head_settings(config) -> str:
    """One paragraph describing the heads (a bow.heads.model.HeadConfig) and the metrics."""
    return (f"Heads: MLP with two hidden layers of {config.width} units, dropout "
            f"{config.dropout:g}, {config.loss} loss, {config.normalisation} count "
            f"normalisation, token masking p = {config.mask_p:g}, Adam lr {config.lr:g}, "
            f"batch {config.batch_size} chunks, at most {config.max_epochs} epochs, patience "
            f"{config.patience}, seed {config.seed}. Clip probabilities are the mean of the "
            "clip's 1 s chunk probabilities; clip mAP is the macro mean of per-class average "
            "precision over the classes with a positive clip; chunk mAP the same over the 1 s "
            "chunks, each with its clip's labels (the metric of Verma's Fig. 2 and 3); "
            "d′ = √2·Φ⁻¹(mean ROC AUC); "
            "accuracy (single-label data only) takes the most probable class.")


def results_table(results_csv: Path) -> str:
    """The fold='all' rows of a results.csv as a Markdown table (k-fold: mean ± std)."""
    with open(results_csv, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["fold"] == "all"]

    def num(value):
        return float(value) if value not in ("", None) else None

    def cell(row, key):
        return mean_std(num(row[key]), num(row[f"{key}_std"]) if row["protocol"] == "kfold"
                        else None)

    shown = [{"dataset": r["dataset"], "features": r["features"],
              **{k: cell(r, k) for k in ("map", "chunk_map", "d_prime", "accuracy")}}
             for r in rows]
    return markdown_table(shown, [("dataset", "dataset"), ("features", "features"),
                                  ("map", "clip mAP"), ("chunk_map", "chunk mAP"),
                                  ("d_prime", "d'"), ("accuracy", "accuracy")],
                          ["l", "l", "r", "r", "r", "r"])
