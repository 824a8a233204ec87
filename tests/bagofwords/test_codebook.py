"""bow.bagofwords.codebook: FAISS k-means against brute force and scikit-learn, statistics, files,
errors."""
import json

import numpy as np
import pytest
from sklearn.cluster import KMeans

from bow.bagofwords.autoencoder import Autoencoder
from bow.bagofwords.codebook import Codebook, CodebookConfig, CodebookError, faiss_gpus
from bow.bagofwords.corpus import logmel_clips
from bow.bagofwords.encoder import AutoencoderConfig
from bow.bagofwords.model import family_codes
from bow.data.datasets import load_dataset


@pytest.fixture(scope="module")
def codes(esc10_dir):
    """Real bottleneck codes: patch tokens of 40 ESC-10 clips through a seeded random encoder."""
    clips = load_dataset(esc10_dir).clips[::10]
    logmel, _, _ = logmel_clips(clips)
    config = AutoencoderConfig(hidden=64, epochs=0, max_val_tokens=100)
    ae = Autoencoder("patch", config).fit(logmel, logmel[:2])
    return family_codes(ae, logmel, "patch").numpy()          # (24000, 8)


def test_assignments_equal_brute_force_nearest_centroid(codes):
    book = Codebook(CodebookConfig(n_codes=64, seed=1, nredo=1)).fit(codes)
    ids, dist = book.assign(codes, return_distances=True)
    d2 = ((codes[:, None, :].astype(np.float64) - book.centroids_[None]) ** 2).sum(-1)
    brute = d2.argmin(1)
    differ = ids != brute
    # any disagreement must be a tie to float32 rounding, not a different answer
    gap = d2[np.arange(len(codes)), ids] - d2[np.arange(len(codes)), brute]
    assert np.all(gap[differ] <= 1e-5 * (1 + d2[np.arange(len(codes)), brute][differ]))
    assert differ.mean() < 1e-3
    np.testing.assert_allclose(dist, d2[np.arange(len(codes)), ids], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("k", [64, 256])
def test_objective_within_2_percent_of_scikit_learn(codes, k):
    x = codes
    ours = Codebook(CodebookConfig(n_codes=k, seed=0)).fit(x)                       # our defaults
    ref = KMeans(n_clusters=k, random_state=0).fit(x.astype(np.float64))
    assert abs(ours.objective_ - ref.inertia_) / ref.inertia_ < 0.02, (ours.objective_,
                                                                      ref.inertia_)


def test_statistics_and_iterations(codes):
    book = Codebook(CodebookConfig(n_codes=16, seed=0, niter=10, nredo=2, init="random")).fit(codes)
    s = book.stats_
    assert s["n_points"] == len(codes) and sum(s["sizes"]) == len(codes)
    assert len(s["sizes"]) == 16 and s["empty"] == sum(v == 0 for v in s["sizes"])
    assert s["imbalance"] >= 1.0 and s["min_size"] <= s["max_size"]
    assert s["trained_on"] == min(len(codes), 16 * 256) and not s["few_points"]
    for r in range(2):                        # at most niter iterations per restart, improving
        objs = [i["obj"] for i in book.iterations_ if i["restart"] == r]
        assert 1 <= len(objs) <= 10 and objs[-1] <= objs[0]
        assert [i["iteration"] for i in book.iterations_ if i["restart"] == r] == \
            list(range(len(objs)))
    assert book.objective_ == min(s["restart_objectives"]) == \
        s["restart_objectives"][s["best_restart"]]
    assert s["device"] == ("gpu" if faiss_gpus() else "cpu")


def test_same_seed_same_codebook(codes):
    a = Codebook(CodebookConfig(n_codes=16, seed=3, nredo=1)).fit(codes).centroids_
    again = Codebook(CodebookConfig(n_codes=16, seed=3, nredo=1)).fit(codes).centroids_
    other = Codebook(CodebookConfig(n_codes=16, seed=4, nredo=1)).fit(codes).centroids_
    assert np.array_equal(a, again) and not np.array_equal(a, other)


def test_few_points_are_recorded_and_too_few_are_an_error(codes, capfd):
    book = Codebook(CodebookConfig(n_codes=64, seed=0)).fit(codes[:200])   # 3 points per centroid
    assert book.stats_["few_points"] and book.stats_["points_per_centroid"] == 200 / 64
    assert "WARNING" not in capfd.readouterr().err       # recorded, not printed by FAISS
    with pytest.raises(CodebookError, match="50 points cannot make a codebook of 64"):
        Codebook(CodebookConfig(n_codes=64)).fit(codes[:50])
    with pytest.raises(CodebookError, match="non-finite"):
        Codebook(CodebookConfig(n_codes=16)).fit(np.full((100, 8), np.nan, dtype=np.float32))


def test_save_and_load_plain_arrays(codes, tmp_path):
    book = Codebook(CodebookConfig(n_codes=16, seed=0, niter=7)).fit(codes)
    book.save(tmp_path / "patch.npz")
    with np.load(tmp_path / "patch.npz", allow_pickle=False) as z:   # no pickles inside
        assert z["centroids"].shape == (16, 8) and int(z["niter"]) == 7
        assert str(z["init"]) == "kmeans++"
    side = json.loads((tmp_path / "patch.json").read_text())
    assert side["stats"]["sizes"] == book.stats_["sizes"]
    assert side["iterations"] == json.loads(json.dumps(book.iterations_))
    back = Codebook.load(tmp_path / "patch.npz")
    assert np.array_equal(back.assign(codes), book.assign(codes))
    assert back.get_params() == book.get_params() and back.stats_ == book.stats_
    (tmp_path / "bad.npz").write_bytes(b"junk")
    with pytest.raises(CodebookError, match="bad.npz"):
        Codebook.load(tmp_path / "bad.npz")


@pytest.mark.gpu
@pytest.mark.skipif(faiss_gpus() == 0, reason="faiss sees no GPU")
def test_gpu_kmeans_matches_cpu(codes):
    cpu = Codebook(CodebookConfig(n_codes=64, seed=0), gpu=False).fit(codes)
    gpu = Codebook(CodebookConfig(n_codes=64, seed=0), gpu=True).fit(codes)
    assert gpu.stats_["device"] == "gpu"
    assert abs(gpu.objective_ - cpu.objective_) / cpu.objective_ < 0.02


@pytest.mark.skipif(faiss_gpus() > 0, reason="faiss sees a GPU")
def test_asking_for_a_gpu_without_one_is_a_clear_error(codes):
    with pytest.raises(CodebookError, match="faiss sees no GPU"):
        Codebook(CodebookConfig(n_codes=16), gpu=True).fit(codes)
