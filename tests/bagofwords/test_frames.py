"""bow.bagofwords.frames: frame words in the bag of words, its files, bundles and timestamps."""
import numpy as np
import pytest
import torch

from bow.audio.features import LogMel
from bow.audio.load import chunk, read_audio
from bow.bagofwords import bundle
from bow.bagofwords.codebook import Codebook, CodebookConfig, CodebookError
from bow.bagofwords.corpus import logmel_clips
from bow.bagofwords.encoder import AutoencoderConfig
from bow.bagofwords.frames import STREAMS, FrameWords
from bow.bagofwords.levels import LevelBins
from bow.bagofwords.model import AssignmentConfig, BagOfWords, family_codes
from bow.bagofwords.pca import PCAEncoder
from bow.bagofwords.timestamps import WINDOWS_PER_CHUNK, TimestampEmbedder
from bow.bagofwords.tokens import FAMILIES
from bow.data.datasets import load_dataset

D, DF, L = 16, 24, 8


@pytest.fixture(scope="module")
def clips(esc10_dir):
    return load_dataset(esc10_dir).clips[::40]          # 10 clips, one per class


@pytest.fixture(scope="module")
def logmel(clips):
    return logmel_clips(clips)[0]


@pytest.fixture(scope="module")
def frames(logmel):
    return FrameWords(CodebookConfig(n_codes=DF, niter=10, nredo=1, seed=3), gpu=False).fit(logmel)


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
    assert counts.shape == (len(logmel), base + len(STREAMS) * DF) == (len(logmel), bag.width)
    assert counts.dtype == (np.uint16 if bag.assignment.assignment == "hard" else np.float32)
    for i in range(len(STREAMS)):
        block = counts[:, base + i * DF:base + (i + 1) * DF].astype(np.float64)
        assert np.allclose(block.sum(1), 100, atol=1e-3)
        assert (block.sum(0) > 0).sum() > DF // 2            # real audio uses most words
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
    for a, b in zip(frames.words(logmel[:5], 3, False, ones),
                    again.words(logmel[:5], 3, False, ones)):
        assert np.array_equal(a, b)
    arrays = dict(np.load(path))
    arrays["static"] = arrays["static"][:, :10]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(CodebookError, match="bad.npz.*static"):
        FrameWords.load(tmp_path / "bad.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(CodebookError, match="junk.npz"):
        FrameWords.load(tmp_path / "junk.npz")


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


def test_fitting_on_many_frames_keeps_a_sample_of_what_kmeans_takes(logmel, monkeypatch):
    """Above D x max_points_per_centroid frames only a seeded sample of that many is kept (and
    given to k-means); mean and std still come from every frame, in blocks of chunks."""
    import bow.bagofwords.frames as frames_module
    from bow.bagofwords.frames import descriptors
    config = CodebookConfig(n_codes=DF, niter=5, nredo=1, seed=3, max_points_per_centroid=39)
    monkeypatch.setattr(frames_module, "BATCH", 7)           # several blocks of chunks
    seen = []
    monkeypatch.setattr(Codebook, "fit", lambda self, x: (seen.append(len(x)), self)[1])
    fw = FrameWords(config, gpu=False).fit(logmel)
    assert len(logmel) * 100 > DF * 39 and seen == [DF * 39] * len(STREAMS)
    every = descriptors(logmel).astype(np.float64)
    np.testing.assert_allclose(fw.mean_, every.mean(0), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(fw.std_, every.std(0), rtol=1e-4, atol=1e-4)
