"""bow.audio.features: log-mel and MFCC shapes, a tone's band, batch consistency, the same bits
whatever the thread count, MFCC vs numpy."""
import math

import numpy as np
import pytest
import torch
from scipy.fft import dct

from bow.audio.features import MFCC, LogMel, PowerMel
from bow.audio.load import chunk, read_audio
from tests.conftest import DEVICES, sine


def test_shapes():
    x = torch.from_numpy(chunk(sine(440, 2.5)))
    assert LogMel()(x).shape == (3, 96, 100)
    assert MFCC()(x).shape == (3, 40, 98)


def _htk_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)


def test_1khz_sine_peaks_in_the_band_containing_1khz():
    spec = LogMel()(torch.from_numpy(chunk(sine(1000, 1.0))))[0]
    # 96 triangular bands, centres evenly spaced on the HTK mel scale over 0-8 kHz
    centres = np.linspace(0, _htk_mel(8000), 98)[1:-1]
    expected = int(np.argmin(np.abs(centres - _htk_mel(1000))))
    assert int(spec.mean(dim=1).argmax()) == expected


def test_log_floor_is_80_db_below_each_chunks_peak():
    x = np.stack([chunk(sine(1000, 1.0, amplitude=a))[0] for a in (0.5, 0.001)])
    spec = LogMel()(torch.from_numpy(x))
    for s in spec:
        assert float(s.max() - s.min()) == pytest.approx(80.0, abs=1e-3)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("module", [LogMel, MFCC])
def test_batch_equals_items_one_by_one(esc10_dir, module, device):
    audio = read_audio(esc10_dir / "audio" / "1-100032-A-0.flac")
    x = torch.from_numpy(chunk(audio))
    x[1] *= 1e-3  # chunks of very different loudness: a shared top_db would change them
    m = module().to(device)
    batch = m(x.to(device)).cpu()
    for i in range(len(x)):
        torch.testing.assert_close(batch[i], m(x[i:i + 1].to(device))[0].cpu(),
                                   rtol=1e-4, atol=1e-3)


def test_bits_do_not_depend_on_threads_or_call_size(esc10_dir):
    """Issue 23: the same bits whatever torch's thread count (from 3 threads MKL split the
    MFCC's mel matmul otherwise on the development machine) and however many chunks a call
    holds."""
    paths = sorted((esc10_dir / "audio").iterdir())[:12]
    x = torch.from_numpy(np.concatenate([chunk(read_audio(p)) for p in paths]))[:64]
    before = torch.get_num_threads()
    try:
        for module in (LogMel(), MFCC(), PowerMel()):
            torch.set_num_threads(1)
            want = module(x)
            for threads, step in ((2, 64), (3, 16), (4, 7), (3, 1)):
                torch.set_num_threads(threads)
                got = torch.cat([module(x[i:i + step]) for i in range(0, len(x), step)])
                assert torch.equal(got, want), (type(module).__name__, threads, step)
                assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)


def _slaney_mel(f):
    f = np.asarray(f, dtype=np.float64)
    lin = 3.0 * f / 200.0
    log = 15.0 + np.log(np.maximum(f, 1e-9) / 1000.0) * 27.0 / math.log(6.4)
    return np.where(f >= 1000.0, log, lin)


def _slaney_hz(m):
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((m - 15.0) * math.log(6.4) / 27.0), 200.0 * m / 3.0)


