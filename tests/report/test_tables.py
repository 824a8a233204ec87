"""bow.report.tables: tables, CSV and plots from plain rows and result dicts."""
import csv

import numpy as np
import pytest

from bow.report.tables import (
    bar_plot,
    fmt,
    heatmap_plot,
    line_plot,
    markdown_table,
    mean_std,
    result_rows,
    write_csv,
    write_report,
)

PNG = b"\x89PNG\r\n\x1a\n"


def _result(protocol="kfold", accuracy=True):
    folds = []
    for i, m in enumerate([0.5, 0.7]):
        f = {"fold": str(i + 1), "map": m, "chunk_map": m - 0.05, "d_prime": 1.0 + i,
             "mean_auc": 0.8,
             "per_class_ap": np.array([m, np.nan]), "n_train_clips": 10, "n_val_clips": 5,
             "n_eval_clips": 5, "best_epoch": 3, "epochs": 5,
             "history": [{"epoch": 1, "train_loss": 0.1, "val_map": 0.4},
                         {"epoch": 2, "train_loss": 0.05, "val_map": m}]}
        if accuracy:
            f["accuracy"] = m - 0.1
        folds.append(f)
    out = {"protocol": protocol, "validation": "next fold", "folds": folds, "n_folds": 2,
           "vocabulary": ["a|b", "c"], "dropped": [], "single_label": accuracy,
           "map": 0.6, "map_std": 0.1, "chunk_map": 0.55, "chunk_map_std": 0.1, "d_prime": 1.5,
           "d_prime_std": 0.5, "mean_auc": 0.8,
           "mean_auc_std": 0.0, "per_class_ap": np.array([0.6, np.nan]), "n_train_clips": 10.0,
           "n_val_clips": 5.0, "n_eval_clips": 5.0, "best_epoch": 3.0, "epochs": 5.0,
           "stores": "x.h5 (bow, 8-d)"}
    if accuracy:
        out.update(accuracy=0.5, accuracy_std=0.1)
    return out


def test_formatting_and_markdown_table():
    assert fmt(0.123456) == "0.123" and fmt(7) == "7"
    assert fmt(float("nan")) == "" and fmt(None) == ""
    assert mean_std(0.5, 0.25) == "0.500 ± 0.250" and mean_std(0.5) == "0.500"
    table = markdown_table([{"a": "x|y", "b": 0.5}, {"a": "z"}], [("a", "A"), ("b", "B")],
                           ["l", "r"])
    assert table.splitlines() == ["| A | B |", "|---|---:|", "| x\\|y | 0.500 |", "| z |  |"]


def test_csv_and_plots(tmp_path):
    write_csv(tmp_path / "t.csv", [{"x": 1, "y": 0.25, "z": "ignored"}], ("x", "y"))
    assert (tmp_path / "t.csv").read_text().splitlines() == ["x,y", "1,0.25"]
    paths = [bar_plot(tmp_path / "bar.png", ["a", "b"], [0.5, np.nan], [0.1, np.nan],
                      ylabel="mAP"),
             line_plot(tmp_path / "line.png", {"p=0": ([16, 64, 256], [0.3, 0.4, 0.5]),
                                               "p=0.35": ([16, 64, 256], [0.35, 0.45, 0.5])},
                       errors={"p=0": [0.01, 0.02, 0.03]}, logx=True, xlabel="D"),
             heatmap_plot(tmp_path / "heat.png", np.array([[0.1, np.nan], [0.9, 0.5]]),
                          ["c1", "c2"], ["f1", "f2"])]
    for p in paths:
        assert p.read_bytes()[:8] == PNG


def test_result_rows_and_report(tmp_path):
    rows = result_rows("ds", "bow", _result())
    assert [r["fold"] for r in rows] == ["all", "1", "2"]
    assert rows[0]["map"] == 0.6 and rows[0]["map_std"] == 0.1 and rows[2]["map"] == 0.7
    assert rows[0]["chunk_map"] == 0.55 and rows[2]["chunk_map"] == pytest.approx(0.65)
    entries = [{"dataset": "esc", "features": "bow", "result": _result()},
               {"dataset": "fsd", "features": "bow", "result": {
                   **_result("splits", accuracy=False), "n_folds": 1}}]
    report = write_report(tmp_path, entries, title="T", settings="S", notes=["n1"])
    text = report.read_text()
    assert text.startswith("# T\n\nS\n\n- n1\n")
    assert "## esc" in text and "## fsd" in text
    esc, fsd = text.split("## fsd")
    assert "| 0.600 ± 0.100 |" in esc and "| accuracy |" in esc
    assert "| accuracy |" not in fsd and "| 0.600 |" in fsd
    for name in ("map_esc.png", "per_class_ap_fsd.png", "curves_esc.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG and f"]({name})" in text
    with open(tmp_path / "per_class_ap.csv") as f:
        ap = list(csv.DictReader(f))
    assert [(r["dataset"], r["class"], r["ap"]) for r in ap[:2]] == [("esc", "a|b", "0.6"),
                                                                       ("esc", "c", "")]
