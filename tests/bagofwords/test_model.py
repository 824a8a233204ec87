"""bow.bagofwords.model: histograms of 143 tokens per chunk (hard and soft, with level bins),
batches, normalisation, files."""
import numpy as np
import pytest
import torch

from bow.bagofwords.autoencoder import Autoencoder
from bow.bagofwords.codebook import Codebook, CodebookConfig, CodebookError
from bow.bagofwords.corpus import logmel_clips
from bow.bagofwords.encoder import AutoencoderConfig
from bow.bagofwords.levels import LevelBins
from bow.bagofwords.model import (
    AssignmentConfig,
    BagOfWords,
    clip_vector,
    family_codes,
    histograms,
    normalise,
    soft_weights,
)
from bow.bagofwords.pca import PCAEncoder
from bow.bagofwords.tokens import COUNTS, DIMS, FAMILIES, grid
from bow.data.datasets import load_dataset

D = 16


@pytest.fixture(scope="module")
def logmel(esc10_dir):
    clips = load_dataset(esc10_dir).clips[::40]          # 10 clips, one per class
    return logmel_clips(clips)[0]


@pytest.fixture(scope="module")
def bag(logmel):
    config = AutoencoderConfig(hidden=32, epochs=0, max_val_tokens=100, tokens="raw")
    encoders = {f: Autoencoder(f, config).fit(logmel, logmel[:2]) for f in FAMILIES}
    books = {f: Codebook(CodebookConfig(n_codes=D, seed=0))
             .fit(family_codes(encoders[f], logmel, f).numpy()) for f in FAMILIES}
    return BagOfWords(encoders, books, assignment=AssignmentConfig(assignment="hard"))


@pytest.fixture(scope="module")
def shape_bag(logmel):
    """PCA encoders of shape tokens, 8 level bins, soft assignment to the 3 nearest codes."""
    config = AutoencoderConfig(tokens="shape", max_val_tokens=100)
    encoders = {f: PCAEncoder(f, config).fit(logmel, logmel[:2]) for f in FAMILIES}
    books = {f: Codebook(CodebookConfig(n_codes=D, seed=0))
             .fit(family_codes(encoders[f], logmel, f).numpy()) for f in FAMILIES}
    levels = {f: LevelBins(f, 8).fit(logmel) for f in FAMILIES}
    return BagOfWords(encoders, books, levels, AssignmentConfig(assignment="soft", neighbours=3))


def test_every_chunk_histogram_sums_to_143(bag, logmel):
    counts = bag.transform(logmel)
    assert counts.shape == (logmel.shape[0], 4 * D) and counts.dtype == np.uint16
    assert (counts.sum(1) == 143).all()
    for i, family in enumerate(FAMILIES):           # family blocks in FAMILIES order
        assert (counts[:, i * D:(i + 1) * D].sum(1) == COUNTS[family]).all()
    assert (counts.sum(0) > 0).sum() > 32           # real audio uses most of the 64 words


def test_histograms_equal_a_slow_count(shape_bag, logmel):
    n, L = 3, shape_bag.n_levels
    words = {f: shape_bag.words(f, grid(logmel[:n].float(), f).reshape(-1, DIMS[f]))
             for f in FAMILIES}
    slow = np.zeros((n, 4 * (D + L)))
    for f, family in enumerate(FAMILIES):
        w = words[family]
        for t in range(n * COUNTS[family]):
            chunk = t // COUNTS[family]
            for code, weight in zip(w["ids"][t], w["weights"][t]):
                slow[chunk, f * D + code] += weight
            slow[chunk, 4 * D + f * L + w["levels"][t]] += 1
    counts = histograms(words, n, D, L)
    assert counts.dtype == np.float32
    np.testing.assert_allclose(counts, slow, rtol=1e-6, atol=1e-5)


