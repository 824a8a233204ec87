"""Stage: the bag-of-words model's artifacts -> one bundle file for the HEAR API (bow.hear.bow).

    python -m pipelines.export_bundle [--artifacts artifacts] [--encoder trained|random]
                                      [--normalise none|sqrt|log1p]

Reads the stage-1 autoencoders (``autoencoders/``) and stage-2 codebooks (``codebooks/``; the
``-random`` folders for ``--encoder random``) and writes ``<artifacts>/bundles/bow.npz``
(``bow-random.npz``): encoders, token standardisation, codebooks and a JSON config holding the
upstream stages' configs and fingerprints (format: bow/bagofwords/bundle.py). ``--normalise`` is the count
normalisation of the HEAR outputs; the default, none, keeps the scene embedding equal to the
store's clip vector. Needs no data (``--data`` is not used). Skipped when the bundle exists
with the same fingerprint (same autoencoders, codebooks and options).
"""
from __future__ import annotations

import contextlib

import json
from dataclasses import dataclass, field
from pathlib import Path

from bow.bagofwords import bundle
from bow.bagofwords.model import NORMALISATIONS, BagOfWords
from bow.io.stage import locked, read_fingerprint, stage_fingerprint
from pipelines import fit_codebooks, train_autoencoders
from pipelines.cli import add_config_args, clean_errors, common_parser, config_from_args


@dataclass(frozen=True)
class ExportBundleConfig:
    """Which bag-of-words model to bundle, and how its HEAR outputs are normalised."""
    encoder: str = field(default="trained", metadata={"help": "which autoencoders and codebooks "
                         "to bundle: trained or random"})
    normalise: str = field(default="none", metadata={"help": "count normalisation of the HEAR "
                           "embeddings: none (the store's vectors), sqrt or log1p"})

    def __post_init__(self):
        if self.encoder not in train_autoencoders.ENCODERS:
            raise ValueError(f"encoder must be one of {train_autoencoders.ENCODERS}, "
                             f"got {self.encoder!r}")
        if self.normalise not in NORMALISATIONS:
            raise ValueError(f"normalise must be one of {NORMALISATIONS}, "
                             f"got {self.normalise!r}")


def bundle_path(artifacts: Path, encoder: str) -> Path:
    """The bundle of the ``encoder`` (trained | random) model."""
    name = "bow.npz" if encoder == "trained" else f"bow-{encoder}.npz"
    return Path(artifacts) / "bundles" / name


def run(data: Path | None, artifacts: Path, config: ExportBundleConfig = ExportBundleConfig(),
        device: str = "auto", progress: bool = True) -> Path:
    """Write the bundle (``data``, ``device`` and ``progress`` are not used); return its path."""
    ae_dir = train_autoencoders.output_dir(artifacts, config.encoder)
    cb_dir = fit_codebooks.output_dir(artifacts, config.encoder)
    out = bundle_path(artifacts, config.encoder)
    with contextlib.ExitStack() as locks:
        for name, d in (("train_autoencoders", ae_dir), ("fit_codebooks", cb_dir)):
            if d.is_dir():  # shared: a retraining stage cannot change them while we read
                locks.enter_context(locked(d, "export_bundle", shared=True))
            if read_fingerprint(d) is None:
                raise SystemExit(f"{d}: not finished; run python -m pipelines.{name} "
                                 f"--encoder {config.encoder} first")
        inputs = {"autoencoders": read_fingerprint(ae_dir), "codebooks": read_fingerprint(cb_dir)}
        fingerprint = stage_fingerprint(config, inputs)
        locks.enter_context(locked(out.parent, "export_bundle"))
        if bundle.read_fingerprint(out) == fingerprint:
            return out
        meta = {"fingerprint": fingerprint, "upstream": inputs, "export_bundle": config,
                "train_autoencoders": json.loads((ae_dir / "config.json").read_text()),
                "fit_codebooks": json.loads((cb_dir / "config.json").read_text())}
        bundle.write(out, BagOfWords.load(ae_dir, cb_dir), normalise=config.normalise, meta=meta)
    return out


def main(argv=None) -> None:
    parser = common_parser("Bundle the bag-of-words model (encoders, codebooks, config) into "
                           "one file for bow.hear.bow.", data_required=False,
                           data_help="not used (the bundle is made from the artifacts)")
    add_config_args(parser, ExportBundleConfig)
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(ExportBundleConfig, args)
    except ValueError as e:
        parser.error(str(e))
    path = bundle_path(args.artifacts, cfg.encoder)
    with clean_errors("export_bundle"):
        before = bundle.read_fingerprint(path)
        run(args.data, args.artifacts, cfg, device=args.device)
        if before is not None and bundle.read_fingerprint(path) == before:
            print(f"{path}: up to date (same artifacts and options), skipped")
        b = bundle.read(path)
    n_params = sum(a.size for a in b.arrays.values())
    print(f"{path}: {path.stat().st_size / 1e6:.1f} MB, D = {b.n_codes}, {n_params:,} numbers, "
          f"embeddings of {4 * b.n_codes} counts, normalise {b.normalise}")
    print(f"  use it with: hear-validator bow.hear.bow --model {path}")


if __name__ == "__main__":
    main()
