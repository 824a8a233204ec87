"""Scene embeddings: the three algorithms against direct numpy computations on hand-made data."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bow.kwmlp.scene import scene_embedding, scene_embeddings


def interp(x: np.ndarray, size: int) -> np.ndarray:
    """(T, d) -> (size, d) linear interpolation with the end points on the end points."""
    t = x.shape[0]
    pos = np.linspace(0, t - 1, size)
    return np.stack([np.interp(pos, np.arange(t), x[:, j]) for j in range(x.shape[1])], axis=1)


def flatten(x: np.ndarray) -> np.ndarray:
    """(16, d) -> (16 d,) feature-major."""
    return x.T.reshape(-1)


def sequence(t: int, d: int = 3) -> np.ndarray:
    """(t, d) hand-made: a ramp, a parabola and a sawtooth."""
    i = np.arange(t, dtype=np.float64)
    return np.stack([i, (i - t / 3) ** 2 / t, (i % 5) - 2.0][:d], axis=1)


def run(x: np.ndarray, algorithm: str) -> np.ndarray:
    return scene_embedding(torch.tensor(x[None], dtype=torch.float64), algorithm)[0].numpy()


@pytest.mark.parametrize("t, sizes", [(16, []), (32, [16]), (33, [16, 16]), (100, [50, 25, 16]),
                                      (198, [99, 49, 24, 16]), (598, [299, 149, 74, 37, 18, 16])])
def test_iterative_is_repeated_halving(t, sizes):
    x = sequence(t)
    want = x
    for size in sizes:          # written out by hand: floor halvings, then one step to 16
        want = interp(want, size)
    np.testing.assert_allclose(run(x, "iterative"), flatten(want), rtol=0, atol=1e-10)


def test_iterative_power_of_two_has_no_final_step():
    x = sequence(64)
    np.testing.assert_allclose(run(x, "iterative"), flatten(interp(interp(x, 32), 16)),
                               atol=1e-10)
    # on a linear ramp every interpolation is exact: the result samples the ramp at 16 points
    ramp = np.arange(64.0)[:, None]
    np.testing.assert_allclose(run(ramp, "iterative"), np.linspace(0, 63, 16), atol=1e-10)


@pytest.mark.parametrize("t", [17, 50, 100, 1098])
def test_single_is_one_interpolation(t):
    x = sequence(t)
    np.testing.assert_allclose(run(x, "single"), flatten(interp(x, 16)), atol=1e-10)


@pytest.mark.parametrize("t", [16, 40, 100, 101])
def test_mean_of_16_groups(t):
    x = sequence(t)
    groups = [x[g * t // 16:(g + 1) * t // 16] for g in range(16)]
    assert sum(len(g) for g in groups) == t and min(len(g) for g in groups) >= 1
    want = np.stack([g.mean(axis=0) for g in groups])
    np.testing.assert_allclose(run(x, "mean"), flatten(want), atol=1e-10)


@pytest.mark.parametrize("algorithm", ["iterative", "single", "mean"])
def test_short_sequences_are_zero_padded(algorithm):
    x = sequence(5)
    want = np.zeros((16, 3))
    want[:5] = x
    np.testing.assert_array_equal(run(x, algorithm), flatten(want))
    np.testing.assert_array_equal(run(np.zeros((0, 3)), algorithm), np.zeros(48))


def test_flattening_is_feature_major_and_size_1024():
    x = torch.zeros(1, 16, 64)
    x[0, :, 5] = torch.arange(16.0)
    out = scene_embedding(x)
    assert out.shape == (1, 1024)
    np.testing.assert_array_equal(out[0, 5 * 16:6 * 16].numpy(), np.arange(16.0))
    assert out[0, :5 * 16].abs().sum() == 0 and out[0, 6 * 16:].abs().sum() == 0


def test_mixed_lengths_equal_one_by_one_and_unknown_algorithm():
    seqs = [torch.tensor(sequence(t)) for t in (5, 100, 37, 100)]
    batched = scene_embeddings(seqs, "iterative")
    for s, row in zip(seqs, batched):
        torch.testing.assert_close(row, scene_embedding(s[None])[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="scene algorithm"):
        scene_embedding(seqs[0][None], "median")
