"""Joined stores, pipelines.train_heads and pipelines.evaluate on stores of real audio."""
import csv
import json

import h5py
import numpy as np
import pytest

from bow.heads.fusion import load_head
from bow.io.featureset import FeatureSetError, load_features
from pipelines import evaluate, train_heads
from tests.heads_data import (
    FakeClip,
    one_torch_thread,  # noqa: F401  (autouse fixture)
    real_stores,
    synthetic_counts,
    write_store,
)

FAST = ["--width", "32", "--max-epochs", "4", "--patience", "2", "--batch-size", "64"]


@pytest.fixture(scope="module")
def esc10_artifacts(esc10_dir, tmp_path_factory):
    """artifacts/stores/{bow,kwmlp}.h5 from 4 ESC-10 classes x 2 clips x 5 folds: band-group
    counts as the bag of words, mean log-mel standing in for a dense KW-MLP store."""
    art = tmp_path_factory.mktemp("esc10-artifacts")
    logmel, counts = real_stores(esc10_dir, art / "stores")
    logmel.rename(art / "stores" / "kwmlp.h5")
    return art


@pytest.fixture(scope="module")
def fsd50k_artifacts(fsd50k_mini_dir, tmp_path_factory):
    """The same two stores from FSD50K-mini (multi-label; dev train / val, eval)."""
    art = tmp_path_factory.mktemp("fsd50k-artifacts")
    real_stores(fsd50k_mini_dir, art / "stores", per_class_split=1, n_classes=12)
    return art


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_join_matches_clips_by_fname_and_marks_counts(esc10_artifacts, tmp_path):
    stores = esc10_artifacts / "stores"
    bow, dense = load_features([stores / "bow.h5"]), load_features([stores / "kwmlp.h5"])
    # the dense store again, clips in reverse order and the first one missing
    order = np.arange(len(dense))[::-1][:-1]
    rev = dense.subset(order)
    items = [FakeClip(f, s, tuple(np.array(dense.vocabulary)[lab.astype(bool)]))
             for f, s, lab in zip(rev.fname, rev.split, rev.labels)]
    vectors = np.split(rev.chunks, rev.offsets[1:-1])
    path = write_store(tmp_path / "reversed.h5", items, dense.vocabulary, vectors, "kwmlp")
    joined = load_features([stores / "bow.h5", path])
    assert joined.dropped == [bow.fname[0]]
    assert list(joined.fname) == list(bow.fname[1:])
    assert joined.dim == bow.dim + dense.dim
    assert joined.count_columns.tolist() == [True] * bow.dim + [False] * dense.dim
    np.testing.assert_array_equal(joined.chunks[:, :bow.dim], bow.subset(slice(1, None)).chunks)
    np.testing.assert_array_equal(joined.chunks[:, bow.dim:], dense.subset(slice(1, None)).chunks)
    assert [s["kind"] for s in joined.sources] == ["bow", "kwmlp"]


def test_join_errors_name_the_clip(tmp_path):
    clips, vocab, vectors = synthetic_counts(6, 2, ["train"])
    a = write_store(tmp_path / "a.h5", clips, vocab, vectors, "bow")
    shorter = [v[:1] if i == 3 and len(v) > 1 else np.concatenate([v, v]) if i == 3 else v
               for i, v in enumerate(vectors)]
    b = write_store(tmp_path / "b.h5", clips, vocab, shorter, "kwmlp")
    with pytest.raises(FeatureSetError, match=r"clip 'clip0003'.*chunk rows"):
        load_features([a, b])
    relabelled = [FakeClip(c.fname, c.split, (vocab[1],) if i == 2 else c.labels)
                  for i, c in enumerate(clips)]
    c = write_store(tmp_path / "c.h5", relabelled, vocab, vectors, "kwmlp")
    with pytest.raises(FeatureSetError, match=r"clip 'clip0002'.*labels"):
        load_features([a, c])
    d = write_store(tmp_path / "d.h5", clips, vocab + ["extra"], vectors, "kwmlp")
    with pytest.raises(FeatureSetError, match="vocabulary differs"):
        load_features([a, d])


def test_train_heads_cli_saves_and_skips(fsd50k_artifacts, capsys):
    stores = fsd50k_artifacts / "stores"
    argv = ["--artifacts", str(fsd50k_artifacts), "--features", f"{stores / 'bow.h5'}",
            "--features", str(stores / "logmel.h5"), *FAST]
    train_heads.main(argv)
    printed = capsys.readouterr().out
    out = fsd50k_artifacts / "heads" / "bow+logmel"
    assert "mAP" in printed and "accuracy" not in printed       # multi-label: no accuracy
    scores = json.loads((out / "scores.json").read_text())
    assert scores["validation"] == "val" and scores["n_eval_clips"] > 0
    assert 0 <= scores["map"] <= 1 and len(scores["per_class_ap"]) == 23
    head = load_head(out)                                         # late fusion: a head a store
    assert head.names_ == ["bow", "logmel"] and len(head.vocabulary_) == 23
    assert head.heads_[0].normaliser_.count_columns_.sum() == 24
    assert not head.heads_[1].normaliser_.count_columns_.any()
    assert scores["fusion"]["weights"].keys() == {"bow", "logmel"}
    before = (out / "fusion.json").stat().st_mtime_ns
    train_heads.main(argv)                                        # same inputs: skipped
    assert (out / "fusion.json").stat().st_mtime_ns == before
    train_heads.main(argv + ["--seed", "1"])                      # new config: retrained
    assert (out / "fusion.json").stat().st_mtime_ns != before


