"""Does the bag of words earn its keep? Every arm against its controls and a naive baseline.

    python -m benchmarks.bow_quality --data ../shared/data/esc10 [--arms default,paper,...]
                                     [--seeds 0,1,2] [--heads] [--threads 1]

Protocol (issue 13; ../shared/FINDINGS.md's probe). The unsupervised stages (encoders,
standardisation, codebooks, level bins) are fitted on the training part only: for data sets
whose splits are integer folds, every fold but the last (ESC-10: folds 1-4); else the train
and val splits. Then, per arm and k-means seed, every clip gets its vector (the mean of its
chunk vectors, as in the stores) and is scored by:

* a linear probe on sqrt of the clip vectors: standardise + logistic regression (C = 0.1);
  ``cv`` = cross-validated over the folds (the representation fixed; it saw the audio of all
  folds but the last, never a label; ``cv_folds``: each fold's score), ``held_out`` = trained
  on the training part, tested on the last fold or the test / eval split, which nothing saw.
  Accuracy for single-label data, mAP (per class one-vs-rest) for multi-label data;
* with ``--heads``: the project's heads (bow.heads, default config) on the chunk vectors by the
  project's protocol (clip and chunk mAP).

Also per arm: the participation ratio (sum l)^2 / sum l^2 of the covariance eigenvalues l of each
family's codes on the training chunks (the effective number of dimensions k-means sees), and
the CPU seconds of the arm (encoders, codebooks, embedding; ``time.process_time``). Results:
one JSON line per arm and seed, then a table of means and standard deviations over the seeds.

Arms: ``naive`` (96-band log-mel mean + std over the clip's frames), the classic peers
``compare-functionals``, ``compare-xbow`` and ``compare-lld-stats`` (openSMILE's ComParE
features; openXBOW's recipe on the project's codebooks: benchmarks.peer_arms; skipped with one
line without the ``opensmile`` extra), ``default`` (the library's
defaults), ``paper`` (trained autoencoders of raw tokens, hard assignment: Verma's), and any
``key=value,...`` spec over ``default``: encoder (trained, random, pca), tokens (raw, shape),
assignment (hard, soft), k (neighbours), weighting, d (codebook size), levels (level bins),
frames (frame words: their codebook size, 0 for none), stats (statistics words per chunk
statistic, 0 for none; with frame words only),
hidden, steps (training steps), denoise, families (e.g. patch+band_envelope), precision (the
encoders' arithmetic when embedding, as the embed stage's --precision: fp32 or bf16; the
codebooks are fitted on fp32 codes, as fit_codebooks does).
"""
from __future__ import annotations

import argparse
import json
import time

import faiss
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.preprocessing import StandardScaler

from benchmarks import peer_arms
from benchmarks.common import machine
from bow.bagofwords.codebook import Codebook, CodebookConfig
from bow.bagofwords.corpus import logmel_clips
from bow.bagofwords.encoder import AutoencoderConfig
from bow.bagofwords.frames import KMEANS as FRAME_KMEANS
from bow.bagofwords.frames import FrameWords
from bow.bagofwords.levels import LevelBins
from bow.bagofwords.model import AssignmentConfig, BagOfWords, family_codes
from bow.bagofwords.tokens import FAMILIES
from bow.bagofwords.training import DEFAULT_ENCODER, KINDS
from bow.data.datasets import load_dataset
from bow.heads.model import HeadConfig
from bow.heads.protocols import run_protocol
from bow.io.featureset import FeatureSet
from bow.io.store import multi_hot
from bow.runtime import encoder_precision
from pipelines.fit_codebooks import FitCodebooksConfig

ARMS = {"naive": None, "default": "",
        "paper": "encoder=trained,tokens=raw,assignment=hard,frames=0",
        "paper-random": "encoder=random,tokens=raw,assignment=hard,frames=0",
        "paper-pca": "encoder=pca,tokens=raw,assignment=hard,frames=0"}


