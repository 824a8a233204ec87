"""K-means codebooks on FAISS: fit on a family's bottleneck codes, assign new codes, statistics.

``Codebook(CodebookConfig(n_codes=256)).fit(codes)`` runs ``faiss.Kmeans`` (at most ``niter`` Lloyd
iterations from a k-means++ or random initialisation; FAISS stops early once the assignment no
longer changes) ``nredo`` times, with seeds drawn from ``seed`` (``restart_seeds``: seed 0 and seed
1 give unrelated restarts, not overlapping ones), and keeps the run with the lowest objective
over all points. It runs on the GPU when faiss sees one (``gpu="auto"``), else on the CPU.

Defaults (the paper gives none): k-means++ initialisation, 100 iterations, 3 restarts. FAISS's
own defaults (random initialisation, 25 iterations, 1 run) ended 2-6% above scikit-learn's
KMeans objective on real patch codes (24,000 ESC-10 patch codes, 8-d, k = 16/64/256, 3 seeds);
ours ended 0.5-1% above it at k = 64 and 256 (1-2% at k = 16), for a few seconds of CPU per
codebook. With few points per centroid (2,000 spectral-envelope codes at k = 256) ours ended
6% above scikit-learn and FAISS's defaults 14-17% above.

Subsampling: FAISS trains on at most ``n_codes * max_points_per_centroid`` points (a seeded
random subset; 256 * 256 = 65,536 by default) and reports its per-iteration objective (sum of
squared distances) on that subset: ``iterations_``, one dict per iteration and restart.
``objective_`` is the k-means objective of the final centroids over *all* fitted points (the
definition of scikit-learn's ``inertia_``), and ``stats_`` holds the cluster sizes over all
points, the number of empty clusters and the imbalance factor k * sum(size^2) / n^2 (1.0 =
perfectly balanced, FAISS's definition).

Few points: FAISS warns below 39 points per centroid. Small data sets hit this for the
thumbnail family (one token per chunk); we let it run (``min_points_per_centroid`` is set to 1
so FAISS does not warn on stderr) and record ``points_per_centroid`` and ``few_points`` in
``stats_`` instead. Fewer points than codes cannot make a codebook: ``fit`` raises
``CodebookError`` naming both numbers (choose a smaller D or more training clips).

Assignment (``assign``, ``nearest``) is the exact K nearest centroids in squared L2, ties to the
lowest id (bow.bagofwords.nearest): each code's ids depend on its bits and the centroids alone,
not on the batch, threads or machine (faiss's flat search did; issue 17). About 1% of the
embedding time, on the CPU.
Files: centroids and parameters in an ``.npz`` (no pickles), statistics in a ``.json`` beside it.

faiss is imported only where it is used (``fit``, ``faiss_gpus``): loading a codebook and
assigning codes, the whole embedding path, work where faiss is not installed (a GPU machine
with torch alone, benchmarks.gpu_check).
"""
from __future__ import annotations

import dataclasses
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bow.bagofwords.nearest import Centroids, nearest
from bow.config import ConfigError, choose, narrow, option
from bow.io.stage import atomic_path, write_json

CODEBOOK_SIZES = (16, 64, 256, 1024)   # the paper's grid (Fig. 2); any D >= 2 works
FAISS_MIN_POINTS = 39  # FAISS's default min_points_per_centroid, below which it warns
INITS = ("kmeans++", "random")


@dataclass(frozen=True)
class CodebookConfig:
    """k-means codebook. Paper: D in {16, 64, 256, 1024}, best 256. Not in the paper: k-means++
    initialisation, 100 iterations, 3 restarts, at most 256 training points per centroid
    (FAISS's default subsample); see the module docstring for the measurements."""
    n_codes: int = option(256, "codebook size D, any integer >= 2 (paper: 16, 64, 256, 1024)")
    seed: int = option(0, "k-means seed")
    niter: int = option(100, "k-means iterations")
    nredo: int = option(3, "k-means restarts (the best is kept)")
    max_points_per_centroid: int = option(256, "FAISS trains on at most D times this many "
                                          "points (seeded subsample)")
    init: str = option("kmeans++", "k-means initialisation: kmeans++ or random")

    def __post_init__(self):
        if not isinstance(self.n_codes, int) or self.n_codes < 2:
            raise ConfigError(f"n_codes must be an integer >= 2, got {self.n_codes!r}")
        if self.max_points_per_centroid < 1:
            raise ConfigError(f"max_points_per_centroid must be >= 1, got "
                              f"{self.max_points_per_centroid}")
        choose("init", self.init, INITS)