def _fails(main, argv, capsys, status=1) -> str:
    """Run a stage's main, expect exit ``status``; return its stderr."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == status
    return capsys.readouterr().err


def test_train_heads_cli_errors(tmp_path, capsys):
    err = _fails(train_heads.main, ["--artifacts", str(tmp_path), "--features",
                                    str(tmp_path / "no.h5")], capsys)
    assert err.startswith("train_heads: error: ") and "not a finished bow feature store" in err
    assert "loss must be one of" in _fails(train_heads.main, ["--features", "x.h5", "--loss",
                                                             "hinge"], capsys, status=2)


def test_evaluate_kfold_report_on_esc10(esc10_artifacts, capsys):
    argv = ["--artifacts", str(esc10_artifacts), "--data", "esc10", "--run", "t1", *FAST]
    evaluate.main(argv)
    printed = capsys.readouterr().out
    run = esc10_artifacts / "reports" / "t1"
    rows = _rows(run / "results.csv")
    sets = ["bow", "kwmlp", "bow+kwmlp"]
    assert [r["features"] for r in rows if r["fold"] == "all"] == sets
    assert len(rows) == 3 * 6                                      # aggregate + 5 folds each
    for r in rows:
        assert r["protocol"] == "kfold" and r["validation"] == "next fold"
        assert 0 <= float(r["map"]) <= 1 and 0 <= float(r["accuracy"]) <= 1
    for s in sets:
        folds = [float(r["map"]) for r in rows if r["features"] == s and r["fold"] != "all"]
        agg = next(r for r in rows if r["features"] == s and r["fold"] == "all")
        assert float(agg["map"]) == pytest.approx(np.mean(folds))
        assert float(agg["map_std"]) == pytest.approx(np.std(folds))
    report = (run / "report.md").read_text()
    assert "## esc10" in report and "| accuracy |" in report.replace(" ± ", "")
    for png in ("map_esc10.png", "per_class_ap_esc10.png", "curves_esc10.png"):
        assert f"]({png})" in report
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "bow-random.h5 not found" in report
    assert "| esc10 | bow+kwmlp |" in printed
    # same seed, same numbers; a repeated run is skipped
    evaluate.main(argv[:4] + ["--run", "t2", *FAST])
    assert _rows(esc10_artifacts / "reports" / "t2" / "results.csv") == rows
    before = (run / "results.csv").stat().st_mtime_ns
    evaluate.main(argv)
    assert (run / "results.csv").stat().st_mtime_ns == before


def test_evaluate_splits_on_fsd50k_mini(fsd50k_artifacts):
    report = evaluate.run(None, fsd50k_artifacts,
                          evaluate.EvaluateConfig(width=32, max_epochs=3, patience=2,
                                                  feature_sets=("bow", "logmel", "bow+logmel")),
                          progress=False, run_name="fsd")
    rows = _rows(report.parent / "results.csv")
    assert [r["features"] for r in rows] == ["bow", "logmel", "bow+logmel"]
    assert all(r["protocol"] == "splits" and r["fold"] == "all" and r["accuracy"] == ""
               for r in rows)
    assert all(r["dataset"] == fsd50k_artifacts.name for r in rows)
    ap = _rows(report.parent / "per_class_ap.csv")
    assert len(ap) == 3 * 23
    assert "| accuracy |" not in report.read_text()


def test_evaluate_feature_set_errors(esc10_artifacts, tmp_path, capsys):
    assert "no store for ['nope']" in _fails(evaluate.main, [
        "--artifacts", str(esc10_artifacts), "--feature-sets", "bow+nope"], capsys)
    assert "no feature store" in _fails(evaluate.main, ["--artifacts", str(tmp_path)], capsys)
    assert "protocol must be one of" in _fails(evaluate.main, [
        "--artifacts", str(tmp_path), "--protocol", "loo"], capsys, status=2)
    with h5py.File(tmp_path / "broken.h5", "w") as f:
        f.attrs["fingerprint"] = "x"
    (tmp_path / "stores").mkdir()
    (tmp_path / "broken.h5").rename(tmp_path / "stores" / "bow.h5")
    assert "not a bow feature store" in _fails(evaluate.main, ["--artifacts", str(tmp_path)],
                                               capsys)