def parse_arm(name: str) -> dict:
    """An arm's name or spec -> its settings over the library's defaults."""
    spec = ARMS.get(name, name)
    d = AssignmentConfig()
    arm = {"encoder": DEFAULT_ENCODER, "tokens": AutoencoderConfig().tokens,
           "assignment": d.assignment,
           "k": d.neighbours, "weighting": d.weighting, "d": CodebookConfig().n_codes,
           "levels": 16, "frames": FitCodebooksConfig().frame_codes,
           "stats": FitCodebooksConfig().frame_stats,
           "hidden": AutoencoderConfig().hidden, "steps": 600, "denoise": 0.0,
           "families": "+".join(FAMILIES), "precision": "fp32"}
    for item in filter(None, (spec or "").split(",")):
        key, _, value = item.partition("=")
        if key not in arm:
            raise SystemExit(f"unknown arm setting {key!r}; known: {sorted(arm)}")
        arm[key] = type(arm[key])(value)
    return arm


class Data:
    """A data set's log-mel, clips, labels and splits, computed once."""

    def __init__(self, root):
        self.dataset = load_dataset(root)
        self.logmel, self.offsets, skipped = logmel_clips(self.dataset.clips)
        bad = {f for f, _ in skipped}
        self.clips = [c for c in self.dataset.clips if c.fname not in bad]
        self.split = np.array([c.split for c in self.clips])
        names = sorted(set(self.split))
        self.folds = all(s.isdigit() for s in names) and len(names) >= 3
        if self.folds:
            names = sorted(names, key=int)
            self.fit_splits, self.test_splits = names[:-1], names[-1:]
        else:
            self.fit_splits = [s for s in names if s in ("train", "val")]
            self.test_splits = [s for s in names if s in ("test", "eval")]
        self.labels = np.stack([multi_hot(c.labels, self.dataset.vocabulary) for c in self.clips])
        self.single = bool((self.labels.sum(1) == 1).all())
        fit_clip = np.isin(self.split, self.fit_splits)
        self.fit_chunks = np.repeat(fit_clip, np.diff(self.offsets))

    def clip_means(self, chunk_vectors: np.ndarray) -> np.ndarray:
        return np.add.reduceat(chunk_vectors, self.offsets[:-1], axis=0) / \
            np.diff(self.offsets)[:, None]


def naive_vectors(data: Data) -> np.ndarray:
    """(N, 192) log-mel mean and std over each clip's frames."""
    out = []
    for i in range(len(data.clips)):
        frames = data.logmel[data.offsets[i]:data.offsets[i + 1]].float()
        frames = frames.permute(1, 0, 2).reshape(96, -1)
        out.append(torch.cat([frames.mean(1), frames.std(1)]).numpy())
    return np.stack(out)


def _scores(x_train, y_train, x_test, y_test, single: bool) -> float:
    scaler = StandardScaler().fit(x_train)
    a, b = scaler.transform(x_train), scaler.transform(x_test)
    if single:
        clf = LogisticRegression(C=0.1, max_iter=5000).fit(a, y_train.argmax(1))
        return float((clf.classes_[clf.predict_proba(b).argmax(1)] == y_test.argmax(1)).mean())
    aps = []
    for j in range(y_train.shape[1]):
        if y_train[:, j].min() == y_train[:, j].max() or not y_test[:, j].any():
            continue
        clf = LogisticRegression(C=0.1, max_iter=5000).fit(a, y_train[:, j])
        aps.append(average_precision_score(y_test[:, j], clf.predict_proba(b)[:, 1]))
    return float(np.mean(aps))


def probe(data: Data, vectors: np.ndarray, sqrt: bool = True) -> dict:
    """The linear probe (module docstring): cv (fold data) and held_out scores."""
    x, y = (np.sqrt(vectors) if sqrt else vectors), data.labels
    test = np.isin(data.split, data.test_splits)
    train = np.isin(data.split, data.fit_splits)
    out = {"held_out": _scores(x[train], y[train], x[test], y[test], data.single)}
    if data.folds:
        folds = sorted(set(data.split), key=int)
        out["cv_folds"] = [_scores(x[data.split != f], y[data.split != f],
                                   x[data.split == f], y[data.split == f], data.single)
                           for f in folds]
        out["cv"] = float(np.mean(out["cv_folds"]))
    return out


