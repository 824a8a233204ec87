"""Speed and scale: the embedding stages give the same store serially, with --jobs and on a
Dask LocalCluster; read-ahead, batching across clips, the fast KW-MLP encoder, precision options.

The stage tests train tiny autoencoders (hidden 32, a few steps) and D = 16 codebooks on a
labels.csv copy of 14 fsd50k_mini clips plus one unreadable file; shards of 4 clips, so the
parallel runs really split the work. The serial reference runs with two torch threads, the
workers with one. Toy sizes hold few near-ties: tests/system/test_threads.py compares the same
ways on every shared recording (issue 23).
"""
from __future__ import annotations

import shutil
import time

import h5py
import numpy as np
import pytest
import soundfile as sf
import torch

from bow.audio.load import AudioError, chunk, read_audio
from bow.audio.readahead import read_ahead
from bow.bagofwords.embed import ShardEmbedder
from bow.data.datasets import load_dataset
from bow.kwmlp.embed import KWMLPEmbedder
from bow.kwmlp.model import KWMLP
from bow.runtime import check_precision, compare_codes, encoder_precision, torch_threads
from pipelines import embed, embed_kwmlp, fit_codebooks, train_autoencoders
from tests.conftest import linked_dataset, sine

TRAIN = train_autoencoders.TrainAutoencodersConfig(
    hidden=32, batch_size=32, epochs=1, steps_per_epoch=3, max_val_tokens=500,
    train_splits=("train", "val"))
CODES = fit_codebooks.FitCodebooksConfig(n_codes=16, niter=5, train_splits=("train", "val"))
RUNS = {"serial": {}, "jobs": {"jobs": 2}, "dask": {"scheduler": "local:2"}}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


# ------------------------------------------------------------------------------ small parts
def test_read_ahead_keeps_order_and_returns_audio_errors(tmp_path):
    class Item:
        def __init__(self, path):
            self.path = path
    items = []
    for i in range(7):
        path = tmp_path / f"{i}.wav"
        if i == 3:
            path.write_bytes(b"RIFF not audio")
        else:
            sf.write(path, sine(200 + 100 * i, 0.1 + 0.05 * i), 16000)
        items.append(Item(path))
    for threads, budget in ((0, 0), (1, 1), (3, 1 << 20)):
        out = list(read_ahead(items, read_audio, threads, budget))
        assert [c for c, _ in out] == items
        assert isinstance(out[3][1], AudioError) and "3.wav" in str(out[3][1])
        for i, (_, audio) in enumerate(out):
            if i != 3:
                np.testing.assert_array_equal(audio, read_audio(items[i].path))
    stream = read_ahead(items, read_audio, 2)   # a consumer may stop early
    next(stream)
    stream.close()


def test_read_ahead_holds_at_most_its_budget():
    class Item:
        def __init__(self, i):
            self.path = i
    calls = []

    def read(i):
        calls.append(i)
        return np.zeros(1000, np.float32)      # 4,000 bytes

    stream = read_ahead([Item(i) for i in range(100)], read, threads=2, budget=10_000)
    next(stream)
    time.sleep(0.3)                             # a slow consumer: reading stops at the budget
    assert 3 <= len(calls) <= 1 + 3 + 2 * 2     # the consumed one, ~budget, reads in flight
    assert len(list(stream)) == 99 and sorted(calls) == list(range(100))


def test_precision_options_are_checked():
    check_precision("fp32", "cpu")
    check_precision("bf16", "cpu")
    for bad, device in (("tf32", "cpu"), ("bf16", "meta"), ("fp16", "cuda"), ("fp64", "cpu")):
        with pytest.raises(ValueError, match="precision"):
            check_precision(bad, device)
    with pytest.raises(ValueError, match="precision"):
        embed.EmbedConfig(precision="half")
    with pytest.raises(ValueError, match="precision"):
        embed_kwmlp.EmbedKWMLPConfig(precision="bf17")
    with pytest.raises(ValueError, match="CUDA"):
        ShardEmbedder("a", "c", ["x"], "cpu", precision="tf32")
    with encoder_precision("fp32", "cpu"):   # a no-op on the CPU
        x = torch.randn(4, 4)
        assert (x @ x).dtype == torch.float32
    same = {"patch": np.array([[1, 2], [3, 4]])}
    moved = {"patch": np.array([[1, 2], [3, 5]])}
    counts = np.array([[1, 1, 0], [0, 1, 1]], np.uint16)
    stats = compare_codes(moved, same, counts, counts[[0, 0]])
    assert stats["patch_same_ids"] == 0.75 and stats["chunks_unchanged"] == 0.5
    assert stats["counts_l1_per_chunk"] == 1.0


@pytest.mark.parametrize("n_blocks", [0, 1, 5, None])
def test_fast_kwmlp_encoder_equals_the_model(n_blocks):
    torch.manual_seed(0)
    model = KWMLP(num_classes=3, depth=5).eval()
    with torch.no_grad():                     # make the time mixing matter (init: ~identity)
        for layer in model.layers:
            layer.fn.fn.sgu.proj.weight.normal_(0, 0.1)
            layer.fn.norm.weight.normal_(1, 0.2)
    mfcc = 20 * torch.randn(6, 40, 98)
    with torch.no_grad():
        want = model.encode(mfcc, n_blocks)
    got = KWMLPEmbedder(model).encoder(mfcc, n_blocks)
    assert got.shape == want.shape == (6, 98, 64)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


