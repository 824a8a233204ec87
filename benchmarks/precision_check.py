"""Accuracy of reduced precision: TF32 and bf16 (CUDA) or bf16 (CPU) against fp32.

    python -m benchmarks.precision_check [--data ../shared/data/esc10] [--clips 40]
                                         [--checkpoint ../shared/kwmlp/kwmlp.pth]

On the first ``--clips`` clips of ``--data``, for each of tf32 and bf16 (bow.runtime) against
fp32 on the same GPU, or bf16 against fp32 on the CPU where there is no GPU:
* bag of words (the paper-sized random encoders of benchmarks.embed_speed, or ``--artifacts``
  with ``--encoder``): per family the relative error of the bottleneck codes
  (max |code - fp32 code| / max |fp32 code|) and the fraction of tokens whose code id (nearest
  centroid) is unchanged; per chunk the L1 distance between count vectors and the fraction of
  chunks whose whole count vector is unchanged;
* KW-MLP (the authors' checkpoint): relative error of the timestamp embeddings, the scene
  embeddings and the chunk vectors.
One JSON line per precision and model, then a table. tests/system/test_scale.py runs the same
functions on small models when CUDA is present.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import emit, machine
from benchmarks.embed_speed import SHARED, clip_subset, link_models, random_bow
from bow.audio.features import LogMel
from bow.audio.load import chunk, read_audio
from bow.bagofwords.model import BagOfWords, family_codes
from bow.bagofwords.tokens import COUNTS, FAMILIES
from bow.kwmlp.embed import KWMLPEmbedder
from bow.kwmlp.model import KWMLP
from bow.runtime import compare_codes, compare_embeddings, encoder_precision


def bow_drift(bag: BagOfWords, audios: list[np.ndarray], precision: str) -> dict:
    """Codes, code ids and counts at ``precision`` vs fp32 on the bag's device."""
    device = bag.encoders[FAMILIES[0]].device
    front = LogMel().to(device)
    with torch.inference_mode():
        x = torch.from_numpy(np.concatenate([chunk(a) for a in audios])).to(device)
        logmel = torch.cat([front(x[i:i + 64]) for i in range(0, len(x), 64)])
        out = {}
        for p in ("fp32", precision):
            with encoder_precision(p, device):
                out[p] = {f: family_codes(bag.encoders[f], logmel, f).float().cpu().numpy()
                          for f in FAMILIES}
    ids = {p: {f: bag.codebooks[f].assign(c[f]).reshape(len(logmel), COUNTS[f])
               for f in FAMILIES} for p, c in out.items()}
    counts = {p: np.concatenate([np.stack([np.bincount(row, minlength=bag.n_codes)
                                           for row in i[f]]) for f in FAMILIES], axis=1)
              for p, i in ids.items()}                      # (n, 4 D) hard counts
    return {**compare_embeddings(out[precision], out["fp32"]),
            **compare_codes(ids[precision], ids["fp32"], counts[precision], counts["fp32"])}


def kwmlp_drift(model: KWMLP, audios: list[np.ndarray], precision: str,
                device: str = "cuda") -> dict:
    """Timestamp, scene and chunk embeddings at ``precision`` vs fp32 on ``device``."""
    out = {}
    for p in ("fp32", precision):
        e = KWMLPEmbedder(model, device=device, precision=p, batch_chunks=256)
        clips = e.embed(audios)
        out[p] = {"frames": np.concatenate([c.frames for c in clips]),
                  "scene": np.stack([c.scene for c in clips]),
                  "chunks": np.concatenate([e.chunk_vectors(c.frames, c.timestamps, len(a))
                                            for c, a in zip(clips, audios)])}
    return compare_embeddings(out[precision], out["fp32"])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=SHARED / "data" / "esc10")
    p.add_argument("--clips", type=int, default=40)
    p.add_argument("--artifacts", type=Path, default=None)
    p.add_argument("--encoder", default="random")
    p.add_argument("--checkpoint", type=Path, default=SHARED / "kwmlp" / "kwmlp.pth")
    p.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    args = p.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precisions = ("tf32", "bf16") if device == "cuda" else ("bf16",)
    torch.set_num_threads(args.threads)
    from bow.data.datasets import load_dataset
    from bow.kwmlp.model import load_checkpoint
    from pipelines import layout
    with tempfile.TemporaryDirectory(prefix="precision_check_") as tmp:
        data = clip_subset(args.data, args.clips, Path(tmp) / "data")
        art = Path(tmp) / "artifacts"
        if args.artifacts is None:
            random_bow(data, art)
        else:
            link_models(args.artifacts, art, args.encoder)
        audios = [read_audio(c.path) for c in load_dataset(data).clips]
        bag = BagOfWords.load(layout.autoencoders(art, args.encoder),
                              layout.codebooks(art, args.encoder), device)
        model = load_checkpoint(args.checkpoint)
        rows = []
        for precision in precisions:
            rows.append({"benchmark": "precision_check", "model": "bow", "precision": precision,
                         "clips": len(audios), **bow_drift(bag, audios, precision), **machine()})
            rows.append({"benchmark": "precision_check", "model": "kwmlp",
                         "precision": precision, "clips": len(audios),
                         **kwmlp_drift(model, audios, precision, device), **machine()})
    emit(rows)


if __name__ == "__main__":
    main()