def participation_ratio(codes: np.ndarray) -> float:
    values = np.clip(np.linalg.eigvalsh(np.cov(codes.T.astype(np.float64))), 0, None)
    return float(values.sum() ** 2 / (values ** 2).sum())


def fit_encoders(data: Data, arm: dict, seed: int = 0) -> dict:
    """The arm's encoders fitted on the training chunks (10 % of them held out)."""
    lm = data.logmel[torch.from_numpy(data.fit_chunks)]
    held = torch.from_numpy(np.random.default_rng(seed).random(len(lm)) < 0.1)
    config = AutoencoderConfig(tokens=arm["tokens"], hidden=arm["hidden"],
                               epochs=0 if arm["encoder"] == "random" else arm["steps"] // 100,
                               denoise=arm["denoise"], seed=seed)
    return {f: KINDS[arm["encoder"]](f, config).fit(lm[~held], lm[held]) for f in FAMILIES}


def embed(data: Data, arm: dict, encoders: dict, seed: int) -> tuple[np.ndarray, dict]:
    """Codebooks (seed) and level bins on the training chunks, then every chunk's vector,
    restricted to the arm's families; -> (chunk vectors, participation ratios)."""
    lm = data.logmel[torch.from_numpy(data.fit_chunks)]
    books, ratios = {}, {}
    for f in FAMILIES:
        codes = family_codes(encoders[f], lm, f).numpy()
        ratios[f] = round(participation_ratio(codes), 2)
        books[f] = Codebook(CodebookConfig(n_codes=arm["d"], seed=seed), gpu=False).fit(codes)
    levels = {f: LevelBins(f, arm["levels"]).fit(lm) for f in FAMILIES} \
        if arm["tokens"] == "shape" and arm["levels"] else None
    frames = FrameWords(CodebookConfig(n_codes=arm["frames"], seed=seed, **FRAME_KMEANS),
                        gpu=False, stat_bins=arm["stats"]).fit(lm) \
        if arm["frames"] else None
    bag = BagOfWords(encoders, books, levels, AssignmentConfig(
        assignment=arm["assignment"], neighbours=arm["k"], weighting=arm["weighting"]), frames)
    with encoder_precision(arm["precision"], "cpu"):     # as the embed stage's --precision
        vectors = np.concatenate([bag.transform(data.logmel[i:i + 256])
                                  for i in range(0, len(data.logmel), 256)]).astype(np.float32)
    keep = [i for i, f in enumerate(FAMILIES) if f in arm["families"].split("+")]
    d, n_levels = bag.n_codes, bag.n_levels
    columns = [np.arange(i * d, (i + 1) * d) for i in keep] + \
        [4 * d + np.arange(i * n_levels, (i + 1) * n_levels) for i in keep] + \
        [np.arange(4 * (d + n_levels), bag.width)]
    return vectors[:, np.concatenate(columns)], ratios


def heads(data: Data, chunk_vectors: np.ndarray) -> dict:
    """The project's heads (default config) on the chunk vectors: clip and chunk mAP."""
    features = FeatureSet(chunk_vectors, data.offsets, data.labels,
                          np.array([c.fname for c in data.clips], dtype=object),
                          data.split.astype(object), data.dataset.vocabulary,
                          np.ones(chunk_vectors.shape[1], bool))
    config = HeadConfig(train_splits=tuple(data.fit_splits[:-1]) if data.folds else ("train",),
                        val_splits=tuple(data.fit_splits[-1:]) if data.folds else ("val",),
                        eval_splits=tuple(data.test_splits))
    result = run_protocol(features, config, "splits")
    return {"head_map": result["map"], "head_chunk_map": result["chunk_map"]}


