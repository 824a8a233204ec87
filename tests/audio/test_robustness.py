"""bow.audio.load against the bad-input corpus (tests.corrupt): every case read correctly or
rejected.

Each "ok" case must come back as float32 mono 16 kHz of the expected length (and, for the
reference tone, the expected values within the format's precision); each "skip" case must
raise AudioError whose message names the file and the problem.
"""
import json

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

import bow.audio.load as audio
from bow.audio.load import AudioError, chunk, n_chunks, read_audio, to_mono_16k
from bow.data.datasets import load_dataset
from tests.corrupt import Expectation, make_bad_corpus, reference_tone

LONG_SECONDS = 600.0


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """The labels.csv-layout corpus with its 10-minute clip, made once per session."""
    root = tmp_path_factory.mktemp("bad_corpus")
    return root, make_bad_corpus(root, seed=0, long_seconds=LONG_SECONDS)


@pytest.fixture(scope="session")
def fsd50k_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_corpus_fsd50k")
    return root, make_bad_corpus(root, seed=0, layout="fsd50k", long_seconds=2.0)


def check_cases(dataset, expectations: dict[str, Expectation]) -> list[str]:
    """Read every clip of ``dataset``; return one line per case that breaks its expectation."""
    seen = {}
    for clip in dataset.clips:
        try:
            x = read_audio(clip.path)
            seen[clip.fname] = ("ok", x)
        except AudioError as e:
            seen[clip.fname] = ("skip", str(e))
    for fname, reason in dataset.invalid:
        seen[fname] = ("skip", f"{fname}: {reason}")
    problems = []
    for fname, ex in sorted(expectations.items()):
        outcome, got = seen.get(fname, ("absent", None))
        if outcome != ex.outcome:
            problems.append(f"{fname} ({ex.case}): expected {ex.outcome}, got {outcome}: {got}")
        elif outcome == "skip" and (ex.reason not in got or fname not in got):
            problems.append(f"{fname}: message {got!r} lacks the file name or {ex.reason!r}")
        elif outcome == "ok" and not (got.dtype == np.float32 and got.ndim == 1
                                      and len(got) == ex.samples and np.isfinite(got).all()):
            problems.append(f"{fname}: got {got.dtype} {got.shape}, expected ({ex.samples},)")
    return problems


def test_every_case_is_read_or_rejected_with_a_clear_reason(corpus):
    root, expectations = corpus
    dataset = load_dataset(root)
    assert dataset.layout == "labels_csv" and not dataset.invalid
    assert check_cases(dataset, expectations) == []
    outcomes = {e.outcome for e in expectations.values()}
    assert outcomes == {"ok", "skip"}
    assert {"vorbis.ogg", "mpeg.mp3", "truncated.flac", "long_noise.flac"} <= expectations.keys()


def test_fsd50k_layout_rejects_labels_outside_the_vocabulary(fsd50k_corpus):
    root, expectations = fsd50k_corpus
    dataset = load_dataset(root)
    assert dataset.layout == "fsd50k"
    assert [f for f, _ in dataset.invalid] == ["oov_label.wav"]
    assert expectations["oov_label.wav"].outcome == "skip"
    assert check_cases(dataset, expectations) == []
    assert {c.split for c in dataset.clips} == {"train", "val", "eval"}


def test_expectations_are_saved_beside_the_corpus(corpus):
    root, expectations = corpus
    saved = json.loads((root / "expectations.json").read_text(encoding="utf-8"))
    assert {k: Expectation(**v) for k, v in saved.items()} == expectations


# Largest |error| against the reference tone, per case (interior samples for resampled ones).
TONE_TOLERANCE = {
    "pcm_u8.wav": 1 / 128 + 1e-6,    # one 8-bit step
    "pcm_24.wav": 2 ** -23 + 1e-7,
    "pcm_32.wav": 1e-7,              # float32 rounding
    "float32.wav": 1e-7,
    "float64.wav": 1e-7,
    "six_channels.wav": 2 ** -15,    # 16-bit steps, averaged
    "non_ascii_café_日本語.wav": 2 ** -15,
    "flac_named.wav": 2 ** -15,
    "rate_8k.wav": 1e-3,             # windowed-sinc resampling, away from the edges
    "rate_44k1.wav": 1e-3,
    "rate_96k.wav": 1e-3,
}
LOSSY = {"vorbis.ogg", "mpeg.mp3"}   # relative RMS error < 5%


