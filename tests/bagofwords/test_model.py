"""bow.bagofwords.model: histograms of 143 tokens per chunk, batches, normalisation."""
import numpy as np
import pytest
import torch

from bow.bagofwords.autoencoder import Autoencoder
from bow.bagofwords.codebook import Codebook, CodebookConfig
from bow.bagofwords.corpus import logmel_clips
from bow.bagofwords.encoder import AutoencoderConfig
from bow.bagofwords.model import BagOfWords, clip_vector, family_codes, histograms, normalise
from bow.bagofwords.tokens import COUNTS, DIMS, FAMILIES, grid
from bow.data.datasets import load_dataset

D = 16


@pytest.fixture(scope="module")
def logmel(esc10_dir):
    clips = load_dataset(esc10_dir).clips[::40]          # 10 clips, one per class
    return logmel_clips(clips)[0]


@pytest.fixture(scope="module")
def bag(logmel):
    config = AutoencoderConfig(hidden=32, epochs=0, max_val_tokens=100)
    encoders = {f: Autoencoder(f, config).fit(logmel, logmel[:2]) for f in FAMILIES}
    books = {f: Codebook(CodebookConfig(n_codes=D, seed=0))
             .fit(family_codes(encoders[f], logmel, f).numpy()) for f in FAMILIES}
    return BagOfWords(encoders, books)


def test_every_chunk_histogram_sums_to_143(bag, logmel):
    counts = bag.transform(logmel)
    assert counts.shape == (logmel.shape[0], 4 * D) and counts.dtype == np.uint16
    assert (counts.sum(1) == 143).all()
    for i, family in enumerate(FAMILIES):           # family blocks in FAMILIES order
        assert (counts[:, i * D:(i + 1) * D].sum(1) == COUNTS[family]).all()
    assert (counts.sum(0) > 0).sum() > 32           # real audio uses most of the 64 words


def test_histograms_equal_a_slow_count(bag, logmel):
    ids = bag.code_ids(logmel[:3])
    slow = np.zeros((3, 4 * D), dtype=np.int64)
    for n in range(3):
        for f, family in enumerate(FAMILIES):
            for code in ids[family][n]:
                slow[n, f * D + code] += 1
    assert np.array_equal(histograms(ids, D), slow)


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


def test_load_from_files(bag, logmel, tmp_path):
    for f in FAMILIES:
        bag.encoders[f].save(tmp_path / "ae" / f"{f}.pt")
        bag.codebooks[f].save(tmp_path / "cb" / f"{f}.npz")
    back = BagOfWords.load(tmp_path / "ae", tmp_path / "cb")
    assert back.n_codes == D
    assert np.array_equal(back.transform(logmel), bag.transform(logmel))
