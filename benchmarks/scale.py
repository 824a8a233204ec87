"""The cost curve: wall time and peak memory of each stage against the number of clips.

    python -m benchmarks.scale --clips 1000,10000,100000 [--jobs 2] [--sample-chunks 8192]
                               [--memory-budget-mb 64] [--epochs 10] [--stages evaluate]
                               [--work artifacts/scale] [--plot artifacts/scale/scale.png]

For each size N, the built-in generator (bow.data.synth, FSD50K layout: 0.8 N dev clips, 20 % of
them in split val, 0.2 N eval clips) writes N clips of 1-2 s (each its own seeded draw: no two
clips share tokens) into ``<work>/corpus-N`` (kept and reused); with ``--remix-from M``, sizes
above M are remixes of the synth corpus of M clips instead (``remix``: gain, offset, a second
clip mixed in, new noise; cheaper to make, same lengths and labels), then the stages run one
after another, each in a fresh process on fresh artifacts, with their defaults except:
``train_autoencoders`` and ``fit_codebooks`` ``--sample-chunks`` (below the chunk count of the
larger corpora, so the sample, not the corpus, sets their memory; the default 320,000 would
cover every corpus here), ``embed --jobs``, and ``evaluate --feature-sets bow`` (the heads:
train on train, score eval) with ``--memory-budget-mb`` (64: the heads stream from the store
once its training chunks pass half of it, bow.heads.stream; the default, half the free RAM,
would hold every corpus here in memory) and exactly ``--epochs`` epochs (``--max-epochs`` and
``--patience`` both set to it: with early stopping the time would measure when validation
stops improving, not what a clip costs; 0 keeps evaluate's defaults). Per stage: wall seconds
and peak RSS of the process tree (the stage and its workers, summed, polled every 0.1 s).
``--stages`` runs some stages only, on the artifacts the others left (otherwise each size
starts from fresh artifacts).

Every measurement is appended to ``<work>/results.jsonl`` (so sizes can be run separately);
the table, the growth exponents (slope of log time and log RSS against log N over the sizes
measured), the targets (from 10,000 to 100,000 clips: peak RSS and time per clip each grow at
most 1.2x) and the plot come from all of them. ``--report`` only redraws them.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil

STAGES = ("train_autoencoders", "fit_codebooks", "embed", "evaluate")
TARGET = 1.2


def corpus(work: Path, n: int, remix_from: int | None = None) -> Path:
    """The corpus of ``n`` clips: bow.data.synth's (made once, kept), or for ``n > remix_from``
    a remix of the synth corpus of ``remix_from`` clips (``remix``)."""
    from bow.data.synth import make_default_dataset
    if remix_from and n > remix_from:
        return remix(corpus(work, remix_from), work / f"remix-{n}-of-{remix_from}", n)
    n_eval = n // 5
    return make_default_dataset(work / f"corpus-{n}", seed=0, n_dev=n - n_eval, n_eval=n_eval,
                                min_seconds=1.0, max_seconds=2.0)


def remix(source: Path, root: Path, n: int, seed: int = 0) -> Path:
    """``n`` clips in the FSD50K layout, each a clip of ``source`` (same part: dev or eval) at a
    random gain (-12..0 dB), rotated by a random offset, with another clip of the part mixed in
    20..10 dB below it and pink noise 35..25 dB below (a random stretch of one of 64 noises of
    4 s): the length and the labels of the first, no two clips alike, ~2.5 ms a clip (mostly
    writing it) instead of bow.data.synth's ~5. Every 5th dev clip
    is in split val. Made once (marker ``remix.json``), into a temporary folder renamed at
    the end."""
    import soundfile as sf

    from bow.data.datasets import load_dataset
    from bow.data.synth import CLASSES, mid, pink_noise, write_fsd50k_ground_truth
    params = {"source": str(source), "n": n, "seed": seed}
    marker = root / "remix.json"
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return root
    parts = {"dev": [], "eval": []}
    for clip in load_dataset(source).clips:
        audio, _ = sf.read(str(clip.path), dtype="int16")
        parts["eval" if clip.split == "eval" else "dev"].append((audio, list(clip.labels)))
    tmp = root.parent / f".{root.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    rng = np.random.default_rng(seed)
    noises = [pink_noise(rng, 4 * 16000) for _ in range(64)]
    rows = {"dev": [], "eval": []}
    n_eval = n // 5
    for i in range(n):
        part = "dev" if i < n - n_eval else "eval"
        pool = parts[part]
        (a, labels), (b, _) = pool[rng.integers(len(pool))], pool[rng.integers(len(pool))]
        x = np.roll(a.astype(np.float32), rng.integers(len(a))) * 10 ** (-rng.uniform(0, 12) / 20)
        other = np.resize(b.astype(np.float32), len(x))
        rms = np.sqrt(np.mean(x ** 2)) + 1e-3
        x += other * rms / (np.sqrt(np.mean(other ** 2)) + 1e-3) * 10 ** (-rng.uniform(10, 20) / 20)
        noise = noises[rng.integers(64)]
        start = rng.integers(len(noise) - len(x) + 1)
        x += noise[start:start + len(x)] * rms * 10 ** (-rng.uniform(25, 35) / 20)
        x *= rng.uniform(0.3, 0.9) / (np.abs(x).max() + 1e-9)
        fname = str((100_000 if part == "dev" else 500_000) + len(rows[part]))
        folder = tmp / ("FSD50K.dev_audio" if part == "dev" else "FSD50K.eval_audio")
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(str(folder / f"{fname}.wav"), x.astype(np.float32), 16000, subtype="PCM_16")
        split = "val" if len(rows[part]) % 5 == 4 else "train"
        rows[part].append((fname, labels, split) if part == "dev" else (fname, labels))
    write_fsd50k_ground_truth(tmp / "FSD50K.ground_truth", [(c, mid(c)) for c in CLASSES],
                              rows["dev"], rows["eval"])
    (tmp / "remix.json").write_text(json.dumps(params))
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return root


def audio_seconds(data: Path) -> float:
    import soundfile as sf
    return float(sum(sf.info(str(p)).duration for p in sorted(data.glob("FSD50K.*_audio/*.wav"))))


def measure(cmd: list[str], log: Path, poll: float = 0.1) -> tuple[float, float]:
    """Run ``cmd``; (wall seconds, peak MiB of the summed RSS of it and its descendants)."""
    start = time.perf_counter()
    with open(log, "a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        root, peak = psutil.Process(proc.pid), 0
        while proc.poll() is None:
            try:
                procs = [root] + root.children(recursive=True)
                total = 0
                for p in procs:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                peak = max(peak, total)
            except psutil.Error:
                pass
            time.sleep(poll)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}; see {log}")
    return seconds, peak / 2**20


def stage_command(stage: str, data: Path, art: Path, args) -> list[str]:
    cmd = [sys.executable, "-m", f"pipelines.{stage}", "--artifacts", str(art), "--data",
           str(data), "--device", "cpu", "--no-progress"]
    if stage in ("train_autoencoders", "fit_codebooks"):
        cmd += ["--sample-chunks", str(args.sample_chunks)]
    if stage == "embed":
        cmd += ["--jobs", str(args.jobs)]
    if stage == "evaluate":
        cmd += ["--feature-sets", "bow", "--memory-budget-mb", str(args.memory_budget_mb)]
        if args.epochs:
            cmd += ["--max-epochs", str(args.epochs), "--patience", str(args.epochs)]
    return cmd


def run_size(n: int, args) -> None:
    data = corpus(args.work, n, args.remix_from)
    seconds = audio_seconds(data)
    art = args.work / f"art-{n}"
    stages = [s for s in STAGES if s in args.stages.split(",")]
    if stages == list(STAGES):
        shutil.rmtree(art, ignore_errors=True)
    log = args.work / f"log-{n}.txt"
    for stage in stages:
        if stage == "evaluate":          # a finished report with the same inputs is skipped
            shutil.rmtree(art / "reports", ignore_errors=True)
        wall, peak = measure(stage_command(stage, data, art, args), log)
        row = {"clips": n, "audio_s": round(seconds, 1), "stage": stage, "seconds": round(wall, 2),
               "corpus": data.name,
               "peak_rss_mib": round(peak, 1), "jobs": args.jobs,
               "sample_chunks": args.sample_chunks, "date": time.strftime("%Y-%m-%d %H:%M")}
        if stage == "evaluate":
            row.update(memory_budget_mb=args.memory_budget_mb, epochs=args.epochs)
        with open(args.work / "results.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


def latest(work: Path) -> dict[tuple[str, int], dict]:
    """(stage, clips) -> the last measurement of it in results.jsonl."""
    rows = {}
    for line in (work / "results.jsonl").read_text().splitlines():
        row = json.loads(line)
        rows[(row["stage"], row["clips"])] = row
    return rows


def exponent(x, y) -> float:
    """Slope of log y against log x (least squares); nan with fewer than two points."""
    if len(x) < 2:
        return float("nan")
    # rounded to 9 decimals (+ 0.0 turns -0.0 into 0.0): least squares leaves a flat series a
    # slope of +-1e-17 by the BLAS of the day, which printed as 0.00 or -0.00
    return round(float(np.polyfit(np.log(x), np.log(y), 1)[0]), 9) + 0.0


def report(work: Path, plot: Path) -> list[str]:
    """Print the table, exponents and targets; draw the plot. Returns the failed targets."""
    rows = latest(work)
    sizes = sorted({n for _, n in rows})
    print(f"\n{'stage':20s} {'clips':>8s} {'audio h':>8s} {'seconds':>9s} {'ms/clip':>8s} "
          f"{'peak MiB':>9s}")
    for stage in STAGES:
        for n in sizes:
            if (stage, n) in rows:
                r = rows[stage, n]
                print(f"{stage:20s} {n:8d} {r['audio_s'] / 3600:8.2f} {r['seconds']:9.1f} "
                      f"{1000 * r['seconds'] / n:8.2f} {r['peak_rss_mib']:9.0f}")
    failed, fits = [], {}
    print(f"\n{'stage':20s} {'time exp.':>9s} {'RSS exp.':>9s}   10k -> 100k: RSS x, "
          f"time/clip x (target <= {TARGET})")
    for stage in STAGES:
        ns = [n for n in sizes if (stage, n) in rows]
        t = [rows[stage, n]["seconds"] for n in ns]
        m = [rows[stage, n]["peak_rss_mib"] for n in ns]
        fits[stage] = (ns, t, m, exponent(ns, t), exponent(ns, m))
        line = f"{stage:20s} {fits[stage][3]:9.2f} {fits[stage][4]:9.2f}   "
        if (stage, 10_000) in rows and (stage, 100_000) in rows:
            a, b = rows[stage, 10_000], rows[stage, 100_000]
            rss, per_clip = b["peak_rss_mib"] / a["peak_rss_mib"], \
                (b["seconds"] / 100_000) / (a["seconds"] / 10_000)
            ok = rss <= TARGET and per_clip <= TARGET
            failed += [] if ok else [stage]
            line += f"{rss:.2f}x, {per_clip:.2f}x  {'PASS' if ok else 'FAIL'}"
        else:
            line += "not measured (needs 10,000 and 100,000 clips)"
        print(line)
    _plot(fits, plot)
    print(f"\nplot: {plot}")
    _markdown(rows, sizes)
    return failed


def _markdown(rows: dict, sizes: list[int]) -> None:
    """The table again, as markdown (for README), with the projection of one pass over FSD50K
    (108 h) and AudioSet (5,800 h): a line through the two largest sizes measured, in audio
    seconds."""
    print("\n| stage | " + " | ".join(f"{n:,} clips: s, MiB" for n in sizes)
          + " | FSD50K pass (h) | AudioSet pass (h) |")
    print("|---|" + "---:|" * (len(sizes) + 2))
    for stage in STAGES:
        ns = [n for n in sizes if (stage, n) in rows]
        cells = [f"{rows[stage, n]['seconds']:,.0f} s, {rows[stage, n]['peak_rss_mib']:,.0f}"
                 if (stage, n) in rows else "–" for n in sizes]
        proj = ["–", "–"]
        if len(ns) > 1:
            (x0, y0), (x1, y1) = [(rows[stage, n]["audio_s"], rows[stage, n]["seconds"])
                                  for n in ns[-2:]]
            slope = (y1 - y0) / (x1 - x0)
            proj = [f"{(y1 + slope * (hours * 3600 - x1)) / 3600:,.1f}" for hours in (108, 5800)]
        print(f"| {stage} | " + " | ".join(cells + proj) + " |")


def _plot(fits: dict, plot: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for stage, (ns, t, m, et, em) in fits.items():
        axes[0].loglog(ns, t, "o-", label=f"{stage} (exponent {et:.2f})")
        axes[1].loglog(ns, m, "o-", label=f"{stage} (exponent {em:.2f})")
    for ax, what in zip(axes, ("wall time, s", "peak RSS of the process tree, MiB")):
        ax.set_xlabel("clips (1-2 s each)")
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("bow stages against corpus size (benchmarks.scale)")
    fig.tight_layout()
    plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(plot, dpi=110)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", default="1000,10000,100000", help="comma-separated corpus sizes")
    p.add_argument("--jobs", type=int, default=2, help="embed worker processes")
    p.add_argument("--sample-chunks", type=int, default=8192,
                   help="the fitting stages' sample (below the chunk count of the larger corpora)")
    p.add_argument("--memory-budget-mb", type=float, default=64,
                   help="evaluate's head memory budget (streaming above half of it)")
    p.add_argument("--epochs", type=int, default=10,
                   help="evaluate's epochs, exactly (0: its defaults, with early stopping)")
    p.add_argument("--stages", default=",".join(STAGES),
                   help="comma-separated stages to run (others' artifacts are reused)")
    p.add_argument("--work", type=Path, default=Path("artifacts/scale"))
    p.add_argument("--plot", type=Path, default=None, help="default: <work>/scale.png")
    p.add_argument("--remix-from", type=int, default=None,
                   help="corpora larger than this are remixes of the synth corpus of this size")
    p.add_argument("--report", action="store_true", help="only print and plot what was measured")
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    if not args.report:
        for n in [int(s) for s in args.clips.split(",")]:
            run_size(n, args)
    failed = report(args.work, args.plot or args.work / "scale.png")
    if failed:
        print(f"targets missed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
