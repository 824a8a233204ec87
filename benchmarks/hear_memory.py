"""Peak memory and speed of the HEAR modules on one long clip (HEAR asks for up to 20 minutes).

    python -m benchmarks.hear_memory kwmlp --model ../shared/kwmlp/kwmlp.pth [--minutes 20]
    python -m benchmarks.hear_memory bow --model artifacts/bundles/bow.npz
    python -m benchmarks.hear_memory bow --random-bundle 2048,256   # paper-sized, untrained

Each call (get_timestamp_embeddings, get_scene_embeddings) runs in a fresh process on a batch
of one clip of ``--minutes`` of seeded audio (noise with tones: neither model's memory or time
depends on the content, only on the length). Printed per call: seconds, audio-seconds embedded
per second, the process's peak RSS during the call (VmHWM, reset before it), its RSS before the
call (after importing torch, loading the model, making the audio and embedding its first
second, so that the model is built; the audio alone is 3.66 MiB per minute), the output's
size, and with ``--device cuda`` the peak GPU memory. For the bag-of-words model also its
encoders' GFLOP per audio-second and the floor: the audio-seconds per second it would reach at
the fp32 matmul speed measured in the same process (the mean of one measurement before and one
after the call: on a shared machine the speed varies; ``--no-floor`` skips them).
``--random-bundle HIDDEN,D`` builds an untrained bundle of that size (F = 10, codebooks fitted
on its own codes), enough to measure cost: encoders of the same shapes cost the same whether
trained or not.
"""
from __future__ import annotations

import argparse
import importlib
import json
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from benchmarks.common import emit, machine, matmul_flops

CALLS = ("timestamp", "scene")


def long_audio(minutes: float, seed: int = 0) -> np.ndarray:
    """(minutes * 960000,) float32 in [-1, 1]: noise plus a tone changing every second."""
    rng = np.random.default_rng(seed)
    n = int(minutes * 60 * 16_000)
    out = np.empty(n, dtype=np.float32)
    t = np.arange(16_000) / 16_000
    for start in range(0, n, 16_000):  # second by second, so making it needs little memory
        m = min(16_000, n - start)
        tone = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 4000) * t[:m])
        out[start:start + m] = tone + 0.1 * rng.standard_normal(m)
    return out


def random_bundle(path: str, hidden: int, n_codes: int, seed: int = 0, tokens: str | None = None,
                  assignment: str | None = None, normalise: str = "sqrt") -> None:
    """Write an untrained bundle (F = 10) with standardisation, codebooks (and level bins, for
    shape tokens) fitted on noise; ``tokens`` and ``assignment`` default to the library's."""
    from bow.audio.features import LogMel
    from bow.audio.load import chunk
    from bow.bagofwords.autoencoder import Autoencoder
    from bow.bagofwords.bundle import write
    from bow.bagofwords.codebook import Codebook, CodebookConfig
    from bow.bagofwords.encoder import AutoencoderConfig
    from bow.bagofwords.levels import LevelBins
    from bow.bagofwords.model import AssignmentConfig, BagOfWords, family_codes
    from bow.bagofwords.tokens import FAMILIES
    arm = {"tokens": tokens} if tokens else {}
    with torch.inference_mode():
        logmel = LogMel()(torch.from_numpy(chunk(long_audio(2 * n_codes / 60, seed))))
    config = AutoencoderConfig(hidden=hidden, epochs=0, seed=seed, **arm)
    encoders = {f: Autoencoder(f, config).fit(logmel, logmel) for f in FAMILIES}
    books = {f: Codebook(CodebookConfig(n_codes=n_codes, niter=10, nredo=1, seed=seed)).fit(
        family_codes(encoders[f], logmel, f).numpy()) for f in FAMILIES}
    levels = {f: LevelBins(f).fit(logmel) for f in FAMILIES} if config.tokens == "shape" \
        else None
    assign = AssignmentConfig(**({"assignment": assignment} if assignment else {}))
    write(path, BagOfWords(encoders, books, levels, assign), normalise=normalise,
          meta={"note": "untrained, for benchmarks"})


