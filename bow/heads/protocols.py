"""Evaluation protocols: train a head on some clips, score its clip probabilities on others.

Two protocols, both returning plain dicts (see ``summarise``):

* ``splits``: train on ``train_splits``, early-stop on ``val_splits``, score ``eval_splits``
  (FSD50K: dev split=train / split=val / eval). If no clip is in the validation splits, a
  seeded ``val_fraction`` of the training clips is held out for early stopping instead.
* ``kfold`` (e.g. ESC-10, splits "1".."5"): for each fold f in turn, score fold f, early-stop
  on the next fold (cyclically) and train on the remaining k - 2 folds. Decision: a whole
  fold, not a random part of the training clips, serves for early stopping, because datasets
  with official folds (ESC-50/10) keep the fragments of one source recording in one fold; a
  random hold-out would put sibling fragments on both sides and make early stopping
  optimistic. The price is training on k - 2 folds instead of k - 1.
  Scores are the mean and (population, ddof 0) standard deviation over the k folds.

``scored_clips`` names the clips a protocol scores (for chance levels): the eval splits' clips,
else every clip (k-fold). ``fit_and_score`` is the ``splits`` protocol for one head that is kept
(pipelines.train_heads): it may have no evaluation clips, and then has no score.

``protocol="auto"`` picks ``splits`` when some clip is in ``eval_splits``, else ``kfold``
when every split name is an integer (at least three folds).
"""
from __future__ import annotations

import numpy as np

from bow.config import choose
from bow.heads.fusion import FusedHead, make_head
from bow.heads.metrics import mean_average_precision, scores
from bow.heads.model import Head, HeadConfig
from bow.io.featureset import FeatureSet, FeatureSetError

PROTOCOLS = ("auto", "splits", "kfold")
SCORES = ("map", "chunk_map", "d_prime", "mean_auc", "accuracy")


def train_and_score(train: FeatureSet, val: FeatureSet, test: FeatureSet, config: HeadConfig,
                    device: str = "cpu", progress: bool = False) -> tuple[dict, Head | FusedHead]:
    """Fit a head on ``train`` (early stop on ``val``) and score it on ``test``."""
    head = make_head(config, train, device).fit(train, val, progress=progress)
    out = scores(test.labels, head.predict_clips(test))
    out["chunk_map"] = chunk_map(head, test)
    out.update(head.summary(), n_train_clips=len(train), n_val_clips=len(val),
               n_eval_clips=len(test),
               n_train_chunks=int(train.offsets[-1]))
    return out, head


def chunk_map(head: Head | FusedHead, features: FeatureSet) -> float:
    """mAP of the head's 1 s chunk probabilities against their clips' labels (the paper's
    Fig. 2 and 3 metric; clip mAP averages the chunk probabilities of each clip first)."""
    return mean_average_precision(features.labels, head.predict_chunks(features.chunks),
                                  repeats=np.diff(features.offsets))


