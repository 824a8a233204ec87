"""pipelines.run's configuration: every stage's config, presets, TOML tables, options.

Arms: a run fits the bag of words with its main encoder kind (``encoder``) and, as controls,
with the other kinds (bow.bagofwords.training.ENCODERS: trained, random, pca), all with the
same tokens, codebooks and assignment; the report compares them (stores bow[-kind].h5,
pipelines.layout).

Presets: ``default`` is every stage's defaults: the bag of words that measured best on real
data (README, Results), main encoder ``DEFAULT_ENCODER``. ``paper`` is Verma's configuration:
trained autoencoders of raw tokens, hard assignment, the other settings the stages' defaults
(the papers' values). ``quick`` is ``default`` with shrunk budgets (``PRESETS``): autoencoders
with 512 hidden units trained 2 epochs of 100 steps, codebooks of D = 64 with 25 k-means
iterations and one restart, KW-MLP pretraining of 30 epochs (batch 64, 3 warm-up epochs),
Audio-MLP pretraining of 4 epochs (its recipe unchanged; 26 s of the built-in run), heads at most
60 epochs; and it adds two small sweeps (``SWEEPS``). ``auto`` (the command line's
default) is ``quick`` on the built-in dataset and ``default`` on data given with --data. Measured on
the shared 2-core development machine at load ~5 from other work (2026-11-27, /usr/bin/time): the
quick run of the built-in dataset took 3 min 41 s of wall time and 142 CPU-seconds, the one of
fsd50k_mini 3 min 15 s and 193 CPU-seconds, a second run about 10 s. Quick scores are
a demonstration, not the papers' numbers: e.g. the trained arm's 200 autoencoder steps scored
below both controls (clip mAP, built-in / fsd50k_mini: trained 0.666 / 0.646, PCA 0.712 / 0.704,
random 0.728 / 0.688).

A TOML file (``--config``): a top-level ``encoder`` sets the main arm; top-level
``train_splits`` / ``val_splits`` / ``eval_splits`` apply to every stage that has them (e.g.
``train_splits = ["1", "2", "3"]`` for fold-named data), and one table per stage
(``[train_autoencoders]``, ``[fit_codebooks]``, ``[embed]``, ``[pretrain_kwmlp]``,
``[embed_kwmlp]``, ``[pretrain_audiomlp]``, ``[embed_audiomlp]``, ``[embed_opensmile]``,
``[evaluate]``) holds that stage's options, applied over the preset. The run sets each arm's
encoder kind, the KW-MLP and Audio-MLP checkpoints, the keyword view's splits and Audio-MLP's
training splits (the heads' ``train_splits``) itself (``RUN_OWNED``).

The openSMILE peer (pipelines.embed_opensmile) runs when the optional ``opensmile`` package is
installed (``RunConfig.opensmile``; ``--no-opensmile`` leaves it out): the store ``opensmile``
and the fusion of the main arm with it are then evaluated after Audio-MLP's
(``RunConfig.evaluate_config``), unless the TOML's ``[evaluate]`` chooses the feature sets.
``evaluate`` itself never lists them, so the sweeps' heads do not depend on the package.

Threads: the quick preset runs torch and faiss on one CPU thread unless --threads says
otherwise: on the shared 2-core development machine one thread ran the whole quick run of the
built-in dataset in 2.0 minutes where torch's default two took 11 (KW-MLP pretraining: 1.5 s
against 5.7 s an epoch, measured back to back).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import faiss
import torch

from bow.bagofwords.training import DEFAULT_ENCODER, ENCODERS
from bow.config import ConfigError, choose
from bow.peers import opensmile as peer
from pipelines.cli import read_toml, resolve
from pipelines.embed import EmbedConfig
from pipelines.embed_audiomlp import EmbedAudioMLPConfig
from pipelines.embed_kwmlp import EmbedKWMLPConfig
from pipelines.embed_opensmile import EmbedOpenSmileConfig
from pipelines.evaluate import EvaluateConfig
from pipelines.fit_codebooks import FitCodebooksConfig
from pipelines.layout import bow_name
from pipelines.pretrain_audiomlp import PretrainAudioMLPConfig
from pipelines.pretrain_kwmlp import PretrainKWMLPConfig
from pipelines.train_autoencoders import TrainAutoencodersConfig

STAGES = {"train_autoencoders": TrainAutoencodersConfig, "fit_codebooks": FitCodebooksConfig,
          "embed": EmbedConfig, "pretrain_kwmlp": PretrainKWMLPConfig,
          "embed_kwmlp": EmbedKWMLPConfig, "pretrain_audiomlp": PretrainAudioMLPConfig,
          "embed_audiomlp": EmbedAudioMLPConfig, "embed_opensmile": EmbedOpenSmileConfig,
          "evaluate": EvaluateConfig}
SPLIT_KEYS = ("train_splits", "val_splits", "eval_splits")
RUN_OWNED = {"train_autoencoders": {"encoder"}, "fit_codebooks": {"encoder"},
             "embed": {"encoder"}, "embed_kwmlp": {"checkpoint"},
             "pretrain_kwmlp": {"train_splits", "val_splits", "test_splits"},
             "embed_audiomlp": {"checkpoint"}, "pretrain_audiomlp": {"train_splits"}}
PRESETS = {
    "default": {},
    "paper": {"train_autoencoders": {"tokens": "raw"},
              "fit_codebooks": {"frame_codes": 0, "frame_stats": 0},
              "embed": {"assignment": "hard"}},
    "quick": {"train_autoencoders": {"hidden": 512, "epochs": 2, "steps_per_epoch": 100,
                                     "patience": 2},
              "fit_codebooks": {"n_codes": 64, "frame_codes": 64, "niter": 25, "nredo": 1},
              "pretrain_kwmlp": {"epochs": 30, "warmup_epochs": 3, "batch_size": 64},
              "pretrain_audiomlp": {"epochs": 4},
              "evaluate": {"max_epochs": 60}},
}
# Small sweeps the run includes (pipelines.sweep; the head width and dropout are the run's):
SWEEPS = {"default": (), "paper": (),
          "quick": (("codebook-size", {"sizes": (16, 64, 256)}), ("masking", {}))}
MAIN_ENCODER = {"paper": "trained"}   # the presets' main arm; DEFAULT_ENCODER otherwise


def feature_sets(encoder: str, opensmile: bool = False) -> tuple[str, ...]:
    """The feature sets a run compares: its main arm, the controls, KW-MLP, Audio-MLP (and the
    openSMILE peer), and the main arm joined with each of those models."""
    arms = [bow_name(encoder)] + [bow_name(k) for k in ENCODERS if k != encoder]
    models = ("kwmlp", "audiomlp") + (("opensmile",) if opensmile else ())
    return (*arms, *models, *(f"{arms[0]}+{m}" for m in models))


@dataclass(frozen=True)
class RunConfig:
    """Every stage's config and the run's own choices (module docstring)."""
    preset: str = "default"
    encoder: str = DEFAULT_ENCODER        # the main arm; the other kinds are its controls
    train_autoencoders: TrainAutoencodersConfig = TrainAutoencodersConfig()
    fit_codebooks: FitCodebooksConfig = FitCodebooksConfig()
    embed: EmbedConfig = EmbedConfig()
    pretrain_kwmlp: PretrainKWMLPConfig = PretrainKWMLPConfig()
    embed_kwmlp: EmbedKWMLPConfig = EmbedKWMLPConfig()
    pretrain_audiomlp: PretrainAudioMLPConfig = PretrainAudioMLPConfig()
    embed_audiomlp: EmbedAudioMLPConfig = EmbedAudioMLPConfig()
    embed_opensmile: EmbedOpenSmileConfig = EmbedOpenSmileConfig()
    evaluate: EvaluateConfig = EvaluateConfig(feature_sets=feature_sets(DEFAULT_ENCODER))
    kwmlp_checkpoint: str | None = None   # authors'-format checkpoint; None: pretrain our own
    audiomlp_checkpoint: str | None = None   # the authors' audiomae.pth or ours; None: pretrain
    run_name: str = "default"
    config_file: str | None = None        # the TOML it was resolved from, for the report
    sweeps: tuple = ()                    # ((sweep name, grid), ...) run after evaluate
    opensmile: bool = False               # run the openSMILE peer (module docstring)

    def stage(self, name: str, **changes):
        """The config of stage ``name`` with ``changes`` (e.g. encoder="random")."""
        return dataclasses.replace(getattr(self, name), **changes)

    def evaluate_config(self) -> EvaluateConfig:
        """The evaluate stage's config: ``evaluate``, with the openSMILE peer's feature sets
        when the peer runs and the feature sets are the run's own (module docstring)."""
        if self.opensmile and self.evaluate.feature_sets == feature_sets(self.encoder):
            return dataclasses.replace(self.evaluate,
                                       feature_sets=feature_sets(self.encoder, True))
        return self.evaluate

    @property
    def encoders(self) -> tuple[str, ...]:
        """The arms' encoder kinds, the main one first."""
        return (self.encoder, *(k for k in ENCODERS if k != self.encoder))


