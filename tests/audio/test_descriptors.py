"""bow.audio.descriptors: frame descriptors of known spectra, gain, deltas, real audio."""
import numpy as np
import pytest
import torch

from bow.audio.descriptors import (
    DIM,
    N_BANDS,
    N_CEPSTRA,
    N_STATIC,
    NAMES,
    _deltas,
    frame_descriptors,
)
from bow.audio.features import LogMel
from bow.audio.load import chunk, read_audio
from bow.data.datasets import load_dataset
from bow.environment import torchaudio

COL = {name: i for i, name in enumerate(NAMES)}
M = 96


def flat(db: float = -20.0, n: int = 2) -> torch.Tensor:
    return torch.full((n, M, 100), db)


def test_a_flat_spectrum_has_the_textbook_values():
    d = frame_descriptors(flat(-20.0))
    assert d.shape == (2, 100, DIM) and d.dtype == torch.float32 and len(NAMES) == N_STATIC
    v = d[0, 50].double().numpy()
    b = np.arange(M)
    assert v[COL["level"]] == pytest.approx(-20.0, abs=1e-4)
    assert np.abs(v[COL["c1"]:COL["c1"] + N_CEPSTRA]).max() < 1e-4
    assert v[COL["band0"]:COL["band0"] + N_BANDS] == pytest.approx(np.full(N_BANDS, -20.0),
                                                                  abs=1e-4)
    assert v[COL["centroid"]] == pytest.approx(b.mean(), abs=1e-3)
    assert v[COL["spread"]] == pytest.approx(b.std(), abs=1e-3)
    assert v[COL["skewness"]] == pytest.approx(0.0, abs=1e-4)
    assert v[COL["kurtosis"]] == pytest.approx(((b - b.mean()) ** 4).mean() / b.var() ** 2,
                                               abs=1e-3)
    assert v[COL["entropy"]] == pytest.approx(1.0, abs=1e-5)
    assert v[COL["flatness"]] == pytest.approx(0.0, abs=1e-4)
    assert v[COL["rolloff"]] == 81                   # 81 bands hold < 85 % of the power
    assert v[COL["slope"]] == pytest.approx(0.0, abs=1e-6)
    assert v[COL["flux"]] == 0.0
    assert np.abs(v[N_STATIC:]).max() < 1e-4         # nothing changes: zero deltas


def test_a_tone_is_peaked_and_gain_moves_only_the_levels():
    x = flat(-60.0)
    x[:, 30] = 0.0                                   # one band 60 dB above the rest
    d = frame_descriptors(x)[0, 50]
    assert abs(d[COL["centroid"]] - 30) < 0.5 and d[COL["flatness"]] < -10
    louder = frame_descriptors(x + 12.0)[0, 50]
    levels = [COL["level"]] + list(range(COL["band0"], COL["band0"] + N_BANDS))
    others = [i for i in range(DIM) if i not in levels]
    assert torch.allclose(louder[levels], d[levels] + 12.0, atol=1e-3)
    assert torch.allclose(louder[others], d[others], atol=1e-3)


def test_deltas_follow_a_ramp_and_flux_measures_change():
    ramp = flat(-40.0, 1) + torch.arange(100.0) * 0.2       # +0.2 dB per frame, every band
    d = frame_descriptors(ramp)[0]
    delta_level = d[10:90, N_STATIC + COL["level"]]
    assert torch.allclose(delta_level, torch.full_like(delta_level, 0.2), atol=1e-4)
    assert torch.allclose(d[1:, COL["flux"]], torch.full((99,), 0.2), atol=1e-4)


def test_real_recordings_give_finite_varied_descriptors(esc10_dir):
    clips = load_dataset(esc10_dir).clips[::80]
    logmel = LogMel()(torch.from_numpy(np.concatenate([chunk(read_audio(c.path))
                                                       for c in clips])))
    d = frame_descriptors(logmel)
    assert torch.isfinite(d).all()
    assert (d.reshape(-1, DIM).std(0)[:N_STATIC] > 0).all()
    for start, size in ((3, 1), (2, 5), (0, len(logmel) - 1)):   # the same bits in any batch
        assert torch.equal(frame_descriptors(logmel[start:start + size]), d[start:start + size])


def test_deltas_are_torchaudios():
    x = torch.randn(3, 100, N_STATIC) * 10 - 30
    ref = torchaudio().functional.compute_deltas(x.transpose(1, 2), win_length=5)
    assert torch.allclose(_deltas(x), ref.transpose(1, 2), atol=1e-5)
