"""KW-MLP embedding throughput: the stage end to end from files, or ours against the authors'.

    python -m benchmarks.kwmlp_speed [--data ../shared/data/esc10] [--clips 400] [--runs 1x2,2x1]
                                     [--checkpoint ../shared/kwmlp/kwmlp.pth]
    python -m benchmarks.kwmlp_speed --versus-authors [--clips 96] [--threads 1] [--rounds 4]
                                     [--nnaudio DIR] [--precision fp32|bf16]

Without ``--versus-authors``: the stage ``pipelines.embed_kwmlp`` timed as in
benchmarks.embed_speed (see its docstring for the runs, the floor and the columns); the floor is
87.7 MFLOP per audio-second for the authors' 12-block checkpoint.

``--versus-authors``: ours and a reference of the authors' procedure, side by side in one
process on the same decoded audio (the first ``--clips`` clips of ``--data``, held in memory:
decoding is not timed), in alternating rounds, with ``--threads`` torch threads; each round
times every clip once, and the best and the median round of each are printed. Both compute each
clip's timestamp embeddings and its scene embedding (the store's extra chunk rows are not
computed). The authors' package (HEAR-2021-Audio-MLP, ``hearkwmlp``) is not installable here
(not on PyPI), so the reference ``authors_embed`` re-states its procedure (bow.kwmlp.embed's
docstring), per clip as its HEAR API is called:
  * its padding (80 samples in front, 240 at the end, up to whole seconds), its (k, 16000)
    chunks of one clip per call;
  * its front end: nnAudio's MFCC (``nnAudio.features.MFCC``, n_mfcc = n_mels = 40, n_fft =
    window = 480, hop 160, no centring) when nnAudio imports (``--nnaudio DIR`` puts DIR first on
    sys.path, e.g. a ``pip install --target DIR nnAudio==0.3.4``), else torchaudio's
    ``transforms.MFCC`` configured as theirs (the row's ``reference_front_end`` says which);
  * its batch-major model: ``bow.kwmlp.model.KWMLP.encode`` (the authors' module structure:
    Linear on (n, 98, 40), gated-MLP blocks with the time mixing as a Conv1d over (n, 98, 128))
    and a LayerNorm(64) without affine parameters;
  * its replicate padding of each chunk, concatenation, the first and last frame dropped,
    the truncation to the timestamps, and the iterative halving for the scene embedding, from
    ONE forward pass (the package's two API functions each run one; counting that would double
    the reference's time, so this reference is the faster of the two readings).
Ours: ``bow.kwmlp.embed.KWMLPEmbedder.embed`` on batches of ``batch_clips`` clips (the store's
worker): chunks of all clips together through bow's MFCC and the time-major encoder
(``KWMLPEncoder``). ``--precision bf16`` runs ours' encoder in bfloat16 (bow.runtime; the
reference stays fp32) and prints the drift. ``of_floor``: chunks x 87.7 MFLOP / seconds /
the fp32 matmul FLOP/s measured before and after in the same process, for both.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.common import emit, machine, matmul_flops
from benchmarks.embed_speed import SHARED, kwmlp_flops
from benchmarks.embed_speed import main as _main

SCENE_STEPS = 16


def authors_front_end(nnaudio_dir: Path | None = None):
    """(module (k, 16000) -> (k, 40, 98), its name): nnAudio's MFCC, else torchaudio's."""
    if nnaudio_dir is not None:
        sys.path.insert(0, str(nnaudio_dir))
    try:
        from nnAudio.features import MFCC as NNAudioMFCC
        return NNAudioMFCC(sr=16000, n_mfcc=40, n_mels=40, n_fft=480, win_length=480,
                           hop_length=160, center=False, verbose=False), "nnAudio"
    except ImportError:
        import torchaudio.transforms as T
        mfcc = T.MFCC(sample_rate=16000, n_mfcc=40, dct_type=2, norm="ortho", log_mels=False,
                      melkwargs=dict(n_fft=480, win_length=480, hop_length=160, n_mels=40,
                                     f_min=0.0, f_max=8000.0, center=False, power=2.0,
                                     norm="slaney", mel_scale="slaney"))
        mfcc.amplitude_to_DB.top_db = 80.0
        return (lambda x: mfcc(x.unsqueeze(1))[:, 0]), "torchaudio (nnAudio not importable)"


@torch.no_grad()
def authors_embed(model, front, audio: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """One clip as the authors' package embeds it -> ((T, 64) timestamp frames, (1024,) scene)."""
    x = F.pad(torch.as_tensor(audio)[None], (80, 240))
    n = x.shape[1]
    pad = 16000 - n if n < 16000 else (-n) % 16000
    x = F.pad(x, (0, pad)).reshape(-1, 16000)                        # (k, 16000), one clip
    tokens = F.layer_norm(model.encode(front(x)), (64,))            # (k, 98, 64)
    tokens = F.pad(tokens.transpose(1, 2), (1, 1), mode="replicate")  # (k, 64, 100)
    seq = tokens.transpose(1, 2).reshape(1, -1, 64)[:, 1:-1]         # (1, 100 k - 2, 64)
    n_frames = int((1000 * n / 16000 - 30) / 10 + 1)
    emb = seq.transpose(1, 2)                                        # (1, 64, T)
    t = emb.shape[-1]
    if t < SCENE_STEPS:
        emb = F.pad(emb, (0, SCENE_STEPS - t))
    elif t > SCENE_STEPS:
        ratio = np.log2(t / SCENE_STEPS)
        for _ in range(int(np.floor(ratio))):
            emb = F.interpolate(emb, size=emb.shape[-1] // 2, mode="linear", align_corners=True)
        if ratio - np.floor(ratio) > 0:
            emb = F.interpolate(emb, size=SCENE_STEPS, mode="linear", align_corners=True)
    return seq[0, :n_frames], emb.reshape(-1)


def versus_authors(args) -> list[dict]:
    """Ours and the authors' reference in alternating rounds (module docstring)."""
    from bow.audio.load import read_audio
    from bow.data.datasets import load_dataset
    from bow.kwmlp.embed import KWMLPEmbedder, pad_and_chunk
    from bow.kwmlp.model import load_checkpoint
    torch.set_num_threads(args.threads)
    clips = load_dataset(args.data).clips
    audios = [read_audio(clips[i % len(clips)].path) for i in range(args.clips)]
    seconds = sum(len(a) for a in audios) / 16000
    chunks = sum(pad_and_chunk(torch.as_tensor(a)).shape[0] for a in audios)
    model = load_checkpoint(args.checkpoint)
    front, front_name = authors_front_end(args.nnaudio)
    ours = KWMLPEmbedder(model, precision=args.precision)

    def reference():
        return [authors_embed(model, front, a) for a in audios]

    def our_way():
        return [e for i in range(0, len(audios), args.batch_clips)
                for e in ours.embed(audios[i:i + args.batch_clips])]

    load, floor = [os.getloadavg()[0]], [matmul_flops(args.threads)]
    times = {"authors": [], "ours": []}
    out = {"authors": reference(), "ours": our_way()}                # warm-up and parity
    for _ in range(args.rounds):
        for name, fn in (("authors", reference), ("ours", our_way)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    floor.append(matmul_flops(args.threads))
    load.append(os.getloadavg()[0])
    scale = max(float(s.abs().max()) for _, s in out["authors"])
    frames_err = max(float((torch.as_tensor(o.frames) - r).abs().max())
                     for o, (r, _) in zip(out["ours"], out["authors"])) / scale
    scene_err = max(float((torch.as_tensor(o.scene) - s).abs().max())
                    for o, (_, s) in zip(out["ours"], out["authors"])) / scale
    flops, gflops = kwmlp_flops(args.checkpoint), sum(floor) / 2
    rows = []
    for name, ts in times.items():
        best, median = min(ts), statistics.median(ts)
        rows.append({"benchmark": "kwmlp_versus_authors", "who": name, "threads": args.threads,
                     "precision": "fp32" if name == "authors" else args.precision,
                     "clips": len(audios), "audio_s": round(seconds, 1), "chunks": chunks,
                     "rounds": args.rounds, "best_s": best, "median_s": median,
                     "audio_s_per_s_best": seconds / best,
                     "audio_s_per_s_median": seconds / median,
                     "of_floor_best": chunks * flops / best / gflops,
                     "matmul_gflops": gflops / 1e9, "load_before": load[0],
                     "load_after": load[1], "reference_front_end": front_name, **machine()})
    a, o = rows
    for key in ("best", "median"):
        o[f"speedup_{key}"] = o[f"audio_s_per_s_{key}"] / a[f"audio_s_per_s_{key}"]
    o["frames_relerr_vs_authors"], o["scene_relerr_vs_authors"] = frames_err, scene_err
    return rows


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--versus-authors" not in argv:
        _main(argv, model="kwmlp")
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--versus-authors", action="store_true")
    p.add_argument("--data", type=Path, default=SHARED / "data" / "esc10")
    p.add_argument("--clips", type=int, default=96)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--batch-clips", type=int, default=32, help="ours: clips per embed call")
    p.add_argument("--precision", default="fp32", help="ours: fp32 or bf16 (bow.runtime)")
    p.add_argument("--nnaudio", type=Path, default=None, help="folder holding nnAudio")
    p.add_argument("--checkpoint", type=Path, default=SHARED / "kwmlp" / "kwmlp.pth")
    emit(versus_authors(p.parse_args(argv)))


if __name__ == "__main__":
    main()
