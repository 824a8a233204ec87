"""Peak memory (RSS) of the embedding stage on 100 and on 1,000 clips: it must not grow.

    python -m benchmarks.embed_memory [--model bow|kwmlp] [--data ../shared/data/fsdd]
                                      [--sizes 100,1000]

For each size, a labels.csv copy (links) of the first N clips of ``--data`` (repeated in order
when it has fewer) is embedded by the stage (``pipelines.embed.run`` with the paper-sized random
encoders of benchmarks.embed_speed, or ``pipelines.embed_kwmlp.run`` with the authors'
checkpoint) in a fresh process, one worker (``--jobs 1``, one thread). Printed per size: the
process's peak RSS (VmHWM), its RSS before the run (after importing torch and the
stages: most of it is torch's libraries), the peak minus that baseline, and the ratio of each
peak to the smallest size's (the target: at most 1.2). The stage keeps at most one shard of
results (``shard_size`` clips), one encoder batch and a few clips read ahead in memory, and the
merge copies one shard at a time; worker processes (``--jobs N``) each hold the same.

Measured 2026-11-21 (FSD digits, 100 / 1,000 clips): bag of words (paper sizes) peak 1,309 /
1,302 MiB (ratio 0.995; 869 MiB before the run, mostly torch); KW-MLP 949 / 995 MiB (1.048).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.common import emit, machine
from benchmarks.embed_speed import SHARED, audio_seconds, clip_subset, in_child, random_bow


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=("bow", "kwmlp"), default="bow")
    p.add_argument("--data", type=Path, default=SHARED / "data" / "fsdd")
    p.add_argument("--sizes", default="100,1000", help="comma-separated numbers of clips")
    p.add_argument("--checkpoint", type=Path, default=SHARED / "kwmlp" / "kwmlp.pth")
    args = p.parse_args(argv)
    sizes = [int(n) for n in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="embed_memory_") as tmp:
        art = Path(tmp) / "artifacts"
        for n in sizes:
            data = clip_subset(args.data, n, Path(tmp) / f"data{n}")
            if args.model == "bow" and not (art / "codebooks-random").exists():
                random_bow(data, art)
            spec = {"model": args.model, "data": str(data), "artifacts": str(art), "jobs": 1,
                    "threads": 1, "device": "cpu", "precision": "fp32", "encoder": "random",
                    "checkpoint": str(args.checkpoint), "shard_size": None}  # stage default
            result = in_child(spec)
            rows.append({"benchmark": "embed_memory", "model": args.model, "clips": n,
                         "audio_s": round(audio_seconds(data, args.model)[0], 1),
                         "seconds": result["seconds"], "peak_rss_mib": result["peak_rss_mib"],
                         "rss_before_run_mib": result["rss_before_run_mib"],
                         "peak_minus_before_mib": result["peak_rss_mib"]
                         - result["rss_before_run_mib"], **machine()})
    smallest = rows[0]["peak_rss_mib"]
    for row in rows:
        row["peak_ratio_to_first"] = row["peak_rss_mib"] / smallest
    emit(rows)


if __name__ == "__main__":
    main()
