"""Where every artifact lives under ``--artifacts``: the one place that knows the folder names.

    <artifacts>/
      autoencoders[-<kind>]/{family}.pt ...   train_autoencoders (kind: the control, e.g. random)
      codebooks[-<kind>]/{family}.npz ...     fit_codebooks
      stores/bow[-<kind>].h5, kwmlp.h5,       embed, embed_kwmlp, embed_audiomlp,
        audiomlp.h5, opensmile.h5             embed_opensmile (+ .<name>.lock/ folders)
      kwmlp/best.pth, best.json, last.pt      pretrain_kwmlp; kwmlp/keywords/ its data view
      audiomlp/best.pth, best.json, last.pt   pretrain_audiomlp; audiomlp/powermel-*.npy its
                                              cache of the chunks' power mel
      heads/<name>/                           train_heads
      bundles/bow[-<kind>].npz                export_bundle
      reports/<run>/                          evaluate, run
      sweeps/<sweep>/                         sweep
      data/default/                           the built-in dataset (run without --data)

The bag-of-words model of the default encoder kind (bow.bagofwords.training.DEFAULT_ENCODER)
has the plain names; the other kinds (``--encoder trained|random|pca``) add their kind as a
suffix, so the model and its controls live side by side.

The HEAR evaluation kit's folders are given with ``--out`` instead:

    <task>/ (export_hear_task)              task_metadata.json, labelvocabulary.csv, <split>.json,
                                            16000/<split>/*.wav, export.json, fingerprint.json
    <out>/ (hear_eval)                      embeddings/<name>/<module>/<task>/ (the kit's),
                                            logs/<name>.<task>.<runner>.log, scores.csv, scores.md
"""
from __future__ import annotations

from pathlib import Path

from bow.bagofwords.training import DEFAULT_ENCODER


def _named(base: str, kind: str) -> str:
    return base if kind == DEFAULT_ENCODER else f"{base}-{kind}"


def bow_name(kind: str = DEFAULT_ENCODER) -> str:
    """The feature-set name of the bag-of-words store of ``kind``: bow, bow-trained..."""
    return _named("bow", kind)


def autoencoders(artifacts: Path, kind: str = DEFAULT_ENCODER) -> Path:
    """The folder of the bag-of-words autoencoders of ``kind`` (trained, random...)."""
    return Path(artifacts) / _named("autoencoders", kind)


def codebooks(artifacts: Path, kind: str = DEFAULT_ENCODER) -> Path:
    """The folder of the codebooks over the ``kind`` autoencoders."""
    return Path(artifacts) / _named("codebooks", kind)


def stores(artifacts: Path) -> Path:
    """The folder of the feature stores."""
    return Path(artifacts) / "stores"


def bow_store(artifacts: Path, kind: str = DEFAULT_ENCODER) -> Path:
    """The bag-of-words store of the ``kind`` model."""
    return stores(artifacts) / f"{_named('bow', kind)}.h5"


def kwmlp_store(artifacts: Path) -> Path:
    return stores(artifacts) / "kwmlp.h5"


def kwmlp(artifacts: Path) -> Path:
    """The folder of our own KW-MLP pretraining (best.pth, best.json, last.pt, curves.png)."""
    return Path(artifacts) / "kwmlp"


def kwmlp_best(artifacts: Path) -> Path:
    return kwmlp(artifacts) / "best.pth"


def audiomlp_store(artifacts: Path) -> Path:
    return stores(artifacts) / "audiomlp.h5"


def opensmile_store(artifacts: Path) -> Path:
    """The openSMILE peer's store (pipelines.embed_opensmile)."""
    return stores(artifacts) / "opensmile.h5"


def audiomlp(artifacts: Path) -> Path:
    """The folder of our own Audio-MLP pretraining (best.pth, best.json, last.pt, curves.png,
    the power-mel cache)."""
    return Path(artifacts) / "audiomlp"


def audiomlp_best(artifacts: Path) -> Path:
    return audiomlp(artifacts) / "best.pth"


def audiomlp_cache(artifacts: Path, clips_digest: str) -> Path:
    """pretrain_audiomlp's power mel of the chunks of a clip list (its digest)."""
    return audiomlp(artifacts) / f"powermel-{clips_digest[:16]}.npy"


def keywords(artifacts: Path) -> Path:
    """The labels.csv view of the training clips (first labels) that KW-MLP pretrains on."""
    return kwmlp(artifacts) / "keywords"


def head(artifacts: Path, name: str) -> Path:
    return Path(artifacts) / "heads" / name


def bundle(artifacts: Path, kind: str = DEFAULT_ENCODER) -> Path:
    """The single-file bag-of-words model of ``kind`` for bow.hear.bow."""
    return Path(artifacts) / "bundles" / f"{_named('bow', kind)}.npz"


def report(artifacts: Path, run: str = "default") -> Path:
    """The folder of the report of run ``run``."""
    return Path(artifacts) / "reports" / run


def sweep(artifacts: Path, name: str) -> Path:
    return Path(artifacts) / "sweeps" / name


def sweep_plot(artifacts: Path, name: str) -> Path:
    return sweep(artifacts, name) / f"{name}.png"


def default_data(artifacts: Path) -> Path:
    """Where the built-in dataset is generated when no --data is given."""
    return Path(artifacts) / "data" / "default"


# HEAR evaluation kit: folders given with --out, outside --artifacts
def hear_task_summary(task: Path) -> Path:
    """export_hear_task's summary in the task folder (source, counts, skipped clips)."""
    return Path(task) / "export.json"


def hear_task_started(task: Path) -> Path:
    """The fingerprint of an export in progress (its audio files may be reused on resume)."""
    return Path(task) / ".export-started.json"


def hear_embeddings(out: Path, name: str | None = None) -> Path:
    """hear_eval's embeddings of every model (``name``: of one model; the kit adds
    ``<module>/<task>/`` below it)."""
    root = Path(out) / "embeddings"
    return root / name if name else root


def hear_log(out: Path, name: str, task: str, runner: str) -> Path:
    """The output of one kit runner (``embeddings`` or ``predictions``) for a model and task."""
    return Path(out) / "logs" / f"{name}.{task}.{runner}.log"


def hear_scores(out: Path) -> tuple[Path, Path]:
    """hear_eval's tables of every model and task in ``out``: scores.csv and scores.md."""
    return Path(out) / "scores.csv", Path(out) / "scores.md"
