"""bow.peers.opensmile and bow.peers.embed against the opensmile package's own pandas API on real
ESC-10 clips: the clip's and each 1 s chunk's functionals, the joined LLD + delta frames, the
short-signal and clipping rules, finiteness; and a machine without the package (simulated)."""
from __future__ import annotations

import numpy as np
import pytest

from bow.audio.load import n_chunks, read_audio
from bow.peers import embed as peers_embed
from bow.peers import opensmile as osm
from tests.conftest import sine

SR = 16_000


@pytest.fixture(scope="module")
def reference(opensmile_package):
    """The package's own extractors (Smile.process_signal: a pandas table indexed by start and
    end), independent of bow.peers.opensmile."""
    def smile(level):
        return opensmile_package.Smile(
            feature_set=opensmile_package.FeatureSet.ComParE_2016,
            feature_level=getattr(opensmile_package.FeatureLevel, level))
    return {lv: smile(lv) for lv in ("Functionals", "LowLevelDescriptors",
                                     "LowLevelDescriptors_Deltas")}


@pytest.fixture(scope="module")
def clips(esc10_dir):
    """Three real ESC-10 recordings cut to 2.5 s (3 chunks: the tail of 0.5 s is kept),
    2.05 s (2 chunks: the tail of 50 ms is dropped) and 1.0 s (exactly one chunk)."""
    files = sorted((esc10_dir / "audio").glob("*.flac"))
    return [read_audio(files[i])[:n] for i, n in ((0, 40_000), (150, 32_800), (333, 16_000))]


def _by_hand(audio: np.ndarray) -> list[np.ndarray]:
    """The chunks of the other stores, rebuilt from the README's rule: whole seconds, and a
    zero-padded tail of at least 0.1 s."""
    full, tail = divmod(len(audio), SR)
    out = [audio[j * SR:(j + 1) * SR] for j in range(full)]
    if tail >= 0.1 * SR:
        out.append(np.pad(audio[full * SR:], (0, SR - tail)))
    return out


def test_clip_and_chunk_functionals_are_opensmiles_on_the_stores_chunks(reference, clips):
    for audio, expected_chunks in zip(clips, (3, 2, 1)):
        whole = reference["Functionals"].process_signal(audio, SR).to_numpy()
        got = osm.functionals(audio)
        assert got.shape == (osm.N_FUNCTIONALS,) and got.dtype == np.float32
        np.testing.assert_array_equal(got, whole[0])
        rows = osm.chunk_functionals(audio)
        assert rows.shape == (expected_chunks, osm.N_FUNCTIONALS) == (n_chunks(len(audio)),
                                                                       osm.N_FUNCTIONALS)
        for row, piece in zip(rows, _by_hand(audio)):
            np.testing.assert_array_equal(row, reference["Functionals"].process_signal(
                piece, SR).to_numpy()[0])
        assert np.isfinite(rows).all() and np.isfinite(got).all()
    np.testing.assert_array_equal(rows[0], got)          # 1.0 s: its one chunk is the clip