def numpy_mfcc(chunk_1s: np.ndarray) -> np.ndarray:
    """A slow, independent MFCC: the authors' nnAudio recipe written in numpy/scipy. (40, 98)."""
    n_fft, hop, sr, n_mels = 480, 160, 16000, 40
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    frames = np.stack([chunk_1s[i:i + n_fft] for i in range(0, len(chunk_1s) - n_fft + 1, hop)])
    power = np.abs(np.fft.rfft(frames.astype(np.float64) * window, axis=1)) ** 2  # (98, 241)
    bins = np.arange(n_fft // 2 + 1) * sr / n_fft
    hz = _slaney_hz(np.linspace(_slaney_mel(0), _slaney_mel(sr / 2), n_mels + 2))
    fb = np.zeros((n_mels, len(bins)))
    for i in range(n_mels):
        lo, mid, hi = hz[i], hz[i + 1], hz[i + 2]
        up = (bins - lo) / (mid - lo)
        down = (hi - bins) / (hi - mid)
        fb[i] = np.maximum(0, np.minimum(up, down)) * 2.0 / (hi - lo)
    mel = power @ fb.T  # (98, 40)
    db = 10 * np.log10(np.maximum(mel, 1e-10))
    db = np.maximum(db, db.max() - 80.0)
    return dct(db, type=2, norm="ortho", axis=1).T  # (40, 98)


def test_mfcc_matches_independent_numpy(esc10_dir, fsdd_dir):
    clips = [read_audio(esc10_dir / "audio" / "1-110389-A-0.flac"),
             read_audio(fsdd_dir / "audio" / "0_george_0.flac"), sine(1000, 1.0)]
    x = np.concatenate([chunk(c)[:2] for c in clips])
    ours = MFCC()(torch.from_numpy(x)).numpy()
    for i in range(len(x)):
        ref = numpy_mfcc(x[i])
        scale = np.abs(ref).max()
        assert np.abs(ours[i] - ref).max() <= 1e-4 * scale + 1e-3, f"chunk {i}"


def _torchaudio_logmel(x: torch.Tensor) -> torch.Tensor:
    """The log-mel as torchaudio's modules compute it (the reference of bow.audio.features)."""
    import torchaudio.transforms as T
    mel = T.MelSpectrogram(sample_rate=16000, n_fft=2048, win_length=480, hop_length=160,
                           f_min=0.0, f_max=8000.0, n_mels=96, power=2.0, center=True,
                           pad_mode="constant").to(x.dtype)
    return T.AmplitudeToDB(stype="power", top_db=80.0)(mel(x.unsqueeze(1)))[:, 0, :, :100]


def test_logmel_equals_torchaudio_on_real_audio(esc10_dir):
    """The 1024-point route (module docstring) against torchaudio's 2048-point STFT in float64:
    within 1e-4 dB where a value is less than 40 dB below its chunk's peak, 3e-3 dB less than 60
    dB below, 0.1 dB everywhere (the float32 FFT's rounding, amplified near the floor), 3e-5 dB
    on average; in float64, within 1e-4 dB everywhere."""
    x = torch.from_numpy(np.concatenate([chunk(read_audio(p)) for p in
                                         sorted((esc10_dir / "audio").glob("*.flac"))[::40]]))
    with torch.inference_mode():
        want = _torchaudio_logmel(x.double())
        got = LogMel()(x).double()
    diff = (got - want).abs()
    peak = want.amax(dim=(1, 2), keepdim=True)
    assert float(diff[want > peak - 40].max()) < 1e-4
    assert float(diff[want > peak - 60].max()) < 3e-3 and float(diff.max()) < 0.1
    assert float(diff.mean()) < 3e-5
    torch.testing.assert_close(LogMel().double()(x.double()), want, rtol=0, atol=1e-4)


def test_powermel_equals_torchaudio_on_real_audio(esc10_dir):
    """Audio-MLP's linear power mel against torchaudio's MelSpectrogram as the authors'
    nnAudio front end is configured (float64 reference)."""
    import torchaudio.transforms as T
    x = torch.from_numpy(np.concatenate([chunk(read_audio(p)) for p in
                                         sorted((esc10_dir / "audio").glob("*.flac"))[::80]]))
    mel = T.MelSpectrogram(sample_rate=16000, n_fft=480, win_length=480, hop_length=160,
                           f_min=0.0, f_max=8000.0, n_mels=40, center=False, power=2.0,
                           norm="slaney", mel_scale="slaney").double()
    with torch.inference_mode():
        want, got = mel(x.double()), PowerMel()(x).double()
    assert got.shape == want.shape == (len(x), 40, 98)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6 * float(want.max()))
