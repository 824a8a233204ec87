"""benchmarks.peer_arms: the classic peers as arms of bow_quality, on real clips."""
import numpy as np
import pytest

from benchmarks import bow_quality, peer_arms
from bow.data.datasets import load_dataset
from bow.peers import opensmile as osm


@pytest.fixture(scope="module")
def peer(esc10_dir, opensmile_package):
    return peer_arms.PeerFeatures(load_dataset(esc10_dir).clips[:6])


def test_xbow_counts_each_frame_five_times_with_codebooks_of_the_fit_clips(peer):
    fit = np.array([True] * 4 + [False] * 2)
    x, cpu_s = peer_arms.vectors("compare-xbow", peer, fit, seed=0)
    frames = np.diff(peer.frame_offsets)
    assert x.shape == (6, 2 * peer_arms.XBOW["words"]) and cpu_s > 0
    for half in (x[:, :1000], x[:, 1000:]):            # log(1 + count), 5 words per frame
        assert np.allclose(np.expm1(half.astype(np.float64)).sum(1), 5 * frames, rtol=1e-5)
    changed = peer_arms.PeerFeatures(peer.clips)          # other audio for the unfitted clips
    changed._frames = peer.frames.copy()
    changed.frame_offsets, changed.cpu_s = peer.frame_offsets, peer.cpu_s
    changed._frames[peer.frame_offsets[4]:] *= -3.0
    y, _ = peer_arms.vectors("compare-xbow", changed, fit, seed=0)
    assert np.array_equal(x[:4], y[:4])                   # the codebooks saw fit clips only


def test_functionals_and_lld_stats(peer):
    f, _ = peer_arms.vectors("compare-functionals", peer, np.ones(6, bool), seed=0)
    s, _ = peer_arms.vectors("compare-lld-stats", peer, np.ones(6, bool), seed=0)
    assert f.shape == (6, osm.N_FUNCTIONALS) and s.shape == (6, 2 * osm.N_LLD)
    assert np.isfinite(f).all() and np.isfinite(s).all() and (s[:, osm.N_LLD:] >= 0).all()


def test_without_opensmile_the_arms_are_skipped_with_one_line(without_opensmile, esc10_dir,
                                                              capsys, monkeypatch):
    def data(root):
        raise SystemExit("stop after the skip line")
    monkeypatch.setattr(bow_quality, "Data", data)
    with pytest.raises(SystemExit, match="stop after"):
        bow_quality.main(["--data", str(esc10_dir), "--arms", "compare-functionals,default"])
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [peer_arms.missing()] and "opensmile" in out[0]
