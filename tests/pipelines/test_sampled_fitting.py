"""The fitting stages on a seeded chunk sample (--sample-chunks): a sample that covers the corpus
gives the bytes of fitting on every chunk (the stages before sampling, rebuilt here from the
library: logmel_clips, holdout, then the same fitting calls); the same sample gives the same
bytes; the sample is in the config, the fingerprint and the summaries."""
import dataclasses
import json

import numpy as np
import pytest

from bow.bagofwords import training
from bow.bagofwords.corpus import _split_held_out, logmel_clips
from bow.data.clips import holdout, training_clips
from bow.data.datasets import load_dataset
from bow.io.stage import read_fingerprint
from pipelines import fit_codebooks, train_autoencoders
from tests.pipelines.test_bow_stages import CODES, TRAIN

pytestmark = pytest.mark.slow


def _fit(data, art, sample_chunks):
    train = dataclasses.replace(TRAIN, sample_chunks=sample_chunks)
    codes = dataclasses.replace(CODES, sample_chunks=sample_chunks)
    ae = train_autoencoders.run(data, art, train, device="cpu", progress=False)
    cb = fit_codebooks.run(data, art, codes, device="cpu", progress=False)
    return ae, cb


def _same_bytes(a, b, pattern):
    files = sorted(p.name for p in a.glob(pattern))
    assert files and files == sorted(p.name for p in b.glob(pattern))
    return all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_a_covering_sample_fits_what_every_chunk_fits(fsd50k_mini_dir, tmp_path):
    ae, cb = _fit(fsd50k_mini_dir, tmp_path / "art", 10**6)
    # before sampling: the log-mel of every training chunk, whole clips held out
    clips = training_clips(load_dataset(fsd50k_mini_dir), TRAIN.train_splits, None, TRAIN.seed)
    logmel, offsets, skipped = logmel_clips(clips)
    assert not skipped
    held = {c.fname for c in holdout(clips, TRAIN.val_fraction, TRAIN.seed)[1]}
    fit, val = _split_held_out(logmel.clone(), offsets,
                               np.array([c.fname in held for c in clips]))
    ref_ae, ref_cb = tmp_path / "ref_ae", tmp_path / "ref_cb"
    training.train_autoencoders(fit, val, TRAIN, TRAIN.encoder, ref_ae, read_fingerprint(ae),
                                "cpu")
    assert _same_bytes(ae, ref_ae, "*.pt")
    training.fit_codebooks(ae, logmel, CODES, ref_cb, "cpu", False, CODES.level_bins,
                           CODES.frame_codes, CODES.frame_stats)
    assert _same_bytes(cb, ref_cb, "*.npz") and _same_bytes(cb, ref_cb, "*.levels.json")
    assert (cb / "frames.npz").is_file() == bool(CODES.frame_codes)
    history = json.loads((ae / "history.json").read_text())
    assert history["sample"]["sampled"] == history["sample"]["chunks_seen"] == len(logmel)
    assert history["fit_chunks"] == len(fit) and history["val_chunks"] == len(val)


def test_the_same_sample_gives_the_same_bytes(fsd50k_mini_dir, tmp_path):
    k = 200                                               # of 730 training chunks
    ae, cb = _fit(fsd50k_mini_dir, tmp_path / "a", k)
    ae2, cb2 = _fit(fsd50k_mini_dir, tmp_path / "b", k)
    assert _same_bytes(ae, ae2, "*.pt") and _same_bytes(cb, cb2, "*.npz")
    history = json.loads((ae / "history.json").read_text())
    summary = json.loads((cb / "summary.json").read_text())
    assert history["sample"] == summary["sample"]         # one sample for both stages
    assert summary["sample"]["sampled"] == summary["chunks"] == k
    assert summary["sample"]["chunks_seen"] > 3 * k
    assert history["fit_chunks"] + history["val_chunks"] == k
    assert json.loads((ae / "config.json").read_text())["sample_chunks"] == k
    # another sample size: another fingerprint, other codebooks
    ae3, cb3 = _fit(fsd50k_mini_dir, tmp_path / "c", 2 * k)
    assert read_fingerprint(ae3) != read_fingerprint(ae)
    assert read_fingerprint(cb3) != read_fingerprint(cb)
    assert not _same_bytes(cb, cb3, "*.npz")
    families = json.loads((cb3 / "summary.json").read_text())["families"]
    assert families["thumbnail"]["n_points"] == 2 * k     # one thumbnail token a chunk
