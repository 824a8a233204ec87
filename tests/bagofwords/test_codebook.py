"""bow.bagofwords.codebook and .nearest: FAISS k-means against scikit-learn, exact assignment
against brute force (K nearest, near ties, batches), statistics, files, errors."""
import json
from fractions import Fraction

import faiss
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


def test_assignments_equal_brute_force_nearest_centroids(codes):
    book = Codebook(CodebookConfig(n_codes=64, seed=1, nredo=1)).fit(codes)
    ids, dist = book.assign(codes, return_distances=True)
    d2 = ((codes[:, None, :].astype(np.float64) - book.centroids_[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(ids, d2.argmin(1))        # exact, not up to float32 ties
    np.testing.assert_allclose(dist, d2[np.arange(len(codes)), ids], rtol=1e-12)
    near, near_dist = book.nearest(codes[:3000], 5)           # the K nearest, nearest first
    brute = np.argsort(d2[:3000], axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(near, brute)
    assert (np.diff(near_dist, axis=1) >= 0).all() and (near[:, 0] == ids[:3000]).all()


def near_ties(n: int = 20_000, d: int = 8, seed: int = 0):
    """Codes far from the origin, almost equidistant from two centroids (and 14 far ones): the
    gap (~1e-4) is below the float32 rounding of |x|^2 + |c|^2 - 2 x.c (~1e-3), above that of
    sum (x - c)^2. -> (codes (n, d) float32, centroids (16, d) float32)."""
    rng = np.random.default_rng(seed)
    a, e = np.full(d, 40.0), np.zeros(d)
    e[0] = 0.5
    centroids = np.concatenate([[a + e, a - e], a + 5 * rng.standard_normal((14, d))])
    t = 0.3 * rng.standard_normal((n, d))
    t[:, 0] = rng.uniform(-2e-4, 2e-4, n)                  # the component that decides
    return (a + t).astype(np.float32), centroids.astype(np.float32)


def _exact_order(x, c):
    """Brute force with rationals: ids by exact squared distance, then id."""
    rows = [(sum((Fraction(float(a)) - Fraction(float(b))) ** 2 for a, b in zip(x, ck)), k)
            for k, ck in enumerate(c)]
    return [k for _, k in sorted(rows)]


def test_assignment_is_a_function_of_each_code_alone():
    """Issue 17: faiss's flat search gave near ties other ids with the number of codes per
    call, its OpenMP threads and the CPU's SIMD level. Exact assignment depends on none."""
    x, c = near_ties()
    book = Codebook(CodebookConfig(n_codes=16))
    book.centroids_ = c
    whole, whole_dist = book.nearest(x, 3)
    for i in range(0, len(x), 997):                         # exact, with rationals
        assert list(whole[i]) == _exact_order(x[i], c)[:3]
    before = faiss.omp_get_max_threads()
    try:
        for threads, step in ((1, 7), (2, 1999), (2, 20_000), (1, 16_001)):
            faiss.omp_set_num_threads(threads)
            parts = [book.nearest(x[i:i + step], 3) for i in range(0, len(x), step)]
            np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), whole)
            np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), whole_dist)
    finally:
        faiss.omp_set_num_threads(before)
    c = c.copy()
    c[5] = c[3]                                             # a duplicate: ties to the lower id
    book.centroids_ = c
    assert list(book.assign(c[[3, 5]])) == [3, 3]
    assert list(book.nearest(c[[5]], 2)[0][0]) == [3, 5]
    assert list(book.nearest(c[[5]], 2, distances=False)[0][0]) == [3, 5]


def test_order_without_distances_is_the_same(codes):
    """``distances=False`` (rank and uniform weights) orders the K nearest from the float32
    screen where their ranges are apart, exactly elsewhere: the same ids, near ties included."""
    x, c = near_ties()
    book = Codebook(CodebookConfig(n_codes=16))
    book.centroids_ = c
    for k in (1, 2, 3, 16):
        ids, none = book.nearest(x, k, distances=False)
        assert none is None
        np.testing.assert_array_equal(ids, book.nearest(x, k)[0])
    book = Codebook(CodebookConfig(n_codes=64, seed=1, nredo=1)).fit(codes)
    np.testing.assert_array_equal(book.nearest(codes, 5, distances=False)[0],
                                  book.nearest(codes, 5)[0])


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


def test_ties_at_the_kth_place_go_to_the_lowest_ids_through_every_screen():
    """16 centroids all at distance 1 from the code: neither the float32 nor the float64 screen
    can decide the 5 nearest; exact arithmetic gives the 5 lowest ids, and the same with the
    code among far ones in a block of random codes."""
    from bow.bagofwords.nearest import nearest
    d = 8
    c = np.concatenate([np.eye(d), -np.eye(d)]).astype(np.float32)[::-1].copy()
    x = np.zeros((1, d), np.float32)
    ids, dist = nearest(x, c, 5)
    assert list(ids[0]) == [0, 1, 2, 3, 4] and (dist == 1.0).all()
    others = np.random.default_rng(0).standard_normal((3000, d)).astype(np.float32) * 3
    block = np.concatenate([others[:1234], x, others[1234:]])
    got = nearest(block, c, 5)[0]
    np.testing.assert_array_equal(got[1234], ids[0])
    d2 = ((block[:, None, :].astype(np.float64) - c[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(got, np.argsort(d2, axis=1, kind="stable")[:, :5])