def test_frames_join_llds_and_deltas_on_their_start(reference, clips):
    audio = clips[0]
    frames, starts = osm.frames(audio)
    n = osm.n_frames(len(audio))
    assert frames.shape == (n, osm.FRAME_DIM) == (245, 130) and frames.dtype == np.float32
    np.testing.assert_array_equal(starts, 10 * np.arange(n, dtype=np.float32))
    for half, level in enumerate(("LowLevelDescriptors", "LowLevelDescriptors_Deltas")):
        table = reference[level].process_signal(audio, SR)
        start_ms = np.rint(table.index.get_level_values("start").total_seconds() * 1000)
        assert len(table) > n                         # the last start comes twice (or more)
        for k in (0, 1, n // 2, n - 1):
            first = np.flatnonzero(start_ms == 10 * k)[0]
            np.testing.assert_array_equal(frames[k, 65 * half:65 * (half + 1)],
                                          table.to_numpy(np.float32)[first])
    names = osm.feature_names("frames")
    assert len(names) == 130 and names[0] == "F0final_sma" and names[65] == "F0final_sma_de"
    assert len(osm.feature_names()) == osm.N_FUNCTIONALS


@pytest.mark.parametrize("n", [1, 959, 960, 1279, 1280, 1281, 1600, 16_000, 16_159, 16_160])
def test_frame_count_rule(opensmile_package, n):
    noise = np.random.default_rng(n).uniform(-0.5, 0.5, n).astype(np.float32)
    frames, starts = osm.frames(noise)
    assert len(starts) == len(frames) == osm.n_frames(n) and np.isfinite(frames).all()


def test_signals_shorter_than_60_ms_are_zero_padded(reference, clips):
    short = clips[0][8000:8500]                                    # 31 ms of real audio
    with pytest.warns(UserWarning, match="too short"):             # the package alone: NaN
        alone = reference["Functionals"].process_signal(short, SR).to_numpy()
    assert np.isnan(alone).all()
    padded = reference["Functionals"].process_signal(np.pad(short, (0, 460)), SR).to_numpy()[0]
    got = osm.functionals(short)
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(got, padded)
    assert osm.frames(short[:10])[0].shape == (2, 130)


def test_samples_beyond_full_scale_are_clipped_not_wrapped(reference):
    loud = sine(440, 0.5, amplitude=1.5)                            # float files may hold this
    clipped = np.clip(loud, -1.0, 32767 / 32768)
    np.testing.assert_array_equal(osm.functionals(loud), reference["Functionals"].process_signal(
        clipped, SR).to_numpy()[0])


def test_finite_replaces_and_counts():
    x = np.array([1.0, np.nan, np.inf, -np.inf, 2.0])
    y, n = osm.finite(x)
    assert n == 3 and y.dtype == np.float32 and y.tolist() == [1, 0, 0, 0, 2]
    clean = np.arange(4, dtype=np.float32)
    assert osm.finite(clean)[1] == 0 and osm.finite(clean)[0] is clean


def test_embed_clip_counts_non_finite_values_and_stores_zeros(monkeypatch):
    """openSMILE is replaced by a stand-in that returns NaN and inf: the store's rows get 0."""
    rows = np.ones((3, osm.N_FUNCTIONALS), np.float32)
    rows[1, :5] = np.nan
    whole = np.full(osm.N_FUNCTIONALS, 2.0, np.float32)
    whole[7] = np.inf
    monkeypatch.setattr(peers_embed, "chunk_functionals", lambda audio: rows.copy())
    monkeypatch.setattr(peers_embed, "functionals", lambda audio: whole.copy())
    chunks, clip, bad = peers_embed.embed_clip(np.zeros(40_000, np.float32))
    assert bad == 6 and np.isfinite(chunks).all() and np.isfinite(clip).all()
    assert (chunks[1, :5] == 0).all() and chunks[1, 5] == 1 and clip[7] == 0 and clip[6] == 2


def test_real_clips_embed_without_non_finite_values(opensmile_package, clips):
    chunks, clip, bad = peers_embed.embed_clip(clips[1])
    assert chunks.shape == (2, osm.N_FUNCTIONALS) and clip.shape == (osm.N_FUNCTIONALS,)
    assert bad == 0


def test_without_the_package_one_clear_error(without_opensmile):
    assert not osm.available()
    with pytest.raises(osm.OpenSmileMissing) as error:
        osm.functionals(np.zeros(16_000, np.float32))
    message = str(error.value)
    assert 'pip install "bow-audio[opensmile]"' in message and "research use only" in message
    assert "\n" not in message and message == osm.MISSING
    for call in (osm.require, osm.version, osm.feature_names):
        with pytest.raises(osm.OpenSmileMissing):
            call()
