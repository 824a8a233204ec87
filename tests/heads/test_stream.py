"""bow.heads.stream: heads on feature sets larger than their memory budget; the streaming path
equals the in-memory path when both apply; windows, blocks, read-ahead."""
import dataclasses

import numpy as np
import pytest
import torch

from bow.heads.model import Head, HeadConfig
from bow.heads.protocols import run_protocol
from bow.heads.stream import block_rows, epoch_windows, float32_bytes, read_ahead, streamed_batches
from bow.io.featureset import load_features
from tests.heads_data import (
    one_torch_thread,  # noqa: F401  (autouse fixture)
    synthetic_counts,
    write_store,
)

FAST = dict(width=64, max_epochs=6, patience=3, batch_size=32)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """(a separable count store, a dense store of the same clips in reverse order)."""
    d = tmp_path_factory.mktemp("stream")
    clips, vocab, counts = synthetic_counts(90, 3, ["train", "train", "train", "val", "eval"])
    rng = np.random.default_rng(2)
    dense = [rng.standard_normal((len(v), 8)).astype(np.float32) + v[:, :8] for v in counts]
    return (write_store(d / "bow.h5", clips, vocab, counts, "bow"),
            write_store(d / "dense.h5", clips[::-1], vocab, dense[::-1], "dense"))


def _mb(n_bytes: float) -> float:
    return n_bytes / 2 ** 20


@pytest.mark.parametrize("fused", [False, True])
def test_streaming_equals_in_memory_when_both_apply(stores, fused):
    """A budget below the training chunks but one window holding every block: the batches, and
    so the weights, are those of the in-memory path (bow.heads.stream's docstring)."""
    data = load_features(stores if fused else stores[:1])
    train, val = data.select(["train"]), data.select(["val"])
    config = HeadConfig(fusion="concat", **FAST)
    memory = Head(dataclasses.replace(config, memory_budget_mb=1024.0)).fit(train, val)
    streamed = Head(dataclasses.replace(config, memory_budget_mb=_mb(float32_bytes(train.chunks)),
                                        shuffle_window=10 ** 6)).fit(train, val)
    assert streamed.streamed_ and not memory.streamed_
    assert streamed.history_ == memory.history_
    for name, value in memory.model_.state_dict().items():
        torch.testing.assert_close(streamed.model_.state_dict()[name], value, rtol=0, atol=0)
    np.testing.assert_array_equal(streamed.predict_clips(data), memory.predict_clips(data))


@pytest.mark.parametrize("fused", [False, True])
def test_head_on_a_set_four_times_its_budget_trains_and_scores(stores, fused):
    data = load_features(stores if fused else stores[:1])
    budget = _mb(float32_bytes(data.select(["train"]).chunks) / 4)
    config = HeadConfig(fusion="concat", memory_budget_mb=budget, shuffle_window=2,
                        **{**FAST, "max_epochs": 15})
    result = run_protocol(data, config, "splits")
    assert result["map"] > 0.9 and result["chunk_map"] > 0.8, result
    head = Head(config).fit(data.select(["train"]), data.select(["val"]))
    assert head.streamed_
    rows = block_rows(data.chunks, int(budget * 2 ** 20), 2)
    assert int(data.select(["train"]).offsets[-1]) > 2 * rows      # several windows per epoch


def test_epoch_windows_cover_every_row_once_in_blocks():
    torch.manual_seed(0)
    windows = epoch_windows(103, 10, 3)
    assert len(windows) == 4 and max(len(w) for w in windows) == 30   # 11 blocks, 3 a window
    rows = np.concatenate(windows)
    np.testing.assert_array_equal(np.sort(rows), np.arange(103))
    assert not np.array_equal(rows, np.arange(103))                  # blocks were shuffled
    starts = rows[np.flatnonzero(np.diff(rows, prepend=-2) != 1)]
    assert all(s % 10 == 0 for s in starts)                         # whole blocks, in order
    np.testing.assert_array_equal(epoch_windows(103, 10, 11)[0], np.arange(103))


def test_block_rows_align_with_the_stores_hdf5_chunks(stores):
    data = load_features(stores)
    hdf5 = data.chunks.block_rows
    assert block_rows(data.chunks, 10 ** 12, 4) % hdf5 == 0
    assert block_rows(data.chunks, 4 * 4 * 4 * data.dim * 7, 4) == 7   # below a chunk: as fit


def test_read_ahead_yields_windows_and_raises_reader_errors(stores):
    chunks = load_features(stores).chunks
    windows = [np.arange(0, 5), np.arange(10, 12)]
    got = list(read_ahead(chunks, windows, 2))
    for (rows, raw), want in zip(got, windows):
        np.testing.assert_array_equal(rows, want)
        np.testing.assert_array_equal(raw, np.asarray(chunks)[want])

    class Broken:
        def __getitem__(self, key):
            raise OSError("disk gone")
    with pytest.raises(OSError, match="disk gone"):
        list(read_ahead(Broken(), windows, 2))


def test_streamed_batches_are_whole_across_windows(stores):
    train = load_features(stores[:1]).select(["train"])
    n = int(train.offsets[-1])
    torch.manual_seed(0)
    batches = list(streamed_batches(train, 5, 2, 32, lambda raw, order: torch.from_numpy(
        raw[order].astype(np.float32)), torch.device("cpu")))
    assert [len(x) for x, _ in batches] == [32] * (n // 32) + ([n % 32] if n % 32 else [])
    rows = torch.cat([x for x, _ in batches]).numpy()
    whole = np.asarray(train.chunks).astype(np.float32)
    assert sorted(map(tuple, rows)) == sorted(map(tuple, whole))       # every row once
    labels = train.chunk_labels().astype(np.float32)
    for x, y in batches:                        # each row travels with its clip's labels
        for xi, yi in zip(x.numpy()[:3], y.numpy()[:3]):
            match = np.flatnonzero((whole == xi).all(axis=1))
            assert any((labels[m] == yi).all() for m in match)


def test_blocks_outside_training_follow_the_budget(stores):
    """Statistics, validation and scoring read blocks that fit a quarter of the budget (at 256
    MiB and 1,088 columns: 2,570 rows, not 65,536), and the statistics do not depend on it."""
    from bow.heads.model import BLOCK, STAT_ROWS, Normaliser, scoring_rows
    assert scoring_rows(1088, 256 << 20) == (256 << 20) // (96 * 1088) == 2570
    assert scoring_rows(8, 1 << 40) == BLOCK and scoring_rows(1088, 1) == STAT_ROWS
    rng = np.random.default_rng(0)
    x = rng.poisson(2.0, (3000, 16)).astype(np.float32)
    ref = Normaliser().fit(x, np.ones(16, bool), 3000)
    for rows in (256, 700, 1024):
        got = Normaliser().fit(x, np.ones(16, bool), rows)
        assert np.array_equal(got.mean_, ref.mean_) and np.array_equal(got.scale_, ref.scale_)
    data = load_features(stores[:1])
    train, val = data.select(["train"]), data.select(["val"])
    head = Head(HeadConfig(**FAST)).fit(train, val)
    small = dataclasses.replace(head.config, memory_budget_mb=_mb(96 * 300 * data.dim))
    assert Head(small).rows(data.dim) == 300
    assert Head(HeadConfig()).rows(1088) == (1 << 30) // (96 * 1088)   # fixed, not free memory
    probs = head.predict_clips(data)
    head.config = small
    np.testing.assert_allclose(head.predict_clips(data), probs, rtol=0, atol=1e-6)