class CodebookError(ValueError):
    """Codes that cannot make a codebook, or a codebook file that cannot be read."""


def restart_seeds(seed: int, n: int) -> list[int]:
    """``n`` FAISS seeds (31-bit) drawn from ``seed`` with numpy's SeedSequence."""
    return [int(s) >> 1 for s in np.random.SeedSequence(seed).generate_state(n)]


def _faiss():
    """The faiss module, imported on first use (module docstring)."""
    import faiss
    return faiss


def faiss_gpus() -> int:
    """Number of GPUs faiss can use (0 for a CPU-only faiss build or machine)."""
    get = getattr(_faiss(), "get_num_gpus", None)
    return int(get()) if get is not None else 0


class Codebook:
    """k-means codebook of ``config.n_codes`` centroids. Learned: centroids_ (D, d) float32,
    objective_ (float), scale_ (the mean squared distance of the fitted points to their
    centroid: the distance scale of soft assignment), iterations_ (list of dict), stats_."""

    def __init__(self, config: CodebookConfig = CodebookConfig(), gpu: bool | str = "auto"):
        self.config, self.gpu = narrow(config, CodebookConfig), gpu
        self._prepared: Centroids | None = None   # the search constants of centroids_

    @property
    def n_codes(self) -> int:
        return self.config.n_codes

    def get_params(self) -> dict:
        """The config, as saved in codebook files and bundles."""
        return dataclasses.asdict(self.config)

    def _use_gpu(self) -> bool:
        if self.gpu == "auto":
            return faiss_gpus() > 0
        if self.gpu and faiss_gpus() == 0:
            raise CodebookError("a GPU codebook was asked for, but faiss sees no GPU "
                                "(CPU-only faiss build or no CUDA device)")
        return bool(self.gpu)

    def _init_method(self, faiss) -> dict:
        if self.config.init == "random":
            return {}  # FAISS's default: random training points
        method = getattr(faiss, "ClusteringInitMethod_KMEANS_PLUS_PLUS", None)
        if method is None:
            raise CodebookError(f"faiss {faiss.__version__} has no k-means++ initialisation: "
                                "use init='random' or a newer faiss")
        return {"init_method": method}

    def fit(self, codes) -> "Codebook":
        """k-means on (n, d) codes; n must be at least ``n_codes``."""
        x = np.ascontiguousarray(np.asarray(codes, dtype=np.float32))
        if x.ndim != 2:
            raise CodebookError(f"expected (n, d) codes, got shape {x.shape}")
        n, d = x.shape
        if n < self.n_codes:
            raise CodebookError(f"{n} points cannot make a codebook of {self.n_codes} codes: "
                                "use a smaller number of codes or more training clips")
        if not np.isfinite(x).all():
            raise CodebookError(f"{int((~np.isfinite(x)).sum())} non-finite values in the codes")
        use_gpu, faiss = self._use_gpu(), _faiss()
        self.iterations_, restarts, best = [], [], None
        cfg = self.config
        for r, seed in enumerate(restart_seeds(cfg.seed, cfg.nredo)):  # our own restarts, so
            km = faiss.Kmeans(d, self.n_codes, niter=cfg.niter, nredo=1, seed=seed,  # stats kept
                              max_points_per_centroid=self.config.max_points_per_centroid,
                              min_points_per_centroid=1, gpu=use_gpu, verbose=False,
                              **self._init_method(faiss))
            km.train(x)
            self.iterations_ += [dict(st, restart=r, iteration=i)
                                 for i, st in enumerate(km.iteration_stats)]
            self.centroids_ = np.ascontiguousarray(km.centroids, np.float32)
            ids, dist = self.assign(x, return_distances=True)
            restarts.append(float(dist.sum(dtype=np.float64)))
            if best is None or restarts[-1] < restarts[best[0]]:
                best = (r, self.centroids_, ids)
        r, self.centroids_, ids = best
        self.objective_ = restarts[r]
        self.scale_ = self.objective_ / n
        sizes = np.bincount(ids, minlength=self.n_codes)
        self.stats_ = {
            "n_points": n, "dim": d, "n_codes": self.n_codes,
            "trained_on": min(n, self.n_codes * self.config.max_points_per_centroid),
            "points_per_centroid": n / self.n_codes,
            "few_points": n < FAISS_MIN_POINTS * self.n_codes,
            "device": "gpu" if use_gpu else "cpu",
            "objective": self.objective_, "mean_squared_distance": self.objective_ / n,
            "restart_objectives": restarts, "best_restart": r,
            "restart_seeds": restart_seeds(self.config.seed, self.config.nredo),
            "sizes": sizes.tolist(), "empty": int((sizes == 0).sum()),
            "min_size": int(sizes.min()), "max_size": int(sizes.max()),
            "imbalance": float(self.n_codes * (sizes.astype(np.float64) ** 2).sum() / n ** 2),
        }
        return self

    def nearest(self, codes, k: int = 1, distances: bool = True
                ) -> tuple[np.ndarray, np.ndarray | None]:
        """(n, d) codes -> (n, k) int64 ids of the k nearest centroids, nearest first, and
        their (n, k) float64 squared distances (None unless ``distances``), exactly
        (bow.bagofwords.nearest)."""
        x = np.ascontiguousarray(np.asarray(codes, dtype=np.float32))
        if x.ndim != 2 or x.shape[1] != self.centroids_.shape[1]:
            raise CodebookError(f"expected (n, {self.centroids_.shape[1]}) codes, "
                                f"got shape {x.shape}")
        if not 1 <= k <= self.n_codes:
            raise CodebookError(f"k = {k} nearest codes asked of a codebook of {self.n_codes}")
        if not np.isfinite(x).all():
            raise CodebookError(f"{int((~np.isfinite(x)).sum())} non-finite values in the codes")
        if self._prepared is None or self._prepared.source is not self.centroids_:
            self._prepared = Centroids(self.centroids_)     # once per centroid array
        return nearest(x, self._prepared, k, distances)

    def assign(self, codes, return_distances: bool = False):
        """(n, d) codes -> (n,) int64 id of the nearest centroid (and squared distances)."""
        ids, dist = self.nearest(codes, 1)
        return (ids[:, 0], dist[:, 0]) if return_distances else ids[:, 0]

    # ----------------------------------------------------------------- files
    def save(self, path: str | Path) -> None:
        """centroids and parameters -> ``path`` (.npz); statistics -> ``path`` with .json."""
        path = Path(path)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, centroids=self.centroids_, objective=np.float64(self.objective_),
                         scale=np.float64(self.scale_),
                         **{k: (np.str_(v) if k == "init" else np.int64(v))
                            for k, v in self.get_params().items()})
        write_json(path.with_suffix(".json"), {"params": self.get_params(),
                                               "objective": self.objective_,
                                               "stats": self.stats_,
                                               "iterations": self.iterations_})

    @classmethod
    def load(cls, path: str | Path) -> "Codebook":
        """Read a codebook written by ``save`` (statistics too, when the .json is there)."""
        path = Path(path)
        if not path.is_file():
            raise CodebookError(f"{path}: no such codebook file")
        try:
            with np.load(path, allow_pickle=False) as z:
                cb = cls(CodebookConfig(**{f.name: (str(z[f.name]) if f.name == "init" else
                                                    int(z[f.name]))
                                            for f in dataclasses.fields(CodebookConfig)}))
                cb.centroids_ = np.ascontiguousarray(z["centroids"], dtype=np.float32)
                cb.objective_ = float(z["objective"])
                cb.scale_ = float(z["scale"]) if "scale" in z.files else None
        except (OSError, KeyError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as e:
            raise CodebookError(f"{path}: not a readable codebook ({e})") from e
        if cb.centroids_.shape[:1] != (cb.n_codes,) or cb.centroids_.ndim != 2 \
                or not np.isfinite(cb.centroids_).all():
            raise CodebookError(f"{path}: damaged codebook (centroids of shape "
                                f"{cb.centroids_.shape} for {cb.n_codes} codes, or not finite)")
        side = path.with_suffix(".json")
        if side.is_file():
            try:
                info = json.loads(side.read_text())
                cb.stats_, cb.iterations_ = info["stats"], info["iterations"]
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise CodebookError(f"{side}: damaged codebook statistics ({e!r}); delete it "
                                    "to load the codebook without them") from e
        return cb