def hold_out(features: FeatureSet, fraction: float, seed: int) -> tuple[FeatureSet, FeatureSet]:
    """Split clips into (rest, held-out ``fraction``) with a seeded permutation."""
    n = len(features)
    n_val = min(max(1, int(round(fraction * n))), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    is_val = np.zeros(n, dtype=bool)
    is_val[order[:n_val]] = True
    return features.subset(~is_val), features.subset(is_val)


def _need(features: FeatureSet, splits, role: str) -> FeatureSet:
    part = features.select(splits)
    if len(part) == 0:
        raise FeatureSetError(f"no clip in the {role} split(s) {list(splits)}; the data's "
                              f"splits are {sorted(set(features.split))}")
    return part


def split_clips(features: FeatureSet, config: HeadConfig
                ) -> tuple[FeatureSet, FeatureSet, FeatureSet, str]:
    """(train, val, eval, how val was chosen) by the config's splits; val falls back to a
    seeded ``val_fraction`` of the training clips when no clip is in ``val_splits``."""
    train = _need(features, config.train_splits, "training")
    val = features.select(config.val_splits)
    validation = "+".join(config.val_splits)
    if len(val) == 0:
        train, val = hold_out(train, config.val_fraction, config.seed)
        validation = f"{config.val_fraction:g} of training clips"
    return train, val, features.select(config.eval_splits), validation


def evaluate_splits(features: FeatureSet, config: HeadConfig, device: str = "cpu",
                    progress: bool = False) -> dict:
    """The ``splits`` protocol (module docstring): one head, one score."""
    _need(features, config.eval_splits, "evaluation")
    train, val, test, validation = split_clips(features, config)
    result, _ = train_and_score(train, val, test, config, device, progress)
    result["fold"] = "+".join(config.eval_splits)
    return summarise([result], "splits", validation, features)


def folds_of(features: FeatureSet) -> list[str]:
    """The fold names (integer split names, in numeric order); error if they are not folds."""
    names = sorted(set(features.split))
    if len(names) < 3 or not all(str(s).strip().lstrip("-").isdigit() for s in names):
        raise FeatureSetError(f"k-fold evaluation needs at least 3 integer-named folds as splits; "
                         f"the data's splits are {names}")
    return sorted(names, key=int)


def evaluate_kfold(features: FeatureSet, config: HeadConfig, device: str = "cpu",
                   progress: bool = False) -> dict:
    """The ``kfold`` protocol (module docstring): one head per fold, mean and std of scores."""
    folds = folds_of(features)
    results = []
    for i, fold in enumerate(folds):
        nxt = folds[(i + 1) % len(folds)]
        rest = [f for f in folds if f not in (fold, nxt)]
        result, _ = train_and_score(features.select(rest), features.select([nxt]),
                                    features.select([fold]), config, device, progress)
        result["fold"] = fold
        results.append(result)
    return summarise(results, "kfold", "next fold", features)


def summarise(results: list[dict], protocol: str, validation: str,
              features: FeatureSet) -> dict:
    """Per-fold results -> {protocol, validation, folds, map, map_std, d_prime, d_prime_std,
    accuracy, accuracy_std (single-label only), per_class_ap (C,), vocabulary, dropped}."""
    out = {"protocol": protocol, "validation": validation, "folds": results,
           "vocabulary": list(features.vocabulary), "dropped": list(features.dropped),
           "n_folds": len(results), "single_label": all("accuracy" in r for r in results)}
    for key in SCORES:
        values = np.array([r[key] for r in results if key in r], dtype=float)
        if len(values) == len(results):  # d' is inf when an AUC is 1: its std is then NaN
            with np.errstate(invalid="ignore"):
                out[key], out[f"{key}_std"] = float(values.mean()), float(values.std())
    ap = np.stack([r["per_class_ap"] for r in results])
    seen = np.isfinite(ap).any(axis=0)
    out["per_class_ap"] = np.full(ap.shape[1], np.nan)
    out["per_class_ap"][seen] = np.nanmean(ap[:, seen], axis=0)
    for key in ("n_train_clips", "n_val_clips", "n_eval_clips", "best_epoch", "epochs"):
        out[key] = float(np.mean([r[key] for r in results]))
    return out


def run_protocol(features: FeatureSet, config: HeadConfig, protocol: str = "auto",
                 device: str = "cpu", progress: bool = False) -> dict:
    """Train and score heads on ``features`` with ``protocol`` (auto, splits or kfold)."""
    choose("protocol", protocol, PROTOCOLS)
    if protocol == "auto":
        protocol = "splits" if len(features.select(config.eval_splits)) else "kfold"
    run = evaluate_splits if protocol == "splits" else evaluate_kfold
    return run(features, config, device, progress)


def scored_clips(clips: list, eval_splits) -> tuple[list, str]:
    """The clips (dataset records) a protocol scores, and their description: those of the
    ``eval_splits``, else (k-fold) every clip."""
    scored = [c for c in clips if c.split in {str(s) for s in eval_splits}]
    if scored:
        present = {c.split for c in scored}
        return scored, "+".join(s for s in eval_splits if s in present)
    return list(clips), "all clips (k-fold)"


def _plain(value):
    """NaN / inf -> None and arrays -> lists, for strict JSON."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def fit_and_score(features: FeatureSet, config: HeadConfig, device: str = "cpu",
                  progress: bool = False) -> tuple[Head | FusedHead, dict]:
    """One head trained on the config's splits (early stop on val) -> (the head, a JSON-ready
    dict: clip counts, how val was chosen, training summary and, when the eval splits hold
    clips, their scores with per-class AP by label)."""
    train, val, test, validation = split_clips(features, config)
    head = make_head(config, train, device).fit(train, val, progress=progress)
    training = {k: v for k, v in head.summary().items() if k != "history"}
    result = {"n_train_clips": len(train), "n_val_clips": len(val), "n_eval_clips": len(test),
              "validation": validation, **training, "dropped_clips": features.dropped}
    if len(test):
        s = scores(test.labels, head.predict_clips(test))
        s["per_class_ap"] = dict(zip(features.vocabulary, _plain(s["per_class_ap"])))
        s["chunk_map"] = chunk_map(head, test)
        result.update({k: _plain(v) for k, v in s.items()})
    return head, result
