"""bow.bagofwords.frames: frame words in the bag of words, its files, bundles and timestamps."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from bow.audio.features import LogMel
from bow.audio.load import chunk, read_audio
from bow.bagofwords import bundle
from bow.bagofwords.codebook import Codebook, CodebookConfig, CodebookError
from bow.bagofwords.corpus import logmel_clips
from bow.bagofwords.encoder import AutoencoderConfig
from bow.bagofwords.frames import (
    BANDS,
    MOD_FLOOR,
    MODULATION,
    N_STATS,
    STREAMS,
    FrameWords,
    descriptors,
    stat_assign,
    window_statistics,
)
from bow.bagofwords.levels import LevelBins
from bow.bagofwords.model import AssignmentConfig, BagOfWords, family_codes
from bow.bagofwords.pca import PCAEncoder
from bow.bagofwords.timestamps import WINDOWS_PER_CHUNK, TimestampEmbedder
from bow.bagofwords.tokens import FAMILIES
from bow.data.datasets import load_dataset

D, DF, L, S = 16, 24, 8, 4


@pytest.fixture(scope="module")
def clips(esc10_dir):
    return load_dataset(esc10_dir).clips[::40]          # 10 clips, one per class


@pytest.fixture(scope="module")
def logmel(clips):
    return logmel_clips(clips)[0]


@pytest.fixture(scope="module")
def frames(logmel):
    return FrameWords(CodebookConfig(n_codes=DF, niter=10, nredo=1, seed=3), gpu=False,
                      stat_bins=S).fit(logmel)


def make_bag(logmel, frames, assignment):
    config = AutoencoderConfig(tokens="shape", max_val_tokens=100)
    encoders = {f: PCAEncoder(f, config).fit(logmel, logmel[:2]) for f in FAMILIES}
    books = {f: Codebook(CodebookConfig(n_codes=D, seed=0))
             .fit(family_codes(encoders[f], logmel, f).numpy()) for f in FAMILIES}
    levels = {f: LevelBins(f, L).fit(logmel) for f in FAMILIES}
    return BagOfWords(encoders, books, levels, AssignmentConfig(assignment=assignment), frames)


@pytest.fixture(scope="module", params=["hard", "soft"])
def bag(request, logmel, frames):
    return make_bag(logmel, frames, request.param)


def test_each_stream_counts_every_frame_once(bag, logmel):
    counts = bag.transform(logmel)
    base = 4 * (D + L)
    assert counts.shape == (len(logmel), base + len(STREAMS) * DF + N_STATS * S) \
        == (len(logmel), bag.width)
    assert counts.dtype == (np.uint16 if bag.assignment.assignment == "hard" else np.float32)
    for i in range(len(STREAMS)):
        block = counts[:, base + i * DF:base + (i + 1) * DF].astype(np.float64)
        assert np.allclose(block.sum(1), 100, atol=1e-3)
        assert (block.sum(0) > 0).sum() > DF // 2            # real audio uses most words
    stats = counts[:, base + len(STREAMS) * DF:].astype(np.float64).reshape(-1, N_STATS, S)
    assert np.allclose(stats.sum(2), 1, atol=1e-6)           # one count per statistic
    assert ((stats > 0).sum(2) <= (1 if bag.assignment.assignment == "hard" else 2)).all()
    assert (stats.sum(0) > 0).mean() > 0.9                   # equal-mass words all get used
    without = BagOfWords(bag.encoders, bag.codebooks, bag.levels, bag.assignment)
    assert np.array_equal(counts[:, :base], without.transform(logmel))


def test_batches_and_chunks_give_the_same_bits(bag, logmel):
    whole = bag.transform(logmel)
    parts = np.concatenate([bag.transform(logmel[i:i + 7]) for i in range(0, len(logmel), 7)])
    assert np.array_equal(whole, parts)


def test_timestamp_window_20j_is_chunk_j(bag, clips):
    audio = read_audio(clips[3].path)
    windows = dict(TimestampEmbedder(bag).window_counts([audio]))[0]
    chunks = bag.transform(LogMel()(torch.from_numpy(chunk(audio))))
    assert windows.shape[1] == bag.width
    assert np.array_equal(windows[::WINDOWS_PER_CHUNK], chunks)


def test_file_round_trip_and_damage(frames, logmel, tmp_path):
    path = tmp_path / "frames.npz"
    frames.save(path)
    again = FrameWords.load(path)
    ones = lambda book, ids, dist: np.ones(ids.shape, np.float32)   # noqa: E731
    a, b = frames.words(logmel[:5], 3, False, ones), again.words(logmel[:5], 3, False, ones)
    windows = np.arange(500).reshape(5, 100)
    assert np.array_equal(frames.histograms(a, windows), again.histograms(b, windows))
    arrays = dict(np.load(path))
    arrays["static"] = arrays["static"][:, :10]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(CodebookError, match="bad.npz.*static"):
        FrameWords.load(tmp_path / "bad.npz")
    arrays = dict(np.load(path))
    arrays["stat_words"] = arrays["stat_words"][:, ::-1].copy()
    np.savez(tmp_path / "unordered.npz", **arrays)
    with pytest.raises(CodebookError, match="unordered.npz.*increasing"):
        FrameWords.load(tmp_path / "unordered.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(CodebookError, match="junk.npz"):
        FrameWords.load(tmp_path / "junk.npz")


def test_statistics_words_keep_the_value(frames, logmel):
    """Window statistics are each descriptor's mean and std over its frames, then the log
    shares of modulation bands in each band energy's envelope (the same bits whatever the
    batch); soft words split
    a value between its two neighbours so that their weighted words give it back (clipped to
    the words' range), hard ones count it for its nearest word; the words are the training
    chunks' quantiles (j + 1/2) / S."""
    z = (descriptors(logmel[:6]) - frames.mean_) / frames.std_
    windows = np.arange(600).reshape(6, 100)
    stats = window_statistics(z, windows)
    chunks = z.reshape(6, 100, -1).astype(np.float64)
    np.testing.assert_allclose(stats[:, :188], np.concatenate([chunks.mean(1), chunks.std(1)],
                                                              1), rtol=1e-9, atol=1e-9)
    bands = chunks[..., BANDS] - chunks[..., BANDS].mean(1, keepdims=True)
    power = np.abs(np.fft.rfft(bands * np.hanning(100)[None, :, None], axis=1)) ** 2
    parts = np.stack([power[:, a:b].sum(1) for a, b in MODULATION], axis=2)  # (6, 24, 6)
    shares = np.log10((parts + MOD_FLOOR / 6) / (power[:, 1:].sum(1)[..., None] + MOD_FLOOR))
    np.testing.assert_allclose(stats[:, 188:], shares.reshape(6, -1), rtol=1e-9, atol=1e-9)
    assert np.array_equal(stats, np.concatenate([window_statistics(z, windows[i:i + 1])
                                                 for i in range(6)]))     # one at a time
    words = frames.stat_words_.astype(np.float64)
    assert words.shape == (N_STATS, S) and (np.diff(words, axis=1) >= 0).all()
    every = window_statistics((descriptors(logmel) - frames.mean_) / frames.std_,
                              np.arange(len(logmel) * 100).reshape(-1, 100))
    np.testing.assert_allclose(words, np.quantile(every.astype(np.float32),
                                                  (np.arange(S) + 0.5) / S, axis=0).T,
                               rtol=1e-5, atol=1e-5)
    ids, w = stat_assign(stats, frames.stat_words_, hard=False)
    column, bin_ = ids // S, ids % S
    assert (column == np.repeat(np.arange(N_STATS), 2)[None]).all()
    back = (w.reshape(6, N_STATS, 2) * words[column, bin_].reshape(6, N_STATS, 2)).sum(2)
    clipped = np.clip(stats, words[:, 0], words[:, -1])
    np.testing.assert_allclose(back, clipped, rtol=1e-5, atol=1e-5)
    hard_ids, hard_w = stat_assign(stats, frames.stat_words_, hard=True)
    chosen = hard_ids.reshape(6, N_STATS, 2)[hard_w.reshape(6, N_STATS, 2) == 1] % S
    nearest = np.abs(stats[..., None] - words[None]).argmin(2)
    assert np.array_equal(chosen.reshape(6, N_STATS), nearest)


def test_too_few_frames_is_a_clear_error(logmel):
    with pytest.raises(CodebookError, match="points cannot make a codebook of 1000"):
        FrameWords(CodebookConfig(n_codes=1000), gpu=False).fit(logmel[:5])


def test_bundle_keeps_the_frame_words(logmel, frames, tmp_path):
    bag = make_bag(logmel, frames, "soft")
    path = tmp_path / "b.npz"
    bundle.write(path, bag, normalise="none")
    read = bundle.read(path)
    assert read.width == bag.width and read.config["format_version"] == bundle.FORMAT_VERSION
    assert np.array_equal(read.bag().transform(logmel), bag.transform(logmel))
    arrays = dict(np.load(path))
    del arrays["frames.delta"]
    np.savez(tmp_path / "missing.npz", **arrays)
    with pytest.raises(bundle.BundleError, match="missing.*frames.delta"):
        bundle.read(tmp_path / "missing.npz")
    arrays = dict(np.load(path))
    del arrays["frames.stat_words"]
    np.savez(tmp_path / "no_stats.npz", **arrays)
    with pytest.raises(bundle.BundleError, match="missing.*frames.stat_words"):
        bundle.read(tmp_path / "no_stats.npz")


def test_version_3_bundles_without_statistics_words_still_read(logmel, tmp_path):
    plain = FrameWords(CodebookConfig(n_codes=DF, niter=10, nredo=1, seed=3), gpu=False).fit(logmel)
    bag = make_bag(logmel, plain, "soft")
    bundle.write(tmp_path / "b.npz", bag, normalise="none")
    arrays = dict(np.load(tmp_path / "b.npz"))
    config = json.loads(str(arrays["config"]))
    config["format_version"] = 3
    del config["frames"]["stat_bins"]
    arrays["config"] = np.str_(json.dumps(config))
    np.savez(tmp_path / "v3.npz", **arrays)
    read = bundle.read(tmp_path / "v3.npz")
    assert read.width == bag.width == 4 * (D + L) + len(STREAMS) * DF
    assert np.array_equal(read.bag().transform(logmel[:4]), bag.transform(logmel[:4]))


def test_fitting_on_many_frames_keeps_a_sample_of_what_kmeans_takes(logmel, monkeypatch):
    """Above D x max_points_per_centroid frames only a seeded sample of that many is kept (and
    given to k-means); mean and std still come from every frame, in blocks of chunks."""
    import bow.bagofwords.frames as frames_module
    from bow.bagofwords.frames import descriptors
    config = CodebookConfig(n_codes=DF, niter=5, nredo=1, seed=3, max_points_per_centroid=39)
    in_memory = dataclasses.replace(config, max_points_per_centroid=100_000)   # below the cap
    whole = FrameWords(in_memory, gpu=False, stat_bins=S).fit(logmel)
    monkeypatch.setattr(frames_module, "BATCH", 7)           # several blocks of chunks
    seen = []
    monkeypatch.setattr(Codebook, "fit", lambda self, x: (seen.append(len(x)), self)[1])
    fw = FrameWords(config, gpu=False, stat_bins=S).fit(logmel)
    # the statistics words come from every chunk in either branch
    np.testing.assert_allclose(fw.stat_words_, whole.stat_words_, rtol=1e-5, atol=1e-5)
    assert len(logmel) * 100 > DF * 39 and seen == [DF * 39] * len(STREAMS)
    every = descriptors(logmel).astype(np.float64)
    np.testing.assert_allclose(fw.mean_, every.mean(0), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(fw.std_, every.std(0), rtol=1e-4, atol=1e-4)