def bow_gflop(config: dict, call: str) -> float:
    """GFLOP of the bag-of-words encoders per audio-second (2 per multiply-add): per 1 s chunk
    for the scene; per second of 50 ms windows (bow.bagofwords.embed) for timestamps."""
    from bow.bagofwords.timestamps import COLUMNS_PER_WINDOW, WINDOWS_PER_CHUNK
    from bow.bagofwords.tokens import COUNTS, DIMS, FAMILIES
    per_window = {  # each window adds one 10-frame column (12 patches, 1 spectral envelope)
        "patch": COUNTS["patch"] // COLUMNS_PER_WINDOW,
        "spectral_envelope": COUNTS["spectral_envelope"] // COLUMNS_PER_WINDOW,
        "band_envelope": COUNTS["band_envelope"], "thumbnail": COUNTS["thumbnail"]}
    total = 0.0
    for f in FAMILIES:
        p = config["encoders"][f]
        d, h = DIMS[f], p["hidden"]
        macs = d * d // p["factor"] if p["kind"] == "pca" else d * h + h * h + h * d // p["factor"]
        tokens = COUNTS[f] if call == "scene" else per_window[f] * WINDOWS_PER_CHUNK
        total += 2 * macs * tokens
    return total / 1e9


def _status_mb(key: str) -> float | None:
    """A VmRSS / VmHWM line of /proc/self/status in MiB (None where there is no /proc)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def reset_peak() -> None:
    """Start a new peak-RSS measurement (Linux >= 4.0: writing 5 to clear_refs resets VmHWM)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """Peak resident set size of this process, MiB: VmHWM, not ru_maxrss, which Linux carries
    over from the parent through fork and exec (a child of a big process would report its size)."""
    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_call(model_name: str, model_file: str, call: str, minutes: float, device: str,
             threads: int, floor: bool = True) -> dict:
    """Load the model, make the audio, embed it once; the figures of that call."""
    torch.set_num_threads(threads)
    api = importlib.import_module(f"bow.hear.{model_name}")
    model = api.load_model(model_file).to(device)
    audio = torch.from_numpy(long_audio(minutes)).unsqueeze(0).to(device)
    embed = api.get_timestamp_embeddings if call == "timestamp" else api.get_scene_embeddings
    embed(audio[:, :16_000], model)  # builds what the model builds on first use
    floor = floor and model_name == "bow"
    flops_before = matmul_flops(threads, device) if floor else None
    base = _status_mb("VmRSS") or peak_rss_mb()
    reset_peak()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = embed(audio, model)
    emb = out[0] if call == "timestamp" else out
    out_mb = sum(t.numel() * 4 for t in (out if call == "timestamp" else [out])) / 2**20
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    row = {"model": model_name, "call": call, "minutes": minutes, "device": device,
           "threads": threads, "seconds": seconds, "audio_s_per_s": minutes * 60 / seconds,
           "peak_rss_mb": peak_rss_mb(), "baseline_rss_mb": base, "output_mb": out_mb,
           "output_shape": list(emb.shape), "finite": bool(torch.isfinite(emb).all())}
    if device.startswith("cuda"):
        row["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if model_name == "bow":
        row["gflop_per_audio_s"] = bow_gflop(model.bundle.config, call)
    if floor:
        row["matmul_gflop_s"] = (flops_before + matmul_flops(threads, device)) / 2e9
        row["floor_audio_s_per_s"] = row["matmul_gflop_s"] / row["gflop_per_audio_s"]
    return row


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_name", choices=["kwmlp", "bow"])
    p.add_argument("--model", default="", help="checkpoint (kwmlp) or bundle (bow)")
    p.add_argument("--random-bundle", default=None, metavar="HIDDEN,D",
                   help="bow: build an untrained bundle of this size instead of --model")
    p.add_argument("--minutes", type=float, default=20.0)
    p.add_argument("--calls", default=",".join(CALLS), help="timestamp,scene")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-floor", action="store_true", help="skip the matmul speed")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child process
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(one_call(args.model_name, args.model, args.calls, args.minutes,
                                  args.device, args.threads, not args.no_floor)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        model_file = args.model
        if args.random_bundle:
            hidden, n_codes = (int(v) for v in args.random_bundle.split(","))
            model_file = f"{tmp}/random.npz"
            random_bundle(model_file, hidden, n_codes)
        rows = []
        for call in args.calls.split(","):
            cmd = [sys.executable, "-m", "benchmarks.hear_memory", args.model_name, "--one",
                   "--model", model_file, "--calls", call, "--minutes", str(args.minutes),
                   "--device", args.device, "--threads", str(args.threads)]
            cmd += ["--no-floor"] if args.no_floor else []
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]) | machine())
    emit(rows)


if __name__ == "__main__":
    main()
