"""Stage 2 of the bag-of-words model: one k-means codebook per token family.

    python -m pipelines.fit_codebooks --data DIR [--artifacts artifacts] [--n-codes 256]

Encodes the grid tokens of every training chunk with the stage-1 autoencoders
(``autoencoders/`` or ``autoencoders-random/``, picked by ``--encoder``) and fits
``bow.bagofwords.codebook.Codebook`` (FAISS k-means, on the GPU when faiss sees one and ``--device`` is
auto or cuda) on each family's codes. Writes ``<artifacts>/codebooks/<family>.npz`` (centroids),
``<family>.json`` (parameters, per-iteration objective, cluster sizes, empty clusters,
imbalance), ``summary.json``, ``config.json`` and ``fingerprint.json`` (``codebooks-random/``
for the random encoders). Redone when the autoencoders, the clips or the options change.

Unreadable training clips and rows of the labels file that are not clips are skipped, listed in
summary.json and printed (``--strict``: exit status 3 if any). The stage holds a shared lock on
the autoencoder folder while it reads it (so train_autoencoders cannot rewrite it meanwhile)
and an exclusive one on its own. Same seed, config and clips: the same ``.npz`` bytes on CPU;
the ``<family>.json`` statistics also hold FAISS's per-iteration wall-clock times (``time``,
``time_search``), the only values that differ between two runs.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from bow.bagofwords.autoencoder import Autoencoder
from bow.bagofwords.model import family_codes
from bow.bagofwords.codebook import CODEBOOK_SIZES, INITS, Codebook, CodebookError, faiss_gpus
from bow.data.clips import clips_fingerprint, logmel_clips, subset
from bow.data.datasets import load_dataset
from bow.runtime import resolve_device
from bow.io.stage import (clear_done, is_done, locked, mark_done, read_fingerprint, read_json,
                       stage_fingerprint, write_json)
from bow.bagofwords.tokens import FAMILIES
from pipelines import train_autoencoders
from pipelines.cli import (add_config_args, add_strict_option, clean_errors, common_parser,
                           config_from_args, report_skipped)


@dataclass(frozen=True)
class FitCodebooksConfig:
    """k-means codebooks. Paper: D in {16, 64, 256, 1024}, best 256. Not in the paper: k-means++
    initialisation, 100 iterations, 3 restarts (FAISS's defaults, random / 25 / 1, ended 2-6%
    above scikit-learn's objective on real codes; see bow/bagofwords/codebook.py), at most 256 training
    points per centroid (FAISS's default subsample)."""
    encoder: str = field(default="trained", metadata={"help": "which autoencoders to use: "
                         "trained or random"})
    n_codes: int = field(default=256, metadata={"help": "codebook size D (16, 64, 256, 1024)"})
    niter: int = field(default=100, metadata={"help": "k-means iterations"})
    nredo: int = field(default=3, metadata={"help": "k-means restarts (the best is kept)"})
    init: str = field(default="kmeans++", metadata={"help": "k-means initialisation: kmeans++ "
                      "or random"})
    max_points_per_centroid: int = field(default=256, metadata={"help": "FAISS trains on at "
                                         "most D times this many points (seeded subsample)"})
    max_clips: int | None = field(default=None, metadata={"help": "fit on a seeded subset of "
                                  "at most this many training clips (none: all)"})
    train_splits: tuple[str, ...] = field(default=("train",), metadata={"help": "splits to "
                                          "fit on (FSD50K: train; labels.csv: e.g. 1,2,3,4)"})
    seed: int = field(default=0, metadata={"help": "k-means seed"})

    def __post_init__(self):
        if self.encoder not in train_autoencoders.ENCODERS:
            raise ValueError(f"encoder must be one of {train_autoencoders.ENCODERS}, "
                             f"got {self.encoder!r}")
        if self.n_codes not in CODEBOOK_SIZES:
            raise ValueError(f"n_codes must be one of {CODEBOOK_SIZES}, got {self.n_codes}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")


def output_dir(artifacts: Path, encoder: str) -> Path:
    """Where the codebooks over the ``encoder`` (trained | random) autoencoders live."""
    return Path(artifacts) / ("codebooks" if encoder == "trained" else f"codebooks-{encoder}")


def faiss_gpu(device: str) -> bool:
    """--device -> whether k-means runs on the GPU: cpu never, else when faiss sees one."""
    return device != "cpu" and faiss_gpus() > 0


def run(data: Path, artifacts: Path, config: FitCodebooksConfig = FitCodebooksConfig(),
        device: str = "auto", progress: bool = True) -> Path:
    """Fit the four codebooks; return their folder. Skips itself when nothing changed."""
    ae_dir = train_autoencoders.output_dir(artifacts, config.encoder)
    out = output_dir(artifacts, config.encoder)
    with contextlib.ExitStack() as locks:
        if ae_dir.is_dir():
            locks.enter_context(locked(ae_dir, "fit_codebooks", shared=True))
        ae_fingerprint = read_fingerprint(ae_dir)
        if ae_fingerprint is None:
            raise SystemExit(f"{ae_dir}: no finished autoencoders; run python -m "
                             f"pipelines.train_autoencoders --encoder {config.encoder} first")
        locks.enter_context(locked(out, "fit_codebooks"))
        return _fit(data, ae_dir, ae_fingerprint, out, config, device, progress)


def _fit(data, ae_dir, ae_fingerprint, out, config, device, progress) -> Path:
    """The work of ``run``, with the locks held."""
    dataset = load_dataset(data)
    train = subset(train_autoencoders.training_clips(dataset, config.train_splits),
                   config.max_clips, config.seed)
    inputs = {"autoencoders": ae_fingerprint, "clips": clips_fingerprint(train)}
    fingerprint = stage_fingerprint(config, inputs)
    if is_done(out, fingerprint):
        return out
    clear_done(out)
    dev = resolve_device(device)
    logmel, _, skipped = logmel_clips(train, dev, progress=progress, desc="log-mel train")
    summary = {"clips": len(train) - len(skipped), "chunks": int(logmel.shape[0]),
               "skipped": skipped, "invalid": dataset.invalid, "families": {}}
    for family in FAMILIES:
        codes = family_codes(Autoencoder.load(ae_dir / f"{family}.pt", dev), logmel, family)
        book = Codebook(config.n_codes, seed=config.seed, niter=config.niter,
                        nredo=config.nredo,
                        max_points_per_centroid=config.max_points_per_centroid,
                        init=config.init, gpu=faiss_gpu(device))
        try:
            book.fit(codes.cpu().numpy())
        except CodebookError as e:
            raise SystemExit(f"{family} codebook: {e}") from e
        book.save(out / f"{family}.npz")
        summary["families"][family] = {k: v for k, v in book.stats_.items() if k != "sizes"}
    write_json(out / "summary.json", summary)
    mark_done(out, fingerprint, config, inputs)
    return out


def main(argv=None) -> None:
    parser = common_parser("Fit the bag-of-words k-means codebooks (one per token family).")
    add_strict_option(parser)
    add_config_args(parser, FitCodebooksConfig)
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(FitCodebooksConfig, args)
    except ValueError as e:
        parser.error(str(e))
    with clean_errors("fit_codebooks"):
        before = read_fingerprint(output_dir(args.artifacts, cfg.encoder))
        out = run(args.data, args.artifacts, cfg, device=args.device)
        if before is not None and read_fingerprint(out) == before:
            print(f"{out}: up to date (same config and inputs), skipped")
        summary = read_json(out / "summary.json", "codebook summary")
    print(f"codebooks (D = {cfg.n_codes}, {cfg.encoder} encoders) in {out}: "
          f"{summary['clips']} clips, {summary['chunks']} chunks, "
          f"{len(summary['skipped'])} unreadable")
    for family in FAMILIES:
        s = summary["families"][family]
        note = f", {s['points_per_centroid']:.0f} points per centroid" if s["few_points"] else ""
        print(f"  {family:18s} {s['n_points']} points, mean sq. distance "
              f"{s['mean_squared_distance']:.4g}, {s['empty']} empty, imbalance "
              f"{s['imbalance']:.2f} ({s['device']}){note}")
    report_skipped("fit_codebooks", summary["skipped"] + summary.get("invalid", []),
                   f"'skipped' and 'invalid' in {out / 'summary.json'}", args.strict)


if __name__ == "__main__":
    main()
