"""The linear probe of ../shared/FINDINGS.md on the clip vectors of feature stores.

    python -m benchmarks.store_probe artifacts/stores/audiomlp.h5 [artifacts/stores/kwmlp.h5 ...]

For each store: standardise + logistic regression (C = 0.1) on /clips/vectors (the scene
embedding for KW-MLP and Audio-MLP; the mean chunk counts for the bag of words, square-rooted
with ``--sqrt``), accuracy of the single-label clips. Data sets whose splits are integer folds
(ESC-10): ``cv`` = mean over the folds of training on the others and testing on it (the
FINDINGS figure), and ``held_out`` = trained on all folds but the last, tested on the last;
otherwise (FSDD): ``held_out`` = trained on train (and val with ``--with-val``), tested on test /
eval. One JSON line per store, then a table.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from benchmarks.common import emit
from bow.io.store import read


def accuracy(x_train, y_train, x_test, y_test) -> float:
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
    clf.fit(x_train, y_train)
    return float((clf.predict(x_test) == y_test).mean())


def probe(path: Path, sqrt: bool = False, with_val: bool = False) -> dict:
    store = read(path)
    single = store.labels.sum(1) == 1
    x = np.asarray(store.clips, np.float64)[single]
    x = np.sqrt(x) if sqrt else x
    y, split = store.labels[single].argmax(1), store.split[single]
    names = sorted(set(split))
    row = {"store": str(path), "kind": str(store.attrs.get("kind", "")), "dim": x.shape[1],
           "clips": int(len(y))}
    if len(names) >= 3 and all(s.isdigit() for s in names):
        folds = sorted(names, key=int)
        scores = [accuracy(x[split != f], y[split != f], x[split == f], y[split == f])
                  for f in folds]
        row.update(protocol=f"{len(folds)}-fold", cv=float(np.mean(scores)),
                   cv_std=float(np.std(scores)), held_out=scores[-1])
    else:
        train = np.isin(split, ["train", "val"] if with_val else ["train"])
        test = np.isin(split, ["test", "eval"])
        row.update(protocol="train -> test", held_out=accuracy(x[train], y[train], x[test],
                                                                y[test]))
    return row


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stores", nargs="+", type=Path)
    p.add_argument("--sqrt", action="store_true", help="square root of the clip vectors first")
    p.add_argument("--with-val", action="store_true", help="train on train + val")
    args = p.parse_args(argv)
    emit([probe(s, args.sqrt, args.with_val) for s in args.stores])


if __name__ == "__main__":
    main()