def resolve_config(preset: str = "default", toml: dict | None = None,
                   kwmlp_checkpoint: str | None = None, run_name: str = "default",
                   config_file: str | None = None, sweeps: bool = True,
                   audiomlp_checkpoint: str | None = None,
                   opensmile: bool | None = None) -> RunConfig:
    """Preset values, then the TOML's top-level split keys and per-stage tables (see the module
    docstring); ConfigError naming the key on an unknown or invalid option. ``opensmile`` None:
    run the peer when the package is installed."""
    if preset not in PRESETS:
        raise ConfigError(f"--preset must be one of {sorted(PRESETS)} or auto, got {preset!r}")
    toml = dict(toml or {})
    encoder = toml.pop("encoder", MAIN_ENCODER.get(preset, DEFAULT_ENCODER))
    choose("encoder", encoder, ENCODERS)
    splits = {k: toml.pop(k) for k in SPLIT_KEYS if k in toml}
    unknown = sorted(k for k in toml if k not in STAGES or not isinstance(toml[k], dict))
    if unknown:
        raise ConfigError(f"config: unknown key(s) or table(s) {unknown}; expected "
                          f"encoder, {list(SPLIT_KEYS)} and tables {list(STAGES)}")
    configs = {}
    for name, cls in STAGES.items():
        names = {f.name for f in dataclasses.fields(cls)}
        values = copy.deepcopy(PRESETS[preset].get(name, {}))
        if name == "evaluate":
            values["feature_sets"] = feature_sets(encoder)
        values.update({k: v for k, v in splits.items()
                       if k in names and k not in RUN_OWNED.get(name, ())})
        given = toml.get(name, {})
        bad = sorted(set(given) - names)
        owned = sorted(set(given) & RUN_OWNED.get(name, set()))
        if bad or owned:
            raise ConfigError(f"config [{name}]: " + (f"unknown option(s) {bad}" if bad else
                              f"{owned} are set by pipelines.run itself"))
        values.update(given)
        configs[name] = resolve(cls, values, f"config [{name}]: ")
    head = configs["evaluate"]
    small = tuple((name, {**grid, **({"widths": (head.width,), "dropouts": (head.dropout,)}
                                     if name == "codebook-size" else {})})
                  for name, grid in SWEEPS[preset]) if sweeps else ()
    return RunConfig(preset=preset, encoder=encoder, kwmlp_checkpoint=kwmlp_checkpoint,
                     audiomlp_checkpoint=audiomlp_checkpoint, run_name=run_name,
                     config_file=config_file, sweeps=small,
                     opensmile=peer.available() if opensmile is None else opensmile,
                     **configs)


