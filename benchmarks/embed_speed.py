"""Embedding throughput, end to end from files on disk, against the machine's matmul floor.

    python -m benchmarks.embed_speed  [--data ../shared/data/esc10] [--clips 400] [--runs 1x2,2x1]
    python -m benchmarks.kwmlp_speed  [same options] [--checkpoint ../shared/kwmlp/kwmlp.pth]

Each run is the embedding stage itself (``pipelines.embed.run`` / ``pipelines.embed_kwmlp.run``:
reading the files, chunks, front end, encoders, codebooks or scene embeddings, store shards
and their merge) on a labels.csv copy (symbolic links) of the first ``--clips`` clips of
``--data``, in a fresh process, timed around the ``run`` call (the interpreter's start and the
imports are not counted; the start of worker processes is). ``--runs`` lists the ways to use
the CPU cores: ``JxT`` = J worker processes (``--jobs``), the process started with T torch
threads (since issue 23 every worker embeds on one thread, bow.io.sharded, so T changes only the
floor's threads); ``cuda:fp32``, ``cuda:tf32``, ``cuda:bf16`` run on the GPU (added by default
when CUDA is there).

The floor (benchmarks.common): fp32 matmul FLOP/s measured with J x T threads (or on the GPU)
right before and right after each run, while nothing else of ours runs, divided by the model's
FLOPs per audio-second from its layer sizes:
* bag of words: sum over the four families of tokens per second x 2 (dim h + h^2 + h dim / F)
  (1.33 GFLOP at the paper's sizes, F = 10, h = 2048); k-means assignment (~1 MFLOP) and the
  log-mel are not counted;
* KW-MLP: 2 x 98 frames x (40 x 64 + depth x (64 x 256 + 98 x 128 + 128 x 64)) (87.7 MFLOP for
  12 blocks); the MFCC is not counted. The authors' procedure pads each clip by 20 ms and
  rounds it up to whole seconds (a 5.001 s ESC-10 clip is 6 chunks), and those chunks count
  against the throughput: ``chunks_per_s`` and ``chunks_of_floor`` give the encoder's own rate.
``of_floor`` = throughput / floor compares across machines and loads; the machine's load
average (os.getloadavg) before and after each run is printed with it. ``peak_rss_main_mib`` is
the peak memory of the stage's own process (not of its ``--jobs`` workers: see
benchmarks.embed_memory).

The bag-of-words model is built here with the stages' random encoders (``--encoder random``)
at the paper's sizes (h = 2048, F = 10, D = 256): encoders of the same shapes cost the same
trained or not. ``--artifacts DIR --encoder trained`` times a trained model instead.
Projection: ``fsd50k_pass_h`` = 390,000 audio-seconds (FSD50K) / throughput, in hours.

Measured 2026-11-21 on the shared development machine (2 vCPUs, AMD EPYC, AVX2; other users'
load 2.6-4.6; 2-thread matmul floor 88-94 GFLOP/s, no faster than 1 thread), 400 ESC-10 clips
(bag of words) and 1,600 (KW-MLP, ESC-10 repeated):
  bag of words  1x1 59.3 audio-s/s (0.87 of the floor), 2x1 48.9 (0.74), 1x2 45.0 (0.63);
  KW-MLP        1x1 331 audio-s/s (0.33; 0.40 counting the padded chunks), 2x1 299 (0.28).
Torch with 2 threads on this shared machine is erratic (KW-MLP 1x2: 27 audio-s/s): use
``--jobs N`` (every worker embeds on one thread since issue 23).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import soundfile as sf
import torch

from benchmarks.common import emit, machine, matmul_flops

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FSD50K_SECONDS = 390_000


# ----------------------------------------------------------------------------- data and models
def clip_subset(data: Path, n: int, root: Path) -> Path:
    """A labels.csv data set of ``n`` clips of ``data`` (links; repeated in order if needed)."""
    from bow.data.datasets import load_dataset
    clips = load_dataset(data).clips
    (root / "audio").mkdir(parents=True, exist_ok=True)
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["fname", "labels", "split"])
        for i in range(n):
            clip = clips[i % len(clips)]
            name = f"{i:06d}_{clip.path.name}"
            link = root / "audio" / name
            if not link.exists():
                link.symlink_to(clip.path.resolve())
            w.writerow([name, ",".join(clip.labels), "train"])
    return root


def audio_seconds(data: Path, model: str) -> tuple[float, int]:
    """(total length in seconds, 1 s chunks the model's encoder sees) of a data set's clips,
    from the file headers: bow.audio.load.n_chunks for the bag of words, the authors' padding
    (bow.kwmlp.embed.pad_and_chunk) for KW-MLP."""
    from bow.audio.load import SAMPLE_RATE, n_chunks
    from bow.data.datasets import load_dataset
    from bow.kwmlp.embed import PAD_END, PAD_FRONT
    seconds, chunks = 0.0, 0
    for clip in load_dataset(data).clips:
        info = sf.info(str(clip.path))
        samples = -(-info.frames * SAMPLE_RATE // info.samplerate)   # as read_audio resamples
        seconds += samples / SAMPLE_RATE
        chunks += (n_chunks(samples) if model == "bow"
                   else max(1, -(-(samples + PAD_FRONT + PAD_END) // SAMPLE_RATE)))
    return seconds, chunks


def random_bow(data: Path, artifacts: Path, min_chunks: int = 320, encoder: str = "random",
               tokens: str = "raw", frame_codes: int | None = None,
               frame_stats: int | None = None) -> None:
    """Paper-sized random encoders (or PCA: ``encoder``) and D = 256 codebooks (the stages'
    --encoder random) fitted on the first clips of ``data`` that give ``min_chunks`` chunks
    (repeated if needed); frame and statistics words: the stage's defaults unless given."""
    from bow.audio.load import SAMPLE_RATE, n_chunks
    from bow.data.datasets import load_dataset
    from pipelines import fit_codebooks, train_autoencoders
    clips, total, n = load_dataset(data).clips, 0, 0
    while total < min_chunks:
        info = sf.info(str(clips[n % len(clips)].path))
        total += n_chunks(-(-info.frames * SAMPLE_RATE // info.samplerate))
        n += 1
    train = clip_subset(data, n, artifacts / "train-clips")
    train_autoencoders.run(train, artifacts, train_autoencoders.TrainAutoencodersConfig(
        encoder=encoder, tokens=tokens, max_val_tokens=1000), device="cpu", progress=False)
    words = {k: v for k, v in (("frame_codes", frame_codes), ("frame_stats", frame_stats))
             if v is not None}
    fit_codebooks.run(train, artifacts, fit_codebooks.FitCodebooksConfig(
        encoder=encoder, niter=10, nredo=1, **words), device="cpu", progress=False)


def link_models(src: Path, artifacts: Path, encoder: str) -> None:
    """Link the finished autoencoders and codebooks of ``src`` into ``artifacts``."""
    from pipelines import layout
    for folder in (layout.autoencoders, layout.codebooks):
        (artifacts / folder(src, encoder).name).parent.mkdir(parents=True, exist_ok=True)
        (artifacts / folder(src, encoder).name).symlink_to(folder(src, encoder).resolve())


def bow_flops(artifacts: Path, encoder: str) -> float:
    """Encoder FLOPs per audio-second of the bag-of-words model, from its layer sizes."""
    from bow.bagofwords.model import load_encoder
    from bow.bagofwords.tokens import COUNTS, FAMILIES
    from pipelines import layout
    total = 0.0
    for f in FAMILIES:
        ae = load_encoder(layout.autoencoders(artifacts, encoder) / f"{f}.pt")
        total += COUNTS[f] * 2 * sum(w.numel() for w, _ in ae.layers())
    return total


def kwmlp_flops(checkpoint: Path) -> float:
    """Encoder FLOPs per audio-second (one 1 s chunk) of a KW-MLP checkpoint."""
    from bow.kwmlp.model import load_checkpoint
    m = load_checkpoint(checkpoint)
    dim, n_mfcc = m.to_patch_embed[1].weight.shape
    ff = m.layers[0].fn.fn.proj_in[0].out_features
    frames = m.layers[0].fn.fn.sgu.proj.in_channels
    per_frame = n_mfcc * dim + m.depth * (dim * ff + frames * ff // 2 + ff // 2 * dim)
    return 2.0 * frames * per_frame


# ----------------------------------------------------------------------------- one timed run
def _rss_mib(field: str = "VmRSS") -> float:
    """This process's resident memory now (VmRSS) or at its peak (VmHWM), MiB (Linux /proc).

    VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child started by a large
    parent would report the parent's size."""
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith(field + ":")) / 1024


def _child(spec: dict) -> dict:
    """Run the stage once in this (fresh) process; return seconds and peak memory."""
    jobs, threads = spec["jobs"], spec["threads"]
    if jobs == 1:
        torch.set_num_threads(threads)
    data, art = Path(spec["data"]), Path(spec["artifacts"])
    from pipelines import embed, embed_kwmlp, layout  # imported before the RSS baseline
    rss_before = _rss_mib()
    shards = {"shard_size": spec["shard_size"]} if spec.get("shard_size") else {}
    if spec["model"] == "bow":
        cfg = embed.EmbedConfig(encoder=spec["encoder"], precision=spec["precision"],
                                **({"assignment": spec["assignment"]}
                                   if "assignment" in spec else {}), **shards)
        out = layout.bow_store(art, cfg.encoder)
        out.unlink(missing_ok=True)
        start = time.perf_counter()
        embed.run(data, art, cfg, device=spec["device"], progress=False, jobs=jobs)
    else:
        cfg = embed_kwmlp.EmbedKWMLPConfig(checkpoint=spec["checkpoint"],
                                           precision=spec["precision"], **shards)
        out = layout.kwmlp_store(art)
        out.unlink(missing_ok=True)
        start = time.perf_counter()
        embed_kwmlp.run(data, art, cfg, device=spec["device"], progress=False, jobs=jobs)
    seconds, peak = time.perf_counter() - start, _rss_mib("VmHWM")
    with h5py.File(out, "r") as f:
        clips, skipped = len(f["clips/fname"]), len(f["skipped/fname"])
    return {"seconds": seconds, "clips_embedded": clips, "skipped": skipped,
            "rss_before_run_mib": rss_before, "peak_rss_mib": peak}


def in_child(spec: dict) -> dict:
    """``_child(spec)`` in a fresh Python process (the result comes back as a JSON line)."""
    code = ("import json, sys; from benchmarks.embed_speed import _child; "
            "print('RESULT ' + json.dumps(_child(json.loads(sys.argv[1]))))")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], cwd=ROOT,
                          capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"benchmark run failed ({spec}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][7:])


def parse_run(text: str) -> dict:
    """'2x1' -> 2 jobs of 1 thread on the CPU, '1x1:bf16' the same in bfloat16 (bow.runtime);
    'cuda:bf16' -> the GPU at that precision."""
    text, _, precision = text.partition(":")
    if text.startswith("cuda"):
        return {"device": "cuda", "jobs": 1, "threads": 1, "precision": precision or "fp32"}
    jobs, _, threads = text.partition("x")
    return {"device": "cpu", "jobs": int(jobs), "threads": int(threads or 1),
            "precision": precision or "fp32"}


def measure(model: str, data: Path, artifacts: Path, runs: list[str], flops: float,
            extra: dict) -> list[dict]:
    """Time each run with the floor measured before and after it; one row per run."""
    seconds, chunks = audio_seconds(data, model)
    rows = []
    for text in runs:
        run = parse_run(text)
        cores = run["jobs"] * run["threads"]
        floor_dev = "cuda" if run["device"] == "cuda" else "cpu"
        load_before = os.getloadavg()[0]
        before = matmul_flops(cores, floor_dev)          # fp32: "of_floor" > 1 = past it
        result = in_child({**run, **extra, "model": model, "data": str(data),
                           "artifacts": str(artifacts)})
        after = matmul_flops(cores, floor_dev)
        gflops = (before + after) / 2
        rate = seconds / result["seconds"]
        floor = gflops / flops
        rows.append({"benchmark": f"{model}_speed", "run": text, **run,
                     "clips": result["clips_embedded"], "audio_s": round(seconds, 1),
                     "seconds": result["seconds"], "audio_s_per_s": rate,
                     "chunks": chunks, "chunks_per_s": chunks / result["seconds"],
                     "gflop_per_audio_s": flops / 1e9, "matmul_gflops": gflops / 1e9,
                     "matmul_gflops_before": before / 1e9, "matmul_gflops_after": after / 1e9,
                     "floor_audio_s_per_s": floor, "of_floor": rate / floor,
                     "chunks_of_floor": chunks / result["seconds"] / floor,
                     "fsd50k_pass_h": FSD50K_SECONDS / rate / 3600,
                     "load_before": load_before, "load_after": os.getloadavg()[0],
                     "peak_rss_main_mib": result["peak_rss_mib"], **machine()})
    return rows


def main(argv=None, model: str = "bow") -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=SHARED / "data" / "esc10")
    p.add_argument("--clips", type=int, default=400, help="clips of --data to embed")
    p.add_argument("--runs", default=None, help="comma-separated JxT (jobs x threads) or "
                   "cuda:fp32|tf32|bf16 (default: 1x2,2x1, plus the cuda runs when CUDA is there)")
    p.add_argument("--shard-size", type=int, default=16, help="clips per shard (small, so "
                   "that a few hundred clips keep every worker busy to the end)")
    p.add_argument("--artifacts", type=Path, default=None, help="bag of words: a folder with "
                   "finished train_autoencoders and fit_codebooks (default: random encoders)")
    p.add_argument("--encoder", default="random", help="bag of words: trained, random or pca")
    p.add_argument("--tokens", default="raw", help="bag of words without --artifacts: raw "
                   "(the paper's) or shape tokens")
    p.add_argument("--frame-codes", type=int, default=None, help="bag of words without "
                   "--artifacts: frame words per stream (0: none, the paper's; default: "
                   "fit_codebooks')")
    p.add_argument("--frame-stats", type=int, default=None, help="bag of words without "
                   "--artifacts: statistics words per chunk statistic (0: none; default: "
                   "fit_codebooks')")
    p.add_argument("--assignment", default="hard", help="bag of words: hard (the paper's) or "
                   "soft (the library's default: 3 nearest codes)")
    p.add_argument("--checkpoint", type=Path, default=SHARED / "kwmlp" / "kwmlp.pth",
                   help="KW-MLP checkpoint")
    args = p.parse_args(argv)
    runs = args.runs.split(",") if args.runs else (
        ["1x2", "2x1"] + (["cuda:fp32", "cuda:tf32", "cuda:bf16"]
                          if torch.cuda.is_available() else []))
    with tempfile.TemporaryDirectory(prefix=f"{model}_speed_") as tmp:
        data = clip_subset(args.data, args.clips, Path(tmp) / "data")
        art = Path(tmp) / "artifacts"
        if model == "bow":
            if args.artifacts is None:
                random_bow(data, art, encoder=args.encoder, tokens=args.tokens,
                           frame_codes=args.frame_codes, frame_stats=args.frame_stats)
            else:  # link the given model: the store is written (and removed) in tmp only
                link_models(args.artifacts, art, args.encoder)
            flops, extra = bow_flops(art, args.encoder), {"encoder": args.encoder,
                                                          "assignment": args.assignment}
        else:
            flops, extra = kwmlp_flops(args.checkpoint), {"checkpoint": str(args.checkpoint)}
        extra["shard_size"] = args.shard_size
        emit(measure(model, data, art, runs, flops, extra))


if __name__ == "__main__":
    main()
