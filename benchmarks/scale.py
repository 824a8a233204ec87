"""The cost curve: wall time and peak memory of each stage against the number of clips.

    python -m benchmarks.scale --clips 1000,10000,100000 [--jobs 2] [--sample-chunks 8192]
                               [--work artifacts/scale] [--plot artifacts/scale/scale.png]

For each size N, the built-in generator (bow.data.synth, FSD50K layout: 0.8 N dev clips, 20 % of
them in split val, 0.2 N eval clips) writes N clips of 1-2 s (each its own seeded draw: no two
clips share tokens) into ``<work>/corpus-N`` (kept and reused), then the stages run one after
another, each in a fresh process on fresh artifacts, with their defaults except:
``train_autoencoders`` and ``fit_codebooks`` ``--sample-chunks`` (below the chunk count of the
larger corpora, so the sample, not the corpus, sets their memory; the default 320,000 would
cover every corpus here), ``embed --jobs``, and ``evaluate --feature-sets bow`` (the heads:
train on train, early stop on val, score eval). Per stage: wall seconds and peak RSS of the
process tree (the stage and its workers, summed, polled every 0.1 s).

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


def corpus(work: Path, n: int) -> Path:
    """The generated corpus of ``n`` clips (made once; bow.data.synth keeps a complete one)."""
    from bow.data.synth import make_default_dataset
    n_eval = n // 5
    return make_default_dataset(work / f"corpus-{n}", seed=0, n_dev=n - n_eval, n_eval=n_eval,
                                min_seconds=1.0, max_seconds=2.0)


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
        cmd += ["--feature-sets", "bow"]
    return cmd


def run_size(n: int, args) -> None:
    data = corpus(args.work, n)
    seconds = audio_seconds(data)
    art = args.work / f"art-{n}"
    shutil.rmtree(art, ignore_errors=True)
    log = args.work / f"log-{n}.txt"
    for stage in STAGES:
        wall, peak = measure(stage_command(stage, data, art, args), log)
        row = {"clips": n, "audio_s": round(seconds, 1), "stage": stage, "seconds": round(wall, 2),
               "peak_rss_mib": round(peak, 1), "jobs": args.jobs,
               "sample_chunks": args.sample_chunks, "date": time.strftime("%Y-%m-%d %H:%M")}
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
    return float(np.polyfit(np.log(x), np.log(y), 1)[0]) if len(x) > 1 else float("nan")


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
    return failed


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
    p.add_argument("--work", type=Path, default=Path("artifacts/scale"))
    p.add_argument("--plot", type=Path, default=None, help="default: <work>/scale.png")
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
