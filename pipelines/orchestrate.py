"""Running several stages in order, as pipelines.run and pipelines.sweep do.

``Stages`` runs stages one after the other, timing each and noting whether it was up to date.
``bow_stages`` runs train_autoencoders, fit_codebooks and embed for each arm of the run (its
main encoder kind and the other kinds as controls); ``kwmlp_checkpoint`` gives the KW-MLP checkpoint
of a run: the one given, else our own pretraining on the training clips with their first label each
(keyword classification needs one: a labels.csv view of those clips, linking to the audio, is
written to ``kwmlp/keywords/``); ``audiomlp_checkpoint`` likewise gives the Audio-MLP checkpoint:
the one given, else our own pretraining on the run's training clips (no labels needed);
``opensmile_stage`` runs the openSMILE peer's embed stage when the run has it, else says in one
line why not; ``n_stages`` counts a run's stages; ``dataset_folder`` is ``--data`` or the
built-in dataset.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from bow.data.clips import holdout, labels_view
from bow.data.datasets import Dataset
from bow.data.synth import make_default_dataset
from bow.io.stage import InputError, read_fingerprint
from bow.io.store import store_fingerprint
from bow.peers import opensmile
from pipelines import (
    embed,
    embed_opensmile,
    fit_codebooks,
    layout,
    pretrain_audiomlp,
    pretrain_kwmlp,
    train_autoencoders,
)
from pipelines.run_config import RunConfig


@dataclass
class Context:
    """What a run or sweep works on: the data, where outputs go, the config, how to compute."""
    data: Path
    artifacts: Path
    config: RunConfig
    dataset: Dataset
    device: str
    progress: bool
    log: object


class Stages:
    """Runs the stages in order, timing each and noting whether it was up to date."""

    def __init__(self, total: int, log, label: str = ""):
        self.total, self.log, self.label, self.done = total, log, label, []

    def __call__(self, name: str, what: str, work, fingerprint):
        """Run ``work()`` as stage ``name``; ``fingerprint()`` of its output before and after
        tells whether it was up to date. Returns what ``work`` returned."""
        self.log(f"{self.label}[{len(self.done) + 1}/{self.total}] {name}: {what}")
        before, start = fingerprint(), time.perf_counter()
        out = work()
        seconds = time.perf_counter() - start
        status = "up to date" if before is not None and fingerprint() == before else "done"
        self.done.append({"stage": name, "what": what, "status": status,
                          "seconds": round(seconds, 2), "output": str(out)})
        self.log(f"      {'up to date, skipped' if status == 'up to date' else 'done'} "
                 f"({seconds:.1f} s) -> {out}")
        return out


def dataset_folder(data: Path | None, artifacts: Path) -> Path:
    """``data``, or the built-in dataset under ``artifacts`` (generated on first use)."""
    return Path(data) if data is not None else make_default_dataset(layout.default_data(artifacts))


ARMS = {"trained": "trained autoencoders", "random": "random-encoder control",
        "pca": "PCA encoders"}


def bow_stages(stages: Stages, data: Path, artifacts: Path, config: RunConfig, device: str,
               progress: bool, encoders=None) -> dict[str, Path]:
    """train_autoencoders, fit_codebooks and embed for each encoder kind (default: the run's
    arms) -> {kind: store}."""
    out = {}
    encoders = encoders or config.encoders
    for kind in encoders:
        cfg = config.stage("train_autoencoders", encoder=kind)
        detail = f"hidden {cfg.hidden}" if kind != "pca" else f"F = {cfg.factor}"
        stages("train_autoencoders", f"{ARMS[kind]} ({cfg.tokens} tokens, {detail})",
               lambda: train_autoencoders.run(data, artifacts, cfg, device, progress),
               lambda: read_fingerprint(layout.autoencoders(artifacts, kind)))
    for kind in encoders:
        cfg = config.stage("fit_codebooks", encoder=kind)
        stages("fit_codebooks", f"D = {cfg.n_codes} over the {kind} encoders",
               lambda: fit_codebooks.run(data, artifacts, cfg, device, progress),
               lambda: read_fingerprint(layout.codebooks(artifacts, kind)))
    for kind in encoders:
        cfg = config.stage("embed", encoder=kind)
        out[kind] = stages("embed", f"bag of words ({kind} encoders, {cfg.assignment} "
                                    "assignment), every clip",
                           lambda: embed.run(data, artifacts, cfg, device, progress),
                           lambda: store_fingerprint(layout.bow_store(artifacts, kind)))
    return out


def keyword_view(dataset, artifacts: Path, config: RunConfig) -> tuple[Path, dict]:
    """The labels.csv data set of the training clips with their first label, for KW-MLP
    pretraining: split train, and val (the val splits, or a seeded 10% of the training clips
    when those are empty); clips without a label are left out."""
    splits = config.evaluate
    train = [c for c in dataset.select(splits.train_splits) if c.labels]
    val = [c for c in dataset.select(splits.val_splits) if c.labels]
    if not train:
        raise InputError(f"{dataset.root}: no clips in the training split(s) "
                         f"{list(splits.train_splits)} to pretrain KW-MLP on")
    if not val:
        train, val = holdout(train, 0.1, config.pretrain_kwmlp.seed)
    folder = labels_view({"train": train, "val": val}, layout.keywords(artifacts))
    info = {"train": len(train), "val": len(val),
            "multi_label": sum(len(c.labels) > 1 for c in train + val),
            "classes": len({c.labels[0] for c in train + val})}
    return folder, info


def kwmlp_checkpoint(stages: Stages, artifacts: Path, config: RunConfig, device: str,
                     progress: bool, dataset, log) -> Path:
    """The KW-MLP checkpoint: the one given, else our own pretraining (done or skipped here)."""
    if config.kwmlp_checkpoint is not None:
        return Path(config.kwmlp_checkpoint)
    view, info = keyword_view(dataset, artifacts, config)
    cfg = config.stage("pretrain_kwmlp", train_splits=("train",), val_splits=("val",),
                       test_splits=())
    log(f"no --kwmlp-checkpoint: our own KW-MLP, pretrained ({config.preset} preset: "
        f"{cfg.epochs} epochs, depth {cfg.depth}) on {info['train']} training clips and "
        f"{info['val']} for validation, each with its first label ({info['classes']} "
        f"classes; {info['multi_label']} clips have more than one label)")
    return stages("pretrain_kwmlp", "our own KW-MLP on the training clips' first labels",
                  lambda: pretrain_kwmlp.run(view, artifacts, cfg, device, progress),
                  lambda: read_fingerprint(layout.kwmlp(artifacts)))


def audiomlp_checkpoint(stages: Stages, data: Path, artifacts: Path, config: RunConfig,
                        device: str, progress: bool, log) -> Path:
    """The Audio-MLP checkpoint: the one given, else our own pretraining on the run's training
    clips (labels unused; done or skipped here)."""
    if config.audiomlp_checkpoint is not None:
        return Path(config.audiomlp_checkpoint)
    cfg = config.stage("pretrain_audiomlp", train_splits=config.evaluate.train_splits)
    r = cfg.resolved()
    log(f"no --audiomlp-checkpoint: our own Audio-MLP, pretrained ({config.preset} preset: "
        f"{r.epochs} epochs, recipe {r.recipe}: {r.input_scaling} input, {r.loss} loss) on the "
        f"clips of the training split(s) {list(cfg.train_splits)}, labels unused")
    return stages("pretrain_audiomlp", "our own Audio-MLP autoencoder on the training clips",
                  lambda: pretrain_audiomlp.run(data, artifacts, cfg, device, progress),
                  lambda: read_fingerprint(layout.audiomlp(artifacts)))


def opensmile_stage(stages: Stages, data: Path, artifacts: Path, config: RunConfig, device: str,
                    progress: bool, log) -> Path | None:
    """The openSMILE peer's store (pipelines.embed_opensmile, done or skipped here) when the run
    has the peer (``config.opensmile``); else None, after one line saying why it is left out."""
    if not config.opensmile:
        why = "--no-opensmile" if opensmile.available() else opensmile.MISSING
        log(f"openSMILE peer skipped: {why}")
        return None
    return stages("embed_opensmile", f"openSMILE {opensmile.FEATURE_SET} functionals of every "
                  "clip and 1 s chunk (the classic peer)",
                  lambda: embed_opensmile.run(data, artifacts, config.embed_opensmile, device,
                                              progress),
                  lambda: store_fingerprint(layout.opensmile_store(artifacts)))


def n_stages(config: RunConfig) -> int:
    """The stages pipelines.run counts: train_autoencoders, fit_codebooks and embed per arm;
    pretrain_kwmlp (without a checkpoint), embed_kwmlp, pretrain_audiomlp (likewise),
    embed_audiomlp; embed_opensmile when the run has the peer; evaluate; one per sweep."""
    models = (2 if config.kwmlp_checkpoint is None else 1) + \
        (2 if config.audiomlp_checkpoint is None else 1)
    return 3 * len(config.encoders) + models + int(config.opensmile) + 1 + len(config.sweeps)
