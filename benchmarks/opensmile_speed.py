"""openSMILE peer throughput: each extraction of bow.peers.opensmile, and the embed stage.

    python -m benchmarks.opensmile_speed [--data ../shared/data/esc10] [--clips 40]
                                         [--repeats 2] [--no-stage]

The first ``--clips`` clips of the data set are read into memory (before timing) and each
extraction runs over all of them in this process (openSMILE computes on one thread), best of
``--repeats``:

* ``functionals``: ComParE_2016 functionals of each whole clip (the store's clip vectors and
  the HEAR scene embedding);
* ``chunk_functionals``: of each 1 s chunk (the store's chunk rows);
* ``frames``: the 65 LLDs and 65 deltas per 10 ms frame (the HEAR timestamp embeddings; two
  openSMILE runs, one per level);
* ``store_rows``: bow.peers.embed.embed_clip, what the store needs per clip (the two first).
Then ``stage``: python -m pipelines.embed_opensmile on a data set linking those clips, from the
files (decoding, shards, the HDF5 store), once. Columns: ``audio_s_per_s`` (wall clock),
``audio_s_per_cpu_s`` (process CPU time; the stage's worker runs in this process), ``load``
(1-minute load average at the end: the machine is shared).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchmarks.common import emit, machine
from bow.audio.load import read_audio
from bow.data.clips import labels_view
from bow.data.datasets import load_dataset
from bow.peers import opensmile
from bow.peers.embed import embed_clip

SHARED = Path(__file__).resolve().parents[2] / "shared"


def _row(name: str, audio_s: float, wall: float, cpu: float) -> dict:
    return {"what": name, "audio_s": round(audio_s, 1), "seconds": round(wall, 2),
            "audio_s_per_s": round(audio_s / wall, 1), "audio_s_per_cpu_s": round(audio_s / cpu, 1),
            "load": round(os.getloadavg()[0], 2)}


def _best(fn, clips, repeats: int) -> tuple[float, float]:
    best = None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        for audio in clips:
            fn(audio)
        t = (time.perf_counter() - wall, time.process_time() - cpu)
        best = t if best is None or t[0] < best[0] else best
    return best


def _stage(clips, audio_s: float) -> dict:
    from pipelines import embed_opensmile
    with tempfile.TemporaryDirectory() as tmp:
        data = labels_view({"all": clips}, Path(tmp) / "data", label=lambda c: ",".join(c.labels))
        wall, cpu = time.perf_counter(), time.process_time()
        embed_opensmile.run(data, Path(tmp) / "art", progress=False)
        return _row("stage", audio_s, time.perf_counter() - wall, time.process_time() - cpu)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=SHARED / "data" / "esc10")
    p.add_argument("--clips", type=int, default=40)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--no-stage", action="store_true", help="skip the embed stage's row")
    args = p.parse_args(argv)
    records = [c for c in load_dataset(args.data.resolve()).clips][:args.clips]
    audio = [read_audio(c.path) for c in records]
    audio_s = sum(len(a) for a in audio) / 16_000
    opensmile.functionals(audio[0][:16_000])           # openSMILE's one-time set-up, untimed
    opensmile.frames(audio[0][:16_000])
    rows = [_row(name, audio_s, *_best(fn, audio, args.repeats)) for name, fn in (
        ("functionals", opensmile.functionals), ("chunk_functionals", opensmile.chunk_functionals),
        ("frames", opensmile.frames), ("store_rows", embed_clip))]
    if not args.no_stage:
        rows.append(_stage(records, audio_s))
    info = {**machine(), "opensmile": opensmile.version(), "clips": len(audio)}
    emit([{**info, **row} for row in rows])


if __name__ == "__main__":
    main()
