"""Clip-level scores on scikit-learn: clip probabilities, mAP, d', per-class AP, accuracy.

Decisions (the papers leave them open):
* Clip probabilities are the mean of the clip's 1 s chunk probabilities.
* mAP is the macro mean of per-class average precision (``sklearn average_precision_score``)
  over the classes with at least one positive clip in the scored set; classes without
  positives have no AP (NaN in ``per_class_ap``) and are left out of the mean.
* d' follows AudioSet practice (Gemmeke et al. 2017, Hershey et al. 2017): the macro mean
  ROC AUC over the classes with both positives and negatives, then
  d' = sqrt(2) * Phi^-1(mean AUC). (The mean of per-class d' would weigh a class at
  AUC 0.999 without bound.) An AUC of exactly 1 gives d' = inf.
* Chance mAP (``chance_map``): the mean prevalence of the classes with a positive, the
  expected mAP of random scores.
* Accuracy (single-label data only): argmax of the clip probabilities against the clip's
  one label.
* Memory: probabilities are kept in their dtype (the heads give float32) and scored one class
  at a time, so millions of chunk rows never become one float64 matrix; chunk-level scores take
  the clips' labels with ``repeats`` (chunks per clip) instead of a (chunks, classes) matrix.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import norm
from sklearn.metrics import average_precision_score, roc_auc_score


def clip_probabilities(chunk_probs: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(M, C) chunk probabilities, (N + 1,) offsets -> (N, C) mean per clip.

    Clip i owns chunk rows ``offsets[i]:offsets[i + 1]`` (the store layout); every clip must
    own at least one chunk.
    """
    chunk_probs = np.asarray(chunk_probs, dtype=np.float64)
    offsets = np.asarray(offsets, dtype=np.int64)
    counts = np.diff(offsets)
    if offsets[0] != 0 or offsets[-1] != len(chunk_probs):
        raise ValueError(f"offsets span rows {offsets[0]}..{offsets[-1]}, "
                         f"but there are {len(chunk_probs)} chunk rows")
    if (counts <= 0).any():
        raise ValueError(f"clip {int(np.argmax(counts <= 0))} owns no chunk rows")
    if len(counts) == 0:
        return np.zeros((0,) + chunk_probs.shape[1:])
    return np.add.reduceat(chunk_probs, offsets[:-1], axis=0) / counts[:, None]


def clip_probabilities_in_blocks(predict, chunks, offsets: np.ndarray, n_classes: int,
                                 block: int) -> np.ndarray:
    """(N, C) float32 clip probabilities of (M, D) chunks (array or lazy), ``predict`` mapping a
    block of chunk rows to their (m, C) probabilities; read in blocks of whole clips of about
    ``block`` rows, so no (M, C) matrix is held."""
    offsets = np.asarray(offsets, dtype=np.int64)
    out = np.zeros((len(offsets) - 1, n_classes), np.float32)
    first = 0
    while first < len(out):
        last = int(np.searchsorted(offsets, offsets[first] + block, "right")) - 1
        last = min(max(last, first + 1), len(out))
        a, b = int(offsets[first]), int(offsets[last])
        out[first:last] = clip_probabilities(predict(chunks[a:b]), offsets[first:last + 1] - a)
        first = last
    return out


def _check(labels: np.ndarray, probs: np.ndarray, repeats=None) -> tuple[np.ndarray, np.ndarray]:
    labels, probs = np.asarray(labels), np.asarray(probs)
    rows = len(labels) if repeats is None else int(np.sum(repeats))
    if labels.ndim != 2 or probs.shape != (rows, labels.shape[1]):
        raise ValueError(f"labels {labels.shape} (rows {rows}) and probabilities {probs.shape} "
                         "must both be (clips, classes)")
    if probs.dtype.kind != "f":
        probs = probs.astype(np.float64)
    return labels.astype(bool), probs


def per_class_ap(labels: np.ndarray, probs: np.ndarray, repeats=None) -> np.ndarray:
    """(N, C) multi-hot labels and (N, C) scores -> (C,) average precision, NaN without
    positives. With ``repeats`` ((N,) ints), the scores are (sum(repeats), C) rows and row r
    has the labels of its clip (clip i owns ``repeats[i]`` consecutive rows)."""
    labels, probs = _check(labels, probs, repeats)
    out = np.full(labels.shape[1], np.nan)
    for c in np.flatnonzero(labels.any(axis=0)):
        y = labels[:, c] if repeats is None else np.repeat(labels[:, c], repeats)
        out[c] = average_precision_score(y, probs[:, c])
    return out


def mean_average_precision(labels: np.ndarray, probs: np.ndarray, repeats=None) -> float:
    """Macro mAP over the classes with at least one positive (NaN if there are none);
    ``repeats`` as in ``per_class_ap``."""
    ap = per_class_ap(labels, probs, repeats)
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")


def per_class_auc(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(N, C) -> (C,) ROC AUC, NaN for classes without both positives and negatives."""
    labels, probs = _check(labels, probs)
    out = np.full(labels.shape[1], np.nan)
    both = labels.any(axis=0) & (~labels).any(axis=0)
    for c in np.flatnonzero(both):
        out[c] = roc_auc_score(labels[:, c], probs[:, c])
    return out


def d_prime_from_auc(auc: float) -> float:
    """d' = sqrt(2) * Phi^-1(AUC): the separation of two unit-variance Gaussians with that AUC."""
    return float(np.sqrt(2.0) * norm.ppf(auc))


def d_prime(labels: np.ndarray, probs: np.ndarray) -> float:
    """d' of the macro mean ROC AUC (see the module docstring)."""
    auc = per_class_auc(labels, probs)
    return d_prime_from_auc(np.nanmean(auc)) if np.isfinite(auc).any() else float("nan")


def is_single_label(labels: np.ndarray) -> bool:
    """True when every clip has exactly one label."""
    labels = np.asarray(labels)
    return len(labels) > 0 and bool((labels.sum(axis=1) == 1).all())


def accuracy(labels: np.ndarray, probs: np.ndarray) -> float:
    """Single-label accuracy: share of clips whose highest-probability class is their label."""
    labels, probs = _check(labels, probs)
    if not is_single_label(labels):
        raise ValueError("accuracy needs single-label data (exactly one label per clip)")
    return float((probs.argmax(axis=1) == labels.argmax(axis=1)).mean())


def scores(labels: np.ndarray, probs: np.ndarray) -> dict:
    """All clip-level scores as a plain dict: map, d_prime, mean_auc, per_class_ap (C,),
    n_clips, n_classes_scored, and accuracy when the labels are single-label."""
    ap = per_class_ap(labels, probs)
    auc = per_class_auc(labels, probs)
    mean_auc = float(np.nanmean(auc)) if np.isfinite(auc).any() else float("nan")
    out = {
        "map": float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan"),
        "d_prime": d_prime_from_auc(mean_auc) if np.isfinite(mean_auc) else float("nan"),
        "mean_auc": mean_auc,
        "per_class_ap": ap,
        "n_clips": int(len(labels)),
        "n_classes_scored": int(np.isfinite(ap).sum()),
    }
    if is_single_label(labels):
        out["accuracy"] = accuracy(labels, probs)
    return out


def chance_map(labels: np.ndarray) -> float | None:
    """(N, C) multi-hot -> mean prevalence of the classes with a positive (None if N = 0)."""
    y = np.asarray(labels, dtype=np.float64)
    if not len(y):
        return None
    prevalence = y.mean(axis=0)
    return float(prevalence[prevalence > 0].mean())
