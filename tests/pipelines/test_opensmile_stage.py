"""pipelines.embed_opensmile end to end on a tiny real data set, the store joined with a
bag-of-words store (bow+opensmile) and scored by pipelines.evaluate; the command without the
opensmile package (simulated)."""
from __future__ import annotations

import csv
import dataclasses

import h5py
import numpy as np
import pytest

from bow.audio.load import chunk, read_audio
from bow.data.datasets import load_dataset
from bow.io.featureset import find_feature_sets, load_features
from bow.io.store import read
from bow.peers import opensmile as osm
from pipelines import embed_opensmile, evaluate, layout
from tests.conftest import linked_dataset
from tests.heads_data import (
    FakeClip,
    one_torch_thread,  # noqa: F401  (autouse fixture)
    write_store,
)


@pytest.fixture(scope="module")
def tiny(fsdd_dir, esc10_dir, tmp_path_factory):
    """8 spoken digits (0 and 1: 2 train, 1 val, 1 test each; 0.3-0.6 s, one chunk) and two
    ESC-10 recordings relabelled as digits (5 s, five chunks), plus one broken file."""
    fsdd = load_dataset(fsdd_dir)
    picked = []
    for digit in ("0", "1"):
        for split, n in (("train", 2), ("val", 1), ("test", 1)):
            picked += [c for c in fsdd.clips if c.labels == (digit,) and c.split == split][:n]
    esc = load_dataset(esc10_dir).clips
    picked += [dataclasses.replace(esc[0], labels=("0",), split="train"),
               dataclasses.replace(esc[200], labels=("1",), split="test")]
    root = tmp_path_factory.mktemp("opensmile") / "data"
    return linked_dataset(root, picked, broken=("0", "train", 3))


@pytest.fixture(scope="module")
def embedded(tiny, opensmile_package, tmp_path_factory):
    art = tmp_path_factory.mktemp("opensmile-artifacts")
    embed_opensmile.main(["--data", str(tiny), "--artifacts", str(art), "--no-progress"])
    return art


@pytest.mark.slow
def test_store_holds_the_functionals_of_every_clip_and_chunk(tiny, embedded, capsys):
    path = layout.opensmile_store(embedded)
    store = read(path)
    dataset = load_dataset(tiny)
    readable = [c for c in dataset.clips if c.fname != "broken.wav"]
    assert list(store.fname) == [c.fname for c in readable]
    assert store.skipped[0][0] == "broken.wav" and len(store.skipped) == 1
    assert store.attrs["kind"] == "opensmile" and store.attrs["config"]["opensmile"] == \
        osm.version() and store.attrs["config"]["feature_set"] == "ComParE_2016"
    assert store.clips.shape == (10, 6373) and store.chunks.dtype == np.float32
    for i, clip in enumerate(readable):
        audio = read_audio(clip.path)
        assert store.offsets[i + 1] - store.offsets[i] == len(chunk(audio))   # 1 or 5 rows
        if i in (0, len(readable) - 1):                      # a digit and a 5 s recording
            np.testing.assert_array_equal(store.clips[i], osm.functionals(audio))
            np.testing.assert_array_equal(store.chunk_vectors(i), osm.chunk_functionals(audio))
    assert store.offsets[-1] == 8 + 2 * 5
    assert np.isfinite(store.chunks).all() and np.isfinite(store.clips).all()
    with h5py.File(path) as f:
        assert f["clips/nonfinite"][()].tolist() == [0] * 10
    # a second run: up to date, nothing rewritten
    before = path.stat().st_mtime_ns
    embed_opensmile.main(["--data", str(tiny), "--artifacts", str(embedded), "--no-progress"])
    out = capsys.readouterr().out
    assert "up to date" in out and "0 non-finite openSMILE value(s)" in out
    assert "broken.wav: unreadable audio" in out and path.stat().st_mtime_ns == before


@pytest.mark.slow
def test_bow_plus_opensmile_joins_and_the_heads_score_it(embedded):
    """A bag-of-words-kind store of the same clips (Poisson counts, one row per chunk) beside the
    openSMILE store: bow+opensmile is listed after the stores, joined chunk by chunk, only the
    bag-of-words columns are counts, and evaluate scores every set without NaN."""
    stores = layout.stores(embedded)
    osm_store = read(stores / "opensmile.h5")
    rng = np.random.default_rng(0)
    clips = [FakeClip(f, s, tuple(np.array(osm_store.vocabulary)[lab.astype(bool)]))
             for f, s, lab in zip(osm_store.fname, osm_store.split, osm_store.labels)]
    counts = [rng.poisson(3.0, (int(n), 24)).astype(np.uint16)
              for n in np.diff(osm_store.offsets)]
    write_store(stores / "bow.h5", clips, osm_store.vocabulary, counts, "bow")
    sets = find_feature_sets(stores)
    assert list(sets) == ["bow", "opensmile", "bow+opensmile"]
    joined = load_features(sets["bow+opensmile"])
    assert joined.dim == 24 + 6373 and len(joined) == 10 and not joined.dropped
    assert joined.count_columns.tolist() == [True] * 24 + [False] * 6373
    np.testing.assert_array_equal(joined.chunks[:, 24:], osm_store.chunks)
    np.testing.assert_array_equal(joined.chunks[:, :24], np.concatenate(counts))
    report = evaluate.run(None, embedded, evaluate.EvaluateConfig(
        width=32, max_epochs=4, patience=2, batch_size=16), progress=False, run_name="peers")
    with open(report.parent / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["features"] for r in rows] == ["bow", "opensmile", "bow+opensmile"]
    for r in rows:
        assert 0 <= float(r["map"]) <= 1, r
    assert "opensmile.h5 (opensmile, 6373-d)" in report.read_text()


def test_the_command_without_the_package(without_opensmile, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        embed_opensmile.main(["--data", str(tmp_path), "--artifacts", str(tmp_path / "art")])
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err == f"embed_opensmile: error: {osm.MISSING}"
    assert not (tmp_path / "art").exists()
