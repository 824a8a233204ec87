"""The seeded chunk sample (bow.bagofwords.sampling, corpus.sampled_logmel) against references:
a full sort of every key, fancy indexing, and the log-mel of every chunk (corpus.logmel_clips)."""
import numpy as np
import pytest
import torch

from bow.bagofwords.corpus import logmel_clips, sampled_logmel, training_logmel
from bow.bagofwords.sampling import BottomK, RowStore, chunk_keys, permute_rows_
from bow.data.datasets import load_dataset


def _bottom_k(lengths, k, seed, order):
    chooser = BottomK(k)
    for number in order:
        chooser.offer(number, chunk_keys(f"clip{number}", lengths[number], seed))
    slots = chooser.order()
    return {(int(c), int(i)) for c, i in zip(chooser.clip[slots], chooser.index[slots])}


def test_chunk_keys_depend_on_seed_fname_and_index_only():
    a = chunk_keys("123", 50, seed=0)
    assert a.dtype == np.uint64 and len(set(a.tolist())) == 50
    np.testing.assert_array_equal(chunk_keys("123", 20, seed=0), a[:20])    # prefix-stable
    assert not np.array_equal(chunk_keys("123", 50, seed=1), a)
    assert not np.array_equal(chunk_keys("124", 50, seed=0), a)


@pytest.mark.parametrize("k", [1, 37, 400, 5000])
def test_bottom_k_is_the_k_smallest_keys_in_any_clip_order(k):
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 30, size=200)
    everything = sorted((int(key), c, i) for c in range(200)
                        for i, key in enumerate(chunk_keys(f"clip{c}", lengths[c], 7)))
    expected = {(c, i) for _, c, i in everything[:k]}
    assert _bottom_k(lengths, k, 7, range(200)) == expected
    assert _bottom_k(lengths, k, 7, rng.permutation(200)) == expected
    if k < lengths.sum():
        assert _bottom_k(lengths, k, 8, range(200)) != expected


def test_the_bottom_k_of_shards_bottom_k_is_the_whole_corpus_bottom_k():
    lengths = np.random.default_rng(2).integers(1, 30, size=300)
    shards = [range(0, 100), range(100, 250), range(250, 300)]
    merged = BottomK(50)
    for shard in shards:                                   # each shard sampled on its own
        chooser = BottomK(50)
        for c in shard:
            chooser.offer(c, chunk_keys(f"clip{c}", lengths[c], 3))
        for slot in chooser.order():                       # then their samples merged
            merged.offer(int(chooser.clip[slot]), np.array([chooser.key[slot]]))
    assert len(merged.heap) == 50
    whole = _bottom_k(lengths, 50, 3, range(300))
    assert {int(c) for c in merged.clip[:50]} == {c for c, _ in whole}
    assert sorted(merged.key[:50].tolist()) == sorted(
        int(chunk_keys(f"clip{c}", lengths[c], 3)[i]) for c, i in whole)


def test_each_chunk_is_sampled_with_probability_k_over_n():
    lengths, k, seeds = np.full(100, 10), 100, 300     # N = 1,000 chunks, k / N = 0.1
    hits = np.zeros((100, 10))
    for seed in range(seeds):
        for c, i in _bottom_k(lengths, k, seed, range(100)):
            hits[c, i] += 1
    rate = hits / seeds
    assert abs(rate.mean() - 0.1) < 1e-12
    # binomial(300, 0.1) per chunk: sd 0.017; by chunk index (100 x 300 draws): sd 0.0017
    assert np.abs(rate.mean(0) - 0.1).max() < 0.01
    assert np.abs(rate - 0.1).max() < 0.1


def test_permute_rows_in_place_matches_indexing():
    rng = np.random.default_rng(1)
    rows = torch.randn(300, 4, 5)
    for order in (rng.permutation(250), np.arange(250), np.r_[1, 0, 2:250]):
        expected = rows[:250][torch.from_numpy(order)]
        work = rows.clone()
        permute_rows_(work, order)
        assert torch.equal(work[:250], expected) and torch.equal(work[250:], rows[250:])
        store = RowStore((4, 5), torch.float32, block=16)       # 16 blocks, the last partial
        store.put(rng.permutation(300)[:0], rows[:0])
        store.put(np.arange(300)[::-1].copy(), rows.flip(0))
        permute_rows_(store, order)
        assert torch.equal(store.take(250), expected) and store.blocks == []


def test_row_store_allocates_blocks_as_slots_are_used():
    store = RowStore((96, 100), torch.float16, block=8)
    store.put(np.array([0, 3, 17]), torch.ones(3, 96, 100))
    assert [b is not None for b in store.blocks] == [True, False, True]
    assert torch.equal(store[17], torch.ones(96, 100, dtype=torch.float16))


@pytest.fixture(scope="module")
def clips(fsd50k_mini_dir):
    return load_dataset(fsd50k_mini_dir).clips[:40]


def test_a_sample_covering_the_corpus_is_every_chunk_in_order(clips):
    full, offsets, _ = logmel_clips(clips)
    logmel, clip_of, skipped, info = sampled_logmel(clips, 10**6, seed=0)
    assert torch.equal(logmel, full) and not skipped
    np.testing.assert_array_equal(clip_of, np.repeat(np.arange(len(clips)), np.diff(offsets)))
    assert info["sampled"] == info["chunks_seen"] == len(full)


def test_a_small_sample_is_rows_of_the_full_log_mel_whatever_the_clip_order(clips):
    full, offsets, _ = logmel_clips(clips)
    k = len(full) // 3
    logmel, clip_of, _, info = sampled_logmel(clips, k, seed=0)
    assert logmel.shape == (k, 96, 100) and info["sampled"] == k
    assert np.all(np.diff(clip_of) >= 0)                   # corpus order
    # each sampled row is the log-mel of a chunk of its clip (exact match; some clips repeat
    # a chunk, e.g. digital silence), and no clip gives more rows than it has chunks
    for row, c in zip(logmel, clip_of):
        block = full[offsets[c]:offsets[c + 1]]
        assert any(torch.equal(block[j], row) for j in range(len(block)))
    assert np.all(np.bincount(clip_of, minlength=len(clips)) <= np.diff(offsets))
    backwards, clip_back, _, info_back = sampled_logmel(clips[::-1], k, seed=0)
    assert info_back["digest"] == info["digest"]

    def per_clip(rows, clip_of, order):                    # fname -> its sampled rows, in order
        return {order[c].fname: rows[clip_of == c] for c in np.unique(clip_of)}
    forward, reverse = per_clip(logmel, clip_of, clips), per_clip(backwards, clip_back, clips[::-1])
    assert forward.keys() == reverse.keys()
    assert all(torch.equal(forward[f], reverse[f]) for f in forward)
    assert sampled_logmel(clips, k, seed=1)[3]["digest"] != info["digest"]


def test_training_split_holds_out_whole_clips_from_the_sample(clips):
    full = logmel_clips(clips)[0]
    fit, val, summary = training_logmel(clips, 0.25, seed=0, sample_chunks=len(full) // 2)
    assert fit.shape[0] + val.shape[0] == summary["sample"]["sampled"] == len(full) // 2
    assert summary["fit_chunks"] == fit.shape[0] and summary["val_clips"] == 10