def add_run_options(parser: argparse.ArgumentParser, run_only: bool = True) -> None:
    """The options of pipelines.run (pipelines.sweep shares them, without ``run_only`` ones)."""
    parser.add_argument("--data", type=Path, default=None,
                        help="dataset folder (FSD50K layout, audio/ + labels.csv, or Speech "
                             "Commands); default: the built-in synthetic dataset, generated "
                             "into <artifacts>/data/default")
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"),
                        help="where stage outputs are written")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--preset", default="auto", choices=["auto", *PRESETS],
                        help="default: the stages' defaults (the best measured bag of words); "
                             "paper: Verma's configuration; quick: default with small budgets; "
                             "auto: quick on the built-in dataset, default with --data")
    parser.add_argument("--kwmlp-checkpoint", type=Path, default=None,
                        help="authors'-format KW-MLP checkpoint (e.g. the authors' kwmlp.pth); "
                             "default: pretrain our own on the data's training clips")
    parser.add_argument("--audiomlp-checkpoint", type=Path, default=None,
                        help="Audio-MLP checkpoint (e.g. the authors' audiomae.pth); default: "
                             "pretrain our own on the data's training clips (labels unused)")
    parser.add_argument("--config", type=Path, default=None,
                        help="TOML: top-level train/val/eval_splits and one table per stage")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of torch and faiss (default: 1 with the quick "
                             "preset, which is much faster on a busy 2-core machine; else "
                             "torch's default)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    if run_only:
        parser.add_argument("--run", default="default",
                            help="report name: <artifacts>/reports/RUN")
        parser.add_argument("--no-sweeps", action="store_true",
                            help="skip the small sweeps the quick preset includes")
        parser.add_argument("--no-opensmile", action="store_true",
                            help="leave out the openSMILE peer (run by default when the "
                                 "opensmile package is installed)")


def config_from_run_args(args: argparse.Namespace) -> RunConfig:
    """Parsed options -> RunConfig; sets the CPU threads (see --threads)."""
    preset = args.preset if args.preset != "auto" else ("quick" if args.data is None
                                                         else "default")
    threads = args.threads or (1 if preset == "quick" else None)
    if threads:
        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(threads)
    toml = read_toml(args.config) if args.config else {}
    checkpoint = str(args.kwmlp_checkpoint) if args.kwmlp_checkpoint else None
    audiomlp = str(args.audiomlp_checkpoint) if args.audiomlp_checkpoint else None
    return resolve_config(preset, toml, checkpoint, getattr(args, "run", "default"),
                          str(args.config) if args.config else None,
                          sweeps=not getattr(args, "no_sweeps", False),
                          audiomlp_checkpoint=audiomlp,
                          opensmile=False if getattr(args, "no_opensmile", False) else None)
