"""bow.bagofwords.levels: equal-mass level bins of real ESC-10 tokens, files, errors."""
import json

import numpy as np
import pytest
import torch

from bow.bagofwords.corpus import logmel_clips
from bow.bagofwords.levels import LevelBins, LevelError, token_levels
from bow.bagofwords.tokens import COUNTS, FAMILIES, grid
from bow.data.datasets import load_dataset


@pytest.fixture(scope="module")
def logmel(esc10_dir):
    """(fit, held-out) log-mel of ESC-10 clips of folds 1-4 and of fold 5."""
    clips = load_dataset(esc10_dir).clips
    return (logmel_clips([c for c in clips if c.split != "5"][::16])[0],
            logmel_clips([c for c in clips if c.split == "5"][::8])[0])


@pytest.mark.parametrize("family", FAMILIES)
def test_bins_hold_equal_shares_and_count_every_token(logmel, family):
    fit, held = logmel
    bins = LevelBins(family, 16).fit(fit)
    assert bins.edges_.shape == (15,) and (np.diff(bins.edges_) >= 0).all()
    levels = token_levels(grid(fit.float(), family))              # (n, COUNTS)
    flat = levels.ravel().double().numpy()
    below = (flat[:, None] < bins.edges_).mean(0)                 # equal mass on the fit data:
    upto = (flat[:, None] <= bins.edges_).mean(0)                 # edge j is the j/16 quantile
    j, tol = np.arange(1, 16) / 16, 1 / flat.size + 1e-9          # (interpolated; ties, e.g.
    assert (below <= j + tol).all() and (j <= upto + tol).all()   # silent tokens, may share one)
    held_bins = bins.assign(token_levels(grid(held.float(), family)))
    assert held_bins.shape == (len(held), COUNTS[family])
    assert held_bins.min() >= 0 and held_bins.max() < 16          # each token in one bin
    # a bin is a level interval: louder tokens never land in lower bins
    order = np.argsort(levels.ravel().numpy())
    assert (np.diff(bins.assign(levels).ravel()[order]) >= 0).all()


def test_save_load_and_bad_files(logmel, tmp_path):
    bins = LevelBins("patch", 8).fit(logmel[0])
    bins.save(tmp_path / "patch.levels.json")
    again = LevelBins.load(tmp_path / "patch.levels.json")
    assert (again.family, again.n_bins) == ("patch", 8)
    np.testing.assert_array_equal(again.edges_, bins.edges_)
    (tmp_path / "bad.json").write_text(json.dumps({"family": "patch", "n_bins": 8,
                                                   "edges": [0.0, 1.0]}))
    with pytest.raises(LevelError, match=r"bad\.json: 2 edges for 8 bins"):
        LevelBins.load(tmp_path / "bad.json")
    (tmp_path / "junk.json").write_text("{")
    with pytest.raises(LevelError, match=r"junk\.json: not a readable level-bins file"):
        LevelBins.load(tmp_path / "junk.json")


def test_too_few_tokens_or_bins_are_errors():
    with pytest.raises(LevelError, match="n_bins >= 2"):
        LevelBins("patch", 1)
    with pytest.raises(LevelError, match="1 thumbnail tokens cannot make 16"):
        LevelBins("thumbnail", 16).fit(torch.zeros(1, 96, 100))