# ------------------------------------------------------------------------------ the stages
@pytest.fixture(scope="module")
def small_set(fsd50k_mini_dir, tmp_path_factory):
    """labels.csv layout: 14 fsd50k_mini clips (0.3-5 s, train/val/eval) + one broken file."""
    return linked_dataset(tmp_path_factory.mktemp("scale_set"),
                          load_dataset(fsd50k_mini_dir).clips[::29], broken=("Dog", "train", 4))


@pytest.fixture(scope="module")
def bow_models(small_set, tmp_path_factory):
    art = tmp_path_factory.mktemp("scale_models")
    train_autoencoders.run(small_set, art, TRAIN, device="cpu", progress=False)
    fit_codebooks.run(small_set, art, CODES, device="cpu", progress=False)
    return art


def _contents(path):
    """{dataset path: array} and the root attributes of an HDF5 store."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
        return out, dict(f.attrs)


def _assert_same_store(a, b):
    (da, aa), (db, ab) = _contents(a), _contents(b)
    assert sorted(da) == sorted(db)
    for name in da:
        np.testing.assert_array_equal(da[name], db[name], err_msg=name)
    assert aa == ab                          # config, fingerprint, upstream, code version


def _copy_models(src, dst):
    for folder in ("autoencoders", "codebooks"):
        shutil.copytree(src / folder, dst / folder)
    return dst


@pytest.mark.slow
def test_bow_embed_is_the_same_serially_with_jobs_and_on_dask(small_set, bow_models, tmp_path):
    cfg = embed.EmbedConfig(shard_size=4, batch_chunks=8)
    stores = {}
    for name, kw in RUNS.items():
        art = _copy_models(bow_models, tmp_path / name)
        with torch_threads(2):
            stores[name] = embed.run(small_set, art, cfg, device="cpu", progress=False, **kw)
    ref = stores["serial"]
    _, attrs = _contents(ref)
    with h5py.File(ref, "r") as f:
        assert len(f["clips/fname"]) == 14 and [s.decode() for s in f["skipped/fname"]] == \
            ["broken.wav"]
    for name in ("jobs", "dask"):
        _assert_same_store(stores[name], ref)
    # where it ran is not part of the fingerprint: a rerun with --jobs is skipped
    mtime = ref.stat().st_mtime_ns
    embed.run(small_set, tmp_path / "serial", cfg, device="cpu", progress=False, jobs=2)
    assert ref.stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_bow_batches_across_clips_do_not_change_the_counts(small_set, bow_models):
    dataset = load_dataset(small_set)
    dirs = (bow_models / "autoencoders", bow_models / "codebooks", dataset.vocabulary, "cpu")
    one, skipped = ShardEmbedder(*dirs, batch_chunks=1, decode_threads=0)(dataset.clips)
    pooled, skipped2 = ShardEmbedder(*dirs, batch_chunks=7)(dataset.clips)
    assert skipped == skipped2 and [s[0] for s in skipped] == ["broken.wav"]
    assert [c.fname for c in one] == [c.fname for c in pooled] == \
        [c.fname for c in dataset.clips if c.fname != "broken.wav"]
    for a, b in zip(one, pooled):
        np.testing.assert_array_equal(a.chunks, b.chunks, err_msg=a.fname)
        assert a.chunks.shape[0] == len(chunk(read_audio(small_set / "audio" / a.fname)))


@pytest.mark.slow
def test_kwmlp_embed_is_the_same_serially_with_jobs_and_on_dask(small_set, kwmlp_dir, tmp_path):
    cfg = embed_kwmlp.EmbedKWMLPConfig(checkpoint=str(kwmlp_dir / "kwmlp.pth"), shard_size=4,
                                       batch_clips=3)
    with torch_threads(2):
        stores = {name: embed_kwmlp.run(small_set, tmp_path / name, cfg, device="cpu",
                                        progress=False, **kw) for name, kw in RUNS.items()}
    ref = stores["serial"]
    with h5py.File(ref, "r") as f:
        assert len(f["clips/fname"]) == 14 and f["chunks/vectors"].shape[1] == 1024
    for name in ("jobs", "dask"):
        _assert_same_store(stores[name], ref)
    mtime = ref.stat().st_mtime_ns
    embed_kwmlp.run(small_set, tmp_path / "serial", cfg, device="cpu", progress=False,
                    scheduler="local:2")
    assert ref.stat().st_mtime_ns == mtime


# ------------------------------------------------------------------------------ CUDA only
@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_reduced_precision_stays_close_to_fp32(precision, small_set, bow_models, kwmlp_dir):
    from benchmarks.precision_check import bow_drift, kwmlp_drift
    from bow.bagofwords.model import BagOfWords
    from bow.kwmlp.model import load_checkpoint
    audios = [read_audio(c.path) for c in load_dataset(small_set).clips]
    bag = BagOfWords.load(bow_models / "autoencoders", bow_models / "codebooks", "cuda")
    drift = bow_drift(bag, audios, precision)
    limit = 0.02 if precision == "tf32" else 0.05
    assert all(v < limit for k, v in drift.items() if k.endswith("_relerr")), drift
    assert all(v > 0.8 for k, v in drift.items() if k.endswith("_same_ids")), drift
    drift = kwmlp_drift(load_checkpoint(kwmlp_dir / "kwmlp.pth"), audios, precision)
    assert all(v < limit for v in drift.values()), drift