def run_peer(data: Data, name: str, seeds):
    """Yield one result dict per seed of peer arm ``name`` (benchmarks.peer_arms)."""
    if not hasattr(data, "peer"):
        data.peer = peer_arms.PeerFeatures(data.clips)
    fit_clips = np.isin(data.split, data.fit_splits)
    for seed in seeds if name == "compare-xbow" else [None]:
        vectors, cpu_s = peer_arms.vectors(name, data.peer, fit_clips, seed or 0)
        yield {"arm": name, "seed": seed, **probe(data, vectors, sqrt=False),
               "cpu_s": round(cpu_s, 1)}


def run_arm(data: Data, name: str, seeds, with_heads: bool, encoders_cache: dict):
    """Yield one result dict per seed of arm ``name``."""
    if name in peer_arms.ARMS:
        yield from run_peer(data, name, seeds)
        return
    if ARMS.get(name, "") is None:
        start = time.process_time()
        yield {"arm": name, "seed": None, **probe(data, naive_vectors(data), sqrt=False),
               "cpu_s": round(time.process_time() - start, 1)}
        return
    arm = parse_arm(name)
    key = tuple(arm[k] for k in ("encoder", "tokens", "hidden", "steps", "denoise"))
    start = time.process_time()
    if key not in encoders_cache:
        encoders_cache[key] = fit_encoders(data, arm)
    fit_s = time.process_time() - start
    for seed in seeds:
        start = time.process_time()
        vectors, ratios = embed(data, arm, encoders_cache[key], seed)
        row = {"arm": name, "seed": seed, **probe(data, data.clip_means(vectors)),
               "participation": ratios,
               "cpu_s": round(fit_s + time.process_time() - start, 1)}
        if with_heads:
            row.update(heads(data, vectors))
        yield row


def table(rows: list[dict]) -> str:
    keys = [k for k in ("cv", "held_out", "head_map", "head_chunk_map")
            if any(k in r for r in rows)]
    lines = ["| arm | " + " | ".join(keys) + " | participation (p/b/s/t) | CPU s |",
             "|---|" + "---:|" * (len(keys) + 2)]
    for arm in dict.fromkeys(r["arm"] for r in rows):
        mine = [r for r in rows if r["arm"] == arm]
        cells = [f"{np.mean([r[k] for r in mine]):.3f} ± {np.std([r[k] for r in mine]):.3f}"
                 if k in mine[0] else "" for k in keys]
        ratio = mine[0].get("participation")
        ratio = "/".join(f"{ratio[f]:.1f}" for f in FAMILIES) if ratio else ""
        lines.append(f"| {arm} | " + " | ".join(cells) +
                     f" | {ratio} | {np.mean([r['cpu_s'] for r in mine]):.0f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--arms", default="naive,paper,paper-random,paper-pca,default",
                   help="names or key=value specs, separated by ';' (or ',' between names)")
    p.add_argument("--seeds", default="0,1,2", help="k-means seeds")
    p.add_argument("--heads", action="store_true", help="also the project's heads")
    p.add_argument("--threads", type=int, default=1, help="torch and faiss threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    arms = [name for part in args.arms.split(";")
            for name in (part.split(",") if "=" not in part else [part])]
    if any(a in peer_arms.ARMS for a in arms) and peer_arms.missing():
        print(peer_arms.missing(), flush=True)
        arms = [a for a in arms if a not in peer_arms.ARMS]
    data = Data(args.data)
    print(json.dumps({"machine": machine(), "data": args.data, "clips": len(data.clips),
                      "chunks": int(data.offsets[-1]), "fit_splits": data.fit_splits,
                      "test_splits": data.test_splits}), flush=True)
    rows, cache = [], {}
    for name in arms:
        for row in run_arm(data, name, [int(s) for s in args.seeds.split(",")], args.heads,
                           cache):
            print(json.dumps(row), flush=True)
            rows.append(row)
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
