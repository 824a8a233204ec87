"""The device check (issue 16): bow's speed figures on one GPU, in one run of under 8 minutes.

    python -m benchmarks.gpu_check [--device auto|cuda|cpu] [--small] [--budget 420]
                                   [--precisions fp32,tf32,bf16] [--repeat 8] [--no-faiss]

On the device machine (README "Speed and scale" has the exact command and the wheels it
carries): torch and torchaudio are there, faiss and soundfile are not, and ../shared is not
either. So the check needs nothing but the repository: audio is the built-in synthetic data
set (bow.data.synth, written to a temporary folder) or random chunks, and every model is an
untrained one of the paper's sizes (speed does not depend on the weights' values; drift does a
little: it is measured on these models and the synthetic clips). One JSON line per figure as it
is measured (a run cut short keeps what it printed), then a table. Figures:

* ``front_end``: LogMel and MFCC on (n, 16000) chunks, audio-s/s.
* ``bow_encoders``: the four autoencoder encoders (hidden 2048, F = 10, raw tokens) per
  ``--precisions``: audio-s/s, FLOP/s and the fraction of that precision's matmul floor; against
  fp32, the fraction of tokens whose code id (nearest of D = 256) is unchanged per family and
  the count drift (bow.runtime.compare_codes).
* ``codebook_fit``: k-means, D = 256, on 65,536 codes of each family's width (8, 80, 96): faiss
  (bow.bagofwords.codebook) when it imports, else this check's torch Lloyd fallback
  (``torch_kmeans``, on the device); the row says which and why.
* ``assignment``: exact K nearest codes (bow.bagofwords.nearest, on the CPU, as embedding does)
  against a float32 argmin on the device: codes/s and agreement.
* ``ae_training``: autoencoder training steps/s (batch 256) per family.
* ``kwmlp``: KW-MLP encoder (12 blocks) per precision: audio-s/s (1 s chunks), of floor, drift.
* ``audiomlp``: bow.audiomlp's autoencoder (the authors' sizes, fp32): audio-s/s.
* ``heads``: MLP head training, chunks/s (benchmarks.heads_speed's synthetic counts).
* ``embed``: end to end from files on disk with the read-ahead (each model's ShardEmbedder:
  decoding, front end, encoder, assignment or scene; the store's HDF5 write is not included),
  for the paper's bag of words, the default one (PCA of shape tokens, soft assignment, level
  bins) and KW-MLP: audio-s/s and ``fsd50k_pass_h``, the hours of one FSD50K pass (390,000
  audio-seconds) at that rate.
``--small`` shrinks every size (the CPU dry run of tests/system/test_gpu_check.py); ``--budget``
seconds: sections that would start later are skipped and say so.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.gpu_check_run import FULL, Check, torch_kmeans

FSD50K_SECONDS = 390_000
def _has_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _grid_logmel(chk: Check, n: int) -> torch.Tensor:
    from bow.audio.features import LogMel
    from bow.data.synth import render_clip
    rng = np.random.default_rng(0)
    audio = np.concatenate([render_clip(rng, ["Harmonic_stack", "Noise_burst"], 1.0)
                            for _ in range(n)]).astype(np.float32).reshape(n, -1)
    with torch.inference_mode():
        return LogMel().to(chk.device)(torch.from_numpy(audio).to(chk.device))


# ----------------------------------------------------------------------------- the sections
def front_end(chk: Check) -> None:
    from bow.audio.features import MFCC, LogMel
    x = torch.randn(chk.size["chunks"], 16000, device=chk.device) * 0.1
    for module in (LogMel, MFCC):
        m = module().to(chk.device)
        with torch.inference_mode():
            chk.add("front_end", model=module.__name__, chunks=len(x),
                    audio_s_per_s=chk.rate(lambda: m(x), len(x)))


def paper_encoders(chk: Check, logmel: torch.Tensor) -> dict:
    """The four random autoencoders at the paper's sizes (the stages' --encoder random)."""
    from bow.bagofwords.autoencoder import Autoencoder
    from bow.bagofwords.encoder import AutoencoderConfig
    from bow.bagofwords.tokens import FAMILIES
    cfg = AutoencoderConfig(tokens="raw", hidden=chk.size["hidden"], epochs=0,
                            max_val_tokens=1000)
    return {f: Autoencoder(f, cfg, chk.device).fit(logmel, logmel[:2]) for f in FAMILIES}


def fit_books(chk: Check, encoders: dict, logmel: torch.Tensor) -> dict:
    """D-code codebooks on the encoders' codes of ``logmel`` (torch k-means on the device)."""
    from bow.bagofwords.codebook import Codebook, CodebookConfig
    from bow.bagofwords.model import family_codes
    books = {}
    for f, enc in encoders.items():
        codes = family_codes(enc, logmel, f).float()
        reps = -(-chk.size["n_codes"] // len(codes))          # the thumbnail: few codes
        codes = codes.repeat(reps, 1) + 1e-3 * torch.randn(len(codes) * reps, codes.shape[1],
                                                           device=codes.device)
        c, objective = torch_kmeans(codes, chk.size["n_codes"], chk.size["niter"])
        book = Codebook(CodebookConfig(n_codes=chk.size["n_codes"]))
        book.centroids_ = c.cpu().numpy().astype(np.float32)
        book.objective_, book.scale_ = objective, objective / len(codes)
        book.stats_, book.iterations_ = {"fitted_by": "benchmarks.gpu_check.torch_kmeans"}, []
        books[f] = book
    return books


def bow_encoders(chk: Check, encoders: dict, books: dict, logmel: torch.Tensor) -> None:
    from bow.bagofwords.model import family_codes
    from bow.bagofwords.tokens import COUNTS, FAMILIES
    from bow.runtime import compare_codes, encoder_precision
    flops = sum(COUNTS[f] * 2 * sum(w.numel() for w, _ in encoders[f].layers())
                for f in FAMILIES)
    n, ids = len(logmel), {}
    for p in chk.precisions:
        with torch.inference_mode(), encoder_precision(p, chk.device):
            codes = {}

            def run():
                codes.update({f: family_codes(encoders[f], logmel, f) for f in FAMILIES})
            rate = chk.rate(run, n)
        floor = _floor(chk, p) / flops
        ids[p] = {f: books[f].assign(codes[f].float().cpu().numpy()).reshape(n, COUNTS[f])
                  for f in FAMILIES}
        drift = {}
        if p != "fp32" and "fp32" in ids:
            counts = {q: _counts(ids[q], books) for q in ("fp32", p)}
            drift = compare_codes(ids[p], ids["fp32"], counts[p], counts["fp32"])
        chk.add("bow_encoders", precision=p, hidden=chk.size["hidden"], chunks=n,
                audio_s_per_s=rate, gflop_per_audio_s=flops / 1e9, floor_audio_s_per_s=floor,
                of_floor=rate / floor, **drift)


def _counts(ids: dict, books: dict) -> np.ndarray:
    """{family: (n, COUNTS) ids} -> (n, 4 D) hard counts."""
    d = next(iter(books.values())).n_codes
    return np.concatenate([np.stack([np.bincount(r, minlength=d) for r in v])
                           for v in ids.values()], axis=1)


_FLOORS: dict = {}


def _floor(chk: Check, precision: str) -> float:
    from benchmarks.common import matmul_flops
    if precision not in _FLOORS:
        size = {} if chk.device.type == "cuda" else {"m": 512, "k": 512, "n": 512,
                                                     "seconds": 0.2}
        _FLOORS[precision] = matmul_flops(torch.get_num_threads(), str(chk.device),
                                          precision=precision, **size)
        chk.add("matmul_floor", precision=precision, gflops=_FLOORS[precision] / 1e9)
    return _FLOORS[precision]


def codebooks(chk: Check) -> None:
    from bow.bagofwords.codebook import Codebook, CodebookConfig
    from bow.bagofwords.nearest import nearest
    faiss = _has_faiss()
    n, k = chk.size["codes"], chk.size["n_codes"]
    for d in (8, 80, 96):
        x = torch.randn(n, d, device=chk.device)
        if faiss:
            start = time.perf_counter()
            book = Codebook(CodebookConfig(n_codes=k, niter=chk.size["niter"], nredo=1))
            book.fit(x.cpu().numpy())
            c, how = book.centroids_, f"faiss ({book.stats_['device']})"
        else:
            chk.sync()
            start = time.perf_counter()
            c, _ = torch_kmeans(x, k, chk.size["niter"])
            chk.sync()
            c, how = c.cpu().numpy(), "torch Lloyd fallback: faiss does not import here"
        chk.add("codebook_fit", dim=d, points=n, n_codes=k, niter=chk.size["niter"], how=how,
                seconds=time.perf_counter() - start)
        xs, cs = x.cpu().numpy(), np.ascontiguousarray(c, np.float32)
        for kk in (1, 5):
            exact = {}
            cpu_rate = chk.rate(lambda: exact.update(ids=nearest(xs, cs, kk)[0]), n)
            cd = torch.from_numpy(cs).to(chk.device)
            dev_ids = {}
            dev_rate = chk.rate(lambda: dev_ids.update(ids=torch.cdist(x, cd).topk(
                kk, largest=False).indices), n)
            same = float((dev_ids["ids"].cpu().numpy() == exact["ids"]).all(1).mean())
            chk.add("assignment", dim=d, n_codes=k, neighbours=kk, exact_cpu_codes_per_s=cpu_rate,
                    float32_device_codes_per_s=dev_rate, device_agrees_with_exact=same)


def ae_training(chk: Check, logmel: torch.Tensor) -> None:
    from bow.bagofwords.autoencoder import Autoencoder
    from bow.bagofwords.encoder import AutoencoderConfig
    from bow.bagofwords.tokens import FAMILIES
    s1, s2 = chk.size["steps"]
    for f in FAMILIES:
        times = []
        for steps in (s1, s1, s2):          # the first fit warms up
            cfg = AutoencoderConfig(tokens="raw", hidden=chk.size["hidden"], epochs=1,
                                    steps_per_epoch=steps, batch_size=chk.size["batch"],
                                    max_val_tokens=256)
            chk.sync()
            start = time.perf_counter()
            Autoencoder(f, cfg, chk.device).fit(logmel, logmel[:2])
            chk.sync()
            times.append(time.perf_counter() - start)
        chk.add("ae_training", family=f, hidden=chk.size["hidden"], batch=chk.size["batch"],
                steps_per_s=(s2 - s1) / max(times[2] - times[1], 1e-9))


def kwmlp(chk: Check) -> None:
    from bow.kwmlp.model import KWMLP, KWMLPEncoder
    from bow.runtime import compare_embeddings, encoder_precision
    torch.manual_seed(0)
    model = KWMLP(depth=chk.size["kw_depth"]).eval().to(chk.device)
    enc = KWMLPEncoder(model)
    mfcc = _grid_mfcc(chk, chk.size["kw_chunks"])
    dim, ff = 64, 256
    flops = 2.0 * 98 * (40 * dim + model.depth * (dim * ff + 98 * ff // 2 + ff // 2 * dim))
    out = {}
    for p in chk.precisions:
        with encoder_precision(p, chk.device):
            rate = chk.rate(lambda: out.update({p: enc(mfcc)}), len(mfcc))
        floor = _floor(chk, p) / flops
        drift = compare_embeddings({"tokens": out[p].float().cpu()},
                                   {"tokens": out["fp32"].cpu()}) if "fp32" in out else {}
        chk.add("kwmlp", precision=p, depth=model.depth, chunks=len(mfcc),
                audio_s_per_s=rate, of_floor=rate / floor, **drift)


def _grid_mfcc(chk: Check, n: int) -> torch.Tensor:
    from bow.audio.features import MFCC
    x = torch.randn(n, 16000, device=chk.device) * 0.1
    with torch.inference_mode():
        return MFCC().to(chk.device)(x)


def audiomlp(chk: Check) -> None:
    from bow.audiomlp.embed import AudioMLPEmbedder
    from bow.audiomlp.model import AudioMLPEncoder
    embedder = AudioMLPEmbedder(AudioMLPEncoder(), device=str(chk.device))  # the authors' sizes
    audios = [np.random.default_rng(i).standard_normal(16000 * 4).astype(np.float32) * 0.1
              for i in range(max(2, chk.size["kw_chunks"] // 4))]
    chk.add("audiomlp", clips=len(audios),
            audio_s_per_s=chk.rate(lambda: embedder.embed(audios), 4.0 * len(audios)))


def heads(chk: Check) -> None:
    from benchmarks.heads_speed import synthetic
    from bow.heads.model import Head, HeadConfig
    data = synthetic(chk.size["head_chunks"], chk.size["head_dim"], 200)
    val = data.subset(np.arange(min(500, len(data.chunks))))
    times = []
    for epochs in (1, 1, 2):               # the first fit warms up
        cfg = HeadConfig(max_epochs=epochs, patience=epochs)
        chk.sync()
        start = time.perf_counter()
        Head(cfg, str(chk.device)).fit(data, val)
        chk.sync()
        times.append(time.perf_counter() - start)
    chk.add("heads", chunks=len(data.chunks), dim=chk.size["head_dim"], classes=200,
            train_chunks_per_s=len(data.chunks) / max(times[2] - times[1], 1e-9))


def embed(chk: Check, root: Path, encoders: dict, books: dict, repeat: int) -> None:
    """End to end from files with each model's ShardEmbedder (module docstring)."""
    import soundfile as sf

    from bow.bagofwords import embed as bow_embed
    from bow.bagofwords.encoder import AutoencoderConfig
    from bow.bagofwords.levels import LevelBins
    from bow.bagofwords.model import AssignmentConfig
    from bow.bagofwords.pca import PCAEncoder
    from bow.data.datasets import load_dataset
    from bow.data.synth import make_default_dataset
    from bow.kwmlp import embed as kw_embed
    from bow.kwmlp.model import KWMLP, save_checkpoint
    data = load_dataset(make_default_dataset(root / "synth", n_dev=chk.size["n_dev"],
                                             n_eval=chk.size["n_eval"]))
    clips = data.clips * repeat
    seconds = sum(sf.info(str(c.path)).duration for c in data.clips) * repeat
    logmel = _grid_logmel(chk, 64 if chk.size is FULL else 16)
    cfg = AutoencoderConfig(tokens="shape", max_val_tokens=1000)
    pca = {f: PCAEncoder(f, cfg, chk.device).fit(logmel, logmel[:2]) for f in encoders}
    models = {"bow_paper": (encoders, books, None, AssignmentConfig(assignment="hard")),
              "bow_default": (pca, fit_books(chk, pca, logmel),
                              {f: LevelBins(f, chk.size["level_bins"]).fit(logmel) for f in pca},
                              AssignmentConfig())}
    for name, (encs, bks, levels, assignment) in models.items():
        folder = root / name
        folder.mkdir()
        for f in encs:
            encs[f].save(folder / f"{f}.pt")
            bks[f].save(folder / f"{f}.npz")
            if levels:
                levels[f].save(folder / f"{f}.levels.json")
        for p in chk.precisions[:1] + (["bf16"] if "bf16" in chk.precisions[1:] else []):
            worker = bow_embed.ShardEmbedder(folder, folder, data.vocabulary, str(chk.device),
                                             precision=p, assignment=assignment)
            _timed_embed(chk, name, p, worker, clips, seconds)
    torch.manual_seed(0)
    save_checkpoint(KWMLP(depth=chk.size["kw_depth"]), root / "kwmlp.pth")
    worker = kw_embed.ShardEmbedder(root / "kwmlp.pth", data.vocabulary, device=str(chk.device))
    _timed_embed(chk, "kwmlp", "fp32", worker, clips, seconds)


def _timed_embed(chk: Check, name: str, precision: str, worker, clips, seconds: float) -> None:
    worker(clips[:2])                                         # load the model, warm up
    chk.sync()
    start = time.perf_counter()
    items, skipped = worker(clips)
    chk.sync()
    rate = seconds / (time.perf_counter() - start)
    chk.add("embed", model=name, precision=precision, clips=len(items), skipped=len(skipped),
            audio_s=round(seconds, 1), audio_s_per_s=rate,
            fsd50k_pass_h=FSD50K_SECONDS / rate / 3600)


# ----------------------------------------------------------------------------- main
def run(chk: Check, repeat: int) -> None:
    from bow.runtime import check_precision
    gpu = torch.cuda.get_device_name(0) if chk.device.type == "cuda" else None
    chk.add("machine", gpu=gpu, torch=torch.__version__, cpus=os.cpu_count(),
            threads=torch.get_num_threads(), faiss=_has_faiss(), python=sys.version.split()[0])
    for p in list(chk.precisions):
        try:
            check_precision(p, chk.device)
        except ValueError as e:
            chk.precisions.remove(p)
            chk.add("precision", precision=p, skipped=str(e))
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        logmel = _grid_logmel(chk, chk.size["enc_chunks"])
        encoders = paper_encoders(chk, logmel)
        books = fit_books(chk, encoders, logmel)
        sections = [("front_end", lambda: front_end(chk)),
                    ("bow_encoders", lambda: bow_encoders(chk, encoders, books, logmel)),
                    ("kwmlp", lambda: kwmlp(chk)),
                    ("embed", lambda: embed(chk, Path(tmp), encoders, books, repeat)),
                    ("codebooks", lambda: codebooks(chk)),
                    ("ae_training", lambda: ae_training(chk, logmel)),
                    ("heads", lambda: heads(chk)),
                    ("audiomlp", lambda: audiomlp(chk))]
        for name, section in sections:
            if time.perf_counter() > chk.deadline:
                chk.add(name, skipped="time budget spent (--budget)")
                continue
            try:
                section()
            except Exception as e:  # one broken section must not hide the others' figures
                chk.add(name, skipped=f"failed: {type(e).__name__}: {e}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto, cuda or cpu")
    p.add_argument("--small", action="store_true", help="tiny sizes (the CPU dry run)")
    p.add_argument("--budget", type=float, default=420.0, help="seconds; later sections skip")
    p.add_argument("--precisions", default="fp32,tf32,bf16")
    p.add_argument("--repeat", type=int, default=8, help="passes over the synthetic clips in "
                   "the end-to-end figures")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: 1 on "
                   "the CPU, torch's own default beside a GPU)")
    p.add_argument("--no-faiss", action="store_true", help="behave as where faiss is missing")
    args = p.parse_args(argv)
    if args.no_faiss:
        sys.modules["faiss"] = None   # import faiss now raises ImportError
    from benchmarks.common import table
    from bow.runtime import resolve_device
    device = resolve_device(args.device)
    if args.threads or device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    chk = Check(device, args.small, args.budget, args.precisions.split(","))
    run(chk, args.repeat)
    for figure in dict.fromkeys(r["figure"] for r in chk.rows):   # one table per figure
        table([{k: v for k, v in r.items() if k not in ("benchmark", "figure", "device")}
               for r in chk.rows if r["figure"] == figure])


if __name__ == "__main__":
    main()
