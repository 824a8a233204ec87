"""Stage: the bag-of-words model's artifacts -> one bundle file for the HEAR API (bow.hear.bow).

    python -m pipelines.export_bundle [--artifacts artifacts] [--encoder trained|random]
                                      [--normalise none|sqrt|log1p]

Reads the stage-1 autoencoders (``autoencoders/``) and stage-2 codebooks (``codebooks/``; the
``-random`` folders for ``--encoder random``) and writes ``<artifacts>/bundles/bow.npz``
(``bow-random.npz``): encoders, token standardisation, codebooks and a JSON config holding the
upstream stages' configs and fingerprints (format: bow/bagofwords/bundle.py). ``--normalise`` is the
count normalisation of the HEAR outputs; the default, none, keeps the scene embedding equal to the
store's clip vector. Needs no data (``--data`` is not used). Skipped when the bundle exists
with the same fingerprint (same autoencoders, codebooks and options).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from bow.bagofwords import bundle
from bow.bagofwords.model import NORMALISATIONS, BagOfWords
from bow.bagofwords.training import DEFAULT_ENCODER, ENCODERS
from bow.config import choose, option
from bow.io.stage import InputError, locked, read_fingerprint, read_json, stage_fingerprint
from pipelines import cli, layout


@dataclass(frozen=True)
class ExportBundleConfig:
    """Which bag-of-words model to bundle, and how its HEAR outputs are normalised."""
    encoder: str = option(DEFAULT_ENCODER, "which encoders and codebooks to bundle: trained, "
                          "random or pca")
    normalise: str = option("sqrt", "count normalisation of the HEAR embeddings (the kit does "
                            "not normalise its inputs): sqrt (measured better, see README), none "
                            "(the store's vectors) or log1p")

    def __post_init__(self):
        choose("encoder", self.encoder, ENCODERS)
        choose("normalise", self.normalise, NORMALISATIONS)


def run(data: Path | None, artifacts: Path, config: ExportBundleConfig = ExportBundleConfig(),
        device: str = "auto", progress: bool = True) -> Path:
    """Write the bundle (``data``, ``device`` and ``progress`` are not used); return its path."""
    ae_dir = layout.autoencoders(artifacts, config.encoder)
    cb_dir = layout.codebooks(artifacts, config.encoder)
    out = layout.bundle(artifacts, config.encoder)
    with contextlib.ExitStack() as locks:
        for name, d in (("train_autoencoders", ae_dir), ("fit_codebooks", cb_dir)):
            if d.is_dir():  # shared: a retraining stage cannot change them while we read
                locks.enter_context(locked(d, "export_bundle", shared=True))
            if read_fingerprint(d) is None:
                raise InputError(f"{d}: not finished; run python -m pipelines.{name} "
                                 f"--encoder {config.encoder} first")
        inputs = {"autoencoders": read_fingerprint(ae_dir), "codebooks": read_fingerprint(cb_dir)}
        fingerprint = stage_fingerprint(config, inputs)
        locks.enter_context(locked(out.parent, "export_bundle"))
        if bundle.bundle_fingerprint(out) == fingerprint:
            return out
        meta = {"fingerprint": fingerprint, "upstream": inputs, "export_bundle": config,
                "train_autoencoders": read_json(ae_dir / "config.json", "stage config"),
                "fit_codebooks": read_json(cb_dir / "config.json", "stage config")}
        bundle.write(out, BagOfWords.load(ae_dir, cb_dir), normalise=config.normalise, meta=meta)
    return out


def _work(args, cfg: ExportBundleConfig):
    path = layout.bundle(args.artifacts, cfg.encoder)
    before = bundle.bundle_fingerprint(path)
    run(args.data, args.artifacts, cfg, args.device)
    cli.say_if_unchanged(before, bundle.bundle_fingerprint(path), path, "artifacts and options")
    b = bundle.read(path)
    n_params = sum(a.size for a in b.arrays.values())
    print(f"{path}: {path.stat().st_size / 1e6:.1f} MB, D = {b.n_codes}, {n_params:,} numbers, "
          f"embeddings of {b.width} counts, normalise {b.normalise}")
    print(f"  use it with: hear-validator bow.hear.bow --model {path}")


def main(argv=None) -> None:
    cli.stage_main(argv, "export_bundle", "Bundle the bag-of-words model (encoders, codebooks, "
                   "config) into one file for bow.hear.bow.", ExportBundleConfig, _work,
                   strict=False, data_required=False,
                   data_help="not used (the bundle is made from the artifacts)")


if __name__ == "__main__":
    main()