def test_tone_cases_have_the_right_values(corpus):
    root, expectations = corpus
    ref = reference_tone()
    tone_cases = {f for f, e in expectations.items() if e.tone}
    assert tone_cases == set(TONE_TOLERANCE) | LOSSY
    for fname in sorted(tone_cases):
        x = read_audio(root / "audio" / fname).astype(np.float64)
        if fname in LOSSY:
            err = np.sqrt(np.mean((x - ref) ** 2) / np.mean(ref ** 2))
            assert err < 0.05, f"{fname}: relative RMS error {err:.4f}"
            continue
        edge = 160 if fname.startswith("rate_") else 0
        err = np.abs(x - ref)[edge:len(ref) - edge].max()
        assert err <= TONE_TOLERANCE[fname], f"{fname}: max error {err:.3g}"


def test_odd_but_valid_audio_is_kept_as_stored(corpus):
    root, _ = corpus
    assert not read_audio(root / "audio" / "silent.wav").any()
    loud = read_audio(root / "audio" / "loud_float.wav")
    np.testing.assert_allclose(loud, 4 * reference_tone(), atol=1e-6)
    assert loud.max() > 1.99                    # float data is not clipped
    short = read_audio(root / "audio" / "short_20ms.wav")
    assert chunk(short).shape == (1, 16000)     # shorter than a window: one padded chunk
    np.testing.assert_allclose(chunk(short)[0, :320], reference_tone()[:320], atol=2 ** -15)
    assert chunk(read_audio(root / "audio" / "single_sample.wav")).shape == (1, 16000)


def test_ten_minute_clip_reads_whole(corpus):
    root, expectations = corpus
    x = read_audio(root / "audio" / "long_noise.flac")
    assert len(x) == LONG_SECONDS * 16000 == expectations["long_noise.flac"].samples
    assert n_chunks(len(x)) == LONG_SECONDS
    stored = sf.read(str(root / "audio" / "long_noise.flac"), dtype="float32")[0]
    assert np.abs(stored).max() <= 4 / 32768 and 0 < np.abs(x).max() < 8 / 32768
    # the resampled noise keeps its power below 4 kHz, the 8 kHz file's band
    ratio = np.mean(x.astype(np.float64) ** 2) / np.mean(stored.astype(np.float64) ** 2)
    assert 0.9 < ratio < 1.1, ratio


@pytest.mark.parametrize("rate", [8_000, 22_050, 44_100, 48_000, 96_000])
@pytest.mark.parametrize("channels", [1, 3])
def test_block_and_piece_reading_equals_one_resample(tmp_path, monkeypatch, rate, channels):
    """Tiny blocks and pieces give the same samples as one resample of the whole signal."""
    rng = np.random.default_rng(rate)
    data = rng.uniform(-0.5, 0.5, (12_345, channels)).astype(np.float32)
    path = tmp_path / f"noise_{rate}.wav"
    sf.write(str(path), data, rate, subtype="FLOAT")
    whole = AF.resample(torch.from_numpy(data.mean(axis=1)), rate, 16_000).numpy()
    monkeypatch.setattr(audio, "READ_BLOCK", 1_000)
    monkeypatch.setattr(audio, "RESAMPLE_PIECE", 777)
    pieces = read_audio(path)
    assert pieces.shape == whole.shape == (-(-12_345 * 16_000 // rate),)
    np.testing.assert_allclose(pieces, whole, atol=1e-6)
    monkeypatch.undo()
    np.testing.assert_allclose(read_audio(path), whole, atol=1e-6)


def test_paths_that_are_not_files(tmp_path):
    with pytest.raises(AudioError, match="not a file"):
        read_audio(tmp_path)
    with pytest.raises(AudioError, match="nothere.wav: no such file"):
        read_audio(tmp_path / "nothere.wav")


def test_arrays_with_bad_shapes_rates_or_values():
    with pytest.raises(AudioError, match="<array>.*shape"):
        to_mono_16k(np.zeros((2, 3, 4)), 16_000)
    with pytest.raises(AudioError, match="invalid sample rate"):
        to_mono_16k(np.zeros(10), 0)
    with pytest.raises(AudioError, match="clip.wav.*non-finite.*frame 3"):
        to_mono_16k(np.array([0, 0, 0, np.inf, 0]), 16_000, path="clip.wav")
    with pytest.raises(AudioError, match="empty audio"):
        to_mono_16k(np.zeros((0, 2)), 44_100)
