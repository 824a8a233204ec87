"""Audio-MLP embedding throughput, ours against the authors' procedure, in one process.

    python -m benchmarks.audiomlp_speed [--data ../shared/data/esc10] [--clips 400]
                                        [--checkpoint ../shared/audiomlp/audiomae.pth]
                                        [--repeats 3] [--threads 1] [--device cpu|cuda]

Both sides embed the same clips, held in memory (read before timing), into timestamp and scene
embeddings, with the same checkpoint, on the same thread(s), alternately (reference, ours,
reference, ours...), and the best of ``--repeats`` is kept for each, so a burst of load from
other processes hits both alike:

* ``reference``: the authors' procedure as their HEAR package runs it, re-implemented here from
  its description (../shared/audiomlp/README.md): the clips in batches of ``--batch-clips`` of
  the same length (the kit gives the package equal-length batches), each batch padded, cut into
  1 s chunks, turned into power mel (torchaudio) and run through the encoder as the nn.Module
  (``AudioMLPEncoder.forward``, the authors' module structure), the chunk outputs
  replicate-padded and concatenated, then the timestamp embeddings truncated and the scene
  interpolated. It is given one encoder pass for both outputs (the package's API makes one per
  call, so the package itself does twice this work when both are wanted).
* ``ours``: bow.audiomlp.embed.AudioMLPEmbedder (the fast time-major encoder, clips of any
  lengths batched together, ``--batch-clips`` clips and 32 chunks per encoder call), the path of
  pipelines.embed_audiomlp and bow.hear.audiomlp.
The two outputs are compared (max relative difference, printed).

The floor (benchmarks.common): the fp32 matmul FLOP/s measured right before and after, divided
by the encoder's FLOPs per audio-second: 2 x 98 frames x (40 x 64 + depth x (64 x 256 + 98 x 128
+ 128 x 64) + 64 x 8) = 44.3 MFLOP per 1 s chunk for the authors' 6 blocks, times the chunks the
authors' padding makes per audio-second (a 5.001 s ESC-10 clip is 6 chunks); the power mel is
not counted. Columns: ``audio_s_per_s`` (wall clock) and ``audio_s_per_cpu_s`` (process CPU
time: robust to other processes' load on a shared machine), ``of_floor`` (wall throughput /
floor), ``speedup`` (ours / reference, wall; ``cpu_speedup`` on CPU time).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.common import emit, machine, matmul_flops
from bow.audio.features import PowerMel
from bow.audio.load import read_audio
from bow.audiomlp.embed import SCENE_STEPS, AudioMLPEmbedder
from bow.audiomlp.model import AudioMLPEncoder, load_checkpoint
from bow.data.datasets import load_dataset
from bow.kwmlp.embed import PAD_END, PAD_FRONT, n_timestamps
from bow.kwmlp.scene import scene_embedding

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SAMPLE_RATE = 16_000


def encoder_flops(encoder: AudioMLPEncoder) -> float:
    """Matmul FLOPs of the encoder on one 1 s chunk (98 frames)."""
    dim, n_mels = encoder.to_patch_embed[1].weight.shape
    block = encoder.layers[0].fn.fn
    ff, frames = block.proj_in[0].out_features, block.sgu.proj.in_channels
    per_frame = n_mels * dim + encoder.depth * (dim * ff + frames * ff // 2 + ff // 2 * dim) \
        + dim * encoder.embed_dim
    return 2.0 * frames * per_frame


def padded_chunks(n_samples: int) -> int:
    """1 s chunks the authors' padding makes of a clip (80 + 240 samples, whole seconds)."""
    return max(1, -(-(n_samples + PAD_FRONT + PAD_END) // SAMPLE_RATE))


class Reference:
    """The authors' procedure (module docstring) for a (b, samples) batch of equal-length clips:
    -> (b, T, 8) timestamp embeddings, (b, 1584) scene embeddings."""

    def __init__(self, encoder: AudioMLPEncoder, device: torch.device):
        self.encoder, self.device = encoder.eval().to(device), device
        self.mel = PowerMel().to(device)

    @torch.no_grad()
    def __call__(self, audio: torch.Tensor):
        b, samples = audio.shape
        n = n_timestamps(samples)
        x = F.pad(audio.to(self.device), (PAD_FRONT, PAD_END))
        x = F.pad(x, (0, -x.shape[1] % SAMPLE_RATE))          # whole seconds, at least one
        chunks = x.reshape(-1, SAMPLE_RATE)                     # (b k, 16000)
        frames = self.encoder(self.mel(chunks))                 # (b k, 98, 8)
        frames = F.pad(frames.transpose(1, 2), (1, 1), mode="replicate").transpose(1, 2)
        seq = frames.reshape(b, -1, frames.shape[-1])[:, 1:-1]  # (b, 100 k - 2, 8)
        return seq[:, :n].cpu(), scene_embedding(seq, "iterative", SCENE_STEPS).cpu()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device) -> tuple[object, float, float]:
    """(result, wall seconds, CPU seconds of this process) of one call."""
    _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=SHARED / "data" / "esc10")
    p.add_argument("--clips", type=int, default=400, help="clips of --data (repeated if needed)")
    p.add_argument("--checkpoint", type=Path, default=SHARED / "audiomlp" / "audiomae.pth")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-clips", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    clips = load_dataset(args.data).clips
    audios = [read_audio(clips[i % len(clips)].path) for i in range(args.clips)]
    seconds = sum(len(a) for a in audios) / SAMPLE_RATE
    n_chunks = sum(padded_chunks(len(a)) for a in audios)
    encoder, scaling = load_checkpoint(args.checkpoint)
    if scaling.kind != "power":
        p.error("the reference procedure is the authors': give a checkpoint with power input "
                "(the authors' audiomae.pth)")
    flops = encoder_flops(encoder) * n_chunks / seconds       # per audio-second
    reference = Reference(encoder, device)
    ours = AudioMLPEmbedder(encoder, scaling, device=device)
    by_length: dict[int, list[int]] = {}
    for i, a in enumerate(audios):
        by_length.setdefault(len(a), []).append(i)
    batches = [idx[j:j + args.batch_clips] for idx in by_length.values()
               for j in range(0, len(idx), args.batch_clips)]

    def run_reference():
        out = [None] * len(audios)
        for idx in batches:
            emb, scene = reference(torch.from_numpy(np.stack([audios[i] for i in idx])))
            for k, i in enumerate(idx):
                out[i] = (emb[k].numpy(), scene[k].numpy())
        return out

    def run_ours():
        out = []
        for j in range(0, len(audios), args.batch_clips):
            out += [(e.frames, e.scene) for e in ours.embed(audios[j:j + args.batch_clips])]
        return out

    floor_device = "cuda" if device.type == "cuda" else "cpu"
    before = matmul_flops(args.threads, floor_device)
    best = {"reference": (np.inf, np.inf), "ours": (np.inf, np.inf)}
    outputs = {}
    for _ in range(args.repeats):
        for name, fn in (("reference", run_reference), ("ours", run_ours)):
            outputs[name], wall, cpu = timed(fn, device)
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    after = matmul_flops(args.threads, floor_device)
    gflops = (before + after) / 2
    floor = gflops / flops
    diff = max(max(np.abs(a[0] - b[0]).max() / max(np.abs(b[0]).max(), 1e-12),
                   np.abs(a[1] - b[1]).max() / max(np.abs(b[1]).max(), 1e-12))
               for a, b in zip(outputs["ours"], outputs["reference"]))
    rows = []
    for name, (wall, cpu) in best.items():
        rows.append({"benchmark": "audiomlp_speed", "method": name, "device": str(device),
                     "threads": args.threads, "clips": len(audios), "audio_s": round(seconds, 1),
                     "chunks": n_chunks, "seconds": wall, "cpu_seconds": cpu,
                     "audio_s_per_s": seconds / wall, "audio_s_per_cpu_s": seconds / cpu,
                     "mflop_per_audio_s": flops / 1e6, "matmul_gflops": gflops / 1e9,
                     "floor_audio_s_per_s": floor, "of_floor": seconds / wall / floor})
    ref, our = best["reference"], best["ours"]
    rows[1].update(speedup=ref[0] / our[0], cpu_speedup=ref[1] / our[1],
                   max_rel_diff_vs_reference=float(diff))
    for row in rows:
        row.update(machine())
    emit(rows)


if __name__ == "__main__":
    main()
