"""bow.heads.metrics against hand-computed values and a brute-force reference."""
import math

import numpy as np
import pytest

from bow.heads.metrics import (
    accuracy,
    chance_map,
    clip_probabilities,
    clip_probabilities_in_blocks,
    d_prime,
    d_prime_from_auc,
    is_single_label,
    mean_average_precision,
    per_class_ap,
    per_class_auc,
    scores,
)

# 4 clips, 3 classes; class 2 has no positive.
LABELS = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]])
PROBS = np.array([[0.9, 0.1, 0.5], [0.8, 0.2, 0.5], [0.3, 0.3, 0.5], [0.1, 0.4, 0.5]])
# class 0, ranking 0.9(+) 0.8(-) 0.3(+) 0.1(-): AP = (1/1 + 2/3) / 2 = 5/6;
#   AUC: pairs (+,-) won: 0.9>0.8, 0.9>0.1, 0.3>0.1; lost 0.3<0.8 -> 3/4
# class 1, positive 0.2 ranked third of 0.4, 0.3, 0.2, 0.1: AP = 1/3; AUC: beats 0.1 only -> 1/3
# class 2: no positive -> no AP, no AUC.


def test_clip_probabilities_mean_of_chunks():
    chunk_probs = np.array([[0.2, 0.8], [0.4, 0.6], [1.0, 0.0], [0.0, 0.5], [0.3, 0.1],
                            [0.6, 0.0]])
    offsets = np.array([0, 2, 3, 6])
    np.testing.assert_allclose(clip_probabilities(chunk_probs, offsets),
                               [[0.3, 0.7], [1.0, 0.0], [0.3, 0.2]])


def test_clip_probabilities_rejects_bad_offsets():
    with pytest.raises(ValueError, match="owns no chunk"):
        clip_probabilities(np.ones((2, 1)), np.array([0, 2, 2]))
    with pytest.raises(ValueError, match="3 chunk rows"):
        clip_probabilities(np.ones((3, 1)), np.array([0, 2]))


def test_average_precision_by_hand():
    ap = per_class_ap(LABELS, PROBS)
    np.testing.assert_allclose(ap[:2], [5 / 6, 1 / 3])
    assert math.isnan(ap[2])
    assert mean_average_precision(LABELS, PROBS) == pytest.approx((5 / 6 + 1 / 3) / 2)


def test_auc_and_d_prime_by_hand():
    auc = per_class_auc(LABELS, PROBS)
    np.testing.assert_allclose(auc[:2], [3 / 4, 1 / 3])
    assert math.isnan(auc[2])
    # d' of the mean AUC: Phi^-1(13/24) = 0.104633 (normal tables), times sqrt(2)
    assert d_prime(LABELS, PROBS) == pytest.approx(math.sqrt(2) * 0.1046334, abs=1e-6)
    # Phi^-1(0.75) = 0.6744898; Phi(1) = 0.8413447 -> d' = sqrt(2); AUC 0.5 -> 0
    assert d_prime_from_auc(0.75) == pytest.approx(math.sqrt(2) * 0.6744898, abs=1e-6)
    assert d_prime_from_auc(0.8413447461) == pytest.approx(math.sqrt(2), abs=1e-8)
    assert d_prime_from_auc(0.5) == 0.0
    assert d_prime_from_auc(1.0) == math.inf


def _brute_force_ap(y: np.ndarray, s: np.ndarray) -> float:
    """Mean over positives of the precision at each positive's rank (no ties)."""
    order = np.argsort(-s)
    hits, total = 0, 0.0
    for rank, i in enumerate(order, start=1):
        if y[i]:
            hits += 1
            total += hits / rank
    return total / hits


def test_map_matches_brute_force_on_random_data():
    rng = np.random.default_rng(0)
    labels = (rng.random((60, 7)) < 0.3).astype(np.uint8)
    labels[:, 6] = 0                                  # a class without positives
    probs = rng.random((60, 7))
    expected = np.mean([_brute_force_ap(labels[:, c], probs[:, c]) for c in range(6)])
    assert mean_average_precision(labels, probs) == pytest.approx(expected, rel=1e-12)


def test_accuracy_single_label_only():
    labels = np.eye(3, dtype=np.uint8)[[0, 1, 2, 2]]
    probs = np.array([[0.9, 0.1, 0], [0.6, 0.3, 0.1], [0, 0.2, 0.8], [0.1, 0.1, 0.7]])
    assert is_single_label(labels) and not is_single_label(LABELS)
    assert accuracy(labels, probs) == 0.75
    assert scores(labels, probs)["accuracy"] == 0.75
    assert "accuracy" not in scores(LABELS, PROBS)
    with pytest.raises(ValueError, match="single-label"):
        accuracy(LABELS, PROBS)


def test_scores_dict():
    s = scores(LABELS, PROBS)
    assert s["map"] == pytest.approx(7 / 12)
    assert s["mean_auc"] == pytest.approx(13 / 24)
    assert s["n_clips"] == 4 and s["n_classes_scored"] == 2
    with pytest.raises(ValueError, match="must both be"):
        scores(LABELS, PROBS[:, :2])


def test_chance_map_by_hand():
    labels = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 0, 0]])
    assert chance_map(labels) == pytest.approx((3 / 4 + 1 / 4) / 2)
    assert chance_map(np.zeros((0, 3))) is None


@pytest.mark.parametrize("block", [1, 3, 7, 1000])
def test_clip_probabilities_in_blocks_equal_the_whole(block):
    rng = np.random.default_rng(4)
    offsets = np.concatenate([[0], np.cumsum(rng.integers(1, 5, 40))])
    chunk_probs = rng.random((offsets[-1], 6)).astype(np.float32)
    got = clip_probabilities_in_blocks(lambda rows: rows, chunk_probs, offsets, 6, block)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, clip_probabilities(chunk_probs, offsets), rtol=1e-6)


def test_chunk_scores_with_repeats_equal_explicit_chunk_labels():
    rng = np.random.default_rng(5)
    labels = (rng.random((30, 4)) < 0.3).astype(np.uint8)
    repeats = rng.integers(1, 4, 30)
    probs = rng.random((repeats.sum(), 4)).astype(np.float32)
    explicit = np.repeat(labels, repeats, axis=0)
    np.testing.assert_array_equal(per_class_ap(labels, probs, repeats),
                                  per_class_ap(explicit, probs.astype(np.float64)))
    with pytest.raises(ValueError, match="rows"):
        per_class_ap(labels, probs)
