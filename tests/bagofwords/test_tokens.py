"""bow.bagofwords.tokens: shapes, exact tiling, thumbnail, random crops."""
import pytest
import torch
import torch.nn.functional as F

from bow.audio.features import LogMel
from bow.audio.load import chunk, read_audio
from bow.bagofwords import tokens


@pytest.fixture(scope="module")
def logmel(esc10_dir):
    audio = read_audio(esc10_dir / "audio" / "1-17150-A-12.flac")
    return LogMel()(torch.from_numpy(chunk(audio)))


def test_shapes_and_143_tokens(logmel):
    fams = {f: tokens.grid(logmel, f) for f in tokens.FAMILIES}
    n = logmel.shape[0]
    assert {f: tuple(t.shape) for f, t in fams.items()} == {
        "patch": (n, 120, 80), "band_envelope": (n, 12, 800),
        "spectral_envelope": (n, 10, 960), "thumbnail": (n, 1, 80)}
    assert sum(t.shape[1] for t in fams.values()) == tokens.TOKENS_PER_CHUNK == 143


def test_patches_tile_the_spectrogram_exactly(logmel):
    n = logmel.shape[0]
    patches = tokens.grid(logmel, "patch").reshape(n, 12, 10, 8, 10)   # mel blk, time blk, h, w
    back = patches.permute(0, 1, 3, 2, 4).reshape(n, 96, 100)
    assert torch.equal(back, logmel)
    assert torch.equal(tokens.grid(logmel, "patch")[:, 13].reshape(n, 8, 10),
                       logmel[:, 8:16, 30:40])  # patch 13 = mel block 1, time block 3


def test_envelopes_tile_the_spectrogram(logmel):
    n = logmel.shape[0]
    band = tokens.grid(logmel, "band_envelope").reshape(n, 96, 100)
    assert torch.equal(band, logmel)
    spec = tokens.grid(logmel, "spectral_envelope")
    assert torch.equal(spec[:, 4].reshape(n, 96, 10), logmel[:, :, 40:50])


def test_thumbnail_is_a_bicubic_resize(logmel):
    thumb = tokens.grid(logmel, "thumbnail").reshape(-1, 8, 10)
    ref = F.interpolate(logmel[:, None], size=(8, 10), mode="bicubic", antialias=True)[:, 0]
    torch.testing.assert_close(thumb, ref)
    flat = torch.full((1, 96, 100), -7.0)
    torch.testing.assert_close(tokens.grid(flat, "thumbnail"), torch.full((1, 1, 80), -7.0))


def test_batch_equals_items(logmel):
    for fam in tokens.FAMILIES:
        batch = tokens.grid(logmel, fam)
        for i in range(logmel.shape[0]):
            assert torch.equal(batch[i], tokens.grid(logmel[i:i + 1], fam)[0])


@pytest.mark.parametrize("family", ["patch", "band_envelope", "spectral_envelope"])
def test_random_crops_are_real_windows_at_varied_positions(logmel, family):
    g = torch.Generator().manual_seed(0)
    crops = tokens.sample(logmel[:2], family, 50, generator=g)
    h, w = tokens.SHAPES[family]
    assert crops.shape == (100, h * w)
    windows = logmel[:2].unfold(1, h, 1).unfold(2, w, 1)             # all valid positions
    positions = set()
    for k, crop in enumerate(crops):
        hits = (windows[k // 50] == crop.reshape(h, w)).flatten(2).all(-1).nonzero()
        assert len(hits) >= 1, f"crop {k} is not a window of chunk {k // 50}"
        positions.add(tuple(hits[0].tolist()))
    if family != "band_envelope":
        assert len(positions) > 20          # not stuck on the grid
    again = tokens.sample(logmel[:2], family, 50, generator=torch.Generator().manual_seed(0))
    assert torch.equal(crops, again)


def test_wrong_shape_is_rejected():
    with pytest.raises(ValueError, match="96, 100"):
        tokens.grid(torch.zeros(1, 64, 100), "patch")
