"""bow.report.figures: codebook usage, autoencoder reconstructions, sweep plots."""
import numpy as np
import pytest
import torch

from bow.bagofwords.autoencoder import Autoencoder
from bow.bagofwords.encoder import AutoencoderConfig
from bow.bagofwords.tokens import FAMILIES, grid
from bow.io.store import ClipFeatures, merge, write_shard
from bow.report.figures import (
    TILED,
    codebook_usage_plot,
    reconstruction_plot,
    store_usage,
    sweep_plot,
    ungrid,
    usage_stats,
)

PNG = b"\x89PNG\r\n\x1a\n"


def _logmel(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 96, 100, generator=g) * 10 - 40


@pytest.mark.parametrize("family", TILED)
def test_ungrid_inverts_the_grid(family):
    logmel = _logmel()
    assert torch.equal(ungrid(grid(logmel, family), family), logmel)


def test_ungrid_refuses_the_thumbnail():
    with pytest.raises(ValueError, match="does not tile"):
        ungrid(grid(_logmel(), "thumbnail"), "thumbnail")


def test_usage_stats_by_hand():
    s = usage_stats(np.array([2, 2, 0, 0]))
    assert s == {"n_codes": 4, "used": 2, "perplexity": pytest.approx(2.0), "top_share": 0.5}
    assert usage_stats(np.array([5, 5, 5, 5]))["perplexity"] == pytest.approx(4.0)
    assert usage_stats(np.array([7, 0, 0]))["perplexity"] == pytest.approx(1.0)


def test_store_usage_sums_each_familys_columns(tmp_path):
    n_codes, rng = 4, np.random.default_rng(0)
    chunks = [rng.integers(0, 9, size=(n, 4 * n_codes)).astype(np.uint16) for n in (2, 3)]
    items = [ClipFeatures(f"c{i}", "train", np.array([1], np.uint8), c,
                          c.mean(0).astype(np.float32)) for i, c in enumerate(chunks)]
    write_shard(tmp_path / "shard.h5", items)
    merge([tmp_path / "shard.h5"], tmp_path / "bow.h5", vocabulary=["a"], kind="bow",
          config={"n_codes": n_codes, "families": list(FAMILIES)}, fingerprint="x",
          upstream={}, code_version="test")
    usage = store_usage(tmp_path / "bow.h5")
    total = np.concatenate(chunks).sum(0)
    assert list(usage) == list(FAMILIES)
    for i, family in enumerate(FAMILIES):
        np.testing.assert_array_equal(usage[family], total[i * n_codes:(i + 1) * n_codes])


@pytest.fixture(scope="module")
def autoencoders():
    """Tiny autoencoders, trained a few steps on random log-mel (shapes are what matter)."""
    logmel = _logmel(8, seed=1)
    config = AutoencoderConfig(hidden=16, epochs=1, steps_per_epoch=3, batch_size=8,
                               max_val_tokens=200)
    return {f: Autoencoder(f, config).fit(logmel[:6], logmel[6:]) for f in FAMILIES}


def test_pictures_are_written(tmp_path, autoencoders):
    usage = {f: np.array([9, 3, 1, 0]) for f in FAMILIES}
    assert codebook_usage_plot(tmp_path / "u.png", {"trained": usage, "random": usage},
                               title="t").read_bytes().startswith(PNG)
    out = reconstruction_plot(tmp_path / "r.png", autoencoders, _logmel(2), ["a", "b"])
    assert out.read_bytes().startswith(PNG)
    rows = [{"n_codes": d, "width": w, "map": 0.1 * d ** 0.1 + w / 1e4}
            for d in (16, 64) for w in (256, 512)] + [{"n_codes": 1024, "width": 256,
                                                       "error": "too few points"}]
    assert sweep_plot(tmp_path / "s.png", rows, "n_codes", groups=("width",), logx=True,
                      hlines={"chance": 0.1}).read_bytes().startswith(PNG)
    bars = [{"scene_algorithm": a, "map": m} for a, m in (("iterative", 0.6), ("mean", 0.5))]
    assert sweep_plot(tmp_path / "b.png", bars, "scene_algorithm").read_bytes().startswith(PNG)
