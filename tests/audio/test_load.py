"""bow.audio.load: reading, mono/resampling, chunking, errors."""
import numpy as np
import pytest
import soundfile as sf
from scipy.signal import butter, resample_poly, sosfiltfilt

from bow.audio.load import AudioError, chunk, n_chunks, read_audio
from tests.conftest import sine


@pytest.mark.parametrize("seconds, expected", [(0.3, 1), (1.0, 1), (4.5, 5), (5.001, 5),
                                               (2.05, 2), (2.1, 3), (0.001, 1)])
def test_chunk_counts(seconds, expected):
    audio = sine(440, seconds)
    chunks = chunk(audio)
    assert chunks.shape == (expected, 16000) == (n_chunks(len(audio)), 16000)
    assert chunks.dtype == np.float32


def test_chunks_keep_audio_in_order_and_pad_with_zeros():
    audio = np.random.default_rng(0).standard_normal(40_000).astype(np.float32)
    chunks = chunk(audio)
    assert chunks.shape == (3, 16000)
    np.testing.assert_array_equal(chunks.reshape(-1)[:40_000], audio)
    assert not chunks.reshape(-1)[40_000:].any()


def test_min_tail_zero_keeps_every_partial_chunk():
    assert chunk(sine(440, 5.001), min_tail=0).shape[0] == 6


def test_real_clip_reads_as_float32_mono_16k(esc10_dir):
    path = esc10_dir / "audio" / "1-100032-A-0.flac"
    audio = read_audio(path)
    info = sf.info(str(path))
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) == info.frames and info.samplerate == 16000
    assert 0 < np.abs(audio).max() <= 1.0


def test_stereo_44k1_matches_its_mono_16k_conversion(esc10_dir, tmp_path):
    """Stereo at 44.1 kHz, read back, equals the mono 16 kHz signal it was made from.

    The source is low-passed at 6 kHz first: above that, any two resamplers' anti-aliasing
    filters differ (both roll off before 8 kHz), which is filter design, not a reading error.
    """
    mono = read_audio(esc10_dir / "audio" / "1-17150-A-12.flac")[:48_000].astype(np.float64)
    mono = sosfiltfilt(butter(8, 6000, fs=16000, output="sos"), mono)
    up = resample_poly(mono, 441, 160)
    stereo = np.stack([up, 0.5 * up], axis=1) * 0.9
    path = tmp_path / "stereo.wav"
    sf.write(str(path), stereo, 44_100, subtype="FLOAT")
    got = chunk(read_audio(path))
    want = chunk((0.75 * 0.9 * mono).astype(np.float32))
    assert got.shape == want.shape
    err = np.sqrt(np.mean((got - want) ** 2)) / np.sqrt(np.mean(want ** 2))
    assert err < 0.01, f"relative RMS error {err:.4f}"


def test_unreadable_file_names_the_file_and_problem(tmp_path):
    bad = tmp_path / "not_audio.wav"
    bad.write_text("hello")
    with pytest.raises(AudioError, match="not_audio.wav.*unreadable"):
        read_audio(bad)
    with pytest.raises(AudioError, match="missing.flac.*no such file"):
        read_audio(tmp_path / "missing.flac")


def test_empty_and_non_finite_audio_raise(tmp_path):
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="empty.wav.*empty"):
        read_audio(empty)
    nan = tmp_path / "nan.wav"
    x = sine(440, 0.5)
    x[100] = np.nan
    sf.write(str(nan), x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="nan.wav.*non-finite"):
        read_audio(nan)