def test_soft_chunks_sum_to_143_and_levels_to_the_token_counts(shape_bag, logmel):
    counts = shape_bag.transform(logmel)
    L = shape_bag.n_levels
    assert counts.shape == (logmel.shape[0], 4 * (D + L)) and (counts >= 0).all()
    for f, family in enumerate(FAMILIES):
        codes = counts[:, f * D:(f + 1) * D].sum(1)
        levels = counts[:, 4 * D + f * L:4 * D + (f + 1) * L].sum(1)
        np.testing.assert_allclose(codes, COUNTS[family], rtol=1e-5)
        assert (levels == COUNTS[family]).all()
    # equal-mass bins on the training tokens: most are used (ties at the dB floor, where a
    # quantile edge repeats, leave a bin empty)
    assert (counts[:, 4 * D:].sum(0) > 0).mean() > 0.75


def test_soft_assignment_with_one_neighbour_is_hard_assignment(bag, logmel):
    one = BagOfWords(bag.encoders, bag.codebooks,
                     assignment=AssignmentConfig(assignment="soft", neighbours=1))
    hard, soft = bag.transform(logmel), one.transform(logmel)
    assert hard.dtype == np.uint16 and soft.dtype == np.float32
    assert np.array_equal(soft, hard.astype(np.float32))


def test_soft_weights():
    dist = np.array([[1.0, 1.0, 5.0], [0.0, 2.0, 4.0]])
    w = soft_weights(dist, 2.0, "softmax")
    np.testing.assert_allclose(w.sum(1), 1, rtol=1e-6)
    np.testing.assert_allclose(w[0, :2], w[0, 0]) and np.testing.assert_allclose(
        w[1], np.exp([0, -1, -2]) / np.exp([0, -1, -2]).sum(), rtol=1e-6)
    np.testing.assert_allclose(soft_weights(dist, 2.0, "uniform"), 1 / 3)
    np.testing.assert_allclose(soft_weights(dist, None, "rank"),
                               [[6 / 11, 3 / 11, 2 / 11]] * 2, rtol=1e-6)
    assert (soft_weights(dist[:, :1], None, "softmax") == 1).all()
    with pytest.raises(CodebookError, match="scale"):
        soft_weights(dist, None, "softmax")


def test_codes_are_the_encoders_on_grid_tokens(bag, logmel):
    enc = bag.encoders["band_envelope"]
    tokens = grid(logmel[:4].float(), "band_envelope").reshape(-1, DIMS["band_envelope"])
    direct = enc.encode(tokens)
    assert torch.equal(family_codes(enc, logmel[:4], "band_envelope"), direct)


def test_batch_equals_chunks_one_by_one(bag, logmel):
    batch = bag.transform(logmel[:7])
    one_by_one = np.concatenate([bag.transform(logmel[i:i + 1]) for i in range(7)])
    assert np.array_equal(batch, one_by_one)


def test_clip_vector_is_the_mean_of_chunks():
    rows = np.array([[143, 0], [0, 143], [143, 0]], dtype=np.uint16)
    np.testing.assert_allclose(clip_vector(rows), [143 * 2 / 3, 143 / 3], rtol=1e-6)
    assert clip_vector(rows).dtype == np.float32


def test_normalisations():
    x = np.array([[0, 1, 4, 143]], dtype=np.uint16)
    np.testing.assert_allclose(normalise(x), np.sqrt(x.astype(float)), rtol=1e-6)
    np.testing.assert_allclose(normalise(x, "log1p"), np.log1p(x.astype(float)), rtol=1e-6)
    assert np.array_equal(normalise(x, "none"), x.astype(np.float32))
    with pytest.raises(ValueError, match="normalisation must be one of"):
        normalise(x, "l2")


@pytest.mark.parametrize("which", ["bag", "shape_bag"])
def test_load_from_files(which, request, logmel, tmp_path):
    model = request.getfixturevalue(which)
    for f in FAMILIES:
        model.encoders[f].save(tmp_path / "ae" / f"{f}.pt")
        model.codebooks[f].save(tmp_path / "cb" / f"{f}.npz")
        if model.levels:
            model.levels[f].save(tmp_path / "cb" / f"{f}.levels.json")
    back = BagOfWords.load(tmp_path / "ae", tmp_path / "cb", assignment=model.assignment)
    assert back.n_codes == D and back.n_levels == model.n_levels
    assert np.array_equal(back.transform(logmel), model.transform(logmel))
